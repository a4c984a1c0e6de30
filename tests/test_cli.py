"""The command line as a user meets it: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import load_config
from conftest import TINY_TRAINING, one_line_error, set_args

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST = set_args(["train.epochs=2", *TINY_TRAINING])


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output  # stdout and stderr together


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, Path]:
    from conftest import make_imdb

    base = tmp_path_factory.mktemp("cli")
    data = make_imdb(base / "data", n_per_class=40)
    run_dir = base / "run"
    code, text = run("train", "--set", f"data.data_dir={data}", *FAST, "--run-dir", str(run_dir))
    assert code == 0, text
    return run_dir, data


def test_help_lists_every_command():
    code, text = run("--help")
    assert code == 0
    for command in ("download", "prepare", "train", "eval"):
        assert command in text


def test_print_config_shows_overrides_and_exits(tmp_path):
    code, text = run("train", "--config", str(CONFIGS / "imdb_bilstm.yaml"), "--set", "model.rnn=gru", "--print-config",
                     "--run-dir", str(tmp_path / "never"))
    assert code == 0
    # the printed config is the file's, with the override applied, in full
    assert yaml.safe_load(text) == load_config(CONFIGS / "imdb_bilstm.yaml", ["model.rnn=gru"]).to_dict()
    assert load_config(CONFIGS / "imdb_bilstm.yaml").model.rnn != "gru"
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args, needles", [
    (["train", "--config", "nope.yaml"], ["nope.yaml", "not found"]),
    (["train", "--set", "model.rnnn=gru"], ["model.rnnn", "rnn"]),
    (["train", "--set", "train.lr=-1"], ["train.lr"]),
    (["train", "--set", "model.hidden_size=big"], ["model.hidden_size"]),
    (["train", "--set", "epochs"], ["KEY=VALUE"]),
    (["eval", "--run", "no/such/run"], ["not found"]),
    (["eval", "--run", ".", "--split", "dev"], ["--split"]),
])
def test_bad_input_is_one_clear_line(args, needles):
    code, text = run(*args)
    one_line_error(code, text, *needles)


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  rnn: gru\n  hidden_size: [128\n")
    code, text = run("train", "--config", str(bad))
    one_line_error(code, text, "line")


def test_missing_data_says_how_to_download(tmp_path):
    code, text = run("train", "--set", f"data.data_dir={tmp_path / 'empty'}", "--run-dir", str(tmp_path / "r"))
    one_line_error(code, text, "make download-data")
    assert code == 2


def test_existing_run_dir_is_refused(cli_run):
    run_dir, data = cli_run
    before = sorted(p.name for p in run_dir.iterdir())
    code, text = run("train", "--set", f"data.data_dir={data}", "--run-dir", str(run_dir))
    one_line_error(code, text, "--resume", "--overwrite")
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_eval_json_matches_training_results(cli_run):
    run_dir, _ = cli_run
    code, text = run("eval", "--run", str(run_dir), "--json")
    assert code == 0, text
    metrics = json.loads(text.strip().splitlines()[-1])
    recorded = json.loads((run_dir / "results.json").read_text())["test"]
    assert metrics["accuracy"] == recorded["accuracy"]
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == recorded["n"]


def test_eval_table_shows_metrics_and_confusion_matrix(cli_run):
    code, text = run("eval", "--run", str(cli_run[0]), "--split", "valid")
    assert code == 0, text
    for word in ("accuracy", "precision", "recall", "f1", "confusion matrix", "predicted positive"):
        assert word in text


def test_eval_refuses_corrupt_checkpoint(cli_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cli_run[0], copy)
    data = (copy / "best.pt").read_bytes()
    (copy / "best.pt").write_bytes(data[: len(data) // 2])
    code, text = run("eval", "--run", str(copy))
    one_line_error(code, text, "corrupt")


def test_eval_refuses_checkpoint_of_another_vocab(cli_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cli_run[0], copy)
    vocab = json.loads((copy / "vocab.json").read_text())
    vocab["itos"][5], vocab["itos"][6] = vocab["itos"][6], vocab["itos"][5]
    (copy / "vocab.json").write_text(json.dumps(vocab))
    code, text = run("eval", "--run", str(copy))
    one_line_error(code, text, "another vocab")


def test_resume_refuses_a_changed_model(cli_run):
    code, text = run("train", "--resume", str(cli_run[0]), "--set", "model.hidden_size=64")
    one_line_error(code, text, "model.hidden_size")


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    code, text = run("train", "--resume", str(tmp_path))
    one_line_error(code, text, "not a run directory")
