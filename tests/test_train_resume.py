"""Resuming a run: the learning-rate schedule it started with, and runs that had already stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiment.runs import LAST, load_checkpoint, read_metrics
from sentiment.config import load_config
from sentiment.errors import SentimentError
from sentiment.training.train import TrainingInterrupted, lr_factor, train
from conftest import TINY_TRAINING, StopAfter, make_imdb


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_imdb(tmp_path_factory.mktemp("resume") / "data", n_per_class=40)  # 5 steps an epoch


def config(data: Path, *extra: str):
    return load_config(None, [f"data.data_dir={data}", *TINY_TRAINING, "run.eval_test=false", *extra])


def interrupted_run(tmp_path: Path, cfg, steps: int) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir, stop=StopAfter(steps))
    return run_dir


def test_resume_refuses_changed_epochs_under_a_decaying_schedule(data, tmp_path):
    cfg = config(data, "train.epochs=2", "train.lr_schedule=cosine", "train.warmup_steps=2")
    run_dir = interrupted_run(tmp_path, cfg, 3)
    before = load_checkpoint(run_dir / LAST)["loop"]
    longer = config(data, "train.epochs=4", "train.lr_schedule=cosine", "train.warmup_steps=2")
    with pytest.raises(SentimentError, match=r"train.epochs=4.*cosine.*2 epochs"):
        train(longer, run_dir, resume=True)
    assert load_checkpoint(run_dir / LAST)["loop"] == before  # nothing was trained or written


def test_resume_keeps_the_schedule_length_it_started_with(data, tmp_path):
    cfg = config(data, "train.epochs=2", "train.lr_schedule=constant", "train.warmup_steps=20")
    run_dir = interrupted_run(tmp_path, cfg, 3)
    assert load_checkpoint(run_dir / LAST)["loop"]["schedule_steps"] == 10
    longer = config(data, "train.epochs=3", "train.lr_schedule=constant", "train.warmup_steps=20")
    train(longer, run_dir, resume=True)  # a constant schedule may run longer: warmup is still over 20 steps
    last = load_checkpoint(run_dir / LAST)
    assert last["loop"]["epoch"] == 3 and last["loop"]["schedule_steps"] == 10
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    factor = lr_factor(longer, 10)
    assert rows[-1]["lr"] == pytest.approx(longer.train.lr * factor(15))  # after 15 steps: still warming up


def test_a_run_that_stopped_early_stays_stopped_on_resume(data, tmp_path):
    # a learning rate too small to change a prediction: validation accuracy never rises after epoch 1
    cfg = config(data, "train.epochs=5", "train.lr=1e-12", "train.early_stopping_patience=1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(cfg, run_dir)
    assert len(read_metrics(run_dir)) == 2  # epoch 1, then one epoch without a gain
    results = train(cfg, run_dir, resume=True)
    assert len(read_metrics(run_dir)) == 2
    assert load_checkpoint(run_dir / LAST)["loop"]["epoch"] == 2
    assert results["epochs_run"] == 2 and results["best_epoch"] == 1
