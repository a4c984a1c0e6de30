"""Hashed word n-grams, the data side of the n-gram branch (sentiment/ngrams.py is the model side): token
hashes, each text's bag of n-gram bucket ids with counts, a batch's bags, and the per-bucket weighting statistics.

- Tokens are hashed as STRINGS (64-bit FNV-1a over their UTF-8 bytes), not as vocabulary ids: a rare word the
  vocabulary maps to <unk> keeps its own features. `hash_tokens` is the one function training (the token
  table in prepare), evaluation and prediction (predict.encode_texts) use, so a text gets the same n-gram
  ids everywhere; Python's randomised hash() is never used.
- An n-gram's id combines its tokens' hashes (multiply, xor), is mixed (murmur3's fmix64, salted by the
  order) and taken modulo `buckets`. N-grams never cross texts.
- The n-gram ids are computed outside the torch graph (numpy) and passed in as (ids, offsets, counts):
  what an exported model takes as its second input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch

from sentiment.errors import SentimentError

if TYPE_CHECKING:
    from sentiment.data.batching import EncodedSplit

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
COMBINE = np.uint64(0x9E3779B97F4A7C15)  # the golden-ratio multiplier: spreads the previous n-gram's bits
ORDER_SALT = [np.uint64((0x5851F42D4C957F2D * k) & 0xFFFFFFFFFFFFFFFF) for k in range(16)]
WEIGHTINGS = ("none", "tfidf", "nb")
NB_ALPHA = 1.0  # NBSVM's smoothing


# hash_tokens' values, recorded with every run and export (sentiment.data.tokenize.text_pipeline_version).
# 1: 64-bit FNV-1a of the UTF-8 bytes (the only one so far).
TOKEN_HASH_VERSION = 1
READABLE_TOKEN_HASH_VERSIONS = (1,)
# Bytes of each token folded in numpy, one step per byte for all tokens at once; the bytes of longer tokens are
# folded in Python after (~0.1 us a byte), so a 100,000-byte token costs milliseconds, not 100,000 numpy steps.
_VECTOR_BYTES = 64


def hash_tokens(tokens: Sequence[str]) -> np.ndarray:
    """64-bit FNV-1a of each token's UTF-8 bytes, uint64 [len(tokens)]. Vectorised over the tokens: step j
    folds byte j of every token at least j+1 bytes long (tokens sorted longest first, so those are a prefix),
    for the first _VECTOR_BYTES bytes; the rest of a longer token is folded by _fnv1a_continue."""
    n = len(tokens)
    out = np.full(n, FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return out
    encoded = [t.encode("utf-8", "surrogatepass") for t in tokens]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    flat = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
    starts = np.cumsum(lengths) - lengths
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths, sorted_starts = lengths[order], starts[order]
    h = out[order]
    descending = -sorted_lengths  # ascending, for searchsorted
    for j in range(min(int(sorted_lengths[0]), _VECTOR_BYTES)):
        m = int(np.searchsorted(descending, -j, side="left"))  # tokens longer than j bytes
        h[:m] ^= flat[sorted_starts[:m] + j]
        h[:m] *= FNV_PRIME  # wraps modulo 2**64, as FNV wants
    out[order] = h
    for i in np.flatnonzero(lengths > _VECTOR_BYTES).tolist():
        out[i] = _fnv1a_continue(int(out[i]), encoded[i][_VECTOR_BYTES:])
    return out


def _fnv1a_continue(h: int, data: bytes) -> int:
    """FNV-1a's state h after folding in `data` (Python ints: linear in len(data), no per-byte numpy call)."""
    prime, mask = int(FNV_PRIME), 0xFFFFFFFFFFFFFFFF
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return h


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def ngram_ids(hashes: np.ndarray, offsets: np.ndarray, n: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids of every 1..n-gram of the texts whose token hashes are hashes[offsets[i]:offsets[i+1]], and
    the text each belongs to (both int64). N-grams stop at a text's end."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    lengths = np.diff(np.asarray(offsets, dtype=np.int64))
    text_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    ids, texts = [], []
    combined = hashes
    for k in range(1, n + 1):
        if k > 1:
            if len(combined) <= 1:
                break
            # combined[i] covers tokens i..i+k-1
            combined = (combined[:-1] * COMBINE) ^ hashes[k - 1:]
            within = text_of[: len(combined)] == text_of[k - 1:]
        else:
            within = slice(None)
        bucket = (_fmix64(combined ^ ORDER_SALT[k]) % np.uint64(buckets)).astype(np.int64)
        ids.append(bucket[within])
        texts.append(text_of[: len(combined)][within])
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ids), np.concatenate(texts)


def bags(hashes: np.ndarray, offsets: np.ndarray, n: int, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each text's distinct n-gram ids (ascending) with their counts: (ids, bag offsets [B], counts), the
    input of nn.EmbeddingBag. A text's bag depends on that text alone."""
    ids, texts = ngram_ids(hashes, offsets, n, buckets)
    keys, counts = np.unique(texts * buckets + ids, return_counts=True)
    texts, ids = np.divmod(keys, buckets)
    bag_offsets = np.searchsorted(texts, np.arange(len(offsets) - 1), side="left").astype(np.int64)
    return ids, bag_offsets, counts.astype(np.float32)


@dataclass(frozen=True)
class NgramSpec:
    """What the branch reads: 1..n-grams hashed into `buckets`, of the whole text or the truncated one."""

    n: int
    buckets: int
    whole_text: bool


class NgramBatch(NamedTuple):
    """A batch's n-grams as the branch takes them: distinct ids, where each text's bag starts, and counts."""

    ids: torch.Tensor  # int64 [N]
    offsets: torch.Tensor  # int64 [B]
    counts: torch.Tensor  # float32 [N]

    def to(self, device: torch.device | str) -> "NgramBatch":
        return NgramBatch(*(t.to(device, non_blocking=True) for t in self))


def _rows(split: "EncodedSplit", indices: np.ndarray, spec: NgramSpec, max_len: int | None,
          mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The token hashes the branch reads for these rows, laid end to end, and their offsets."""
    from sentiment.data.batching import truncate

    if split.hashes is None:
        raise SentimentError("this model has an n-gram branch but its data carries no token hashes "
                             "(prepare_data(token_hashes=True) / an Encoding with ngrams)")
    offs = split.hash_offsets
    rows = [split.hashes[offs[i]:offs[i + 1]] for i in np.asarray(indices, dtype=np.int64).tolist()]
    if not spec.whole_text:
        rows = [truncate(r, max_len, mode) for r in rows]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = np.concatenate(rows) if rows else np.zeros(0, np.uint64)
    return flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def collate_ngrams(split: "EncodedSplit", indices: Sequence[int] | np.ndarray, spec: NgramSpec,
                   max_len: int | None = None, mode: str = "head+tail") -> NgramBatch:
    """The n-grams of rows `indices` of the split (max_len and mode cut them as collate cuts the ids, unless
    the branch reads the whole text)."""
    flat, offsets = _rows(split, np.asarray(indices), spec, max_len, mode)
    ids, bag_offsets, counts = bags(flat, offsets, spec.n, spec.buckets)
    return NgramBatch(torch.from_numpy(ids), torch.from_numpy(bag_offsets), torch.from_numpy(counts))


def ngram_statistics(split: "EncodedSplit", spec: NgramSpec, weighting: str, num_classes: int,
                     max_len: int | None = None, mode: str = "head+tail", chunk: int = 4096) -> np.ndarray:
    """The per-bucket scale [buckets] (float32) for `weighting`, from the split's rows (the labeled training
    rows): 0 for buckets no training text has; else 1 (none), scikit-learn's smoothed idf ln((1+n)/(1+df)) + 1
    (tfidf), or the Naive Bayes log-count ratio log((p/|p|1) / (q/|q|1)) with p = alpha + the number of
    positive texts holding the n-gram, q the same over negative texts, the norms over the buckets seen (nb)."""
    if weighting not in WEIGHTINGS:
        raise SentimentError(f"model.ngrams.weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if weighting == "nb" and num_classes != 2:
        raise SentimentError(f"model.ngrams.weighting nb is for two classes; this data has {num_classes} "
                             "(use tfidf or none)")
    df = np.zeros(spec.buckets, np.float64)
    positive = np.zeros(spec.buckets, np.float64)
    labels = np.asarray(split.labels, dtype=np.int64)
    for start in range(0, len(split), chunk):
        rows = np.arange(start, min(start + chunk, len(split)))
        flat, offsets = _rows(split, rows, spec, max_len, mode)
        ids, bag_offsets, _ = bags(flat, offsets, spec.n, spec.buckets)
        text_of = np.searchsorted(bag_offsets, np.arange(len(ids)), side="right") - 1
        df += np.bincount(ids, minlength=spec.buckets)
        if weighting == "nb":
            positive += np.bincount(ids, weights=(labels[rows][text_of] == 1).astype(np.float64),
                                    minlength=spec.buckets)
    seen = df > 0
    scale = np.zeros(spec.buckets, np.float64)
    if weighting == "none":
        scale[seen] = 1.0
    elif weighting == "tfidf":
        scale[seen] = np.log((1.0 + len(split)) / (1.0 + df[seen])) + 1.0
    else:
        p = NB_ALPHA + positive[seen]
        q = NB_ALPHA + (df[seen] - positive[seen])
        scale[seen] = np.log(p / p.sum()) - np.log(q / q.sum())
    return scale.astype(np.float32)
