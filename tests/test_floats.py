"""sentiment.floats: denormals are flushed on every torch thread, in the processes the CLI starts.

Each case runs in a fresh interpreter with two torch threads: the flag is per thread, and torch's
worker threads copy it when the first parallel operation starts them, so only a new process shows
whether it was set early enough."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import TINY_TRAINING, set_args

# x * 1.0 over 4M denormal floats runs on both threads; a thread without the flag keeps its half. The
# denormals are made from their bits: converting 1e-39 to float32 would itself be flushed on this thread.
COUNT_DENORMALS = ("int(((torch.full((1 << 22,), 1 << 22, dtype=torch.int32).view(torch.float32) * 1.0)"
                   " != 0).sum())")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_flag_reaches_torch_threads_only_if_set_before_they_start():
    before = run_python(f"""
        import torch
        from sentiment.floats import flush_denormals
        torch.set_num_threads(2)
        flush_denormals(True)
        print({COUNT_DENORMALS})
    """)
    after = run_python(f"""
        import torch
        from sentiment.floats import flush_denormals
        torch.set_num_threads(2)
        torch.full((1 << 22,), 2.0) * 1.0  # starts the worker thread
        flush_denormals(True)
        print({COUNT_DENORMALS})
    """)
    assert before == "0"
    assert after == str(1 << 21)  # the worker thread's half stayed denormal


@pytest.mark.parametrize("flush, expected", [("true", "0"), ("false", str(1 << 22))])
def test_sentiment_train_flushes_on_every_thread_as_configured(tiny_data, tmp_path, flush, expected):
    # The training loop is replaced by the check: whatever the command did before the loop (config, prepare,
    # GloVe) must not have started torch's threads before the flag was set.
    args = ["train", "--run-dir", str(tmp_path / "run"), "--set", f"data.data_dir={tiny_data}",
            "--set", "run.threads=2", "--set", f"run.flush_denormal={flush}", *set_args(TINY_TRAINING)]
    out = run_python(f"""
        import torch
        import sentiment.training.train
        from sentiment import cli
        def check(cfg, run_dir, **kwargs):
            torch.set_num_threads(cfg.run.threads)
            print({COUNT_DENORMALS})
            raise SystemExit(0)
        sentiment.training.train.train = check
        cli.app({args!r})
    """)
    assert out == expected
