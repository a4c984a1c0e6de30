"""Crash-safe file writes: a reader sees the old file or the whole new one, never half of one.

Write to a temporary file in the same directory, flush and fsync it, then rename over the target
(rename is atomic on POSIX). A `kill -9` mid-write leaves at most a stray `*.tmp` file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sentiment.errors import SentimentError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # mkstemp makes 0600 files; ours get the usual permissions


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise SentimentError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):  # disk full, permissions: the old file is still there, whole
            raise SentimentError(f"cannot write {path}: {e.strerror or e}; the previous version is intact") from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
