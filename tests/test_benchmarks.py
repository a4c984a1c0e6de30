"""benchmarks/: every script answers --help and runs on tiny generated data (smallest settings: the figures mean
nothing, the code paths are what is tested). The torch-using scripts run one after the other in ONE child
process (runpy, as `python SCRIPT ARGS` would), so torch is imported once and their process-wide settings
(flush_denormal, threads) stay out of the test process; metrics.py and seed_runs.py run in this process on run
directories written by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_imdb, review

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in ("common.py", "benchlib.py"))

# Runs each (name, script, argv) with runpy in this one process; writes {name: {"rc", "out"}} to argv[1].
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
sys.path.insert(0, sys.argv[2])
out_path, jobs, results = sys.argv[1], json.loads(sys.argv[3]), {}
for name, script, argv in jobs:
    out, rc = io.StringIO(), 0
    sys.argv = [script, *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            rc = 1
    results[name] = {"rc": rc, "out": out.getvalue()}
    with open(out_path, "w") as f:  # after each job: a crash still leaves the jobs before it
        json.dump(results, f)
"""


def load(name: str):
    """A benchmarks/ script as a module (benchmarks/ on sys.path, as when it runs)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Tiny IMDB (with a few unlabeled reviews and GloVe 50d) and a small CSV of texts."""
    root = tmp_path_factory.mktemp("bench")
    make_imdb(root / "data", n_per_class=20)
    unsup = root / "data" / "aclImdb" / "train" / "unsup"
    unsup.mkdir()
    rng = random.Random(7)
    for i in range(16):
        (unsup / f"{i}_0.txt").write_text(review(rng, i % 2 == 0), encoding="utf-8")
    (root / "texts.csv").write_text("text\n" + "\n".join(f'"{review(rng, i % 2 == 0)}"' for i in range(12)) + "\n",
                                    encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def ran(tiny: Path) -> dict:
    """Every script's --help, then the smoke runs, in one child process."""
    data = str(tiny / "data")
    small = ["--set", "model.hidden_size=16"]
    jobs = [[f"help:{name}", str(BENCH / name), ["--help"]] for name in SCRIPTS]
    jobs += [
        ["bench_prepare", str(BENCH / "bench_prepare.py"), ["--data-dir", data, "--workers", "1", "--warm-runs", "1",
                                                            "--json", str(tiny / "prepare.json")]],
        ["bench_rnn_padding", str(BENCH / "bench_rnn_padding.py"), ["--threads", "1", "--length", "8", "--batch", "4",
                                                                    "--reps", "1"]],
        ["bench_lstm_ceiling", str(BENCH / "bench_lstm_ceiling.py"),
         ["--threads", "1", "--batch", "4", "--length", "8", "--reps", "1", "--gemm-seconds", "0", "--gemm-sizes", "64"]],
        ["bench_train", str(BENCH / "bench_train.py"),
         ["--data-dir", data, "--threads", "1", "--batches", "2", "--random-batches", "1", "--packed-batches", "1",
          "--denormal-batches", "0", "--eval-reviews", "10", *small, "--json", str(tiny / "train.json")]],
        ["bench_ngrams", str(BENCH / "bench_ngrams.py"),
         ["--data-dir", data, "--threads", "1", "--batches", "2", "--eval-reviews", "10", *small,
          "--set", "model.ngrams.buckets=4096", "--json", str(tiny / "ngrams.json")]],
        ["bench_ngrams_buckets", str(BENCH / "bench_ngrams.py"),
         ["--data-dir", data, "--threads", "1", "--buckets", "8,10", "--steps", "2",
          "--json", str(tiny / "ngrams_buckets.json")]],
        ["bench_predict", str(BENCH / "bench_predict.py"),
         ["--data-dir", data, "--texts", "10", "--baseline", "4", "--work-dir", str(tiny / "predict"),
          "--json", str(tiny / "predict.json")]],
        ["bench_predict_csv", str(BENCH / "bench_predict.py"),
         ["--run", str(tiny / "predict" / "untrained-run"), "--csv", str(tiny / "texts.csv"), "--texts", "30",
          "--baseline", "4", "--json", str(tiny / "predict_csv.json")]],
        ["bench_explain", str(BENCH / "bench_explain.py"),
         ["--run", str(tiny / "predict" / "untrained-run"), "--data-dir", data, "--length", "20", "--reps", "1",
          "--threads", "1", "--json", str(tiny / "explain.json")]],
        ["bench_objectives", str(BENCH / "bench_objectives.py"),
         ["--data-dir", data, "--threads", "1", "--batches", "1", *small, "--json", str(tiny / "objectives.json")]],
        ["bench", str(BENCH / "bench.py"), ["--smoke", "--only", "glove", "--data-dir", data, "--threads", "1"]],
    ]
    out = tiny / "results.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               SENTIMENT_CACHE_DIR=str(tiny / "cache"), SENTIMENT_RUNS_DIR=str(tiny / "runs"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", DRIVER, str(out), str(BENCH), json.dumps(jobs)], cwd=tiny, env=env,
                          capture_output=True, text=True, timeout=600)
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    missing = [name for name, _, _ in jobs if name not in results]
    assert not missing, f"the driver stopped before {missing}: {done.stdout[-3000:]} {done.stderr[-3000:]}"
    return results


def figures(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())["rows"]
    assert rows and all(r["ours"] > 0 and r["baseline"] > 0 for r in rows), rows
    return rows


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(ran: dict, name: str) -> None:
    result = ran[f"help:{name}"]
    assert result["rc"] == 0, result["out"]
    assert "usage:" in result["out"] and "--" in result["out"]


def test_bench_gpu_help_and_refusal_without_cuda(tmp_path: Path) -> None:
    shown = subprocess.run(["bash", str(BENCH / "bench_gpu.sh"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "NOT YET RUN AS A WHOLE ON A GPU" in shown.stdout
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine would start the real runs")
    refused = subprocess.run(["bash", str(BENCH / "bench_gpu.sh"), str(tmp_path / "out")], capture_output=True,
                             text=True, env=dict(os.environ, PY=sys.executable))
    assert refused.returncode != 0 and "needs a CUDA GPU" in refused.stderr
    assert not (tmp_path / "out").exists()  # it stops before writing anything


@pytest.mark.parametrize("name", ["bench_prepare", "bench_rnn_padding", "bench_lstm_ceiling", "bench_train", "bench_ngrams",
                                  "bench_ngrams_buckets",
                                  "bench_predict", "bench_predict_csv", "bench_explain", "bench_objectives", "bench"])
def test_smoke_run_succeeds(ran: dict, name: str) -> None:
    assert ran[name]["rc"] == 0, ran[name]["out"][-4000:]


def test_figures_files_name_each_figure_and_its_baseline(ran: dict, tiny: Path) -> None:
    prepare = figures(tiny / "prepare.json")
    assert any("warm prepare" in r["figure"] and r["baseline_name"].startswith("cold") for r in prepare)
    assert sum(r["headline"] for r in figures(tiny / "train.json")) == 2  # training and evaluation
    ngrams = figures(tiny / "ngrams.json")  # a training step and scoring, each against the model without the branch
    assert [r["baseline_name"] for r in ngrams] == ["the same model without it"] * 2
    assert "training step" in ngrams[0]["figure"] and "scoring" in ngrams[1]["figure"]
    buckets = figures(tiny / "ngrams_buckets.json")  # an optimizer step at each table size, sparse against dense
    assert [r["baseline_name"] for r in buckets] == ["the dense table (Adam)"] * 2
    assert "2**8 buckets" in buckets[0]["figure"] and "2**10 buckets" in buckets[1]["figure"]
    assert len(figures(tiny / "objectives.json")) == 4  # each objective and all three against a plain step
    assert "no GloVe" not in ran["bench_prepare"]["out"]
    assert "PASS" not in ran["bench_prepare"]["out"] and "FAIL" not in ran["bench_prepare"]["out"]


def test_predict_agrees_with_one_text_at_a_time(ran: dict, tiny: Path) -> None:
    for name in ("bench_predict", "bench_predict_csv"):
        assert "same texts skipped as empty: yes" in ran[name]["out"], ran[name]["out"]
        assert "same label: 100.00%" in ran[name]["out"], ran[name]["out"]
        note = json.loads((tiny / f"{name.removeprefix('bench_')}.json").read_text())["notes"][0]
        assert float(note.split("difference| ")[1].split()[0]) < 1e-5, note
    assert "texts resampled from texts.csv" in ran["bench_predict_csv"]["out"]


def test_runner_prints_a_summary_with_each_figure(ran: dict) -> None:
    out = ran["bench"]["out"]
    assert "== summary ==" in out and "bench_glove (" in out
    summary = out.split("== summary ==")[1]
    assert "GloVe: cached load (median of 3) vs our first load" in summary
    assert "FAILED" not in summary


def write_run(run: Path, epochs: list[tuple[float, float, int]], results: dict | None = None) -> Path:
    """A run directory holding only what metrics.py and seed_runs.py read: (seconds, valid accuracy, step)."""
    run.mkdir(parents=True)
    rows = [{"epoch": i, "step": step, "seconds": s, "valid_seconds": 1.0, "valid_accuracy": a, "tokens_per_s": 1000.0}
            for i, (s, a, step) in enumerate(epochs, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))
    return run


def test_metrics_time_to_accuracy_budget_step_times_and_png(tmp_path: Path, capsys) -> None:
    metrics = load("metrics")
    fast = write_run(tmp_path / "fast", [(99.0, 0.80, 10), (99.0, 0.90, 20)],
                     {"best_epoch": 2, "test": {"accuracy": 0.89}})
    slow = write_run(tmp_path / "slow", [(199.0, 0.70, 10), (199.0, 0.85, 20)])
    png = tmp_path / "curve.png"
    assert metrics.main([str(fast), str(slow), "--target", "0.88", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "200 s to 88% valid accuracy (epoch 2)" in out  # 2 x (99 + 1) seconds
    assert "> 400 s: not reached in 2 finished epochs (best 85.00%; lower bound)" in out
    assert "> 2.00x the first run's time" in out
    assert "slow takes 2.01x the time per step" in out  # the epoch after the first: 19.9 against 9.9 ms/step
    assert png.read_bytes()[:4] == b"\x89PNG"

    metrics.main([str(fast), "--budget", "150"])  # epoch 2 ends at 200 s: outside the budget
    out = capsys.readouterr().out
    assert "best valid within 2 min: 80.00%; no test figure for the budget" in out
    metrics.main([str(fast), "--budget", "200"])
    assert "test 89.00% (the epoch validation chose, 2, finished within the budget)" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        metrics.main([str(tmp_path / "missing")])


def test_metrics_no_finished_epoch_proves_no_time(tmp_path: Path, capsys) -> None:
    metrics = load("metrics")
    base = write_run(tmp_path / "a", [(10.0, 0.9, 5)])
    empty = tmp_path / "b"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 3, "train_loss": 0.5}) + "\n")
    metrics.main([str(base), str(empty), "--target", "0.5"])
    out = capsys.readouterr().out
    assert "no finished epoch in metrics.jsonl (no time proven)" in out
    assert "no ratio (nothing proven for this run)" in out


def test_seed_runs_summarises_finished_runs_without_retraining(tmp_path: Path, capsys) -> None:
    seed_runs = load("seed_runs")
    for seed, (valid, test) in {1: (0.90, 0.88), 2: (0.92, 0.90)}.items():
        write_run(tmp_path / "out" / f"seed{seed}", [(10.0, valid, 5)],
                  {"best_epoch": 1, "valid": {"accuracy": valid}, "test": {"accuracy": test}, "train_seconds": 10.0,
                   "commit": "abc1234"})
    seed_runs.main(["--config", str(ROOT / "configs" / "imdb_cpu.yaml"), "--seeds", "1", "2",
                    "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "91.00 ± 1.41 (valid) 89.00 ± 1.41 (test), n = 2" in out
    assert "commit abc1234" in out
