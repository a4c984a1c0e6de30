"""Fingerprints of data content: a hash of each text (as its tokens) and a digest of each split's texts and
labels. A run stores its splits' digests (runs.write_data_fingerprints) and eval and resume compare them, so
that data edited after training (a label flipped, a review rewritten) is refused instead of scored as if it
were the same. text_hashes also lets a later step prove that no validation or test text is among the texts
it trains on (pretraining on unlabeled text): compare the hashes of both sides.

A text is hashed as the tokens the run sees (after cleaning, tokenizing and lowercasing as configured), so
two texts that differ only in white space are the same text, and a fingerprint does not change with the
order in which a token table happened to be built.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: every power is distinct mod 2**64


def token_hashes(tokens: list[str]) -> np.ndarray:
    """A 64-bit hash of each token string (blake2b: the same on every machine and Python run)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                       "little") for t in tokens), dtype=np.uint64, count=len(tokens))


def text_hashes(tokens: list[str], ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit hash of each row's token sequence (rows: which rows of ids/offsets; default all): a
    polynomial in the tokens' hashes, position by position, mixed with the length. Vectorised over blocks
    of rows, so that IMDB's 13M tokens never need more than a few MB at once."""
    rows = np.arange(len(offsets) - 1) if rows is None else np.asarray(rows, dtype=np.int64)
    table = token_hashes(tokens)
    out = np.zeros(len(rows), np.uint64)
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = rows[start:start + _BLOCK_ROWS]
        out[start:start + len(block)] = _hash_rows(table, ids, offsets[block], offsets[block + 1])
    return out


_BLOCK_ROWS = 2048


def _hash_rows(table: np.ndarray, ids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    lengths = (ends - starts).astype(np.int64)
    new_offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    flat = ids[np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])]
    position = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, _MULTIPLIER, np.uint64))  # wraps mod 2**64
    with np.errstate(over="ignore"):
        terms = table[flat] * powers[position]
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
        return (sums[new_offsets[1:]] - sums[new_offsets[:-1]]) ^ (lengths.astype(np.uint64) * _MULTIPLIER)


def split_fingerprint(hashes: np.ndarray, labels: np.ndarray, names: tuple[str, ...] | list[str]) -> str:
    """The digest of one split: its texts' hashes in order and each row's label by name."""
    h = hashlib.sha256()
    h.update(np.asarray(hashes, dtype="<u8").tobytes())
    h.update(np.asarray(labels, dtype="<i8").tobytes())
    h.update(json.dumps(list(names)).encode())
    return h.hexdigest()


def data_fingerprints(tokens: list[str], ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                      splits: dict[str, np.ndarray], names: tuple[str, ...],
                      sources: dict[str, str]) -> dict[str, dict]:
    """{split: {"rows", "sha256", "source"}} for the splits of a source (rows index ids/offsets/labels)."""
    out = {}
    for name, rows in splits.items():
        rows = np.asarray(rows, dtype=np.int64)
        out[name] = {"rows": int(len(rows)), "source": sources.get(name, ""),
                     "sha256": split_fingerprint(text_hashes(tokens, ids, offsets, rows), labels[rows], names)}
    return out
