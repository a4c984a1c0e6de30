"""Evaluating a run on labeled reviews of one's own: a CSV/TSV/JSONL file with text and label columns,
or a directory in the aclImdb layout (pos/ and neg/ folders of .txt reviews)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sentiment.errors import SentimentError
from sentiment.evaluate import Metrics

LABELS = {"1": 1, "0": 0, "pos": 1, "neg": 0, "positive": 1, "negative": 0, "true": 1, "false": 0}
_SPELLINGS = "1/0, pos/neg, positive/negative or true/false"


def parse_label(value: str | None, where: str) -> int:
    """1 (positive) or 0 (negative) from the usual spellings, case-insensitive."""
    label = LABELS.get((value or "").strip().lower())
    if label is None:
        raise SentimentError(f"{where}: unknown label {value!r} (expected {_SPELLINGS})")
    return label


def read_labeled(path: Path, text_column: str = "text", label_column: str = "label") -> tuple[list[str], np.ndarray]:
    """(texts, labels 1/0) from a labeled file or a pos/neg directory."""
    from sentiment.readers import read_records

    path = Path(path)
    if path.is_dir():
        return _read_pos_neg(path)
    texts, labels = [], []
    for r in read_records(path, [text_column, label_column]):
        texts.append(r.values[0] or "")
        labels.append(parse_label(r.values[1], f"{path}: {r.where}"))
    return texts, np.array(labels, dtype=np.int8)


def _read_pos_neg(root: Path) -> tuple[list[str], np.ndarray]:
    if not ((root / "pos").is_dir() and (root / "neg").is_dir()):
        raise SentimentError(f"{root} is a directory without pos/ and neg/ folders (the aclImdb layout: "
                             "point at aclImdb/test, not aclImdb)")
    texts, labels = [], []
    for folder, label in (("pos", 1), ("neg", 0)):
        for path in sorted((root / folder).glob("*.txt"), key=_natural):
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
            texts.append(raw.decode("utf-8", errors="replace"))  # exactly as corpus.py reads IMDB
            labels.append(label)
    if not texts:
        raise SentimentError(f"{root}: pos/ and neg/ hold no .txt reviews")
    return texts, np.array(labels, dtype=np.int8)


def _natural(path: Path) -> list:
    """10_3.txt after 9_2.txt: the order imdb.list_reviews gives, so that batches (and float sums)
    are the same as `sentiment eval` on IMDB."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def evaluate_labeled(run_dir: Path, data: Path, *, text_column: str = "text", label_column: str = "label",
                     checkpoint: str = "best", device: str | None = None,
                     batch_size: int | None = None) -> tuple[Metrics, int]:
    """The run's metrics on labeled reviews (the same ones `sentiment eval` prints for IMDB), and how
    many reviews were skipped for having no text."""
    from sentiment.evaluate import evaluate
    from sentiment.predict import drop_empty, encode_texts, encoding_of
    from sentiment.runtime import load_trained

    texts, labels = read_labeled(data, text_column, label_column)
    run = load_trained(run_dir, checkpoint, device)
    enc = encoding_of(run)
    split, keep = drop_empty(encode_texts(texts, enc, labels))
    if not len(split):
        raise SentimentError(f"{data}: every review is empty")
    metrics = evaluate(run.model, split, batch_size=batch_size or run.cfg.train.eval_batch_size,
                       device=run.device, max_len=enc.max_len, truncate=enc.truncate)
    return metrics, int((~keep).sum())
