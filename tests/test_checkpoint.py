"""sentiment.runs: what a finished run records about how it was made."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from sentiment.runs import code_version
from sentiment.config import load_config
from sentiment.training.train import train
from conftest import TINY_TRAINING


def test_code_version_is_this_checkout_commit():
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        assert code_version().startswith("sentiment ")
    else:
        assert code_version().split("+")[0] == head.stdout.strip()


def test_results_record_commit_seeds_and_split_method(tiny_data, tmp_path):
    cfg = load_config(None, [f"data.data_dir={tiny_data}", *TINY_TRAINING, "train.epochs=1", "run.seed=7",
                             "data.split_seed=3"])
    train(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seed"] == 7 and results["split_seed"] == 3
    assert results["valid_split"].startswith("random (movie split asked for")  # make_imdb writes no urls files
    assert results["commit"] == code_version()
    assert results["selected_on"] == "valid" and "test" in results
    if torch.cuda.is_available():
        assert results["device"].startswith("cuda (")
    else:
        assert results["device"] == f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"


def test_the_commit_is_read_once_so_a_commit_made_while_training_is_not_recorded(tiny_data, tmp_path, monkeypatch):
    """train() reads the commit as it starts: a commit made while it trains (git answers another HEAD from the
    first epoch's validation on) is not the one results.json records."""
    from sentiment.training import train as train_mod

    real_run = subprocess.run
    head = {"commit": "a" * 40}

    def git(*args, **kwargs):  # git answers what `head` says; every other command runs
        if args and list(args[0][:1]) == ["git"]:
            out = "" if "status" in args[0] else head["commit"] + "\n"  # a clean tree
            return subprocess.CompletedProcess(args[0], 0, stdout=out, stderr="")
        return real_run(*args, **kwargs)

    real_evaluate = train_mod.evaluate

    def evaluate_after_a_commit(*args, **kwargs):
        head["commit"] = "b" * 40
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", git)
    monkeypatch.setattr(train_mod, "evaluate", evaluate_after_a_commit)
    code_version.cache_clear()  # a new process: nothing read yet
    try:
        cfg = load_config(None, [f"data.data_dir={tiny_data}", *TINY_TRAINING, "train.epochs=1", "run.eval_test=false"])
        results = train(cfg, tmp_path)
        assert head["commit"] == "b" * 40  # git moved on while the run trained
        assert results["commit"] == "a" * 40
        assert json.loads((tmp_path / "results.json").read_text())["commit"] == "a" * 40
    finally:
        code_version.cache_clear()
