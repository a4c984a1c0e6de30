"""benchmarks/compare_linear.py on tiny data: it trains our config, fits TF-IDF + LR on the same splits and
prints both and the paired-bootstrap interval, with the n-gram branch on; and the own-data default (--data) over
two split seeds, its pooled interval recomputed here from the per-row predictions the JSON keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert "NOTE: seed" not in text, text  # our predictions here agree with the run's results.json
    assert "split seed 42: train 100 ·" in text, text  # data.train_limit: the baseline fits on the rows the run kept


def test_split_seeds_flags_that_do_not_go_together(tmp_path):
    config = str(ROOT / "configs" / "airline_tweets.yaml")
    for args, message in (
            (["--config", config, "--split-seeds", "1", "2", "--set", "data.split_seed=3"], "leave it out of --set"),
            (["--config", config, "--label-column", "sentiment"], "go with --data"),
            (["--seeds", "1"], "--config CONFIG or --data FILE"),
            (["--config", config, "--split-seeds", "1", "1"], "each value once")):
        out = run_script(*args, "--runs-dir", str(tmp_path / "runs"))
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    assert not (tmp_path / "runs").exists()


def direct_differences(split: dict, resamples: int) -> dict[str, np.ndarray]:
    """Split i's bootstrap differences recomputed from its saved rows, one resample at a time: rows drawn as the
    script says (numpy default_rng(i), one [resamples, n] draw while resamples <= 1000), figures per class."""
    gold = np.array(split["test_gold"])
    ours = [np.array(p) for p in split["test_predictions"]["ours"]]
    theirs = np.array(split["test_predictions"]["baseline"])
    rows = np.random.default_rng(split["bootstrap"]["rng_seed"]).integers(0, len(gold), size=(resamples, len(gold)))

    def scores(pred: np.ndarray, r: np.ndarray) -> tuple[float, float]:
        g, p = gold[r], pred[r]
        f1 = []
        for c in range(len(split["classes"])):
            tp, predicted, actual = ((g == c) & (p == c)).sum(), (p == c).sum(), (g == c).sum()
            f1.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
        return float((g == p).mean()), float(np.mean(f1))

    out = {"accuracy": [], "macro_f1": []}
    for r in rows:
        mine, base = np.mean([scores(p, r) for p in ours], axis=0), scores(theirs, r)
        out["accuracy"].append(mine[0] - base[0])
        out["macro_f1"].append(mine[1] - base[1])
    return {name: np.array(values) for name, values in out.items()}


def test_own_data_default_over_split_seeds_pools_the_splits_differences(tmp_path):
    """--data FILE --label-column COL: each split seed trains `sentiment train --data` runs of its own and a
    baseline on its own rows; the pooled interval is the percentile of the splits' per-resample differences,
    averaged."""
    pytest.importorskip("sklearn")
    rows = [{"tweet": r["text"], "airline_sentiment": r["label"]}
            for r in make_rows({"negative": 100, "neutral": 60, "positive": 60})]
    csv = write_csv(tmp_path / "tweets.csv", rows)
    resamples = 300
    sets = [arg for s in ["data.glove_dim=null", "model.embed_dim=8", "train.epochs=2", "run.threads=1",
                          "data.workers=1", f"data.data_dir={tmp_path / 'data'}", *TINY_TRAINING]
            for arg in ("--set", s)]
    runs, report = tmp_path / "runs", tmp_path / "compare.json"
    out = run_script("--data", str(csv), "--label-column", "airline_sentiment", "--text-column", "tweet",
                     "--split-seeds", "1", "2", "--seeds", "1", "--runs-dir", str(runs), "--grid", "1", "4",
                     "--resamples", str(resamples), "--json", str(report), *sets)
    assert out.returncode == 0, out.stdout + out.stderr
    for needle in ("== split seed 1:", "== split seed 2:", "== pooled over 2 splits ==", "pooled paired bootstrap"):
        assert needle in out.stdout, out.stdout
    assert "NOTE: seed" not in out.stdout, out.stdout
    for split_seed in (1, 2):  # the children were `sentiment train --data`, one split seed each
        run_config = (runs / f"split{split_seed}" / "seed1" / "config.yaml").read_text()
        assert f"split_seed: {split_seed}" in run_config and "label_column: airline_sentiment" in run_config
        assert "max_len: " in run_config and "name: tweets" in run_config
    with np.load(runs / "split1" / "seed1" / "splits.npz") as a, np.load(runs / "split2" / "seed1" / "splits.npz") as b:
        assert not np.array_equal(a["test"], b["test"])  # two splits, two test sets

    data = json.loads(report.read_text())
    assert data["split_seeds"] == [1, 2] and data["seeds"] == [1] and data["resamples"] == resamples
    assert set(data["over_splits"]) == {"ours_accuracy", "baseline_accuracy", "ours_macro_f1", "baseline_macro_f1",
                                        "difference_accuracy", "difference_macro_f1"}
    diffs = []
    for i, split in enumerate(data["splits"]):
        assert split["split_seed"] == i + 1 and split["bootstrap"]["rng_seed"] == i
        n = split["rows"]["test"]
        assert n == len(split["test_gold"]) == len(split["test_predictions"]["baseline"]) > 0
        assert [len(p) for p in split["test_predictions"]["ours"]] == [n]
        assert split["ours"]["test_accuracy"][0] == pytest.approx(
            np.mean(np.array(split["test_predictions"]["ours"][0]) == np.array(split["test_gold"])))
        assert split["baseline"]["C"] in (1, 4)
        diffs.append(direct_differences(split, resamples))
        for name in ("accuracy", "macro_f1"):
            boot = split["bootstrap"][name]
            test = split["test"]
            assert boot["difference"] == pytest.approx(test[f"ours_{name}"] - test[f"baseline_{name}"])
            assert (boot["low"], boot["high"]) == pytest.approx(tuple(np.percentile(diffs[-1][name], [2.5, 97.5])))
    for name in ("accuracy", "macro_f1"):
        pooled = (diffs[0][name] + diffs[1][name]) / 2  # resample b of each split, the two differences averaged
        got = data["pooled"][name]
        assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(pooled, [2.5, 97.5])))
        assert got["ahead"] == pytest.approx((pooled > 0).mean())
        assert got["difference"] == pytest.approx(np.mean([s["bootstrap"][name]["difference"] for s in data["splits"]]))
        assert data["over_splits"][f"difference_{name}"]["mean"] == pytest.approx(got["difference"])

    # --reuse reads each split's runs, and checks them against that split's rows: swapped, they are refused
    (runs / "split1").rename(runs / "held")
    (runs / "split2").rename(runs / "split1")
    (runs / "held").rename(runs / "split2")
    out = run_script("--data", str(csv), "--label-column", "airline_sentiment", "--text-column", "tweet",
                     "--split-seeds", "1", "2", "--seeds", "1", "--runs-dir", str(runs), "--reuse", *sets)
    assert out.returncode != 0, out.stdout
    assert "split1/seed1's run has other splits than data.split_seed=1" in out.stderr, out.stderr
