"""The extra training objectives (sentiment.training.objectives, and the loop's `extras` path): adversarial training (AT),
virtual adversarial training (VAT) and entropy minimisation; the unlabeled texts they read (IMDB train/unsup, a
file of texts), the resumable unlabeled stream, frequency-weighted embedding normalisation, the metrics
columns, bad input through the command line, and the objectives under torchrun."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sentiment.training import objectives as objectives_mod
from sentiment.data.batching import BucketBatchSampler, UnlabeledStream, collate
from sentiment.runs import LAST, RESULTS, load_checkpoint, load_labels, load_run, read_metrics
from sentiment.cli import app
from sentiment.config import (AdversarialConfig, EntropyMinimizationConfig, TrainConfig, VirtualAdversarialConfig,
                              load_config)
from sentiment.errors import SentimentError
from sentiment.data.labels import IMDB_LABELS, LabelSpace
from sentiment.model import SentimentRNN, build_model
from sentiment.training.objectives import (COLUMNS, Batch, ExtraObjectives, _replay, _rng_state, divergence, entropy,
                                  unit_perturbation)
from sentiment.data.prepare import prepare_data
from sentiment.inference.runtime import evaluate_run, load_trained
from sentiment.data.sources import load_source
from sentiment.training.train import TrainingInterrupted, seed_everything, train
from conftest import TINY_TRAINING, StopAfter, make_imdb, one_line_error, review, set_args
from test_distributed import SETTINGS, write_data

runner = CliRunner()

BINARY = LabelSpace(IMDB_LABELS)
THREE = LabelSpace(("negative", "neutral", "positive"))
# the tiny IMDB runs: no GloVe (fast), a random validation split, one tokenizer process, no test scoring
# (and the CPU: the bitwise comparisons hold there; cuDNN and mixed precision round differently)
FAST = [*TINY_TRAINING, "data.valid_split=random", "data.workers=1", "data.glove_dim=null", "model.embed_dim=16",
        "run.eval_test=false", "run.device=cpu"]
ALL_ON = ["data.unlabeled=unsup", "train.unlabeled_batch_size=8", "model.normalize_embeddings=true",
          "train.adversarial.epsilon=1.0", "train.virtual_adversarial.epsilon=1.0",
          "train.entropy_minimization.weight=0.5"]
OBJECTIVE_COLUMNS = ("train_adversarial_loss", "train_virtual_adversarial_loss", "train_entropy")


@pytest.fixture(scope="module", autouse=True)
def _own_cache():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SENTIMENT_CACHE_DIR", raising=False)  # caches live in each test's data_dir
        yield


def backward(loss: torch.Tensor, retain_graph: bool = False) -> None:
    """The loop's backward, without scaling (no accumulation, no mixed precision)."""
    loss.backward(retain_graph=retain_graph)


def tiny_model(num_outputs: int = 1, *, dropout: float = 0.0, vocab: int = 30, pooling: str = "max+mean",
               **kw) -> SentimentRNN:
    torch.manual_seed(0)
    return SentimentRNN(vocab_size=vocab, embed_dim=6, hidden_size=5, num_layers=2 if dropout else 1,
                        dropout=dropout, embed_dropout=dropout, output_dropout=dropout, pooling=pooling,
                        num_outputs=num_outputs, **kw)


def make_batch(seed: int, lengths: list[int], vocab: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, max(lengths)] right-padded with 0, and the lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(2, vocab, (n,), generator=g)
    return ids, torch.tensor(lengths)


def add_unsup(data_dir: Path, n: int = 30, seed: int = 5, texts: list[str] = ()) -> Path:
    """data_dir/aclImdb/train/unsup with n generated reviews (and `texts` after them)."""
    rng = random.Random(seed)
    folder = Path(data_dir) / "aclImdb" / "train" / "unsup"
    folder.mkdir(parents=True, exist_ok=True)
    all_texts = [review(rng, i % 2 == 0) for i in range(n)] + list(texts)
    for i, text in enumerate(all_texts):
        (folder / f"{i}_0.txt").write_text(text, encoding="utf-8")
    return folder


def config(data: Path, *extra: str):
    return load_config(None, [f"data.data_dir={data}", *FAST, *extra])


def timing_free(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# ---------------------------------------------------------------- the perturbation
def test_unit_perturbation_has_norm_one_per_review_over_its_true_length():
    g = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([7, 3, 1])
    u = unit_perturbation(g, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert float(u[b, :n].norm()) == pytest.approx(1.0, abs=1e-6)
        assert torch.all(u[b, n:] == 0)  # padding gets none
        assert torch.allclose(u[b, :n], g[b, :n] / g[b, :n].norm(), atol=1e-6)  # along g
    # a review whose gradient is zero or not finite gets no perturbation (not NaN)
    bad = torch.zeros(2, 5, 3)
    bad[1] = float("nan")
    assert torch.equal(unit_perturbation(bad, torch.tensor([5, 4])), torch.zeros(2, 5, 3))


def test_adversarial_perturbation_is_the_steepest_ascent_of_norm_epsilon():
    """r = eps * unit(g): its directional derivative (finite differences, float64) equals <g, r> = eps * sum of
    each review's ||g||, the most any direction of that per-review norm can give; random directions give less."""
    model = tiny_model(pooling="last").double().eval()  # mean pooling sums in float32
    ids, lengths = make_batch(1, [9, 5, 2])
    labels = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    x = model.embed(ids).detach().requires_grad_()

    def loss_at(e: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(model(ids, lengths, embedded=e), labels)

    (g,) = torch.autograd.grad(loss_at(x), x)
    x = x.detach()
    eps, h = 0.5, 1e-5

    def slope(r: torch.Tensor) -> float:
        with torch.no_grad():
            return float((loss_at(x + h * r) - loss_at(x - h * r)) / (2 * h))

    r = eps * unit_perturbation(g, lengths).double()
    best = eps * sum(float(g[b, :n].norm()) for b, n in enumerate(lengths.tolist()))
    assert best > 1e-4  # the loss really depends on the embeddings
    assert float((g * r).sum()) == pytest.approx(best, rel=1e-6)
    assert slope(r) == pytest.approx(best, rel=1e-5)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        d = eps * unit_perturbation(torch.randn(x.shape, generator=gen, dtype=torch.float64), lengths).double()
        assert slope(d) < 0.9 * best
    # and a finite step of norm epsilon along r raises the loss more than along any of those directions
    with torch.no_grad():
        assert float(loss_at(x + r)) > float(loss_at(x))


# ---------------------------------------------------------------- divergence, entropy, replayed dropout
def test_divergence_is_zero_for_equal_logits_and_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    for shape in ((6,), (6, 3)):
        a, b = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        assert float(divergence(a, a)) == 0.0
        assert float(divergence(a, b)) > 0
        # it is KL(p || q), not the other way round
        if len(shape) == 1:
            p, q = torch.sigmoid(a), torch.sigmoid(b)
            kl = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
        else:
            p, q = a.softmax(-1), b.softmax(-1)
            kl = (p * (p / q).log()).sum(-1)
        assert float(divergence(a, b)) == pytest.approx(float(kl.mean()), rel=1e-5)
    # the target's logits get no gradient when passed detached
    a, b = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    divergence(a.detach(), b).backward()
    assert a.grad is None and b.grad is not None


def test_entropy_of_binary_and_k_class_predictions():
    assert float(entropy(torch.zeros(5))) == pytest.approx(math.log(2))
    assert float(entropy(torch.zeros(5, 3))) == pytest.approx(math.log(3))
    assert float(entropy(torch.tensor([40.0, -40.0]))) < 1e-12
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(7, generator=gen) * 3
    assert float(entropy(z)) == pytest.approx(float(torch.distributions.Bernoulli(logits=z).entropy().mean()), rel=1e-5)
    z = torch.randn(7, 4, generator=gen) * 3
    assert float(entropy(z)) == pytest.approx(float(torch.distributions.Categorical(logits=z).entropy().mean()),
                                              rel=1e-5)


@pytest.mark.parametrize("num_outputs", [1, 3])
def test_entropy_minimization_makes_predictions_more_confident(num_outputs):
    model = tiny_model(num_outputs)
    ids, lengths = make_batch(2, [9, 7, 6, 4, 3, 2])
    with torch.no_grad():
        before = float(entropy(model(ids, lengths)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(8):
        optimizer.zero_grad()
        entropy(model(ids, lengths)).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(entropy(model(ids, lengths)))
    assert after < before - 0.01, (before, after)


def test_replay_repeats_the_dropout_masks_and_then_continues_the_generator():
    model = tiny_model(dropout=0.5).train()
    ids, lengths = make_batch(0, [9, 5, 3])
    x = model.embed(ids)
    state = _rng_state(torch.device("cpu"))
    plain = model(ids, lengths, embedded=x)
    assert not torch.equal(plain, model(ids, lengths, embedded=x))  # dropout is on: masks differ
    expected_next = torch.get_rng_state()
    with _replay(state, torch.device("cpu")):
        first = model(ids, lengths, embedded=x)
    with _replay(state, torch.device("cpu")):
        second = model(ids, lengths, embedded=x)
    assert torch.equal(first, plain) and torch.equal(second, plain)
    assert torch.equal(torch.get_rng_state(), expected_next)  # as if the replays never drew


@pytest.mark.parametrize("with_unlabeled", [True, False])
def test_vat_at_zero_perturbation_is_exactly_zero_with_dropout_on(with_unlabeled):
    """Every forward of one VAT computation shares the clean forward's dropout masks: r = 0 gives KL 0 exactly
    (on the unlabeled batch, and on the labeled one when there is no unlabeled text)."""
    model = tiny_model(dropout=0.5).train()
    ids, lengths = make_batch(0, [9, 5, 3])
    u_ids, u_lengths = make_batch(1, [8, 8, 2, 1])
    cfg = TrainConfig(virtual_adversarial=VirtualAdversarialConfig(epsilon=0.0))  # not validated: epsilon 0
    extras = ExtraObjectives(cfg, BINARY, has_unlabeled=with_unlabeled)
    unlabeled = Batch(u_ids, u_lengths) if with_unlabeled else None
    for _ in range(3):
        _, _, parts = extras.step(model, Batch(ids, lengths, torch.tensor([1, 0, 1])), unlabeled, backward)
        assert float(parts["virtual_adversarial"]) == 0.0
    # the same with a real epsilon is positive: the zero above is not a dead objective
    extras = ExtraObjectives(TrainConfig(virtual_adversarial=VirtualAdversarialConfig(epsilon=2.0)), BINARY,
                             has_unlabeled=with_unlabeled)
    _, _, parts = extras.step(model, Batch(ids, lengths, torch.tensor([1, 0, 1])), unlabeled, backward)
    assert float(parts["virtual_adversarial"]) > 0


def test_vat_target_is_the_detached_clean_prediction(monkeypatch):
    model = tiny_model(dropout=0.3).train()
    ids, lengths = make_batch(0, [9, 5, 3])
    calls = []
    real = objectives_mod.divergence

    def spy(p_logits, q_logits):
        calls.append((p_logits.requires_grad, q_logits.requires_grad))
        return real(p_logits, q_logits)

    monkeypatch.setattr(objectives_mod, "divergence", spy)
    extras = ExtraObjectives(TrainConfig(virtual_adversarial=VirtualAdversarialConfig(power_iterations=2)), BINARY,
                             has_unlabeled=True)
    extras.step(model, Batch(ids, lengths, torch.tensor([1, 0, 1])), Batch(*make_batch(1, [7, 4])), backward)
    assert len(calls) == 3  # two power iterations, then the loss
    assert all(not p and q for p, q in calls), calls


@pytest.mark.parametrize("space", [BINARY, THREE], ids=["binary", "3-class"])
@pytest.mark.parametrize("with_unlabeled", [True, False])
def test_step_back_propagates_supervised_plus_each_weighted_objective(space, with_unlabeled, monkeypatch):
    """With all three on (VAT's direction fixed; no dropout, so every forward is deterministic), the gradients
    are those of supervised + w_at * AT + w_vat * KL(p.detach() || p(x + r)) + w_em * entropy, where AT is the
    loss at x + eps * unit(dL/dx), and VAT and entropy read the unlabeled batch (else the labeled one)."""
    model = tiny_model(space.num_outputs).train()
    ids, lengths = make_batch(0, [9, 5, 3, 2])
    labels = torch.tensor([0, 1, 1, 0]) if space.binary else torch.tensor([0, 2, 1, 2])
    u_ids, u_lengths = make_batch(1, [8, 6, 1])
    cfg = TrainConfig(adversarial=AdversarialConfig(weight=0.7, epsilon=0.3),
                      virtual_adversarial=VirtualAdversarialConfig(weight=0.4, epsilon=0.8),
                      entropy_minimization=EntropyMinimizationConfig(weight=0.3))
    extras = ExtraObjectives(cfg, space, has_unlabeled=with_unlabeled)
    assert extras.names == ["adversarial", "virtual_adversarial", "entropy_minimization"]
    direction = {}

    def fixed_direction(model_, batch, x, clean, state):
        d = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
        direction["d"] = unit_perturbation(d, batch.lengths)
        return direction["d"]

    monkeypatch.setattr(extras, "vat_direction", fixed_direction)
    unlabeled = Batch(u_ids, u_lengths) if with_unlabeled else None
    model.zero_grad()
    sup, correct, parts = extras.step(model, Batch(ids, lengths, labels), unlabeled, backward)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    x = model.embed(ids)
    logits = model(ids, lengths, embedded=x)
    supervised = space.loss(logits, labels)
    (g,) = torch.autograd.grad(supervised, x, retain_graph=True)
    adv = space.loss(model(ids, lengths, embedded=x + 0.3 * unit_perturbation(g, lengths)), labels)
    t_ids, t_lengths = (u_ids, u_lengths) if with_unlabeled else (ids, lengths)
    xu = model.embed(t_ids) if with_unlabeled else x
    clean = model(t_ids, t_lengths, embedded=xu) if with_unlabeled else logits
    vat = divergence(clean.detach(), model(t_ids, t_lengths, embedded=xu + 0.8 * direction["d"]))
    ent = entropy(clean)
    (supervised + 0.7 * adv + 0.4 * vat + 0.3 * ent).backward()
    supervised, adv, vat, ent = (t.detach() for t in (supervised, adv, vat, ent))

    assert float(sup) == pytest.approx(float(supervised), abs=1e-6)
    assert int(correct) == int(space.correct(logits.detach(), labels))
    assert float(parts["adversarial"]) == pytest.approx(float(adv), abs=1e-6)
    assert float(adv) > float(supervised)  # the perturbation goes uphill
    assert float(parts["virtual_adversarial"]) == pytest.approx(float(vat), abs=1e-7)
    assert float(parts["entropy_minimization"]) == pytest.approx(float(ent), abs=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(got[name], p.grad, atol=1e-6), name


def test_adversarial_perturbation_with_frozen_embeddings():
    """Frozen embeddings get no gradient, but the perturbation still needs the gradient with respect to them."""
    model = tiny_model().train()
    model.set_embedding_trainable(False)
    ids, lengths = make_batch(0, [9, 5, 3])
    extras = ExtraObjectives(TrainConfig(adversarial=AdversarialConfig(epsilon=1.0)), BINARY)
    sup, _, parts = extras.step(model, Batch(ids, lengths, torch.tensor([1, 0, 1])), None, backward)
    assert float(parts["adversarial"]) > float(sup) + 1e-4
    assert model.embedding.weight.grad is None and model.fc.weight.grad is not None


@pytest.mark.parametrize("space", [BINARY, THREE], ids=["binary", "3-class"])
def test_vat_direction_changes_the_prediction_more_than_random_directions(space):
    model = tiny_model(space.num_outputs).eval()
    ids, lengths = make_batch(4, [9, 7, 5, 2])
    cfg = TrainConfig(virtual_adversarial=VirtualAdversarialConfig(epsilon=1.0, xi=0.1, power_iterations=2))
    extras = ExtraObjectives(cfg, space)
    x = model.embed(ids).detach()
    clean = model(ids, lengths, embedded=x).detach()
    d = extras.vat_direction(model, Batch(ids, lengths), x, clean, _rng_state(torch.device("cpu")))
    norms = [float(d[b, :n].norm()) for b, n in enumerate(lengths.tolist())]
    assert norms == pytest.approx([1.0] * 4, abs=1e-5)
    with torch.no_grad():
        best = float(divergence(clean, model(ids, lengths, embedded=x + d)))
        gen = torch.Generator().manual_seed(0)
        for _ in range(5):
            r = unit_perturbation(torch.randn(x.shape, generator=gen), lengths)
            assert float(divergence(clean, model(ids, lengths, embedded=x + r))) < best


def test_vat_direction_refuses_a_probe_lost_in_rounding():
    model = tiny_model().train()
    ids, lengths = make_batch(0, [9, 5, 3])
    x = model.embed(ids).detach()
    clean = model(ids, lengths, embedded=x).detach()
    state = _rng_state(torch.device("cpu"))
    tiny = ExtraObjectives(TrainConfig(virtual_adversarial=VirtualAdversarialConfig(xi=1e-30)), BINARY)
    with pytest.raises(SentimentError, match=r"train\.virtual_adversarial\.xi=1e-30"):
        tiny.vat_direction(model, Batch(ids, lengths), x, clean, state)
    fine = ExtraObjectives(TrainConfig(virtual_adversarial=VirtualAdversarialConfig(xi=0.1)), BINARY)
    d = fine.vat_direction(model, Batch(ids, lengths), x, clean, state)
    assert torch.isfinite(d).all() and float(d.norm()) > 0


@pytest.mark.parametrize("normalize", [False, True])
def test_forward_of_embed_equals_forward_in_train_mode(normalize):
    model = tiny_model(dropout=0.5, normalize_embeddings=normalize).train()
    if normalize:
        model.set_word_frequencies(np.arange(30) % 7)
    ids, lengths = make_batch(0, [9, 5, 3])
    torch.manual_seed(11)
    a = model(ids, lengths)
    torch.manual_seed(11)
    b = model(ids, lengths, embedded=model.embed(ids))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- normalised embeddings
def test_normalized_embeddings_have_weighted_mean_zero_and_variance_one():
    model = tiny_model(normalize_embeddings=True)
    with torch.no_grad():
        model.embedding.weight.mul_(3.0).add_(torch.linspace(-2, 5, 6))  # far from zero mean, unit variance
    counts = np.arange(30) ** 2 % 17
    counts[0] = 0  # padding is never counted
    model.set_word_frequencies(counts)
    freq = torch.as_tensor(counts / counts.sum(), dtype=torch.float32)
    assert torch.allclose(model.word_frequencies, freq)
    z = model.normalize(model.embedding.weight).detach()
    mean = freq @ z
    var = freq @ (z - mean).square()
    assert torch.allclose(mean, torch.zeros(6), atol=1e-5)
    assert torch.allclose(var, torch.ones(6), atol=1e-4)
    # embed() reads the normalised vectors (in eval mode: no dropout)
    ids, lengths = make_batch(0, [4, 2])
    assert torch.allclose(model.eval().embed(ids), model.normalize(model.embedding(ids)))
    # the frequencies are saved with the weights and restored with them
    assert "word_frequencies" in model.state_dict()
    other = tiny_model(normalize_embeddings=True).eval()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.word_frequencies, model.word_frequencies)
    assert torch.equal(other(ids, lengths), model(ids, lengths))
    with pytest.raises(ValueError):
        model.set_word_frequencies(np.zeros(30))


# ---------------------------------------------------------------- the unlabeled stream
def test_unlabeled_stream_runs_through_passes_and_resumes_from_its_place():
    lengths = np.random.default_rng(0).integers(1, 50, size=23)
    stream = UnlabeledStream(lengths, 4, seed=3)
    assert len(stream) == 6
    drawn = [stream.next() for _ in range(15)]
    first, second = drawn[:6], drawn[6:12]
    for one_pass in (first, second):
        assert sorted(np.concatenate(one_pass).tolist()) == list(range(23))  # each pass: every text once
    assert [b.tolist() for b in first] != [b.tolist() for b in second]  # a new order each pass
    assert (stream.epoch, stream.step) == (2, 3)
    # a stream built at another's place draws what it would have
    again = UnlabeledStream(lengths, 4, seed=3, epoch=1, step=4)
    assert [again.next().tolist() for _ in range(5)] == [b.tolist() for b in drawn[10:15]]
    # a stream at the end of a pass starts the next one
    ended = UnlabeledStream(lengths, 4, seed=3, epoch=0, step=6)
    assert ended.next().tolist() == drawn[6].tolist()
    # its order is not the labeled batches' order for the same seed
    labeled = BucketBatchSampler(lengths, 4, seed=3).batches()
    assert [b.tolist() for b in labeled] != [b.tolist() for b in first]


def test_sharded_unlabeled_streams_are_disjoint_and_equal_in_count():
    lengths = np.random.default_rng(1).integers(1, 50, size=45)
    shards = [UnlabeledStream(lengths, 4, seed=0, num_replicas=2, rank=r) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6  # 12 batches of 4 (the last of 1): 6 each
    per_rank = [[s.next() for _ in range(len(s))] for s in shards]
    seen = [set(np.concatenate(p).tolist()) for p in per_rank]
    assert not seen[0] & seen[1]
    assert sum(len(b) for p in per_rank for b in p) == len(seen[0] | seen[1])  # no text twice within a rank
    # the next pass starts on both ranks at once
    assert [(s.epoch, s.step) for s in shards] == [(0, 6), (0, 6)]
    [s.next() for s in shards]
    assert [(s.epoch, s.step) for s in shards] == [(1, 1), (1, 1)]


# ---------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def imdb(tmp_path_factory) -> Path:
    data = make_imdb(tmp_path_factory.mktemp("objectives") / "data", n_per_class=40, with_glove=False)  # 5 steps
    add_unsup(data)  # 30 texts: 4 batches of 8 a pass
    return data


@pytest.fixture(scope="module")
def plain_run(imdb, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    run_dir.mkdir()
    train(config(imdb, "train.epochs=1"), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def all_on_run(imdb, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("all_on") / "run"
    run_dir.mkdir()
    results = train(config(imdb, "train.epochs=2", "model.output_dropout=0.3", *ALL_ON), run_dir)
    return run_dir, results


def test_with_every_objective_off_the_loop_is_the_plain_supervised_one(imdb, plain_run, tmp_path, monkeypatch):
    """Sections left out, or set to null, give the plain loop: ExtraObjectives never steps, and the weights are
    bitwise those of a hand-written supervised loop."""
    def refuse(*args, **kwargs):
        raise AssertionError("the extra objectives' step ran with every objective off")

    monkeypatch.setattr(ExtraObjectives, "step", refuse)
    nulls = tmp_path / "nulls"
    nulls.mkdir()
    cfg = config(imdb, "train.epochs=1", "train.adversarial=null", "train.virtual_adversarial=null",
                 "train.entropy_minimization=null")
    assert not cfg.train.has_extra_objectives()
    train(cfg, nulls)
    a, b = load_checkpoint(plain_run / LAST)["model"], load_checkpoint(nulls / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert timing_free(read_metrics(nulls)) == timing_free(read_metrics(plain_run))
    assert not any(c in read_metrics(plain_run)[0] for c in OBJECTIVE_COLUMNS)
    assert json.loads((plain_run / RESULTS).read_text())["objectives"] == ["supervised"]

    # the plain loop, by hand: the same seed, batches, dropout draws, clipping and Adam steps
    cfg, vocab = load_run(plain_run)
    space = load_labels(plain_run)
    data = prepare_data(cfg.data, vocab, label_space=space)
    seed_everything(cfg.run.seed)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
    model.train()
    for indices in BucketBatchSampler(data.train.lengths(cfg.data.max_len), cfg.train.batch_size,
                                      seed=cfg.run.seed).batches():
        ids, lens, labels = collate(data.train, indices, cfg.data.max_len, cfg.data.truncate, vocab.pad_index)
        optimizer.zero_grad(set_to_none=True)
        space.loss(model(ids, lens), labels).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
    assert all(torch.equal(a[k], v) for k, v in model.state_dict().items())


def test_an_objective_on_takes_the_extras_path(imdb, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ExtraObjectives.step

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ExtraObjectives, "step", counting)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(config(imdb, "train.epochs=1", "train.adversarial.epsilon=0.5"), run_dir)
    assert calls["n"] == 5  # every step of the epoch
    rows = read_metrics(run_dir)
    assert "train_adversarial_loss" in rows[0]
    assert not any(c in rows[0] for c in OBJECTIVE_COLUMNS[1:])
    assert json.loads((run_dir / RESULTS).read_text())["objectives"] == ["supervised", "adversarial"]


def test_every_step_reads_one_unlabeled_batch_of_unlabeled_batch_size_and_max_len(imdb, tmp_path, monkeypatch):
    seen = []
    real = ExtraObjectives.step

    def recording(self, model, batch, unlabeled, backward_):
        seen.append((batch.ids.shape, None if unlabeled is None else unlabeled.ids.clone(),
                     None if unlabeled is None else unlabeled.lengths.clone()))
        return real(self, model, batch, unlabeled, backward_)

    monkeypatch.setattr(ExtraObjectives, "step", recording)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = config(imdb, "train.epochs=1", "data.unlabeled=unsup", "train.entropy_minimization.weight=0.1",
                 "train.unlabeled_batch_size=8", "train.unlabeled_max_len=5")
    train(cfg, run_dir)
    assert len(seen) == 5 and all(u is not None for _, u, _ in seen)
    assert all(u.shape[0] <= 8 and u.shape[1] <= 5 and int(n.max()) <= 5 for _, u, n in seen)
    assert max(shape[1] for shape, _, _ in seen) > 5  # the labeled batches keep data.max_len
    assert sum(u.shape[0] for _, u, _ in seen[:4]) == 30  # the first pass: every unlabeled text once
    assert load_checkpoint(run_dir / LAST)["loop"]["unlabeled_epoch"] == 1


def test_metrics_and_results_name_each_objective_that_is_on(all_on_run):
    run_dir, results = all_on_run
    rows = read_metrics(run_dir)
    assert len(rows) == 2
    for row in rows:
        for column in OBJECTIVE_COLUMNS:
            assert math.isfinite(row[column]), column
        assert 0 < row["train_entropy"] <= math.log(2)
        assert row["train_virtual_adversarial_loss"] >= 0
        assert row["train_adversarial_loss"] > 0
    assert results["objectives"] == ["supervised", "adversarial", "virtual_adversarial", "entropy_minimization"]
    assert json.loads((run_dir / RESULTS).read_text())["objectives"] == results["objectives"]
    assert results["unlabeled_texts"] == 30
    assert [COLUMNS[n] for n in results["objectives"][1:]] == list(OBJECTIVE_COLUMNS)


def test_resume_mid_epoch_with_every_objective_on_is_bitwise(imdb, all_on_run, tmp_path):
    whole, _ = all_on_run
    cfg = config(imdb, "train.epochs=2", "model.output_dropout=0.3", *ALL_ON)
    cut = tmp_path / "cut"
    cut.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, cut, stop=StopAfter(6))  # stops after step 7: epoch 2, step 2; 7 unlabeled batches drawn
    loop = load_checkpoint(cut / LAST)["loop"]
    assert loop["epoch"] == 1 and loop["step_in_epoch"] == 2
    assert (loop["unlabeled_epoch"], loop["unlabeled_step"]) == (1, 3)  # the stream is in its second pass
    assert set(loop["objective_sums"]) == {"adversarial", "virtual_adversarial", "entropy_minimization"}
    train(cfg, cut, resume=True)
    a, b = load_checkpoint(whole / LAST)["model"], load_checkpoint(cut / LAST)["model"]
    assert a.keys() == b.keys() and "word_frequencies" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert timing_free(read_metrics(cut)) == timing_free(read_metrics(whole))
    ends = [load_checkpoint(d / LAST)["loop"] for d in (cut, whole)]
    assert [(e["unlabeled_epoch"], e["unlabeled_step"]) for e in ends] == [(2, 2), (2, 2)]  # 10 of 4 a pass


def test_a_trained_normalized_model_loads_with_its_word_frequencies(imdb, all_on_run):
    run_dir, results = all_on_run
    loaded = load_trained(run_dir)
    counts = np.asarray(loaded.vocab.counts, dtype=np.float64)
    assert counts.sum() > 0 and counts[loaded.vocab.pad_index] == 0
    # the run's word counts, not the uniform weights a fresh model starts with
    assert torch.allclose(loaded.model.word_frequencies, torch.as_tensor(counts / counts.sum(), dtype=torch.float32))
    # the vocabulary counted train/unsup's words too
    labeled_only = prepare_data(config(imdb).data, with_embeddings=False)
    assert sum(loaded.vocab.counts) > sum(labeled_only.vocab.counts)
    assert evaluate_run(run_dir, split="valid").loss == results["valid"]["loss"]


# ---------------------------------------------------------------- unlabeled data
def test_unlabeled_texts_equal_to_held_out_ones_are_left_out_and_their_words_counted(tmp_path):
    data = make_imdb(tmp_path / "data", n_per_class=20, with_glove=False)
    test_text = sorted((data / "aclImdb" / "test" / "neg").glob("*.txt"))[0].read_text()
    train_pos = [p.read_text() for p in sorted((data / "aclImdb" / "train" / "pos").glob("*.txt"))]
    add_unsup(data, n=10, texts=[test_text, "zyzzyva " + test_text, *train_pos, "qwertyword appears only here"])
    cfg = config(data, "data.unlabeled=unsup").data
    source = load_source(cfg)
    # the positive training reviews that validation took are held out, and the test review
    valid_pos = sum(int(source.labels[i]) == 1 for i in source.splits["valid"])
    assert valid_pos > 0
    assert source.stats["unlabeled_held_out_skipped"] == 1 + valid_pos
    assert source.stats["unlabeled"] == 10 + 1 + len(train_pos) - valid_pos + 1
    assert len(source.unlabeled) == source.stats["unlabeled"]
    assert all(source.labels[source.unlabeled] == -1)
    held_out = {source.ids[source.offsets[i]:source.offsets[i + 1]].tobytes()
                for name in ("valid", "test") for i in source.splits[name]}
    assert not any(source.ids[source.offsets[i]:source.offsets[i + 1]].tobytes() in held_out
                   for i in source.unlabeled)
    prepared = prepare_data(cfg, with_embeddings=False)
    assert len(prepared.unlabeled) == source.stats["unlabeled"]
    assert "qwertyword" in prepared.vocab.stoi and "zyzzyva" in prepared.vocab.stoi
    assert "qwertyword" not in prepare_data(config(data).data, with_embeddings=False).vocab.stoi
    # scoring never reads the unlabeled texts
    assert load_source(cfg, with_unlabeled=False).stats.get("unlabeled") is None


@pytest.mark.parametrize("kind", ["txt", "directory", "csv"])
def test_unlabeled_texts_of_a_files_source(tmp_path, kind):
    rng = random.Random(3)
    train_file, test_file = tmp_path / "train.csv", tmp_path / "test.csv"
    for path, n in ((train_file, 60), (test_file, 10)):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([short_text(rng, label), label] for label in ["negative", "positive"] * (n // 2))
    test_text = next(csv.DictReader(test_file.open(encoding="utf-8")))["text"]
    texts = [short_text(rng) + " unlabeledonly" for _ in range(5)] + [test_text]
    if kind == "txt":
        unlabeled = tmp_path / "u.txt"
        unlabeled.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif kind == "directory":
        unlabeled = tmp_path / "u"
        unlabeled.mkdir()
        for i, text in enumerate(texts):
            (unlabeled / f"{i}.txt").write_text(text, encoding="utf-8")
    else:
        unlabeled = tmp_path / "u.csv"
        with unlabeled.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["id", "text"], *([i, t] for i, t in enumerate(texts))])
    cfg = load_config(None, ["data.dataset=files", f"data.train_file={train_file}", f"data.test_file={test_file}",
                             f"data.unlabeled={unlabeled}", f"data.data_dir={tmp_path / 'data'}", "data.glove_dim=null",
                             "model.embed_dim=8", "data.workers=1"]).data
    source = load_source(cfg)
    assert source.stats["unlabeled"] == 5 and source.stats["unlabeled_held_out_skipped"] == 1
    assert str(unlabeled) in source.stats["unlabeled_source"]
    prepared = prepare_data(cfg)
    assert len(prepared.unlabeled) == 5 and "unlabeledonly" in prepared.vocab.stoi


def test_unlabeled_texts_that_cannot_be_read_are_one_clear_error(tmp_path):
    base = ["data.dataset=files", f"data.train_file={write_three_class(tmp_path)}",
            f"data.data_dir={tmp_path / 'data'}", "data.workers=1"]
    with pytest.raises(SentimentError, match=r"data\.unlabeled: .*nope\.txt not found"):
        load_source(load_config(None, [*base, f"data.unlabeled={tmp_path / 'nope.txt'}"]).data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SentimentError, match=r"data\.unlabeled: .*empty holds no \.txt files"):
        load_source(load_config(None, [*base, f"data.unlabeled={tmp_path / 'empty'}"]).data)


CUES = {"negative": ["awful", "rude", "worst", "dirty"], "neutral": ["gate", "seat", "tuesday", "booked"],
        "positive": ["great", "friendly", "love", "comfy"]}
FILLER = ["the", "my", "was", "and", "it", "this", "so", "crew", "today", "we"]


def short_text(rng: random.Random, label: str | None = None) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(CUES[label or rng.choice(list(CUES))]))
    return " ".join(words)


def write_three_class(base: Path, n: int = 150, seed: int = 0) -> Path:
    rng = random.Random(seed)
    base.mkdir(parents=True, exist_ok=True)
    with (base / "three.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = list(CUES)[i % 3]
            writer.writerow([short_text(rng, label), label])
    return base / "three.csv"


def test_three_classes_train_with_every_objective_and_score_without_the_unlabeled_file(tmp_path):
    train_file = write_three_class(tmp_path)
    rng = random.Random(7)
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("\n".join(short_text(rng) for _ in range(40)) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    settings = [f"data.data_dir={tmp_path / 'data'}", "data.dataset=files", f"data.train_file={train_file}",
                f"data.unlabeled={unlabeled}", "data.glove_dim=null", "model.embed_dim=16", "data.workers=1",
                "run.device=cpu",
                "train.epochs=2", *TINY_TRAINING, "train.unlabeled_batch_size=16", "model.normalize_embeddings=true",
                "train.adversarial.epsilon=1.0", "train.virtual_adversarial.epsilon=1.0",
                "train.entropy_minimization.weight=0.2"]
    code, text = run("train", *set_args(settings), "--run-dir", str(run_dir))
    assert code == 0, text
    results = json.loads((run_dir / RESULTS).read_text())
    assert results["labels"] == ["negative", "neutral", "positive"] and results["unlabeled_texts"] == 40
    rows = read_metrics(run_dir)
    assert all(0 < r["train_entropy"] <= math.log(3) for r in rows)
    assert all(c in rows[-1] for c in OBJECTIVE_COLUMNS)
    unlabeled.unlink()
    code, text = run("eval", "--run", str(run_dir), "--json")
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["confusion"] == results["test"]["confusion"]
    code, text = run("predict", "--run", str(run_dir), "--json", "great friendly crew")
    assert code == 0, text


# ---------------------------------------------------------------- bad input, through the command line
def test_unsup_missing_is_one_line_naming_the_directory(tmp_path):
    data = make_imdb(tmp_path / "data", n_per_class=10, with_glove=False)
    code, text = run("train", *set_args([f"data.data_dir={data}", *FAST, "data.unlabeled=unsup",
                                         "train.virtual_adversarial.epsilon=1.0"]),
                     "--run-dir", str(tmp_path / "run"))
    one_line_error(code, text, "data.unlabeled", str(data / "aclImdb" / "train" / "unsup"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, key", [
    ("train.adversarial.weight=-1", "train.adversarial.weight"),
    ("train.adversarial.epsilon=0", "train.adversarial.epsilon"),
    ("train.virtual_adversarial.epsilon=-0.5", "train.virtual_adversarial.epsilon"),
    ("train.virtual_adversarial.xi=0", "train.virtual_adversarial.xi"),
    ("train.virtual_adversarial.power_iterations=0", "train.virtual_adversarial.power_iterations"),
    ("train.entropy_minimization.weight=-0.1", "train.entropy_minimization.weight"),
    ("train.entropy_minimization.epsilon=1", "train.entropy_minimization.epsilon"),  # a key it lacks
    ("train.unlabeled_batch_size=0", "train.unlabeled_batch_size"),
    ("data.unlabeled=extra", "data.unlabeled"),
])
def test_bad_objective_settings_are_one_line_config_errors(tmp_path, setting, key):
    code, text = run("train", "--set", setting, "--run-dir", str(tmp_path / "never"))
    one_line_error(code, text, key)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("setting, message", [
    ("train.adversarial.epsilom=1", r"unknown config key train\.adversarial\.epsilom \(did you mean 'epsilon'\?\)"),
    ("train.virtual_adversarial.xi=big", r"config key train\.virtual_adversarial\.xi: expected a number"),
])
def test_a_bad_key_inside_an_objective_section_is_named(setting, message):
    with pytest.raises(SentimentError, match=message):
        load_config(None, [setting])


def test_a_probe_lost_in_rounding_stops_training_with_one_line(imdb, tmp_path):
    code, text = run("train", *set_args([f"data.data_dir={imdb}", *FAST, "train.epochs=1",
                                         "train.virtual_adversarial.xi=1e-30"]), "--run-dir", str(tmp_path / "run"))
    one_line_error(code, text, "train.virtual_adversarial.xi", "too small")


def test_vat_without_unlabeled_texts_trains_on_the_labeled_batches_saying_so_once(imdb, tmp_path):
    code, text = run("train", *set_args([f"data.data_dir={imdb}", *FAST, "train.epochs=2",
                                         "train.virtual_adversarial={}"]), "--run-dir", str(tmp_path / "run"))
    assert code == 0, text
    assert text.count("run on the labeled batches") == 1, text
    assert "data.unlabeled" in text
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["train_virtual_adversarial_loss"] > 0 for r in rows)
    results = json.loads((tmp_path / "run" / RESULTS).read_text())
    assert results["unlabeled_texts"] == 0 and results["objectives"] == ["supervised", "virtual_adversarial"]


def test_unlabeled_texts_no_objective_reads_are_noted(imdb, tmp_path):
    code, text = run("train", *set_args([f"data.data_dir={imdb}", *FAST, "train.epochs=1", "data.unlabeled=unsup"]),
                     "--run-dir", str(tmp_path / "run"))
    assert code == 0, text
    assert text.count("count in the vocabulary only") == 1, text
    assert not any(c in read_metrics(tmp_path / "run")[0] for c in OBJECTIVE_COLUMNS)


# ---------------------------------------------------------------- under torchrun
DDP_SETTINGS = [*SETTINGS, "train.epochs=1", "run.eval_test=false", "run.device=cpu"]


def write_two_class(base: Path, rows: int = 120, seed: int = 0) -> Path:
    """test_distributed's two-class CSV (t.csv), and 64 unlabeled texts (u.txt)."""
    write_data(base, rows, seed)
    rng = random.Random(seed + 1)
    (base / "u.txt").write_text("\n".join(" ".join(rng.choice(["the", "seat", "good", "bad", "so", "crew"])
                                                   for _ in range(rng.randint(2, 9))) for _ in range(64)) + "\n")
    return base


def torchrun(tmp: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30"}
    env.pop("SENTIMENT_CACHE_DIR", None)
    args = set_args([*DDP_SETTINGS, f"data.train_file={tmp / 't.csv'}", f"data.data_dir={tmp / 'data'}", *extra])
    return subprocess.run([sys.executable, "-m", "sentiment", "train", "--nproc", "2", *args,
                           "--run-dir", str(run_dir)], capture_output=True, text=True, env=env, timeout=240)


def test_two_processes_with_every_objective_equal_one_process_over_both_ranks_batches(tmp_path):
    """AT, VAT and entropy minimisation on unlabeled texts under torchrun (gloo): one run directory, written once;
    and (no dropout here, so each rank draws only VAT's probes, from its own seed) the weights are those of one
    process stepping on the mean of both ranks' objectives, each rank reading its shard of the labeled batches
    and of the unlabeled stream."""
    base = write_two_class(tmp_path)
    run_dir = tmp_path / "runs" / "r"
    done = torchrun(base, run_dir, f"data.unlabeled={base / 'u.txt'}", "train.unlabeled_batch_size=8",
                    "train.adversarial.epsilon=0.5", "train.adversarial.weight=0.8",
                    "train.virtual_adversarial.epsilon=2.0", "train.virtual_adversarial.weight=0.6",
                    "train.entropy_minimization.weight=0.3")
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "runs").iterdir()) == [run_dir]
    assert done.stdout.count("run directory:") == 1
    rows = read_metrics(run_dir)
    assert [r["processes"] for r in rows] == [2] and all(c in rows[0] for c in OBJECTIVE_COLUMNS)
    results = json.loads((run_dir / RESULTS).read_text())
    assert results["processes"] == 2 and results["objectives"][1:] == list(COLUMNS)
    last = load_checkpoint(run_dir / LAST)

    cfg, vocab = load_run(run_dir)
    space = load_labels(run_dir)
    data = prepare_data(cfg.data, vocab, label_space=space)
    assert data.unlabeled is not None and len(data.unlabeled) == 64
    seed_everything(cfg.run.seed)
    model = build_model(cfg, len(vocab), vocab.pad_index, space.num_outputs)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
    samplers = [BucketBatchSampler(data.train.lengths(cfg.data.max_len), cfg.train.batch_size, seed=cfg.run.seed,
                                   num_replicas=2, rank=r) for r in range(2)]
    streams = [UnlabeledStream(data.unlabeled.lengths(cfg.data.max_len), 8, seed=cfg.run.seed, num_replicas=2, rank=r)
               for r in range(2)]
    # each rank's generator, as the loop seeds it under torchrun
    probes = [torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + r * 7919) for r in range(2)]
    model.train()
    steps = 0
    for pair in zip(*(s.batches() for s in samplers)):
        optimizer.zero_grad()
        total = 0
        for indices, stream, gen in zip(pair, streams, probes):
            ids, lens, labels = collate(data.train, indices, cfg.data.max_len, cfg.data.truncate, vocab.pad_index)
            x = model.embed(ids)
            loss = space.loss(model(ids, lens, embedded=x), labels)
            (g,) = torch.autograd.grad(loss, x, retain_graph=True)
            adv = space.loss(model(ids, lens, embedded=x + 0.5 * unit_perturbation(g, lens)), labels)
            u_ids, u_lens, _ = collate(data.unlabeled, stream.next(), cfg.data.max_len, cfg.data.truncate,
                                       vocab.pad_index)
            xu = model.embed(u_ids)
            clean = model(u_ids, u_lens, embedded=xu)
            d = 0.1 * unit_perturbation(torch.randn(xu.shape, generator=gen), u_lens)  # VAT's probe (xi 0.1)
            d.requires_grad_()
            probe = divergence(clean.detach(), model(u_ids, u_lens, embedded=xu.detach() + d))
            (d,) = torch.autograd.grad(probe, d)
            vat = divergence(clean.detach(), model(u_ids, u_lens, embedded=xu + 2.0 * unit_perturbation(d, u_lens)))
            total = total + loss + 0.8 * adv + 0.6 * vat + 0.3 * entropy(clean)
        (total / 2).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        steps += 1
    assert last["loop"]["global_step"] == steps
    assert (last["loop"]["unlabeled_epoch"], last["loop"]["unlabeled_step"]) == (streams[0].epoch, streams[0].step)
    trained = last["model"]
    assert max(float((trained[k] - v).abs().max()) for k, v in start.items()) > 1e-2  # training moved them
    for name, value in model.state_dict().items():
        assert torch.allclose(trained[name], value, atol=1e-5), name
