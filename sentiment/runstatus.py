"""How a run ended, in the run's own words: status.json in its run directory.

The main rank of `train()` and `pretrain()` writes {"status": "running", ...} when the training starts and, when it
ends, "finished" (results.json written), "interrupted" (Ctrl-C or SIGTERM: last.pt saved where it stopped; a second
Ctrl-C stops at once) or "failed" (an error: its one line is kept). A process killed without a word (kill -9, the
OOM killer, a power cut) leaves "running" behind, naming a process that no longer runs: `sentiment runs` calls that
run incomplete. Torch-free, so that reading it (`sentiment runs`) stays fast.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sentiment.atomic import atomic_write_text
from sentiment.errors import SentimentError
from sentiment.runlock import process_alive

STATUS_FILE = "status.json"
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"
INTERRUPTED_EXIT_CODE = 130  # sentiment.training.engine.TrainingInterrupted's (not imported: it loads torch)


def process_start(pid: int) -> int | None:
    """When process pid started (clock ticks after boot, /proc/PID/stat), or None where that is unknown: with the pid
    it names one process, as a pid alone does not once the system reuses it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _write(run_dir: Path, status: str, **details: Any) -> None:
    record = {"status": status, "pid": os.getpid(), "process_start": process_start(os.getpid()),
              "host": socket.gethostname(), "time": time.time(), **details}
    atomic_write_text(Path(run_dir) / STATUS_FILE, json.dumps(record) + "\n")


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__


@contextmanager
def recording_status(run_dir: Path, write: bool = True) -> Iterator[None]:
    """`with recording_status(run_dir, rank.is_main):` around a run's training and its final figures: running while
    inside, then finished, interrupted or failed. write=False (ranks other than the main one): nothing."""
    if not write:
        yield
        return
    _write(run_dir, RUNNING)
    try:
        yield
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt) or getattr(e, "exit_code", None) == INTERRUPTED_EXIT_CODE
        try:
            _write(run_dir, INTERRUPTED if interrupted else FAILED, error=_one_line(e),
                   exit_code=getattr(e, "exit_code", INTERRUPTED_EXIT_CODE if interrupted else 1))
        except (SentimentError, OSError):
            pass  # the disk refused the marker: the error that ended the run is the one to report
        raise
    _write(run_dir, FINISHED)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """status.json as written, or None for a run without one (written before it existed, or still starting); a file
    that is not one is a SentimentError naming it."""
    path = Path(run_dir) / STATUS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SentimentError(f"{path} is unreadable ({_one_line(e)})") from None
    if not isinstance(record, dict) or record.get("status") not in (RUNNING, FINISHED, INTERRUPTED, FAILED):
        raise SentimentError(f"{path} is not a run status file")
    return record


def writer_runs(record: dict[str, Any]) -> bool:
    """Whether the process a "running" status names still runs: on this host, the same pid started at the same time
    (a library caller that took no run lock is found this way)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname() or not process_alive(pid):
        return False
    started = record.get("process_start")
    return started is None or process_start(pid) in (None, started)
