"""benchmarks/compare_linear.py on tiny data: it trains our config, fits TF-IDF + LR on the same splits and
prints both and the paired-bootstrap interval, with the n-gram branch on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_datasets_e2e import make_rows, write_csv
from conftest import TINY_TRAINING

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare_linear.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_help():
    out = run_script("--help")
    assert out.returncode == 0 and "TF-IDF" in out.stdout and "--seeds" in out.stdout


def test_the_dev_extra_installs_scikit_learn():
    """CI installs the dev extra (`make install`): without scikit-learn there the test below skips and every
    README comparison with TF-IDF + LR rests on code CI never runs."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]["dev"]
    assert any(req.startswith("scikit-learn") for req in dev), dev


def test_compares_our_config_with_tfidf_lr_on_the_same_splits(tmp_path):
    pytest.importorskip("sklearn")  # in the dev extra (above); skipped only where the extras were left out
    csv = write_csv(tmp_path / "tiny.csv", make_rows({"negative": 90, "neutral": 60, "positive": 60}))
    config = tmp_path / "tiny.yaml"
    config.write_text(f"data: {{dataset: files, train_file: {csv}, data_dir: {tmp_path / 'data'}, glove_dim: null, "
                      "workers: 1, test_fraction: 0.2, train_limit: 100}\nmodel: {embed_dim: 8, ngrams: {n: 2, buckets: 4096}}\n"
                      "train: {epochs: 2}\nrun: {threads: 1}\n")
    sets = [arg for s in TINY_TRAINING for arg in ("--set", s)]
    out = run_script("--config", str(config), "--seeds", "1", "--runs-dir", str(tmp_path / "runs"), "--grid", "1", "4",
                     "--resamples", "200", *sets)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for needle in ("TF-IDF+LR", "ours", "paired bootstrap", "test accuracy  95% interval", "test macro-F1  95% interval"):
        assert needle in text, text
    assert "NOTE: seed" not in text, text
    assert "split: train 100 ·" in text, text  # data.train_limit: the baseline fits on the rows the run kept  # our predictions here agree with the run's results.json
