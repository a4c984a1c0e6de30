"""Old run directories keep working: tests/fixtures/run_v0_files, trained by the code of commit 81a9968 (before run
directories had a format version), still evaluates to the figures it printed then, predicts the probabilities it
printed then, and resumes; and run directories written now carry their format version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import load_config
from sentiment.errors import SentimentError
from sentiment.runs import (LAST, RUN_FILE, RUN_FORMAT_VERSION, load_checkpoint, load_run, read_metrics,
                            run_format_version)
from sentiment.data.tokenize import TOKENIZER_VERSION
from sentiment.ngrams import TOKEN_HASH_VERSION
from sentiment.training.train import train
from conftest import TINY_TRAINING, make_imdb

FIXTURES = Path(__file__).parent / "fixtures"
TEXTS = ["the movie was wonderful", "awful boring mess", "it was okay fine"]
runner = CliRunner()


@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Path:
    """The v0 run copied into a fresh folder beside the CSV its config names (train_file: reviews.csv)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTIMENT_CACHE_DIR", raising=False)
    shutil.copy(FIXTURES / "run_v0_files.csv", tmp_path / "reviews.csv")
    shutil.copytree(FIXTURES / "run_v0_files", tmp_path / "run_v0")
    return Path("run_v0")


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_the_fixture_is_a_version_0_run(old_run):
    assert not (old_run / RUN_FILE).exists()
    assert run_format_version(old_run) == 0
    assert "run_format_version" not in load_checkpoint(old_run / LAST)


def test_an_old_run_evaluates_to_its_figures(old_run):
    result = runner.invoke(app, ["eval", "--run", str(old_run), "--json"])
    assert result.exit_code == 0, result.output
    expected, got = json.loads((FIXTURES / "run_v0_files.eval.json").read_text()), last_json(result.output)
    assert got["n"] == expected["n"] and got["confusion"] == expected["confusion"]
    assert got["accuracy"] == expected["accuracy"]
    assert got["loss"] == pytest.approx(expected["loss"], abs=1e-6)


def test_an_old_run_predicts_its_probabilities(old_run):
    result = runner.invoke(app, ["predict", "--run", str(old_run), "--json", *TEXTS])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.output.strip().splitlines() if line.startswith("{")]
    expected = [json.loads(line) for line in (FIXTURES / "run_v0_files.predict.jsonl").read_text().splitlines()]
    assert len(got) == len(expected) == len(TEXTS)
    for g, e in zip(got, expected):
        assert g["label"] == e["label"] and g["probs"].keys() == e["probs"].keys()
        for name, p in e["probs"].items():
            assert g["probs"][name] == pytest.approx(p, abs=1e-6)


def test_an_old_run_resumes(old_run):
    """Its cosine schedule allows no more epochs: resuming the finished run scores it again, and keeps its files
    (it stays a version-0 run: no run file of a later version is written into it)."""
    before = read_metrics(old_run)
    result = runner.invoke(app, ["train", "--resume", str(old_run), "--set", "run.device=cpu"])
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output
    assert read_metrics(old_run) == before
    assert run_format_version(old_run) == 0


def test_an_old_checkpoint_trains_on_where_the_rules_allow(old_run):
    """A v0 last.pt, resumed with more epochs under a constant schedule (the config says cosine: rewritten here
    into the run, as a user cannot, to reach the engine's resume path with old checkpoint contents)."""
    config = (old_run / "config.yaml").read_text().replace("lr_schedule: cosine", "lr_schedule: constant")
    (old_run / "config.yaml").write_text(config)
    result = runner.invoke(app, ["train", "--resume", str(old_run), "--set", "train.epochs=3",
                                 "--set", "run.device=cpu"])
    assert result.exit_code == 0, result.output
    rows = read_metrics(old_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    last = load_checkpoint(old_run / LAST)
    assert last["loop"]["epoch"] == 3 and last["run_format_version"] == RUN_FORMAT_VERSION


def test_a_new_run_records_its_format_version(tmp_path):
    data = make_imdb(tmp_path / "data", n_per_class=20, with_glove=False)
    cfg = load_config(None, [f"data.data_dir={data}", *TINY_TRAINING, "data.glove_dim=null", "model.embed_dim=8",
                             "train.epochs=1", "run.eval_test=false", "data.workers=1"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(cfg, run_dir)
    recorded = json.loads((run_dir / RUN_FILE).read_text())
    assert {k: recorded[k] for k in ("format_version", "tokenizer_version", "token_hash_version")} == {
        "format_version": RUN_FORMAT_VERSION, "tokenizer_version": TOKENIZER_VERSION,
        "token_hash_version": TOKEN_HASH_VERSION}
    assert run_format_version(run_dir) == RUN_FORMAT_VERSION
    assert load_checkpoint(run_dir / LAST)["run_format_version"] == RUN_FORMAT_VERSION


def test_a_run_from_a_newer_sentiment_is_refused_by_name(old_run):
    (old_run / RUN_FILE).write_text(json.dumps({"format_version": RUN_FORMAT_VERSION + 1}))
    with pytest.raises(SentimentError, match="upgrade sentiment"):
        load_run(old_run)


@pytest.mark.parametrize("recorded", [{}, {"tokenizer_version": 1}, {"tokenizer_version": 1, "token_hash_version": 1},
                                      {"tokenizer_version": TOKENIZER_VERSION}])
def test_runs_of_tokenizer_versions_this_code_reads_load(old_run, recorded):
    # version 1 (every run before versions were recorded) differs from 2 only on whitespace-free runs of over
    # tokenize.MAX_CHUNK characters: read as it is (see tokenize.TOKENIZER_VERSION)
    (old_run / RUN_FILE).write_text(json.dumps({"format_version": RUN_FORMAT_VERSION, **recorded}))
    load_run(old_run)


@pytest.mark.parametrize("recorded, needle", [({"tokenizer_version": TOKENIZER_VERSION + 1}, "tokenizer version"),
                                              ({"token_hash_version": TOKEN_HASH_VERSION + 1}, "token hash version"),
                                              ({"tokenizer_version": "spacy"}, "tokenizer version 'spacy'")])
def test_a_run_whose_tokens_this_code_cannot_make_is_refused(old_run, recorded, needle):
    (old_run / RUN_FILE).write_text(json.dumps({"format_version": RUN_FORMAT_VERSION, **recorded}))
    with pytest.raises(SentimentError, match=f"run run_v0 was made with {needle}") as info:
        load_run(old_run)
    assert "\n" not in str(info.value)
