"""sentiment.data.batching: truncation, padding collation, and the length-bucketed batch sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sentiment.data.batching import BucketBatchSampler, EncodedSplit, collate, truncate


def make_split(lengths: list[int], labels: list[int] | None = None) -> EncodedSplit:
    """Review i is ids 100*i+1, 100*i+2, ... (never 0, so padding is recognisable)."""
    rows = [np.arange(1, n + 1, dtype=np.int32) + 100 * i for i, n in enumerate(lengths)]
    ids = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if labels is None:
        labels = [i % 2 for i in range(len(lengths))]
    return EncodedSplit(ids=ids.astype(np.int32), offsets=offsets, labels=np.array(labels, dtype=np.int8))


def varied_lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    # IMDB-like: long-tailed review lengths
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(5.3, 0.7, size=n).astype(np.int64), 5, 2500)


# --- truncate ---------------------------------------------------------------------------------------


IDS = np.arange(20)


def test_truncate_short_or_unlimited_is_unchanged():
    for mode in ("head", "tail", "head+tail"):
        assert truncate(IDS, 20, mode).tolist() == IDS.tolist()
        assert truncate(IDS, 50, mode).tolist() == IDS.tolist()
        assert truncate(IDS, None, mode).tolist() == IDS.tolist()


def test_truncate_head():
    assert truncate(IDS, 5, "head").tolist() == [0, 1, 2, 3, 4]


def test_truncate_tail():
    assert truncate(IDS, 5, "tail").tolist() == [15, 16, 17, 18, 19]


def test_truncate_head_plus_tail():
    # 8 // 4 = 2 from the head, the remaining 6 from the tail
    assert truncate(IDS, 8, "head+tail").tolist() == [0, 1, 14, 15, 16, 17, 18, 19]
    # 10 // 4 = 2 head, 8 tail
    assert truncate(IDS, 10, "head+tail").tolist() == [0, 1, 12, 13, 14, 15, 16, 17, 18, 19]
    # below 4 the head share is 0: all tail
    assert truncate(IDS, 3, "head+tail").tolist() == [17, 18, 19]


@pytest.mark.parametrize("max_len", [1, 2, 4, 7, 13, 19])
def test_truncate_head_plus_tail_general(max_len: int):
    ids = np.arange(1000, 1020)
    out = truncate(ids, max_len, "head+tail")
    head = max_len // 4
    assert len(out) == max_len
    assert out[:head].tolist() == ids[:head].tolist()
    assert out[head:].tolist() == ids[len(ids) - (max_len - head):].tolist()


def test_truncate_is_the_default_head_plus_tail():
    assert truncate(IDS, 8).tolist() == truncate(IDS, 8, "head+tail").tolist()


# --- collate ----------------------------------------------------------------------------------------


def test_collate_pads_and_reports_lengths():
    split = make_split([3, 5, 1, 4], labels=[1, 0, 1, 1])
    ids, lengths, labels = collate(split, [1, 2, 3], pad_index=0)
    assert ids.dtype == torch.int64 and lengths.dtype == torch.int64 and labels.dtype == torch.int64
    assert ids.shape == (3, 5)  # as long as the longest review in the batch
    assert lengths.tolist() == [5, 1, 4]
    assert ids.tolist() == [
        [101, 102, 103, 104, 105],
        [201, 0, 0, 0, 0],
        [301, 302, 303, 304, 0],
    ]
    assert labels.tolist() == [0, 1, 1]


def test_collate_uses_the_pad_index():
    split = make_split([2, 4])
    ids, lengths, _ = collate(split, [0, 1], pad_index=7)
    assert ids[0].tolist() == [1, 2, 7, 7]
    assert lengths.tolist() == [2, 4]


def test_collate_keeps_index_order_and_accepts_numpy_indices():
    split = make_split([2, 3, 4], labels=[0, 1, 0])
    ids, lengths, labels = collate(split, np.array([2, 0]))
    assert ids[:, 0].tolist() == [201, 1]
    assert lengths.tolist() == [4, 2]
    assert labels.tolist() == [0, 0]


@pytest.mark.parametrize("mode", ["head", "tail", "head+tail"])
def test_collate_truncates(mode: str):
    split = make_split([10, 3])
    ids, lengths, _ = collate(split, [0, 1], max_len=6, mode=mode)
    assert ids.shape == (2, 6)
    assert lengths.tolist() == [6, 3]
    row = np.arange(1, 11)
    assert ids[0].tolist() == truncate(row, 6, mode).tolist()
    assert ids[1].tolist() == [1 + 100, 2 + 100, 3 + 100, 0, 0, 0]


def test_collate_empty_review_has_length_one_of_padding():
    # an empty review would break pack_padded_sequence (length 0); it becomes one pad position
    split = make_split([0, 2])
    ids, lengths, _ = collate(split, [0, 1])
    assert lengths.tolist() == [1, 2]
    assert ids[0].tolist() == [0, 0]


def test_encoded_split_lengths():
    split = make_split([3, 10, 0, 7])
    assert len(split) == 4
    assert split.lengths().tolist() == [3, 10, 0, 7]
    assert split.lengths(5).tolist() == [3, 5, 0, 5]


# --- BucketBatchSampler -----------------------------------------------------------------------------


def flat(batches) -> list[int]:
    return [int(i) for b in batches for i in b]


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("n, bs", [(1000, 32), (97, 10), (5, 8), (64, 64)])
def test_every_index_exactly_once(bucket: bool, n: int, bs: int):
    lengths = varied_lengths(n)
    sampler = BucketBatchSampler(lengths, bs, seed=3, pool_batches=4, bucket=bucket)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(n))
        assert all(1 <= len(b) <= bs for b in batches)
        assert len(batches) == len(sampler) == math.ceil(n / bs)
        # pools hold a whole number of batches, so only the very last batch can be partial
        assert sum(len(b) < bs for b in batches) == (n % bs != 0)


def test_same_seed_and_epoch_give_the_same_batches():
    lengths = varied_lengths(500)
    a = BucketBatchSampler(lengths, 16, seed=7)
    b = BucketBatchSampler(lengths, 16, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    # and iterating twice gives the same again (no hidden state)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_different_epoch_or_seed_gives_a_different_order():
    lengths = varied_lengths(500)
    s = BucketBatchSampler(lengths, 16, seed=7)
    s.set_epoch(0)
    e0 = [x.tolist() for x in s]
    s.set_epoch(1)
    e1 = [x.tolist() for x in s]
    assert e0 != e1
    assert {tuple(sorted(b)) for b in e0} != {tuple(sorted(b)) for b in e1}  # different groupings too
    other = BucketBatchSampler(lengths, 16, seed=8)
    assert [x.tolist() for x in other] != e0


def padding_share(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padded positions among all positions computed over."""
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return 1.0 - real / total if total else 0.0


def test_bucketing_cuts_padding():
    lengths = varied_lengths(2000)
    bucketed = BucketBatchSampler(lengths, 32, seed=0, pool_batches=50, bucket=True)
    plain = BucketBatchSampler(lengths, 32, seed=0, bucket=False)
    share_b = padding_share(lengths, bucketed.batches())
    share_p = padding_share(lengths, plain.batches())
    assert share_p > 0.3  # random batches of long-tailed lengths are mostly padding
    assert share_b < share_p / 5
    # within a pool, batches are contiguous in length order: each batch's length range is narrow
    spans = [int(lengths[b].max() - lengths[b].min()) for b in bucketed.batches()]
    assert np.median(spans) < np.median([int(lengths[b].max() - lengths[b].min()) for b in plain.batches()]) / 5


def test_bucketed_batches_are_shuffled_across_lengths():
    # the batch order must not be sorted by length (that would bias training)
    lengths = varied_lengths(2000)
    batches = BucketBatchSampler(lengths, 32, seed=0, pool_batches=100).batches()
    means = [float(lengths[b].mean()) for b in batches]
    assert means != sorted(means) and means != sorted(means, reverse=True)


@pytest.mark.parametrize("n, bs", [(1000, 32), (330, 30), (31, 30)])
def test_shards_are_disjoint_and_cover_all_batches(n: int, bs: int):
    lengths = varied_lengths(n)
    full = [b.tolist() for b in BucketBatchSampler(lengths, bs, seed=5, pool_batches=3)]
    shards = []
    for rank in range(2):
        s = BucketBatchSampler(lengths, bs, seed=5, pool_batches=3, num_replicas=2, rank=rank)
        shard = [b.tolist() for b in s]
        assert len(shard) == len(s)
        shards.append(shard)
    assert not set(flat(shards[0])) & set(flat(shards[1]))
    # every rank gets the same number of batches: the unsharded order, with its odd last batch dropped
    assert len(shards[0]) == len(shards[1]) == len(full) // 2
    kept = full[: len(full) - len(full) % 2]
    assert [b for pair in zip(shards[0], shards[1]) for b in pair] == kept


def test_without_shuffle_batches_are_length_sorted():
    lengths = varied_lengths(300)
    s = BucketBatchSampler(lengths, 25, shuffle=False)
    batches = list(s)
    order = flat(batches)
    assert sorted(order) == list(range(300))
    assert np.all(np.diff(lengths[order]) >= 0)
    assert len(batches) == len(s) == 12
    # independent of seed and epoch
    other = BucketBatchSampler(lengths, 25, shuffle=False, seed=99)
    other.set_epoch(4)
    assert [b.tolist() for b in other] == [b.tolist() for b in batches]


def test_without_shuffle_and_without_bucket_keeps_file_order():
    lengths = varied_lengths(50)
    batches = list(BucketBatchSampler(lengths, 8, shuffle=False, bucket=False))
    assert flat(batches) == list(range(50))


def test_len_with_replicas():
    lengths = varied_lengths(100)
    # 100 / 30 -> 4 batches: rank 0 gets 0 and 2, rank 1 gets 1 and 3; with 3 replicas one each (the 4th is
    # dropped, so that no rank waits for another at a step it doesn't take)
    assert [len(BucketBatchSampler(lengths, 30, num_replicas=2, rank=r)) for r in range(2)] == [2, 2]
    assert [len(BucketBatchSampler(lengths, 30, num_replicas=3, rank=r)) for r in range(3)] == [1, 1, 1]
    for r in range(3):
        s = BucketBatchSampler(lengths, 30, num_replicas=3, rank=r)
        assert len(list(s)) == len(s)


def test_empty_and_bad_batch_size():
    assert list(BucketBatchSampler(np.zeros(0, np.int64), 4)) == []
    assert len(BucketBatchSampler(np.zeros(0, np.int64), 4)) == 0
    with pytest.raises(ValueError):
        BucketBatchSampler(np.ones(3), 0)
