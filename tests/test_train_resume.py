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


@pytest.mark.parametrize("changed,key", [("train.lr=0.02", "train.lr"), ("model.hidden_size=8", "model.hidden_size"),
                                         ("train.adversarial.epsilon=0.5", "train.adversarial")])
def test_the_library_refuses_to_resume_with_a_key_that_changes_the_training(data, tmp_path, changed, key):
    """train(resume=True) itself, not only the command line, refuses changed keys other than how long, where and
    how fast the run goes; nothing is trained or written."""
    run_dir = interrupted_run(tmp_path, config(data, "train.epochs=2"), 3)
    before = (run_dir / LAST).read_bytes()
    with pytest.raises(SentimentError, match=rf"changed config \({key}\)"):
        train(config(data, "train.epochs=2", changed), run_dir, resume=True)
    assert (run_dir / LAST).read_bytes() == before
    train(config(data, "train.epochs=3", "run.eval_test=true", "run.checkpoint_minutes=5"), run_dir, resume=True)
    assert load_checkpoint(run_dir / LAST)["loop"]["epoch"] == 3  # the keys that may change still can


def test_resume_on_another_process_count_warns_nothing(data, tmp_path):
    """A run resumed on another number of processes regroups its schedule without torch's lr_scheduler warning
    (it leaked to the user's terminal); here a 1-process checkpoint stands in for one written by 2 processes."""
    import warnings

    from sentiment.runs import save_checkpoint

    cfg = config(data, "train.epochs=2", "train.lr_schedule=cosine", "train.warmup_steps=2")
    run_dir = interrupted_run(tmp_path, cfg, 4)  # 4 steps done: as 2 steps of 2 processes
    state = load_checkpoint(run_dir / LAST)
    state["loop"].update(world_size=2, step_in_epoch=2, global_step=2, schedule_steps=5)
    state["scheduler"]["last_epoch"] = 2
    save_checkpoint(run_dir / LAST, {k: v for k, v in state.items() if k not in ("format", "run_format_version")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, run_dir, resume=True)
    assert not [w for w in caught if "lr_scheduler" in w.filename or "get_last_lr" in str(w.message)], \
        [str(w.message) for w in caught]
    last = load_checkpoint(run_dir / LAST)
    assert last["loop"]["world_size"] == 1 and last["loop"]["schedule_steps"] == 10
    assert read_metrics(run_dir)[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ended at its last step
