"""The C allocator's settings for training: glibc's malloc, told to keep the large blocks torch frees.

By default glibc serves every block above a threshold (128 KiB, raised as large blocks are freed, to at most
32 MiB) with its own mmap and gives it back with munmap when freed, and returns free memory at the top of the
heap to the system once it exceeds 128 KiB. A training step allocates and frees the same large tensors every
step (a language model's [bptt x batch, 2,000] output logits are 36 MB), so each step maps fresh pages, and the
kernel zero-fills each on its first touch: pretraining measured 191M minor page faults and 384 s of system time
against 1,131 s of user time in 25 minutes. Raised thresholds keep the freed blocks in the heap for the next step
(docs/pretraining.md has the measurement), at the cost of a process that holds its peak memory until it exits.

Linux with glibc only (elsewhere nothing changes); the user's own MALLOC_* or GLIBC_TUNABLES settings win.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top goes back to the system only above 1 GiB
TOP_PAD = 64 << 20  # each growth of the heap asks for 64 MiB more than needed (untouched pages cost nothing)


def user_set_allocator() -> bool:
    return "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ)


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process (before the work that allocates); True if they were set."""
    if not sys.platform.startswith("linux") or user_set_allocator():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc's own symbol: musl has mallopt but not these options
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
