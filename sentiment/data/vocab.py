"""The vocabulary: the most frequent training tokens plus `<pad>` and `<unk>`, saved as plain JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from sentiment.atomic import atomic_write_text
from sentiment.errors import SentimentError

PAD = "<pad>"
UNK = "<unk>"


class Vocab:
    """Token <-> id. Id 0 is padding and id 1 unknown, so a zero-filled tensor is all padding."""

    def __init__(self, itos: Sequence[str], counts: Sequence[int] | None = None):
        if list(itos[:2]) != [PAD, UNK]:
            raise SentimentError(f"a vocab must start with {PAD!r} and {UNK!r}")
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise SentimentError("vocab has duplicate tokens")
        # corpus frequency of each entry (0 for specials): for GloVe coverage of corpus tokens
        self.counts = list(counts) if counts is not None else [0] * len(self.itos)
        self.pad_index = 0
        self.unk_index = 1

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get, unk = self.stoi.get, self.unk_index
        return [get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"itos": self.itos, "counts": self.counts}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["itos"], data.get("counts"))
        except FileNotFoundError:
            raise SentimentError(f"vocab file {path} not found") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SentimentError(f"vocab file {path} is corrupt ({e})") from None


def build_vocab(tokens: Sequence[str], counts: np.ndarray, max_size: int | None = None, min_freq: int = 1) -> Vocab:
    """Vocab from a token table and each token's count in the training split.

    Ties in frequency are broken by the token string, so the vocab never depends on file order.
    """
    counts = np.asarray(counts)
    keep = np.flatnonzero(counts >= max(min_freq, 1))
    if max_size is not None and len(keep) > max_size:
        # only tokens at least as frequent as the max_size-th most frequent can make the cut (ties included,
        # as the token string breaks them): sorting those instead of all of IMDB's ~80k types saves ~0.15 s
        threshold = np.partition(counts[keep], len(keep) - max_size)[len(keep) - max_size]
        keep = keep[counts[keep] >= threshold]
    # sort by count descending, then by token
    freq = counts.tolist()
    order = sorted(keep.tolist(), key=lambda i: (-freq[i], tokens[i]))
    if max_size is not None:
        order = order[:max_size]
    specials = {PAD, UNK}
    order = [i for i in order if tokens[i] not in specials]
    return Vocab([PAD, UNK] + [tokens[i] for i in order], [0, 0] + [int(counts[i]) for i in order])


def extend_vocab(vocab: Vocab, words: Sequence[str], limit: int) -> Vocab:
    """The vocab with up to `limit` of `words` it lacks appended in their order, each counted 0 (they were
    not seen in training). For GloVe's words, which its file lists most frequent first."""
    if limit <= 0:
        return vocab
    known = set(vocab.stoi)
    extra: list[str] = []
    for word in words:
        if word not in known:  # a word repeated in the file (GloVe files can repeat one) is added once
            known.add(word)
            extra.append(word)
            if len(extra) == limit:
                break
    return Vocab(vocab.itos + extra, vocab.counts + [0] * len(extra))


def table_to_vocab_ids(tokens: Sequence[str], vocab: Vocab) -> np.ndarray:
    """A lookup array mapping ids of a token table to vocab ids (unknown -> <unk>), for numpy encoding."""
    get, unk = vocab.stoi.get, vocab.unk_index
    return np.fromiter((get(t, unk) for t in tokens), dtype=np.int32, count=len(tokens))
