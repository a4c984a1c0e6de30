"""Predicting with a finished run: read reviews (arguments, files, stdin), tokenize them exactly as the
run's training corpus was tokenized, and score them in length-sorted batches, outputs in input order.

Files are read by sentiment.data.readers. Reviews are truncated to the run's
data.eval_max_len as evaluation does; a run without one (whole reviews) is capped at UNCAPPED_MAX_LEN.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from sentiment.data.batching import EncodedSplit, truncate
from sentiment.errors import SentimentError
from sentiment.data.labels import LabelSpace
from sentiment.data.tokenize import IMDB_CLEANING, ChunkMemo, Cleaning, split_chunks
from sentiment.data.vocab import Vocab
from sentiment.workers import run_in_workers

# A run evaluated on whole reviews (no data.eval_max_len) keeps them whole, but one pasted book would
# cost unbounded memory and time. IMDB's longest review has about 3,000 tokens, so this cap never changes
# a prediction on IMDB-like text.
UNCAPPED_MAX_LEN = 5000
_PARALLEL_MIN_TEXTS = 2000  # below this, starting worker processes costs more than it saves
_TASK_TEXTS = 2000  # texts per worker task: bounds the memory a task holds, keeps both workers busy
_MEMO_SIZE = 200_000  # chunks remembered per worker (most IMDB chunks repeat); cleared when full


# ---------------------------------------------------------------- encoding
@dataclass
class Encoding:
    """How a run turns text into ids: its vocab and the data settings it trained with."""

    vocab: Vocab
    lowercase: bool
    max_len: int  # the run's data.eval_max_len, or UNCAPPED_MAX_LEN
    truncate: str
    workers: int = 2
    cleaning: Cleaning = IMDB_CLEANING
    ngrams: bool = False  # also hash each whole text's token strings, for the run's n-gram branch


def encoding_of(run: Any) -> Encoding:
    """The Encoding of a runtime.LoadedRun."""
    from sentiment.data.sources import cleaning_of

    d = run.cfg.data
    return Encoding(run.vocab, d.lowercase, d.eval_max_len or UNCAPPED_MAX_LEN, d.truncate, d.resolved_workers(),
                    cleaning_of(d), run.cfg.model.ngrams is not None)


_job: tuple[Sequence[str], Encoding, ChunkMemo] | None = None  # forked workers inherit it (each its own memo)


def _encode_range(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Worker: ids of texts[start:end], truncated, as one flat int32 array and int64 lengths: compact
    to send back. Each distinct whitespace chunk is tokenized once (what corpus.py does for training).
    With enc.ngrams also the whole texts' token hashes and their lengths (else None, None)."""
    texts, enc, chunk_memo = _job
    chunked = [split_chunks(t, enc.cleaning) for t in texts[bounds[0] : bounds[1]]]
    if enc.ngrams:
        return _encode_with_hashes(chunked, enc, chunk_memo)
    memo = chunk_memo.fill(chain.from_iterable(chunked))
    rows = [truncate(np.fromiter(chain.from_iterable(map(memo.__getitem__, chunks)), dtype=np.int32),
                     enc.max_len, enc.truncate) for chunks in chunked]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    return (np.concatenate(rows) if rows else np.zeros(0, np.int32)), lengths, None, None


def _encode_with_hashes(chunked: list[list[str]], enc: Encoding,
                        chunk_memo: ChunkMemo) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """_encode_range for a run with an n-gram branch: the memo holds tokens (not ids); the task's distinct
    tokens are encoded and hashed in one go (sentiment.ngrams.hash_tokens, as prepare hashes the token table)."""
    from sentiment.ngrams import hash_tokens

    memo = chunk_memo.fill(chain.from_iterable(chunked))
    docs = [list(chain.from_iterable(map(memo.__getitem__, chunks))) for chunks in chunked]
    table = {t: i for i, t in enumerate(dict.fromkeys(chain.from_iterable(docs)))}
    vocab_ids = np.asarray(enc.vocab.encode(table), dtype=np.int32)
    table_hashes = hash_tokens(list(table))
    whole = [np.fromiter(map(table.__getitem__, doc), dtype=np.int64, count=len(doc)) for doc in docs]
    rows = [truncate(vocab_ids[w], enc.max_len, enc.truncate) for w in whole]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    hash_lengths = np.fromiter(map(len, whole), dtype=np.int64, count=len(whole))
    flat_whole = np.concatenate(whole) if whole else np.zeros(0, np.int64)
    return (np.concatenate(rows) if rows else np.zeros(0, np.int32)), lengths, table_hashes[flat_whole], hash_lengths


def text_tokens(texts: Sequence[str], enc: Encoding) -> list[list[str]]:
    """Each text's tokens as the run's training tokenized them (the memo encode_texts fills), whole: not cut to
    enc.max_len. What an explanation shows; vocab ids and n-gram hashes follow from them (enc.vocab.encode,
    sentiment.ngrams.hash_tokens), as _encode_with_hashes computes them."""
    memo = ChunkMemo(enc.lowercase, _MEMO_SIZE)
    out = []
    for text in texts:  # one text at a time: a fill may clear the memo, so each lookup follows its own fill
        chunks = split_chunks(text, enc.cleaning)
        table = memo.fill(chunks)
        out.append(list(chain.from_iterable(map(table.__getitem__, chunks))))
    return out


def encode_texts(texts: Sequence[str], enc: Encoding, labels: np.ndarray | None = None) -> EncodedSplit:
    """Texts as vocab ids, each truncated to enc.max_len. Texts without a single token (empty,
    whitespace, only `<br />`) get length 0: callers skip them. Large inputs use enc.workers processes."""
    global _job
    tasks = [(i, min(i + _TASK_TEXTS, len(texts))) for i in range(0, len(texts), _TASK_TEXTS)]
    workers = max(1, min(enc.workers, os.cpu_count() or 1, len(tasks)))
    # forked workers inherit the texts and the vocab instead of receiving them pickled; where there is
    # no fork (Windows), one process does it all
    parallel = workers > 1 and len(texts) >= _PARALLEL_MIN_TEXTS and "fork" in multiprocessing.get_all_start_methods()
    _job = (texts, enc, ChunkMemo(enc.lowercase, _MEMO_SIZE, None if enc.ngrams else enc.vocab.encode))
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
    labels = np.zeros(len(texts), np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    split = EncodedSplit(ids=ids, offsets=offsets, labels=labels)
    if enc.ngrams:
        split.hashes = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.uint64)
        hash_lengths = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)
        split.hash_offsets = np.concatenate([[0], np.cumsum(hash_lengths)]).astype(np.int64)
    return split


def drop_empty(split: EncodedSplit) -> tuple[EncodedSplit, np.ndarray]:
    """The split without its token-less reviews, and the mask of those kept."""
    lengths = split.lengths()
    keep = lengths > 0
    offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
    hash_offsets = None
    if split.hashes is not None:  # an empty review owns no hashes either
        hash_offsets = np.concatenate([[0], np.cumsum(np.diff(split.hash_offsets)[keep])]).astype(np.int64)
    return EncodedSplit(split.ids, offsets, split.labels[keep], split.hashes, hash_offsets), keep


# ---------------------------------------------------------------- predicting
def predict_texts(run_dir: Path, texts: Sequence[str], *, checkpoint: str = "best", device: str | None = None,
                  batch_size: int | None = None) -> tuple[np.ndarray, LabelSpace]:
    """Class probabilities [N, K] of each text, in input order, as `sentiment eval` computes them, and the
    run's label space (column k is the probability of label_space.names[k]); rows of NaN for texts without
    a single token (empty rows), which are not scored."""
    from sentiment.inference.runtime import load_trained

    run = load_trained(run_dir, checkpoint, device)
    probs = score_texts(run.model, texts, encoding_of(run), run.label_space,
                        batch_size=batch_size or run.cfg.train.eval_batch_size, device=run.device)
    return probs, run.label_space


def score_texts(model: Any, texts: Sequence[str], enc: Encoding, space: LabelSpace, *, batch_size: int,
                device: Any = "cpu", workers: int | None = None, allow_all_empty: bool = False) -> np.ndarray:
    """Class probabilities [N, K] of texts under `model` (a SentimentRNN, or anything called as model(ids,
    lengths) -> logits, e.g. an exported model); NaN rows for texts without a token. Raises when every text
    is empty, unless allow_all_empty (a chunk of a longer stream: all NaN then)."""
    from sentiment.inference.evaluate import predict_logits

    split, keep = drop_empty(encode_texts(texts, enc))
    if not keep.any():
        if allow_all_empty:
            return np.full((len(texts), space.num_classes), np.nan)
        raise SentimentError(f"nothing to predict: {'the review is' if len(texts) == 1 else 'every review is'} "
                             "empty (no words)")
    logits = predict_logits(model, split, batch_size=batch_size, device=device, max_len=enc.max_len,
                            truncate=enc.truncate, workers=workers)
    probs = np.full((len(texts), space.num_classes), np.nan)
    probs[keep] = space.probabilities(logits)  # as evaluate() computes them
    return probs


@dataclass
class Predictor:
    """A loaded run or exported model, ready to score texts chunk by chunk (`predict` streams its input)."""

    model: Any
    enc: Encoding
    space: LabelSpace
    batch_size: int
    device: Any = "cpu"
    workers: int | None = None

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """score_texts of one chunk; NaN rows (all of them, if need be) for texts without a token."""
        return score_texts(self.model, texts, self.enc, self.space, batch_size=self.batch_size, device=self.device,
                           workers=self.workers, allow_all_empty=True)


def load_predictor(run_dir: Path, *, checkpoint: str = "best", device: str | None = None,
                   batch_size: int | None = None) -> Predictor:
    """What predict_texts scores a run with, loaded once (an exported model's: exported.load_exported_predictor)."""
    from sentiment.inference.runtime import load_trained

    run = load_trained(run_dir, checkpoint, device)
    return Predictor(run.model, encoding_of(run), run.label_space, batch_size or run.cfg.train.eval_batch_size,
                     run.device)


def iter_lines(stream: Any, name: str) -> Iterator[str]:
    """Reviews from a binary stream, one per line, as read_stream reads a whole one (strict UTF-8, a BOM
    dropped, lines cut at \\n or \\r\\n only, NUL or a byte that is not UTF-8: an error naming the line), but
    line by line: a caller can answer the first lines before the last are read."""
    for number, raw in enumerate(iter(stream.readline, b""), 1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r") and raw.endswith(b"\n"):
            line = line[:-1]
        if b"\0" in line:
            raise SentimentError(f"{name}: line {number} has a NUL byte: this is a binary (or UTF-16) file, not UTF-8 text")
        try:
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise SentimentError(f"{name}: line {number} is not valid UTF-8 (byte {line[e.start]:#04x} at offset "
                                 f"{e.start} of the line); save the file as UTF-8") from None


def check_text_file(path: Path, block: int = 1 << 20) -> None:
    """The checks read_texts makes of a plain-text file, in blocks, before it is streamed: a NUL byte anywhere
    (a binary file) first, then the first line that is not UTF-8; each an error naming the line. Streaming
    then answers no line of a file that turns out not to be text."""
    lines = 0
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(block), b""):
            nul = data.find(b"\0")
            if nul >= 0:
                line = lines + data.count(b"\n", 0, nul) + 1
                raise SentimentError(f"{path}: line {line} has a NUL byte: this is "
                                     "a binary (or UTF-16) file, not UTF-8 text")
            lines += data.count(b"\n")
        f.seek(0)
        lines, rest = 0, b""
        for data in iter(lambda: f.read(block), b""):
            data = rest + data
            end = data.rfind(b"\n") + 1  # whole lines only: a character may straddle two blocks
            whole, rest = data[:end], data[end:]
            _check_utf8(whole, lines, path)
            lines += whole.count(b"\n")
        _check_utf8(rest, lines, path)


def _check_utf8(data: bytes, lines_before: int, path: Path) -> None:
    try:
        data.decode("utf-8")  # a BOM is valid UTF-8 too
    except UnicodeDecodeError as e:
        line = lines_before + data.count(b"\n", 0, e.start) + 1
        raise SentimentError(f"{path}: line {line} is not valid UTF-8 (byte {data[e.start]:#04x}); save the file as "
                             "UTF-8") from None


def chunked(texts: Iterator[str], first: int = 1000, most: int = 10_000) -> Iterator[list[str]]:
    """Lists of consecutive texts: `first` of them, then twice as many each time up to `most`. The first
    answers come soon; later chunks are big enough to keep the encoding workers busy; memory stays bounded."""
    size, chunk = first, []
    for text in texts:
        chunk.append(text)
        if len(chunk) >= size:
            yield chunk
            chunk, size = [], min(most, size * 2)
    if chunk:
        yield chunk


def prediction_rows(probs: np.ndarray, space: LabelSpace, threshold: float | None = None) -> list[dict[str, Any]]:
    """One dict per input: the label and every class's probability (two classes also keep `probability`,
    of the positive class names[1]), or an error for a skipped row. threshold: two classes only, the
    probability of the positive class from which a row gets it."""
    if threshold is not None and not space.binary:
        raise SentimentError(f"--threshold is for two-class runs; this run has {space.num_classes} classes "
                             f"({', '.join(space.names)}) and predicts the most probable one")
    rows: list[dict[str, Any]] = []
    for p in probs:
        if np.isnan(p[0]):
            rows.append({"error": "empty text: skipped"})
            continue
        if space.binary:
            k = int(p[1] >= (0.5 if threshold is None else threshold))
        else:
            k = int(np.argmax(p))
        row: dict[str, Any] = {"label": space.names[k], "probs": {n: float(v) for n, v in zip(space.names, p)}}
        if space.binary:
            row["probability"] = float(p[1])
        rows.append(row)
    return rows
