"""End-to-end training on a tiny generated dataset whose label is learnable."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sentiment.training import train as train_mod
from sentiment.data.batching import EncodedSplit, truncate
from sentiment.runs import BEST, LAST, RESULTS, load_checkpoint, read_metrics
from sentiment.config import load_config
from sentiment.inference.evaluate import evaluate
from sentiment.model import SentimentRNN
from sentiment.data.prepare import PreparedData, prepare_data
from sentiment.inference.runtime import evaluate_run
from sentiment.training.train import TrainingDiverged, TrainingInterrupted, build_model, lr_factor, train
from sentiment.data.vocab import PAD, UNK, Vocab
from conftest import BATCH_TOL, TINY_TRAINING, StopAfter, poison_loss

STEPS_PER_EPOCH = 17  # 150 reviews a class, 10% kept for validation: 270 in batches of 16
FAST = ["train.epochs=3", *TINY_TRAINING, "run.eval_test=true"]


def tiny_config(data_dir: Path, *extra: str):
    return load_config(None, [f"data.data_dir={data_dir}", *FAST, *extra])


def timing_free(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, Path]:
    from conftest import make_imdb

    base = tmp_path_factory.mktemp("train")
    data = make_imdb(base / "data", n_per_class=150)
    run_dir = base / "run"
    run_dir.mkdir()
    results = train(tiny_config(data), run_dir)
    return run_dir, results, data


def test_learns_the_label_and_eval_reproduces_it(trained):
    run_dir, results, _ = trained
    assert results["test"]["accuracy"] >= 0.95
    for name in ("config.yaml", "vocab.json", "metrics.jsonl", BEST, LAST, "curves.png", "results.json"):
        assert (run_dir / name).is_file(), name
    assert len(read_metrics(run_dir)) == 3
    again = evaluate_run(run_dir, split="test")
    assert again.accuracy == results["test"]["accuracy"]
    if torch.cuda.is_available():  # cuDNN may pick another algorithm for the same shapes
        assert again.loss == pytest.approx(results["test"]["loss"], abs=BATCH_TOL)
    else:  # the same batches through the same kernels
        assert again.loss == results["test"]["loss"]
    assert json.loads((run_dir / "results.json").read_text())["test"]["accuracy"] == results["test"]["accuracy"]


def test_best_checkpoint_is_the_best_validation_epoch(trained):
    run_dir, results, _ = trained
    rows = read_metrics(run_dir)
    best_row = max(rows, key=lambda r: r["valid_accuracy"])  # first of equals, as the loop keeps
    assert results["best_epoch"] == best_row["epoch"]
    assert load_checkpoint(run_dir / BEST)["loop"]["epoch"] == best_row["epoch"]


def test_same_seed_gives_identical_runs(trained, tmp_path):
    run_dir, _, data = trained
    other = tmp_path / "again"
    other.mkdir()
    train(tiny_config(data), other)
    assert timing_free(read_metrics(other)) == timing_free(read_metrics(run_dir))
    a, b = load_checkpoint(run_dir / LAST)["model"], load_checkpoint(other / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupt_mid_epoch_then_resume_matches_uninterrupted_run(trained, tmp_path):
    run_dir, _, data = trained
    cfg = tiny_config(data)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(cfg, resumed, stop=StopAfter(STEPS_PER_EPOCH + 3))  # stops inside epoch 2
    state = load_checkpoint(resumed / LAST)
    assert state["loop"]["epoch"] == 1 and state["loop"]["step_in_epoch"] > 0
    train(cfg, resumed, resume=True)
    a, b = load_checkpoint(run_dir / LAST)["model"], load_checkpoint(resumed / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert timing_free(read_metrics(resumed)) == timing_free(read_metrics(run_dir))


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good(trained, tmp_path, monkeypatch):
    _, _, data = trained
    poison_loss(monkeypatch, STEPS_PER_EPOCH + 2)  # epoch 2, step 3
    run_dir = tmp_path / "nan"
    run_dir.mkdir()
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3"):
        train(tiny_config(data), run_dir)
    last = load_checkpoint(run_dir / LAST)
    assert last["loop"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values())


# --- model selection, early stopping, schedules, freezing, truncation ---------------------------------


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class EpochEnds:
    """Wraps train's evaluate: keeps a copy of the training model's weights each time the loop scores the
    validation split (once per epoch, after its last step), and can replace the accuracy it reports with
    scripted values, one per epoch. Calls on any other model (finish() builds its own) pass through."""

    def __init__(self, monkeypatch, scripted_accuracy: list[float] | None = None):
        self.weights: list[dict] = []
        self.script = list(scripted_accuracy or [])
        self.model = None
        real = train_mod.evaluate

        def wrapped(model, split, *args, **kwargs):
            metrics = real(model, split, *args, **kwargs)
            if self.model is None:
                self.model = model
            if model is self.model:
                self.weights.append(copy.deepcopy(model.state_dict()))
                if self.script:
                    metrics.accuracy = self.script.pop(0)
            return metrics

        monkeypatch.setattr(train_mod, "evaluate", wrapped)


def with_labels(split: EncodedSplit, labels: np.ndarray) -> EncodedSplit:
    return EncodedSplit(ids=split.ids, offsets=split.offsets, labels=labels.astype(split.labels.dtype))


def test_best_epoch_follows_validation_even_where_test_disagrees(trained, tmp_path, monkeypatch):
    # Validation labels flipped: the better the model gets, the worse it scores on validation, so the
    # epoch validation picks is the one test likes least. best.pt and results.json must follow validation.
    _, _, data_dir = trained
    cfg = tiny_config(data_dir)
    data = prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    flipped = with_labels(data.valid, 1 - data.valid.labels)
    ends = EpochEnds(monkeypatch)
    run_dir = tmp_path / "flipped"
    run_dir.mkdir()
    results = train(cfg, run_dir, data=PreparedData(data.vocab, data.train, flipped, data.test, data.embeddings))

    rows = read_metrics(run_dir)
    assert len(ends.weights) == len(rows) == 3
    model = build_model(cfg, len(data.vocab), data.vocab.pad_index)
    valid_acc, test_acc = [], []
    for weights in ends.weights:
        model.load_state_dict(weights)
        valid_acc.append(evaluate(model, flipped, max_len=cfg.data.eval_max_len).accuracy)
        test_acc.append(evaluate(model, data.test, max_len=cfg.data.eval_max_len).accuracy)
    assert [r["valid_accuracy"] for r in rows] == valid_acc
    by_valid = valid_acc.index(max(valid_acc)) + 1  # first of equals, as the loop keeps
    by_test = test_acc.index(max(test_acc)) + 1
    assert by_valid != by_test, (valid_acc, test_acc)  # else this data cannot tell the two apart
    assert results["best_epoch"] == by_valid
    assert json.loads((run_dir / RESULTS).read_text())["best_epoch"] == by_valid
    best = load_checkpoint(run_dir / BEST)
    assert best["loop"]["epoch"] == by_valid
    assert same_weights(best["model"], ends.weights[by_valid - 1])
    assert results["valid"]["accuracy"] == valid_acc[by_valid - 1]
    assert results["test"]["accuracy"] == test_acc[by_valid - 1] < max(test_acc)
    assert [r["best"] for r in rows] == [acc > max(valid_acc[:i], default=-1.0) for i, acc in enumerate(valid_acc)]


def test_early_stopping_stops_after_patience_epochs_without_a_gain(trained, tmp_path, monkeypatch):
    # scripted validation accuracy: epoch 2 no gain (1), epoch 3 a gain (count resets), epoch 4 no gain (1),
    # epoch 5 ties the best, which is no gain either (2 = patience): stop. Epoch 6 would have been the best.
    _, _, data_dir = trained
    script = [0.6, 0.5, 0.9, 0.7, 0.9, 0.95]
    ends = EpochEnds(monkeypatch, script)
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    results = train(tiny_config(data_dir, "train.epochs=8", "train.early_stopping_patience=2"), run_dir)
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["valid_accuracy"] for r in rows] == script[:5]
    assert ends.script == [0.95]  # epoch 6 never ran
    assert [r["best"] for r in rows] == [True, False, True, False, False]
    assert results["epochs_run"] == 5 and results["best_epoch"] == 3
    best, last = load_checkpoint(run_dir / BEST), load_checkpoint(run_dir / LAST)
    assert best["loop"]["epoch"] == 3 and last["loop"]["epoch"] == 5
    assert last["loop"]["epochs_without_gain"] == 2
    assert same_weights(best["model"], ends.weights[2])
    assert same_weights(last["model"], ends.weights[4])
    assert not same_weights(best["model"], last["model"])


def test_without_patience_every_epoch_runs(trained, tmp_path, monkeypatch):
    _, _, data_dir = trained
    EpochEnds(monkeypatch, [0.9, 0.1, 0.1, 0.1])
    run_dir = tmp_path / "patient"
    run_dir.mkdir()
    results = train(tiny_config(data_dir, "train.epochs=4"), run_dir)
    assert len(read_metrics(run_dir)) == 4 and results["best_epoch"] == 1


def schedule_config(kind: str, warmup: int):
    return load_config(None, [f"train.lr_schedule={kind}", f"train.warmup_steps={warmup}"])


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warmup_ramps_linearly_to_the_full_rate(kind):
    f = lr_factor(schedule_config(kind, 10), 110)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0)  # the first step after warmup is at the full rate, whatever follows


def test_cosine_decays_to_zero_through_one_half_at_the_midpoint():
    f = lr_factor(schedule_config("cosine", 10), 110)
    assert f(60) == pytest.approx(0.5)  # halfway through the 100 steps after warmup
    assert f(35) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert f(500) == pytest.approx(0.0, abs=1e-12)  # past the end it stays at 0, it does not rise again
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert 0 < f(109) < 1e-3


def test_linear_decays_to_zero():
    f = lr_factor(schedule_config("linear", 10), 110)
    assert [f(s) for s in (10, 35, 60, 85, 110, 200)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


def test_constant_stays_at_one_and_no_warmup_starts_at_full_rate():
    f = lr_factor(schedule_config("constant", 0), 110)
    assert [f(s) for s in (0, 1, 55, 109, 110)] == [1.0] * 5
    assert lr_factor(schedule_config("cosine", 0), 110)(0) == 1.0


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    from conftest import make_imdb

    return make_imdb(tmp_path_factory.mktemp("small") / "data", n_per_class=20)


SMALL_STEPS = 3  # 20 reviews a class, 10% kept for validation: 36 in batches of 16
# The shipped schedule (cosine after a linear warmup), the warmup ending inside epoch 2 of 3, on 2 threads
# On a loaded 2-core machine two threads wait for each other at every time step (a 2-thread step can take
# a second), so the run is kept short: few steps, reviews cut to 16 tokens.
SHIPPED_SCHEDULE = ["train.lr_schedule=cosine", "train.warmup_steps=4", "train.grad_clip=5.0", "run.threads=2",
                    "data.max_len=16", "data.eval_max_len=16"]


def test_resume_with_cosine_warmup_on_two_threads_is_bitwise(small_data, tmp_path, restore_threads):
    cfg = tiny_config(small_data, *SHIPPED_SCHEDULE)
    whole = tmp_path / "whole"
    whole.mkdir()
    expected = train(cfg, whole)
    assert torch.get_num_threads() == 2

    cut = tmp_path / "cut"
    cut.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, cut, stop=StopAfter(1))  # after step 2 of epoch 1: inside the warmup
    loop = load_checkpoint(cut / LAST)["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (0, 2, 2)
    with pytest.raises(TrainingInterrupted):
        train(cfg, cut, resume=True, stop=StopAfter(SMALL_STEPS - 2 + 1))  # step 2 of epoch 2: past it
    loop = load_checkpoint(cut / LAST)["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (1, 2, SMALL_STEPS + 2)
    assert loop["global_step"] > cfg.train.warmup_steps
    resumed = train(cfg, cut, resume=True)

    for name in (LAST, BEST):
        a, b = load_checkpoint(whole / name), load_checkpoint(cut / name)
        assert same_weights(a["model"], b["model"]), name
        for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
            assert all(torch.equal(pa[k], pb[k]) for k in pa), name
        assert a["scheduler"] == b["scheduler"]
    rows = read_metrics(whole)
    assert timing_free(read_metrics(cut)) == timing_free(rows)
    for key in ("best_epoch", "epochs_run"):
        assert resumed[key] == expected[key]
    assert timing_free([resumed["valid"], resumed["test"]]) == timing_free([expected["valid"], expected["test"]])
    # the rate the run used is the schedule's: lr * factor(steps taken so far)
    factor = lr_factor(cfg, SMALL_STEPS * 3)
    assert [r["step"] for r in rows] == [SMALL_STEPS, 2 * SMALL_STEPS, 3 * SMALL_STEPS]
    assert [r["lr"] for r in rows] == pytest.approx([cfg.train.lr * factor(r["step"]) for r in rows])
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_frozen_embeddings_train_only_after_unfreeze_after_epochs(trained, tmp_path, monkeypatch):
    _, _, data_dir = trained
    cfg = tiny_config(data_dir, "train.epochs=2", "model.freeze_embeddings=true", "model.unfreeze_after=1")
    data = prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    start = build_model(cfg, len(data.vocab), data.vocab.pad_index)
    start.load_embeddings(data.embeddings)
    start = start.state_dict()
    ends = EpochEnds(monkeypatch)
    run_dir = tmp_path / "frozen"
    run_dir.mkdir()
    train(cfg, run_dir, data=data)
    epoch1, epoch2 = ends.weights
    emb = "embedding.weight"
    assert torch.equal(epoch1[emb], start[emb])  # frozen through epoch 1
    assert any(not torch.equal(epoch1[k], start[k]) for k in start if k != emb)  # while the rest trained
    assert not torch.equal(epoch2[emb], epoch1[emb])  # and trained in epoch 2
    changed = (epoch2[emb] != epoch1[emb]).any(dim=1)
    assert not changed[data.vocab.pad_index]  # padding_idx: never trained
    assert changed.sum() > len(data.vocab) // 2


def test_frozen_embeddings_without_unfreeze_stay_frozen(trained, tmp_path, monkeypatch):
    _, _, data_dir = trained
    cfg = tiny_config(data_dir, "train.epochs=2", "model.freeze_embeddings=true")
    ends = EpochEnds(monkeypatch)
    run_dir = tmp_path / "frozen"
    run_dir.mkdir()
    train(cfg, run_dir)
    epoch1, epoch2 = ends.weights
    assert torch.equal(epoch1["embedding.weight"], epoch2["embedding.weight"])
    assert not torch.equal(epoch1["fc.weight"], epoch2["fc.weight"])


def synthetic_split(rng: np.random.Generator, n: int, first_id: int, vocab_size: int) -> EncodedSplit:
    """n reviews of 5 to 39 tokens; review i starts with the id first_id + i, so every row names its review."""
    lengths = rng.integers(5, 40, size=n)
    rows = [np.concatenate([[first_id + i], rng.integers(2, vocab_size, size=n_ - 1)]) for i, n_ in enumerate(lengths)]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return EncodedSplit(ids=np.concatenate(rows).astype(np.int32), offsets=offsets,
                        labels=rng.integers(0, 2, size=n).astype(np.int8))


def reviews(split: EncodedSplit) -> list[np.ndarray]:
    return [split.ids[split.offsets[i]:split.offsets[i + 1]] for i in range(len(split))]


def test_training_reads_max_len_and_evaluation_eval_max_len_head_plus_tail(tmp_path, monkeypatch):
    vocab = Vocab([PAD, UNK] + [f"w{i}" for i in range(300)])
    rng = np.random.default_rng(0)
    train_split, valid, test = (synthetic_split(rng, 40, first, len(vocab)) for first in (2, 100, 200))
    data = PreparedData(vocab, train_split, valid, test)
    cfg = load_config(None, [*FAST, "train.epochs=1", "data.glove_dim=null", "model.embed_dim=8", "data.max_len=8",
                             "data.eval_max_len=20", "data.truncate=head+tail"])
    seen: list[tuple[bool, list[tuple[int, ...]]]] = []
    real_forward = SentimentRNN.forward

    def recording(self, ids, lengths):
        seen.append((self.training, [tuple(row[:n].tolist()) for row, n in zip(ids, lengths)]))
        return real_forward(self, ids, lengths)

    monkeypatch.setattr(SentimentRNN, "forward", recording)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(cfg, run_dir, data=data)

    trained_rows = [row for training, rows in seen if training for row in rows]
    scored_rows = [row for training, rows in seen if not training for row in rows]
    # each training review once, as its first 8 // 4 = 2 and last 6 tokens
    assert sorted(trained_rows) == sorted(tuple(truncate(r, 8, "head+tail").tolist()) for r in reviews(train_split))
    # validation after the epoch, then valid and test again with the best checkpoint: first 5 and last 15 tokens
    expect = lambda split: sorted(tuple(truncate(r, 20, "head+tail").tolist()) for r in reviews(split))
    assert sorted(scored_rows) == sorted(expect(valid) * 2 + expect(test))
    assert max(map(len, trained_rows)) == 8 and max(map(len, scored_rows)) == 20
    long_review = next(r for r in reviews(test) if len(r) > 20)
    assert tuple(long_review[:5].tolist()) + tuple(long_review[-15:].tolist()) in scored_rows


def test_results_json_writes_a_confusion_matrix_one_row_per_line(trained):
    import re

    run_dir, results, _ = trained
    text = (run_dir / RESULTS).read_text()
    assert json.loads(text) == json.loads(json.dumps(results))
    assert not [line for line in text.splitlines() if re.fullmatch(r"\s*-?[\d.eE+-]+,?", line)]  # no lone numbers
    k = len(results["test"]["confusion"])
    rows = [line for line in text.splitlines() if re.fullmatch(r"\s*\[[\d, ]+\],?", line)]
    assert len(rows) >= 2 * k  # valid's and test's matrices, a row a line


def test_a_500_class_confusion_matrix_is_compact():
    rng = np.random.default_rng(0)
    results = {"test": {"confusion": rng.integers(0, 50, (500, 500)).tolist(), "loss": 0.5, "labels": ["a", "b"]}}
    text = train_mod.compact_json(results)
    assert json.loads(text) == results
    assert len(text) < 1.5e6  # one number per line: 5.7 MB
    assert len(text.splitlines()) < 520
