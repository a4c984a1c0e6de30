"""One writer per run directory: a flock beside it, held by another process for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sentiment.errors import SentimentError
from sentiment.runlock import RunLock, lock_holder, lock_path

HOLD = "import sys; from sentiment.runlock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"


def hold(run_dir: Path) -> subprocess.Popen:
    """Another process that holds run_dir's lock until its stdin closes (or it is killed)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    holder = hold(run_dir)
    try:
        with pytest.raises(SentimentError, match=rf"being written by another training \(pid {holder.pid}\)"):
            RunLock(run_dir).acquire()
    finally:
        holder.stdin.close()
        holder.wait(10)
    with RunLock(run_dir):  # released: the next writer gets it
        pass
    assert not lock_path(run_dir).exists()  # and nothing is left beside the runs


def test_a_released_lock_leaves_no_trace(tmp_path):
    with RunLock(tmp_path / "a" / "b" / "r"):
        assert lock_path(tmp_path / "a" / "b" / "r").exists()
    assert list(tmp_path.iterdir()) == []  # the lock file and the parents it made are gone


def test_the_lock_is_released_by_kill_9(tmp_path):
    run_dir = tmp_path / "r"
    holder = hold(run_dir)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    assert lock_path(run_dir).exists()  # left behind, but no one holds it
    with RunLock(run_dir):
        assert lock_path(run_dir).read_text().strip() == str(os.getpid())


def test_the_holder_is_found_without_taking_the_lock(tmp_path):
    """lock_holder reads /proc/locks: while another process holds the lock it names that process (and the lock
    stays held: a writer is still refused); after a kill -9, the lock file it left names no holder."""
    run_dir = tmp_path / "r"
    assert lock_holder(run_dir) is None  # no lock file at all
    holder = hold(run_dir)
    assert lock_holder(run_dir) == holder.pid
    with pytest.raises(SentimentError, match="being written by another training"):
        RunLock(run_dir).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    assert lock_path(run_dir).exists() and lock_holder(run_dir) is None


def test_the_lock_survives_the_run_directory_being_deleted(tmp_path):
    """--overwrite deletes the directory it replaces: the lock is beside it, not in it."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x")
    with RunLock(run_dir):
        shutil.rmtree(run_dir)
        holder = subprocess.run([sys.executable, "-c", HOLD, str(run_dir)], input="", capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert holder.returncode != 0 and f"pid {os.getpid()}" in holder.stderr


def test_a_lock_file_unlinked_by_its_releasing_holder_is_not_taken(tmp_path, monkeypatch):
    """A releasing holder unlinks the file, then unlocks it: a process that locked the unlinked file in
    between must try again on the new file, or two processes would each hold a lock."""
    import fcntl

    run_dir = tmp_path / "r"
    real_flock, calls = fcntl.flock, {"n": 0}

    def flock_then_release_by_holder(fd, op):
        real_flock(fd, op)
        calls["n"] += 1
        if calls["n"] == 1:  # the holder releases right after our flock: the path now names another file
            os.unlink(lock_path(run_dir))
            lock_path(run_dir).write_text("")

    monkeypatch.setattr(fcntl, "flock", flock_then_release_by_holder)
    with RunLock(run_dir) as lock:
        assert calls["n"] == 2
        assert os.fstat(lock.fd).st_ino == os.stat(lock_path(run_dir)).st_ino
