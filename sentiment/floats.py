"""Denormal floats on CPU: flush them to zero, in every thread torch computes with.

When a loss reaches a recurrence only through its last state (`pooling: last`), gradients shrink
step by step through hundreds of positions into denormal numbers, which x86 CPUs handle on a slow
microcode path: a 2-layer BiLSTM(256) training step on 300-token reviews was reported at 9.0 s with
them and 1.04 s flushed (oneDNN#561; the Transformers trainer has the same switch). Flush-to-zero is a
per-thread CPU flag, and torch's worker threads copy it from the thread that starts them, when the
first parallel operation runs: so this must run before any torch computation in the process.
"""

from __future__ import annotations

import torch


def flush_denormals(enabled: bool) -> None:
    """Treat denormal floats as zero on this thread and on the torch threads started after it.
    A no-op where the CPU has no such mode."""
    torch.set_flush_denormal(enabled)
