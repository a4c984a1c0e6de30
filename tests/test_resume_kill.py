"""Real processes killed at awkward moments: `kill -9` after the first checkpoint, mid-epoch and while a
checkpoint is being written, then one Ctrl-C; each time `sentiment train --resume` goes on. The run must
end bitwise identical to one that was never interrupted, and no checkpoint may ever be seen half-written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sentiment.runs import BEST, LAST, load_checkpoint, read_metrics
from conftest import TINY_TRAINING, set_args

STEPS_PER_EPOCH = 27  # 60 reviews a class, 10% kept for validation: 108 in batches of 4
ARGS = set_args(["train.epochs=2", *TINY_TRAINING, "train.batch_size=4", "run.eval_test=false",
                 "run.checkpoint_minutes=0", "run.threads=1", "data.workers=1"])
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMEOUT = 60.0  # seconds for any one process; a hang fails the test instead of blocking it


def timing_free(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s", "valid_seconds")} for r in rows]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_identical(a: Path, b: Path) -> None:
    x, y = weights(a), weights(b)
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), f"{a} and {b} differ in {k}"


class Trainer:
    """One `sentiment train` process, its output in files (a full pipe would block it)."""

    def __init__(self, workdir: Path, name: str, *args: str):
        self.out, self.err = workdir / f"{name}.out", workdir / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "sentiment", "train", *args], cwd=workdir, env=ENV,
                                         stdout=out, stderr=err)
        self.started = time.monotonic()

    def running(self) -> bool:
        if self.proc.poll() is not None:
            return False
        assert time.monotonic() - self.started < TIMEOUT, "training process hangs"
        return True

    def wait(self) -> int:
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def fail(self, why: str) -> str:
        return f"{why}\nstdout:\n{self.out.read_text(errors='replace')}\nstderr:\n{self.stderr()}"


class CheckpointWatch:
    """Follows last.pt as it is replaced, loading every version it sees (none may be half-written)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LAST
        self.inode: int | None = None
        self.step = -1
        self.versions = 0

    def poll(self) -> int:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return self.step
        if inode != self.inode:
            self.inode = inode
            self.step = load_checkpoint(self.path)["loop"]["global_step"]
            self.versions += 1
        return self.step


def wait_until(trainer: Trainer, ready, pause: float = 0.002) -> None:
    """Return the moment ready() is true; fail if the process ends first."""
    while not ready():
        assert trainer.running(), trainer.fail("the run ended before the kill point")
        if pause:
            time.sleep(pause)


def stray_tmps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith(f".{LAST}.") and p.name.endswith(".tmp"))


def test_kill_and_resume_ends_bitwise_identical(tmp_path):
    from conftest import make_imdb

    data = make_imdb(tmp_path / "data", n_per_class=60)
    common = ["--set", f"data.data_dir={data}", *ARGS]

    # (a) the reference: never interrupted (it also fills the corpus and GloVe caches for the others)
    ref_dir = tmp_path / "ref"
    ref = Trainer(tmp_path, "ref", *common, "--run-dir", str(ref_dir))
    assert ref.wait() == 0, ref.fail("reference run failed")
    total = 2 * STEPS_PER_EPOCH
    assert load_checkpoint(ref_dir / LAST)["loop"]["global_step"] == total

    # (b) the same run, interrupted again and again
    run_dir = tmp_path / "run"
    resume = ["--resume", str(run_dir), "--set", f"data.data_dir={data}"]
    steps: list[int] = []

    def killed(trainer: Trainer, ready, what: str, sig: int = signal.SIGKILL, pause: float = 0.002) -> int:
        wait_until(trainer, ready, pause)
        trainer.proc.send_signal(sig)
        code = trainer.wait()
        state = load_checkpoint(run_dir / LAST)  # whole after any kill
        steps.append(state["loop"]["global_step"])
        assert 0 < steps[-1] < total, trainer.fail(f"{what}: last.pt at step {steps[-1]}")
        if len(steps) > 1:
            assert steps[-1] >= steps[-2], f"{what}: resumed from step {steps[-2]} but last.pt went back to {steps[-1]}"
        rows = read_metrics(run_dir)  # metrics.jsonl is never torn either
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
        return code

    # 1. kill -9 the moment the first checkpoint exists
    first = Trainer(tmp_path, "kill1", *common, "--run-dir", str(run_dir))
    assert killed(first, (run_dir / LAST).exists, "first checkpoint") == -signal.SIGKILL

    # 2. kill -9 in the middle of epoch 1
    watch = CheckpointWatch(run_dir)
    trainer = Trainer(tmp_path, "kill2", *resume)
    assert killed(trainer, lambda: watch.poll() >= steps[-1] + 8, "mid-epoch") == -signal.SIGKILL
    assert steps[-1] < STEPS_PER_EPOCH

    # 3. kill -9 while last.pt is being written: after some progress, spin until its temporary file exists and
    # kill at once. If the write finished between the look and the kill, try again (rare).
    for attempt in range(3):
        watch = CheckpointWatch(run_dir)
        before = set(stray_tmps(run_dir))
        trainer = Trainer(tmp_path, f"kill3-{attempt}", *resume)
        wait_until(trainer, lambda: watch.poll() >= steps[-1] + 3)
        code = killed(trainer, lambda: bool(set(stray_tmps(run_dir)) - before), "during a checkpoint write", pause=0)
        assert code == -signal.SIGKILL
        if set(stray_tmps(run_dir)) - before:  # the half-written temporary file is left behind: caught mid-write
            break
    else:
        pytest.fail("three kills meant for the middle of a checkpoint write all landed after it")

    # 4. Ctrl-C in epoch 2: a clean stop that saves last.pt and says how to resume
    watch = CheckpointWatch(run_dir)
    trainer = Trainer(tmp_path, "sigint", *resume)
    code = killed(trainer, lambda: watch.poll() >= max(steps[-1] + 2, STEPS_PER_EPOCH + 4), "Ctrl-C", signal.SIGINT)
    assert code == 130, trainer.fail("Ctrl-C should exit with 130")
    assert f"--resume {run_dir}" in " ".join(trainer.stderr().split()), trainer.fail("no resume hint")
    assert steps[-1] > STEPS_PER_EPOCH

    # 5. resume to the end
    trainer = Trainer(tmp_path, "final", *resume)
    assert trainer.wait() == 0, trainer.fail("final resume failed")

    assert_identical(ref_dir / LAST, run_dir / LAST)
    assert_identical(ref_dir / BEST, run_dir / BEST)
    assert timing_free(read_metrics(run_dir)) == timing_free(read_metrics(ref_dir))
    assert load_checkpoint(run_dir / LAST)["loop"] == {**load_checkpoint(ref_dir / LAST)["loop"],
                                                       "seconds": load_checkpoint(run_dir / LAST)["loop"]["seconds"]}
