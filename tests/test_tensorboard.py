"""TensorBoard event files: what a run writes (read back as TensorBoard reads them), a resumed run's curves without
repeated steps, run.tensorboard: false and true without the package, and the hyperparameters."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import StopAfter, one_line_error, tiny_run_config

pytest.importorskip("tensorboard", reason="the `track` extra (tensorboard) is not installed")

ROOT = Path(__file__).resolve().parents[1]
STEP_TAGS = ["train/loss", "train/accuracy", "train/lr", "train/tokens_per_s"]


def events(run_dir: Path):
    """The run's events as TensorBoard's own reader loads them (a resumed writer's purge applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag: str) -> list[int]:
    return [e.step for e in accumulator.Scalars(tag)]


def values(accumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in accumulator.Scalars(tag)}


def hparams_data(accumulator, tag: str):
    from tensorboard.plugins.hparams import plugin_data_pb2

    return plugin_data_pb2.HParamsPluginData.FromString(accumulator.PluginTagToContent("hparams")[tag])


def test_a_run_writes_step_and_epoch_curves(finished_run):
    board = events(finished_run)
    scalars = board.Tags()["scalars"]
    for tag in STEP_TAGS:  # on CPU the loop reports every step: 2 epochs of 5
        assert steps(board, tag) == list(range(1, 11)), tag
    rows = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    for column in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_macro_f1", "lr",
                   "tokens_per_s"):
        assert values(board, f"epoch/{column}") == pytest.approx({r["step"]: r[column] for r in rows}), column
    assert values(board, "epoch/epoch") == {5: 1.0, 10: 2.0}
    assert not [t for t in scalars if t in ("epoch/step", "epoch/processes", "epoch/best")]  # layout, not curves
    assert all(v == pytest.approx(0.01) for v in values(board, "train/lr").values())  # the constant schedule's
    assert all(0 <= v <= 1 for v in values(board, "train/accuracy").values())


def test_the_hyperparameters_and_final_figures_are_recorded(finished_run):
    board = events(finished_run)
    results = json.loads((finished_run / "results.json").read_text())
    assert values(board, "final/valid_accuracy") == {10: pytest.approx(results["valid"]["accuracy"])}
    assert values(board, "final/test_macro_f1") == {10: pytest.approx(results["test"]["macro_f1"])}
    assert values(board, "final/best_epoch") == {10: results["best_epoch"]}
    hparams = hparams_data(board, "_hparams_/session_start_info").session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(0.01)
    assert hparams["model.rnn"].string_value == "gru"
    assert hparams["run.eval_test"].number_value == 1  # torch records a boolean as a number
    assert "data.labels" not in hparams and "model.ngrams" not in hparams  # null and lists: not scalars
    experiment = hparams_data(board, "_hparams_/experiment").experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"final/valid_accuracy", "final/test_accuracy"}


def test_a_pretraining_run_writes_curves_too(pretraining_run):
    board = events(pretraining_run)
    assert steps(board, "train/loss") and steps(board, "train/lr")
    assert "epoch/valid_perplexity" in board.Tags()["scalars"]
    assert "final/held_out_perplexity" in board.Tags()["scalars"]


def test_a_resumed_run_continues_the_curves_without_repeating_a_step(session_data, finished_run, tmp_path):
    """A run interrupted at step 3, resumed and killed at step 7 after logging steps 4 to 7 but before another
    checkpoint (as kill -9 leaves it: last.pt of step 3 put back), then resumed to the end: TensorBoard shows each
    step once, with the values of the process that trained it last, which are the uninterrupted run's (a resume is
    exact on CPU)."""
    from sentiment.training.train import TrainingInterrupted, train

    cfg = tiny_run_config(session_data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir, stop=StopAfter(3))
    shutil.copy(run_dir / "last.pt", tmp_path / "step3.pt")
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir, resume=True, stop=StopAfter(4))
    shutil.copy(tmp_path / "step3.pt", run_dir / "last.pt")
    train(cfg, run_dir, resume=True)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 3  # one file per process
    board, uninterrupted = events(run_dir), events(finished_run)
    for tag in STEP_TAGS:
        assert steps(board, tag) == list(range(1, 11)), tag
    assert values(board, "train/loss") == values(uninterrupted, "train/loss")
    assert steps(board, "epoch/valid_accuracy") == [5, 10]
    assert values(board, "epoch/valid_accuracy") == values(uninterrupted, "epoch/valid_accuracy")


def test_false_writes_no_event_files(session_data, tmp_path):
    from sentiment.training.train import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(tiny_run_config(session_data, "train.epochs=1", "run.eval_test=false", "run.tensorboard=false"), run_dir)
    assert (run_dir / "results.json").is_file()
    assert not list(run_dir.glob("events.out.tfevents.*"))


BLOCKED = "import sys; sys.modules['tensorboard'] = None; from sentiment.cli import main; sys.argv[0] = 'sentiment'; main()"


def test_true_without_the_package_is_one_error_line_before_training(tmp_path):
    """With tensorboard unimportable (blocked in sys.modules), true is refused at once: before the data (here
    missing) are read and before the run directory is made; auto trains without event files."""
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", BLOCKED, "train", "--set", "run.tensorboard=true", "--set",
                           f"data.data_dir={tmp_path / 'no-data'}", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    one_line_error(done.returncode, done.stdout + done.stderr, "run.tensorboard", "sentiment[track]")
    assert not run_dir.exists()


def test_auto_without_the_package_writes_nothing_and_true_is_refused(monkeypatch):
    from sentiment.errors import SentimentError
    from sentiment.training.tensorboard import tensorboard_enabled

    assert tensorboard_enabled("auto") and tensorboard_enabled(True) and not tensorboard_enabled(False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an import of a missing package meets
    assert not tensorboard_enabled("auto") and not tensorboard_enabled(False)
    with pytest.raises(SentimentError, match=r"sentiment\[track\]"):
        tensorboard_enabled(True)


def test_the_key_is_checked_like_the_others():
    from sentiment.config import load_config
    from sentiment.errors import SentimentError

    assert load_config(None, []).run.tensorboard == "auto"
    assert load_config(None, ["run.tensorboard=false"]).run.tensorboard is False
    with pytest.raises(SentimentError, match="run.tensorboard"):
        load_config(None, ["run.tensorboard=sometimes"])
