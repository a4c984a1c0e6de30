"""End-to-end training on a tiny generated dataset whose label is learnable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sentiment.checkpoint import BEST, LAST, load_checkpoint, read_metrics
from sentiment.config import load_config
from sentiment.runtime import evaluate_run
from sentiment.train import StopFlag, TrainingDiverged, TrainingInterrupted, train
from conftest import BATCH_TOL, TINY_TRAINING, poison_loss

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
    assert again.loss == pytest.approx(results["test"]["loss"], abs=BATCH_TOL)
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


class StopAfter(StopFlag):
    """Asks to stop once the loop has checked it `n` times (once per step)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def __bool__(self) -> bool:
        self.n -= 1
        return self.n < 0


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
