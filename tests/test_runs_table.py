"""`sentiment runs` and the library under it (sentiment.inference.runs_table): each status from a real run or a
run directory made by hand, the keys that differ, sorting, JSON, and a tree left exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.inference.runs_table import list_runs, sort_runs
from sentiment.runlock import RunLock
from sentiment.runstatus import process_start
from conftest import StopAfter, one_line_error, poison_loss, tiny_run_config

runner = CliRunner()


def run_cli(*args: str, env: dict | None = None):
    result = runner.invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})
    return result.exit_code, result.output


def copy_run(source: Path, target: Path, **config: object) -> Path:
    """A copy of a run directory, its config.yaml changed at dotted keys."""
    shutil.copytree(source, target)
    raw = yaml.safe_load((target / "config.yaml").read_text())
    for key, value in config.items():
        section, name = key.split("__")
        raw[section][name] = value
    (target / "config.yaml").write_text(yaml.safe_dump(raw))
    return target


def set_status(run_dir: Path, **record: object) -> None:
    (run_dir / "status.json").write_text(json.dumps({"host": os.uname().nodename, **record}))


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: the pid names no process
    return child.pid


@pytest.fixture(scope="module")
def tree(tmp_path_factory, finished_run, pretraining_run, session_data) -> Path:
    """runs/ with a run in every status: finished (real, and a copy at another train.lr), pretraining (real),
    interrupted and failed (real), and by hand incomplete (killed: "running" from a dead process; and a start with
    run.json alone), running (a lock held; a live process without one), and corrupt ones."""
    from sentiment.training.train import TrainingDiverged, TrainingInterrupted, train

    root = tmp_path_factory.mktemp("tree") / "runs"
    root.mkdir()
    shutil.copytree(finished_run, root / "a-finished")
    copy_run(finished_run, root / "b-other-lr", train__lr=0.003)
    shutil.copytree(pretraining_run, root / "lm")
    (root / "c-interrupted").mkdir()
    with pytest.raises(TrainingInterrupted):
        train(tiny_run_config(session_data, "run.tensorboard=false"), root / "c-interrupted", stop=StopAfter(7))
    with pytest.MonkeyPatch.context() as mp:
        poison_loss(mp, after_calls=2)
        (root / "d-failed").mkdir()
        with pytest.raises(TrainingDiverged):
            train(tiny_run_config(session_data, "run.tensorboard=false"), root / "d-failed")
    killed = copy_run(finished_run, root / "nested" / "e-killed")
    (killed / "results.json").unlink()
    set_status(killed, status="running", pid=dead_pid(), process_start=1)
    (root / "f-starting").mkdir()
    (root / "f-starting" / "run.json").write_text('{"format_version": 1}\n')
    copy_run(finished_run, root / "g-locked")
    set_status(root / "g-locked", status="running", pid=dead_pid())
    unlocked = copy_run(finished_run, root / "h-no-lock")
    set_status(unlocked, status="running", pid=os.getpid(), process_start=process_start(os.getpid()))
    (copy_run(finished_run, root / "i-bad-yaml") / "config.yaml").write_text("train: [unclosed\n")
    (copy_run(finished_run, root / "j-torn-results") / "results.json").write_text('{"valid": {"accur')
    (copy_run(finished_run, root / "k-no-best") / "best.pt").unlink()
    copy_run(finished_run, root / ".l-hidden-aside")  # as --overwrite sets a run aside: not listed
    (root / "notes").mkdir()  # not a run: no run.json, no config.yaml
    (root / "notes" / "todo.txt").write_text("compare the runs\n")
    return root


@pytest.fixture
def locked(tree):
    lock = RunLock(tree / "g-locked").acquire()
    yield
    lock.release()


def by_name(runs) -> dict:
    return {r.name: r for r in runs}


def test_each_run_has_its_status(tree, locked):
    runs = by_name(list_runs([tree]))
    assert {name: r.status for name, r in runs.items()} == {
        "a-finished": "finished", "b-other-lr": "finished", "lm": "finished", "c-interrupted": "interrupted",
        "d-failed": "failed", "nested/e-killed": "incomplete", "f-starting": "incomplete", "g-locked": "running",
        "h-no-lock": "running", "i-bad-yaml": "corrupt", "j-torn-results": "corrupt", "k-no-best": "corrupt"}
    assert runs["g-locked"].detail == f"written by pid {os.getpid()}"
    assert "loss became nan at epoch 1, step 3" in runs["d-failed"].detail
    assert "interrupted at epoch 2, step 3" in runs["c-interrupted"].detail
    assert "config.yaml" in runs["i-bad-yaml"].detail and "results.json" in runs["j-torn-results"].detail
    assert "best.pt is missing" in runs["k-no-best"].detail
    assert runs["lm"].kind == "pretrain" and runs["a-finished"].kind == "classifier"


def test_a_released_lock_is_not_a_writer(tree):
    assert by_name(list_runs([tree]))["g-locked"].status == "incomplete"  # "running" from a process now gone


def test_figures_come_from_results_or_the_best_epoch_so_far(tree, finished_run):
    runs = by_name(list_runs([tree]))
    results = json.loads((finished_run / "results.json").read_text())
    done = runs["a-finished"]
    assert (done.best_epoch, done.epochs_run, done.epochs) == (results["best_epoch"], 2, 2)
    assert done.valid_accuracy == results["valid"]["accuracy"] and done.test_macro_f1 == results["test"]["macro_f1"]
    rows = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert done.wall_seconds == pytest.approx(sum(r["seconds"] + r["valid_seconds"] for r in rows))
    stopped = runs["c-interrupted"]  # one whole epoch scored before the interruption, no test figure
    assert (stopped.best_epoch, stopped.epochs_run) == (1, 1) and stopped.test_accuracy is None
    assert 0 < stopped.valid_accuracy <= 1
    assert runs["lm"].held_out_perplexity > 1 and runs["lm"].valid_accuracy is None


def test_only_the_keys_that_differ_are_shown(tree):
    runs = by_name(list_runs([tree / "a-finished", tree / "b-other-lr"]))
    assert runs["a-finished"].differs == {"train.lr": 0.01} and runs["b-other-lr"].differs == {"train.lr": 0.003}
    assert runs["a-finished"].config["model.rnn"] == "gru"  # the whole config is there, flattened
    assert by_name(list_runs([tree / "a-finished"]))["a-finished"].differs == {}  # alone: nothing differs


def test_sorting_puts_the_best_first_and_runs_without_a_figure_last(tree):
    ordered = sort_runs(list_runs([tree]), "valid_accuracy")
    figures = [r.valid_accuracy for r in ordered[:-3]]
    assert None not in figures and figures == sorted(figures, reverse=True)
    assert {r.name for r in ordered[-3:]} == {"d-failed", "f-starting", "lm"}  # no validation accuracy
    by_lr = [r.name for r in sort_runs(list_runs([tree / "a-finished", tree / "b-other-lr"]), "train.lr")]
    assert by_lr == ["b-other-lr", "a-finished"]
    assert [r.name for r in sort_runs(list_runs([tree / "a-finished", tree / "b-other-lr"]), "train.lr",
                                      reverse=True)] == ["a-finished", "b-other-lr"]


def snapshot(root: Path) -> dict:
    """Every file's and folder's bytes and modification time, beside root (the lock files) included."""
    state = {}
    for path in sorted(root.parent.rglob("*")):
        info = path.lstat()
        state[str(path)] = (info.st_mtime_ns, info.st_mode, path.read_bytes() if path.is_file() else None)
    return state


def test_the_command_prints_the_table_and_changes_nothing(tree, locked):
    before = snapshot(tree)
    code, text = run_cli("runs", str(tree))
    assert code == 0, text
    for needle in ("a-finished", "nested/e-killed", "finished", "interrupted", "failed", "incomplete", "running",
                   "corrupt", "train.lr=0.003", "lm (pretrain)"):
        assert needle in text, needle
    assert ".l-hidden-aside" not in text and "notes" not in text
    code, text = run_cli("runs", str(tree), "--json", "--sort", "test_accuracy")
    assert code == 0, text
    listed = json.loads(text)
    assert len(listed) == 12 and listed[0]["test_accuracy"] is not None
    assert {"name", "status", "differs", "config", "best_epoch", "valid_macro_f1", "wall_seconds"} <= set(listed[0])
    assert snapshot(tree) == before


def test_the_default_folder_is_the_runs_directory(tree):
    code, text = run_cli("runs", "--json", env={"SENTIMENT_RUNS_DIR": str(tree / "nested")})
    assert code == 0, text
    assert [r["name"] for r in json.loads(text)] == ["e-killed"]


@pytest.mark.parametrize("args, needles", [
    (["--sort", "speed"], ["--sort speed", "valid_accuracy"]),
    (["/no/such/folder"], ["/no/such/folder", "not a directory"]),
])
def test_a_bad_argument_is_one_error_line(tree, args, needles):
    code, text = run_cli("runs", *(args if args[0].startswith("/") else [str(tree), *args]))
    one_line_error(code, text, *needles)


def test_an_empty_folder_says_so(tmp_path):
    code, text = run_cli("runs", str(tmp_path))
    assert code == 0 and "no run directories" in text
