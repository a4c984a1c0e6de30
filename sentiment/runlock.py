"""One writer per run directory: an OS file lock beside it.

`train`, `train --resume` and `train --overwrite` hold an exclusive flock(2) on `.<name>.lock` next to the run
directory while they write it. The kernel releases it on any exit, kill -9 included, so a lock is never
stale; it lives beside the directory, so it survives `--overwrite` deleting the directory. The holder's PID
is written into the file, so a second writer can say whose it is. Under `sentiment train --nproc N` the
launcher holds it and tells its ranks so (HELD_ENV), so they do not try to take it again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sentiment.errors import SentimentError

HELD_ENV = "SENTIMENT_RUN_LOCK_HELD"  # the run directory whose lock a parent process (the launcher) holds
LAUNCHER_ENV = "SENTIMENT_LAUNCHER_PID"  # the launcher's pid: its ranks end when it does (distributed.py)


def lock_path(run_dir: Path) -> Path:
    run_dir = Path(os.path.abspath(run_dir))
    return run_dir.parent / f".{run_dir.name}.lock"


def held_by_parent(run_dir: Path) -> bool:
    """True when the process that started this one holds the lock of run_dir for it."""
    return os.environ.get(HELD_ENV) == os.path.abspath(run_dir)


class RunLock:
    """`with RunLock(run_dir):` ... writes run_dir ... Refuses (SentimentError) if another process holds it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = lock_path(run_dir)
        self.fd: int | None = None
        self.created: list[Path] = []  # parent directories this lock created (removed again if left empty)

    def acquire(self) -> "RunLock":
        self._make_parents()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self.release()
                raise SentimentError(f"cannot lock run directory {self.run_dir} ({self.path}: "
                                     f"{e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                self.release()
                raise SentimentError(f"run directory {self.run_dir} is being written by another training "
                                     f"(pid {holder or 'unknown'}): wait for it to end, or choose another "
                                     "--run-dir") from None
            # a holder that releases unlinks the file before unlocking it: the file locked must still be the
            # one at the path, or two processes could each hold "the" lock on different files
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked (see acquire)
            os.close(self.fd)
            self.fd = None
        for folder in reversed(self.created):
            try:
                folder.rmdir()  # only if nothing was written into it
            except OSError:
                break
        self.created = []

    def _make_parents(self) -> None:
        missing = []
        folder = self.path.parent
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                self.release()
                raise SentimentError(f"cannot create run directory {self.run_dir}: {e.strerror or e}") from None
            self.created.append(folder)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def writer_of(run_dir: Path) -> str | None:
    """The pid of another process writing run_dir now (holding its lock), "unknown" if it wrote none, or None when
    no one holds it. A probe: a shared lock taken and dropped at once, and no lock file created."""
    if held_by_parent(run_dir):
        return None  # our launcher's, held for us
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_holder(run_dir: Path) -> int | None:
    """The pid of the process holding run_dir's lock now, found without taking any lock (writer_of's probe takes a
    shared one for an instant, and a writer starting in that instant would be refused): the pid the lock file names,
    if /proc/locks shows that process holding an flock (or, by inode, whoever holds one on the file); without
    /proc/locks (not Linux), the named process if it runs. A writer's release unlinks the file, so a file left behind
    names a process killed without releasing it."""
    path = lock_path(run_dir)
    try:
        inode = os.stat(path).st_ino
        with open(path, "rb") as f:
            named = f.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None
    pid = int(named) if named.isdigit() else None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read()
    except OSError:
        return pid if pid is not None and process_alive(pid) else None
    holders: dict[int, set[int]] = {}
    for line in table.splitlines():
        fields = line.split()  # "5: FLOCK  ADVISORY  WRITE 12403 fe:00:5514795 0 EOF"; a waiter's has "->"
        if "->" in fields or "FLOCK" not in fields:
            continue
        at = fields.index("FLOCK")
        try:
            holder, held = int(fields[at + 3]), int(fields[at + 4].rsplit(":", 1)[1])
        except (IndexError, ValueError):
            continue
        if fields[at + 2] == "WRITE":
            holders.setdefault(holder, set()).add(held)
    if pid is not None and pid in holders:
        return pid
    return next((holder for holder, inodes in holders.items() if inode in inodes), None)


def no_checkpoint_error(run_dir: Path) -> SentimentError:
    """Why a run without last.pt cannot be resumed: another process is still starting it, or it never finished a
    step."""
    writer = writer_of(run_dir)
    if writer is not None:
        return SentimentError(f"{run_dir} has no last.pt yet: another process (pid {writer}) is writing it and has "
                              "not finished a step; wait for it to end (or for its first checkpoint)")
    return SentimentError(f"{run_dir} has no last.pt to resume from (it never finished a step)")


def process_alive(pid: int) -> bool:
    """Whether pid runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OverflowError:  # not a pid the kernel can hold
            return False
        return True


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
