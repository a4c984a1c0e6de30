"""Where things live on disk: data, caches and runs, each overridable by environment variable."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "SENTIMENT_DATA_DIR"
RUNS_DIR_ENV = "SENTIMENT_RUNS_DIR"
CACHE_DIR_ENV = "SENTIMENT_CACHE_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data"))


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def cache_dir(data_dir: Path) -> Path:
    """Derived artefacts (tokenized corpus, parsed GloVe) live beside the data they come from, unless
    $SENTIMENT_CACHE_DIR moves them (a read-only data directory, or a benchmark that wants a cold cache)."""
    path = Path(os.environ.get(CACHE_DIR_ENV) or Path(data_dir) / "cache")
    if path.exists() and not path.is_dir():
        from sentiment.errors import SentimentError

        named = f"${CACHE_DIR_ENV} ({path})" if os.environ.get(CACHE_DIR_ENV) else f"the cache directory {path}"
        raise SentimentError(f"cannot write the cache: {named} is a file, not a directory: point it at a directory")
    return path
