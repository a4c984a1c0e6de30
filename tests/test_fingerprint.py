"""sentiment.data.fingerprint: a text's hash does not depend on the token table it was numbered in, and a
split's digest changes with any text or label (what eval and resume compare, and pretraining will use)."""

from __future__ import annotations

import numpy as np

from sentiment.data import fingerprint
from sentiment.data.fingerprint import split_fingerprint, text_hashes


def encode(texts: list[list[str]], table: dict[str, int] | None = None):
    table = {} if table is None else table
    ids = [table.setdefault(t, len(table)) for text in texts for t in text]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64)
    return list(table), np.asarray(ids, np.int32), offsets


TEXTS = [["a", "good", "film"], [], ["film", "a", "good"], ["bad"], ["a", "good", "film"]]


def test_a_texts_hash_is_its_tokens_not_their_ids():
    tokens, ids, offsets = encode(TEXTS)
    other_tokens, other_ids, other_offsets = encode(TEXTS, {"zzz": 0, "bad": 1})  # another numbering
    assert not np.array_equal(ids, other_ids)
    h = text_hashes(tokens, ids, offsets)
    assert np.array_equal(h, text_hashes(other_tokens, other_ids, other_offsets))
    assert h[0] == h[4]  # the same text
    assert len(set(h[:4].tolist())) == 4  # order matters; the empty text has its own hash


def test_rows_and_blocks_do_not_change_a_hash(monkeypatch):
    rng = np.random.default_rng(0)
    texts = [[f"w{int(x)}" for x in rng.integers(0, 50, rng.integers(0, 30))] for _ in range(300)]
    tokens, ids, offsets = encode(texts)
    whole = text_hashes(tokens, ids, offsets)
    monkeypatch.setattr(fingerprint, "_BLOCK_ROWS", 7)
    rows = np.array([299, 3, 150, 3])
    assert np.array_equal(text_hashes(tokens, ids, offsets, rows), whole[rows])


def test_a_split_digest_changes_with_a_text_or_a_label():
    tokens, ids, offsets = encode(TEXTS)
    h = text_hashes(tokens, ids, offsets)
    labels = np.array([1, 0, 1, 0, 1])
    base = split_fingerprint(h, labels, ("neg", "pos"))
    assert base == split_fingerprint(h.copy(), labels.copy(), ["neg", "pos"])
    assert base != split_fingerprint(h, 1 - labels, ("neg", "pos"))
    assert base != split_fingerprint(h, labels, ("bad", "good"))
    changed = encode([["a", "great", "film"], *TEXTS[1:]])
    assert base != split_fingerprint(text_hashes(*changed), labels, ("neg", "pos"))
