"""The IMDB Large Movie Review reader: which review files exist, their labels, and the validation split."""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from pathlib import Path

import numpy as np

from sentiment.errors import DataMissingError, SentimentError

LABELED_SPLITS = ("train", "test")
SPLIT_CODES = {"train": 0, "test": 1, "unsup": 2}
_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")


class ReviewFile(NamedTuple):  # a NamedTuple: 50,000 of them are made on every run
    path: str
    name: str  # relative to the aclImdb directory, e.g. "train/pos/0_9.txt"
    split: str  # "train" | "test" | "unsup"
    label: int  # 1 positive, 0 negative, -1 unlabeled (unsup)
    rating: int  # stars from the file name: 1-4 negative, 7-10 positive, 0 for unsup


def imdb_dir(data_dir: Path) -> Path:
    """The extracted aclImdb directory, or a DataMissingError that says how to get it."""
    root = Path(data_dir) / "aclImdb"
    missing = [s for s in ("train/pos", "train/neg", "test/pos", "test/neg") if not (root / s).is_dir()]
    if missing:
        what = "not found" if not root.exists() else f"incomplete (missing {', '.join(missing)})"
        raise DataMissingError(
            f"IMDB data in {root} is {what}: run `make download-data` (or `sentiment download --data-dir {data_dir}`)"
        )
    return root


def list_reviews(root: Path, include_unsup: bool = False, only_unsup: bool = False) -> list[ReviewFile]:
    """Every review file, in a stable order (split, label, numeric id), with label and star rating.
    only_unsup: the 50,000 unlabeled reviews of train/unsup alone."""
    wanted = [("train", "pos", 1), ("train", "neg", 0), ("test", "pos", 1), ("test", "neg", 0)]
    if only_unsup:
        wanted = []
    if include_unsup or only_unsup:
        wanted.append(("train", "unsup", -1))
    reviews: list[ReviewFile] = []
    for split, folder, label in wanted:
        directory = Path(root) / split / folder
        if folder == "unsup" and not directory.is_dir():
            raise DataMissingError(f"{directory} not found: the unsup reviews are not in this copy of IMDB")
        entries = []
        for entry in os.scandir(directory):
            m = _NAME.match(entry.name)
            if m:
                entries.append((int(m.group(1)), int(m.group(2)), entry.name, entry.path))
        if not entries:
            raise DataMissingError(f"no reviews in {directory}: run `make download-data` again")
        entries.sort()
        name = "unsup" if folder == "unsup" else split
        reviews.extend(ReviewFile(path, f"{split}/{folder}/{file}", name, label, rating if label >= 0 else 0)
                       for _, rating, file, path in entries)
    return reviews


def fingerprint(reviews: list[ReviewFile]) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of each file: cheap to compute, and changes whenever a review's content does."""
    out = []
    for r in reviews:
        st = os.stat(r.path)
        out.append((r.name, st.st_size, st.st_mtime_ns))
    return out


def movie_ids(root: Path, names: list[str]) -> list[str] | None:
    """The IMDB title (e.g. "tt0453418") each train review is about, from train/urls_pos.txt and
    urls_neg.txt (line i belongs to review id i), or None when either file is missing or too short."""
    urls: dict[str, list[str]] = {}
    for folder in ("pos", "neg"):
        path = Path(root) / "train" / f"urls_{folder}.txt"
        try:
            urls[folder] = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None
    movies = []
    for name in names:
        split, folder, file = name.split("/")
        m = _NAME.match(file)
        lines = urls.get(folder)
        if split != "train" or m is None or lines is None or int(m.group(1)) >= len(lines):
            return None
        line = lines[int(m.group(1))].strip()
        title = _TITLE.search(line)
        movies.append(title.group(1) if title else line)
    return movies


_TITLE = re.compile(r"/title/(tt\d+)")


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, valid), label-balanced and seeded: the same arguments give the same split."""
    if not 0.0 <= fraction < 1.0:
        raise SentimentError(f"data.valid_fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    valid_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        valid_parts.append(members[: int(round(fraction * len(members)))])
    valid = np.sort(np.concatenate(valid_parts)) if valid_parts else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), valid, assume_unique=True)
    return train, valid
