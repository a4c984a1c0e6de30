"""model.combine mixture (sentiment/training/mixture.py): each part on its own loss, the two weighed by a fit on the
validation split, kept in the checkpoint, and read alike by eval, predict and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import load_config
from sentiment.data.labels import LabelSpace
from sentiment.errors import SentimentError
from sentiment.model import SentimentRNN
from sentiment.ngrams import NgramBranch, NgramSpec, collate_ngrams
from sentiment.runs import BEST, LAST, load_checkpoint
from sentiment.training.mixture import fit_mixture
from sentiment.training.objectives import Batch, Supervised
from sentiment.training.train import TrainingInterrupted, train
from conftest import TINY_TRAINING, StopAfter, make_imdb, set_args  # noqa: E402

runner = CliRunner()
FAST = ["data.glove_dim=null", "model.embed_dim=16", "run.threads=1", "data.workers=1", "train.epochs=2",
        *TINY_TRAINING]
MIXTURE = ["model.rnn=gru", "model.hidden_size=8", "model.ngrams.n=2", "model.ngrams.buckets=4096",
           "model.ngrams.lr=0.05", "model.combine=mixture"]


def sampled(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if logits.ndim == 1:
        return (rng.random(len(logits)) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (rng.random((len(p), 1)) > p.cumsum(1)).sum(1)


@pytest.mark.parametrize("k", [1, 3])
def test_the_fit_recovers_the_weights_that_made_the_labels(k):
    rng = np.random.default_rng(0)
    shape = (40_000,) if k == 1 else (40_000, k)
    rnn, branch = rng.normal(0, 2, shape), rng.normal(0, 2, shape)
    bias = np.array([0.3]) if k == 1 else np.array([0.3, -0.2, 0.0])
    labels = sampled(0.5 * rnn + 2.0 * branch + (bias[0] if k == 1 else bias), rng)
    space = LabelSpace(["neg", "pos"] if k == 1 else ["a", "b", "c"])
    weights, fitted_bias = fit_mixture(rnn, branch, labels, space)
    assert np.allclose(weights, [0.5, 2.0], atol=0.08), weights
    if k == 1:
        assert abs(fitted_bias[0] - 0.3) < 0.08
    else:  # softmax is shift-invariant: compare the biases' differences
        assert np.allclose(fitted_bias - fitted_bias[-1], bias - bias[-1], atol=0.1), fitted_bias
    again = fit_mixture(rnn, branch, labels, space)
    assert np.array_equal(weights, again[0]) and np.array_equal(fitted_bias, again[1])  # deterministic


def two_part_model(combine: str) -> SentimentRNN:
    torch.manual_seed(0)
    branch = NgramBranch(NgramSpec(2, 64, True), 1, "tfidf")
    with torch.no_grad():
        branch.table.weight.normal_()
    return SentimentRNN(30, 8, hidden_size=6, rnn="gru", pooling="max", dropout=0.0, embed_dropout=0.0,
                        ngrams=branch, combine=combine).eval()


def test_each_part_trains_on_its_own_loss_and_the_whole_is_the_mixture():
    from sentiment.data.batching import EncodedSplit

    model = two_part_model("mixture")
    model.set_mixture([0.25, 3.0], [0.5])
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    split = EncodedSplit(ids=np.array([3, 4, 5, 6, 7, 8]), offsets=np.array([0, 4, 6]), labels=np.array([1, 0]),
                         hashes=np.arange(1, 7, dtype=np.uint64), hash_offsets=np.array([0, 4, 6]))
    ngrams = collate_ngrams(split, [0, 1], model.ngrams.spec)
    out = model(ids, lengths, ngrams=ngrams, parts=True)
    assert torch.allclose(out["whole"], 0.25 * out["rnn"] + 3.0 * out["branch"] + 0.5)
    assert torch.equal(model(ids, lengths, ngrams=ngrams), out["whole"])
    space = LabelSpace(["neg", "pos"])
    labels = torch.tensor([1, 0])
    batch = Batch(ids=ids, lengths=lengths, labels=labels, ngrams=ngrams)
    loss, stats = Supervised(space, per_part=True)(model, batch)
    assert torch.allclose(loss, space.loss(out["rnn"], labels) + space.loss(out["branch"], labels))
    assert int(stats["correct"]) == int(space.correct(out["whole"], labels))
    summed = two_part_model("sum")
    assert torch.allclose(summed(ids, lengths, ngrams=ngrams), out["rnn"] + out["branch"])


@pytest.mark.parametrize("settings", [["model.ngrams=null"], ["model.rnn=none"]])
def test_a_mixture_of_one_part_is_that_part_alone(settings):
    from sentiment.model import build_model

    cfg = load_config(None, ["model.combine=mixture", *settings])  # the default's combine with one part switched off
    model = build_model(cfg, 20, 0, 1)
    assert model.combine == "sum" and "mix" not in model.state_dict()


def test_a_mixture_with_an_extra_objective_is_one_error():
    with pytest.raises(SentimentError, match="train.adversarial"):
        load_config(None, ["model.combine=mixture", "train.adversarial={epsilon: 1.0}"])
    assert load_config(None, ["model.combine=sum", "train.adversarial={epsilon: 1.0}"]).train.adversarial


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("mixture")
    data = make_imdb(base / "data", n_per_class=40, with_glove=False)
    result = runner.invoke(app, ["train", *set_args([f"data.data_dir={data}", *FAST, *MIXTURE]),
                                 "--run-dir", str(base / "run")])
    assert result.exit_code == 0, result.output
    assert "recurrent part alone" in result.output and "mixture fit on valid" in result.output
    return base / "run"


def test_the_run_records_its_mixture_and_each_parts_figures(mixture_run):
    results = json.loads((mixture_run / "results.json").read_text())
    best = load_checkpoint(mixture_run / BEST)["model"]
    assert results["mixture"]["rnn"] == pytest.approx(float(best["mix"][0]))
    assert results["mixture"]["branch"] == pytest.approx(float(best["mix"][1]))
    assert results["mixture"]["bias"] == pytest.approx(best["mix_bias"].tolist())
    assert (results["mixture"]["rnn"], results["mixture"]["branch"]) != (1.0, 1.0)  # fit, not left as built
    for split in ("valid", "test"):
        assert set(results[split]["parts"]) == {"rnn", "branch"}
    rows = [json.loads(line) for line in (mixture_run / "metrics.jsonl").read_text().splitlines()]
    assert all(len(r["mixture"]) == 3 and "valid_rnn_accuracy" in r and "valid_branch_accuracy" in r for r in rows)
    result = runner.invoke(app, ["eval", "--run", str(mixture_run), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output.strip().splitlines()[-1])
    assert evaluated["accuracy"] == results["test"]["accuracy"]
    assert evaluated["parts"]["rnn"]["accuracy"] == results["test"]["parts"]["rnn"]["accuracy"]


def test_a_mixture_run_resumes_bitwise(tmp_path):
    data = make_imdb(tmp_path / "data", n_per_class=30, with_glove=False)
    cfg = load_config(None, [f"data.data_dir={data}", *FAST, *MIXTURE])
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    cut.mkdir()
    train(cfg, whole)
    with pytest.raises(TrainingInterrupted):
        train(cfg, cut, stop=StopAfter(6))  # in epoch 2, after epoch 1's mixture was fit
    train(cfg, cut, resume=True)
    a, b = load_checkpoint(whole / LAST)["model"], load_checkpoint(cut / LAST)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_exported_mixture_scores_as_predict_does(mixture_run, tmp_path):
    pytest.importorskip("onnxruntime")
    texts = ["a wonderful superb film", "awful, a waste of time", "the plot"]

    def rows(*args: str) -> list[dict]:
        result = runner.invoke(app, ["predict", "--json", *args, *texts])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]

    expected = rows("--run", str(mixture_run))
    for fmt in ("onnx", "torch"):
        out = tmp_path / f"model.{fmt}"
        result = runner.invoke(app, ["export", "--run", str(mixture_run), "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        got = rows("--model", str(out))
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        assert max(abs(g["probability"] - e["probability"]) for g, e in zip(got, expected)) <= 1e-5
