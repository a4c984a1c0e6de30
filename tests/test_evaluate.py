"""Scoring a split: token-budget batches, and the forked one-thread-per-process path on CPU."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from sentiment import evaluate as evaluate_mod
from sentiment.batching import EncodedSplit
from sentiment.evaluate import _deal, evaluate, predict_logits, token_budget_batches
from sentiment.model import SentimentRNN


def random_split(n: int, vocab: int, seed: int = 0, max_len: int = 400) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, size=n)
    ids = rng.integers(2, vocab, size=int(lengths.sum())).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return EncodedSplit(ids=ids, offsets=offsets, labels=rng.integers(0, 2, size=n).astype(np.int8))


@pytest.fixture
def model() -> SentimentRNN:
    torch.manual_seed(0)
    return SentimentRNN(500, 16, hidden_size=16, num_layers=2, rnn="gru", pooling="max+mean", pack="never")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_deal_gives_every_batch_once_and_balances_the_work():
    costs = [100, 90, 80, 10, 10, 10, 5, 5]
    assigned = _deal(costs, 2)
    assert sorted(b for part in assigned for b in part) == list(range(len(costs)))
    loads = [sum(costs[b] for b in part) for part in assigned]
    assert max(loads) - min(loads) <= max(costs)  # largest first, to the least loaded: within one batch
    # token-budget batches cost about the same each, so the workers end up nearly even
    even = [65_000 + 100 * (i % 7) for i in range(41)]
    loads = [sum(even[b] for b in part) for part in _deal(even, 2)]
    assert max(loads) / min(loads) < 1.06


def test_forked_workers_score_like_one_process(model, two_threads, monkeypatch):
    split = random_split(800, 500)  # ~160k tokens: above the forking threshold
    assert split.lengths().sum() >= evaluate_mod._PARALLEL_MIN_TOKENS
    forks = []
    real_get_context = multiprocessing.get_context
    monkeypatch.setattr(evaluate_mod.multiprocessing, "get_context",
                        lambda method=None: forks.append(method) or real_get_context(method))
    parallel = predict_logits(model, split, batch_size=64)
    assert forks == ["fork"]
    monkeypatch.setattr(evaluate_mod, "scoring_workers", lambda device: 1)
    serial = predict_logits(model, split, batch_size=64)
    assert len(forks) == 1
    np.testing.assert_allclose(parallel, serial, rtol=0, atol=1e-5)
    # every review got its own logit back, in the split's order (not the length-sorted batch order)
    for i in (0, 1, 399, 799):
        alone = predict_logits(model, EncodedSplit(split.ids[split.offsets[i]:split.offsets[i + 1]],
                                                   np.array([0, split.offsets[i + 1] - split.offsets[i]]),
                                                   split.labels[i:i + 1]))
        assert alone[0] == pytest.approx(parallel[i], abs=1e-5)


def test_small_inputs_are_scored_in_process(model, two_threads, monkeypatch):
    def no_fork(*args, **kwargs):
        raise AssertionError("forked for a small input")
    monkeypatch.setattr(evaluate_mod.multiprocessing, "get_context", no_fork)
    split = random_split(20, 500)
    assert predict_logits(model, split).shape == (20,)


def test_scoring_restores_training_mode(model, two_threads):
    model.train()
    metrics = evaluate(model, random_split(800, 500))
    assert model.training
    assert metrics.n == 800 and metrics.tokens == int(random_split(800, 500).lengths().sum())


def test_token_budget_batches_cover_every_review_within_budget():
    lengths = np.random.default_rng(1).integers(1, 3000, size=1000)
    batches = token_budget_batches(lengths, 256, max_tokens=65_536)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    for b in batches:
        assert len(b) <= 256
        assert len(b) == 1 or len(b) * int(lengths[b].max()) <= 65_536
