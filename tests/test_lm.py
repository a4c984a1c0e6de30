"""The language-model objective, its output layers, its window stream and the pretraining text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sentiment.data.batching import EncodedSplit
from sentiment.errors import SentimentError
from sentiment.training.lm import (LanguageModel, LanguageModelObjective, WindowStream, held_out_losses,
                                   held_out_windows, perplexity, pretraining_text, text_fingerprints)

V = 24
CPU = torch.device("cpu")


def chain_corpus(n: int, seed: int = 0) -> np.ndarray:
    """Tokens 2..V-1 where the next token is a fixed permutation of the current one (so the previous one is its
    inverse: another rule)."""
    rng = np.random.default_rng(seed)
    successor = np.zeros(V, np.int64)
    successor[2:] = rng.permutation(np.arange(2, V))
    assert not np.array_equal(successor[successor[2:]], np.arange(2, V))  # not an involution: the rules differ
    tokens = [2]
    for _ in range(n - 1):
        tokens.append(int(successor[tokens[-1]]))
    return np.array(tokens)


def train_lm(model: LanguageModel, tokens: np.ndarray, steps: int, bptt: int = 12, lr: float = 0.02) -> None:
    torch.manual_seed(0)
    stream = WindowStream(tokens, bptt, 32, seed=0, device=CPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    objective, done, epoch = LanguageModelObjective(), 0, 0
    while done < steps:
        for i in range(stream.set_epoch(epoch)):
            loss, _ = objective(model, stream.batch(i))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        epoch += 1


def tiny_model(output: str = "adaptive", layers: int = 1, rnn: str = "gru") -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(V, 16, 32, layers, rnn, dropout=0.0, embed_dropout=0.0, output=output, cutoffs=[8],
                         samples=8)


@pytest.mark.parametrize("output", ["adaptive", "sampled"])
def test_each_direction_learns_its_own_neighbour(output):
    tokens = chain_corpus(6000)
    model = tiny_model(output)
    train_lm(model, tokens, 150)
    windows = held_out_windows(chain_corpus(600, seed=0)[100:], 12, 40)
    ppl = {k: perplexity(v) for k, v in held_out_losses(model, windows).items()}
    assert ppl["forward"] < 1.3 and ppl["backward"] < 1.3, ppl
    # swapped: the forward stack and head asked for the previous token, the backward ones for the next
    with torch.no_grad():
        model.eval()
        rev = windows.flip(1)
        swapped = {}
        for d, seq in ((0, rev), (1, windows)):
            states = model.encode(seq[:, :-1], d)
            swapped[d] = float(model.heads[d](states.reshape(-1, states.shape[-1]), seq[:, 1:].reshape(-1)))
    assert min(swapped.values()) > math.log(4), swapped  # far from perplexity 1: each direction knows its rule only


def test_a_two_layer_forward_model_cannot_see_the_token_it_predicts():
    """Random tokens: nothing to learn, so a model that peeks (the bidirectional stack's leak) would drive its loss
    to 0; two one-direction stacks stay near log V."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, V, size=6000)
    model = tiny_model("adaptive", layers=2)
    train_lm(model, tokens, 120)
    losses = held_out_losses(model, held_out_windows(rng.integers(2, V, size=800), 12, 60))
    floor = math.log(V - 2)
    assert losses["forward"] > floor - 0.15 and losses["backward"] > floor - 0.15, (losses, floor)


def test_sampled_softmax_ties_the_output_rows_to_the_embedding():
    model = tiny_model("sampled")
    names = [n for n, _ in model.named_parameters()]
    assert "embedding.weight" in names and not any(n.endswith(".weight") and "heads" in n and "projection" not in n
                                                   for n in names), names
    assert model.heads[0].rows() is model.embedding.weight


def test_full_and_sampled_evaluate_the_same_full_softmax():
    model = tiny_model("sampled").eval()
    windows = torch.from_numpy(chain_corpus(200)[None, :13])
    head = model.heads[0]
    states = model.encode(windows[:, :-1], 0).reshape(-1, 32)
    targets = windows[:, 1:].reshape(-1)
    expected = torch.nn.functional.cross_entropy(head.project(states) @ model.embedding.weight.t() + head.bias, targets)
    assert torch.allclose(head(states, targets), expected, atol=1e-6)


def test_stream_is_a_function_of_seed_and_epoch_and_shards_by_rank():
    tokens = np.arange(5000)
    one = WindowStream(tokens, 10, 4, seed=3, device=CPU)
    n = one.set_epoch(2)
    whole = [one.batch(i).windows for i in range(n)]
    again = WindowStream(tokens, 10, 4, seed=3, device=CPU)
    again.set_epoch(2)
    assert all(torch.equal(again.batch(i).windows, whole[i]) for i in range(n))
    assert not torch.equal(whole[0], (one.set_epoch(3), one.batch(0).windows)[1])
    for w in whole:  # consecutive tokens
        assert torch.equal(w[:, 1:] - w[:, :-1], torch.ones_like(w[:, 1:]))
    ranks = [WindowStream(tokens, 10, 4, seed=3, device=CPU, num_replicas=2, rank=r) for r in (0, 1)]
    counts = [r.set_epoch(2) for r in ranks]
    assert counts[0] == counts[1] == n // 2
    for i in range(counts[0]):
        assert torch.equal(ranks[0].batch(i).windows, whole[2 * i])
        assert torch.equal(ranks[1].batch(i).windows, whole[2 * i + 1])


def split_of(texts: list[list[int]]) -> EncodedSplit:
    offsets = np.cumsum([0] + [len(t) for t in texts])
    return EncodedSplit(np.array([i for t in texts for i in t], np.int32), offsets, np.zeros(len(texts), np.int64))


def test_no_validation_or_test_text_enters_the_pretraining_stream():
    train = split_of([[2, 3, 4], [5, 6, 7, 8], [9, 9, 9]])
    unlabeled = split_of([[10, 11], [5, 6, 7, 8], [12, 13, 14]])  # [5, 6, 7, 8] is also a test text
    valid, test = split_of([[9, 9, 9]]), split_of([[5, 6, 7, 8]])
    text = pretraining_text([train, unlabeled], [valid, test], held_out_fraction=0.3, seed=0)
    used = np.concatenate([text.train, text.held_out]).tolist()
    assert sorted(used) == sorted([2, 3, 4, 10, 11, 12, 13, 14])
    assert text.dropped_held_out_texts == 3
    assert not np.isin(text_fingerprints(valid), text.fingerprints).any()
    assert not np.isin(text_fingerprints(test), text.fingerprints).any()
    assert np.isin(text_fingerprints(split_of([[2, 3, 4]])), text.fingerprints).all()


def test_too_little_text_is_one_error():
    with pytest.raises(SentimentError, match="pretrain.bptt"):
        WindowStream(np.arange(5), 10, 2, seed=0, device=CPU)
    with pytest.raises(SentimentError, match="held_out_fraction"):
        held_out_windows(np.arange(5), 10, 4)
