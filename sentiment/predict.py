"""Predicting with a finished run: read reviews (arguments, files, stdin), tokenize them exactly as the
run's training corpus was tokenized, and score them in length-sorted batches, outputs in input order.

Files: plain text (one review per line), CSV/TSV with a header (a text column), or JSONL (one object
per line with a text field); the format comes from the suffix. Reviews are truncated to the run's
data.eval_max_len as evaluation does; a run without one (whole reviews) is capped at UNCAPPED_MAX_LEN.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from sentiment.batching import EncodedSplit, truncate
from sentiment.errors import SentimentError
from sentiment.tokenize import split_chunks, tokenize_chunks
from sentiment.vocab import Vocab
from sentiment.workers import run_in_workers

# A run evaluated on whole reviews (no data.eval_max_len) keeps them whole, but one pasted book would
# cost unbounded memory and time. IMDB's longest review has about 3,000 tokens, so this cap never changes
# a prediction on IMDB-like text.
UNCAPPED_MAX_LEN = 5000
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_PARALLEL_MIN_TEXTS = 2000  # below this, starting worker processes costs more than it saves
_TASK_TEXTS = 2000  # texts per worker task: bounds the memory a task holds, keeps both workers busy
_MEMO_SIZE = 200_000  # chunks remembered per worker (most IMDB chunks repeat); cleared when full

# csv refuses fields over 128 KiB by default, but one long review (100,000 tokens) is bigger than that.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# ---------------------------------------------------------------- reading
def decode(raw: bytes, name: str | Path) -> str:
    """UTF-8 text (invalid bytes become U+FFFD, as in training); NUL bytes mean it is not text at all."""
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise SentimentError(f"{name}: line {line} has a NUL byte: this is a binary (or UTF-16) file, "
                             "not UTF-8 text")
    return raw.decode("utf-8-sig", errors="replace")  # -sig: drop the BOM that Excel puts in CSVs


def read_file(path: Path) -> str:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SentimentError(f"{path} not found") from None
    except IsADirectoryError:
        raise SentimentError(f"{path} is a directory, not a file") from None
    except OSError as e:
        raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
    text = decode(raw, path)
    if not text.strip():
        raise SentimentError(f"{path} is empty")
    return text


def split_lines(text: str) -> list[str]:
    """Lines on \\n or \\r\\n only: str.splitlines() would also cut reviews at \\x0c, \\x85 or U+2028."""
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true/false, which str() would spell True/False
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


@dataclass
class Record:
    where: str  # "row 3 (line 4)": for error messages
    values: tuple[str | None, ...]  # the requested columns, None where the row lacks one


def read_records(path: Path, columns: Sequence[str]) -> list[Record]:
    """The given columns of each row of a CSV, TSV or JSONL file (blank lines are not rows)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SentimentError(f"{path}: unknown format {path.suffix or '(no suffix)'}; use .csv, .tsv or .jsonl")
    text = read_file(path)
    records = _read_jsonl(path, text, columns) if kind == "jsonl" else _read_csv(path, text, columns, kind)
    if not records:
        raise SentimentError(f"{path} has a header but no rows")
    return records


def _read_csv(path: Path, text: str, columns: Sequence[str], kind: str) -> list[Record]:
    # strict: an unclosed quote is an error, instead of silently swallowing the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",", strict=True)
    records: list[Record] = []
    try:
        header = [h.strip() for h in next(reader)]
        missing = [c for c in columns if c not in header]
        if missing:
            raise SentimentError(f"{path}: no column {missing[0]!r} (columns: {', '.join(map(repr, header))})")
        index = [header.index(c) for c in columns]
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not row:
                continue  # a blank line
            values = tuple(row[i] if i < len(row) else None for i in index)
            records.append(Record(f"row {len(records) + 1} (line {line})", values))
    except csv.Error as e:
        raise SentimentError(f"{path}: line {reader.line_num} is not valid {kind.upper()} ({e})") from None
    return records


def _read_jsonl(path: Path, text: str, columns: Sequence[str]) -> list[Record]:
    records: list[Record] = []
    for n, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise SentimentError(f"{path}: line {n} is not valid JSON ({getattr(e, 'msg', e)}); "
                                 "expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise SentimentError(f"{path}: line {n} is a JSON {type(obj).__name__}, not an object; "
                                 "expected one JSON object per line")
        missing = [c for c in columns if c not in obj]
        if missing:
            raise SentimentError(f"{path}: line {n} has no field {missing[0]!r} "
                                 f"(fields: {', '.join(map(repr, obj)) or 'none'})")
        records.append(Record(f"row {len(records) + 1} (line {n})", tuple(_as_str(obj[c]) for c in columns)))
    return records


def read_texts(path: Path, text_column: str = "text") -> list[str]:
    """Reviews from a file: one per line for plain text, else the text column of each row."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        return split_lines(read_file(path))
    return [r.values[0] or "" for r in read_records(path, [text_column])]


def read_stream(raw: bytes, name: str = "standard input") -> list[str]:
    """Reviews from bytes read off a stream (stdin), one per line."""
    text = decode(raw, name)
    if not text.strip():
        raise SentimentError(f"no reviews: {name} is empty")
    return split_lines(text)


# ---------------------------------------------------------------- encoding
@dataclass
class Encoding:
    """How a run turns text into ids: its vocab and the data settings it trained with."""

    vocab: Vocab
    lowercase: bool
    max_len: int  # the run's data.eval_max_len, or UNCAPPED_MAX_LEN
    truncate: str
    workers: int = 2


def encoding_of(run: Any) -> Encoding:
    """The Encoding of a runtime.LoadedRun."""
    d = run.cfg.data
    return Encoding(run.vocab, d.lowercase, d.eval_max_len or UNCAPPED_MAX_LEN, d.truncate, d.workers)


_job: tuple[Sequence[str], Encoding, dict[str, list[int]]] | None = None  # forked workers inherit it


def _encode_range(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Worker: ids of texts[start:end], truncated, as one flat int32 array and int64 lengths: compact
    to send back. Each distinct whitespace chunk is tokenized once (what corpus.py does for training)."""
    texts, enc, memo = _job
    chunked = [split_chunks(t) for t in texts[bounds[0] : bounds[1]]]
    distinct = dict.fromkeys(chain.from_iterable(chunked))
    missing = [c for c in distinct if c not in memo]
    if len(memo) + len(missing) > _MEMO_SIZE:
        memo.clear()  # bounded memory on huge inputs; the memo is only a speed-up
        missing = list(distinct)  # including those the memo had
    memo.update(zip(missing, map(enc.vocab.encode, tokenize_chunks(missing, enc.lowercase))))
    rows = [truncate(np.fromiter(chain.from_iterable(map(memo.__getitem__, chunks)), dtype=np.int32),
                     enc.max_len, enc.truncate) for chunks in chunked]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    return (np.concatenate(rows) if rows else np.zeros(0, np.int32)), lengths


def encode_texts(texts: Sequence[str], enc: Encoding, labels: np.ndarray | None = None) -> EncodedSplit:
    """Texts as vocab ids, each truncated to enc.max_len. Texts without a single token (empty,
    whitespace, only `<br />`) get length 0: callers skip them. Large inputs use enc.workers processes."""
    global _job
    tasks = [(i, min(i + _TASK_TEXTS, len(texts))) for i in range(0, len(texts), _TASK_TEXTS)]
    workers = max(1, min(enc.workers, os.cpu_count() or 1, len(tasks)))
    # forked workers inherit the texts and the vocab instead of receiving them pickled; where there is
    # no fork (Windows), one process does it all
    parallel = workers > 1 and len(texts) >= _PARALLEL_MIN_TEXTS and "fork" in multiprocessing.get_all_start_methods()
    _job = (texts, enc, {})
    try:
        if parallel:
            parts = run_in_workers(_encode_range, tasks, workers)
        else:
            parts = [_encode_range(t) for t in tasks]
    finally:
        _job = None
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32)
    lengths = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    labels = np.zeros(len(texts), np.int8) if labels is None else np.asarray(labels, dtype=np.int8)
    return EncodedSplit(ids=ids, offsets=offsets, labels=labels)


def drop_empty(split: EncodedSplit) -> tuple[EncodedSplit, np.ndarray]:
    """The split without its token-less reviews, and the mask of those kept."""
    lengths = split.lengths()
    keep = lengths > 0
    offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
    return EncodedSplit(split.ids, offsets, split.labels[keep]), keep  # empty reviews own no ids


# ---------------------------------------------------------------- predicting
def predict_texts(run_dir: Path, texts: Sequence[str], *, checkpoint: str = "best", device: str | None = None,
                  batch_size: int | None = None) -> np.ndarray:
    """P(positive) of each text, in input order, as `sentiment eval` computes it; NaN for texts
    without a single token (empty rows), which are not scored."""
    from sentiment.evaluate import predict_logits
    from sentiment.runtime import load_trained

    run = load_trained(run_dir, checkpoint, device)
    enc = encoding_of(run)
    split, keep = drop_empty(encode_texts(texts, enc))
    if not keep.any():
        raise SentimentError(f"nothing to predict: {'the review is' if len(texts) == 1 else 'every review is'} "
                             "empty (no words)")
    logits = predict_logits(run.model, split, batch_size=batch_size or run.cfg.train.eval_batch_size,
                            device=run.device, max_len=enc.max_len, truncate=enc.truncate)
    probs = np.full(len(texts), np.nan)
    probs[keep] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))  # as evaluate() computes it
    return probs


def prediction_rows(probs: np.ndarray, threshold: float = 0.5) -> list[dict[str, Any]]:
    """One dict per input: label and probability (of positive), or an error for a skipped row."""
    return [{"error": "empty text: skipped"} if np.isnan(p) else
            {"label": "positive" if p >= threshold else "negative", "probability": float(p)} for p in probs]
