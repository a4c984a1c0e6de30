"""A two-part model (a recurrent part and the n-gram branch) against each part trained on its own, in one command:
the same config, data, splits and seeds, only the other part switched off.

    python benchmarks/compare_parts.py --config configs/imdb_cpu.yaml --seeds 1 2 3 [--set KEY=VALUE ...]
        [--runs-dir runs/compare_parts] [--jobs 1] [--resamples 10000] [--json FILE]

Variants, each `python -m sentiment train --config CONFIG --set run.seed=S [--set ...] --run-dir RUNS/VARIANT/seedS`
as a child process (its output in RUNS/VARIANT/seedS.log):
  whole   the config as it is
  rnn     the recurrent part alone: --set model.ngrams=null --set model.combine=sum
  branch  the n-gram branch alone: --set model.rnn=none --set model.combine=sum
A finished run (its results.json) is read, not trained again. --jobs K trains K runs at once: give each one thread
(--set run.threads=1) and read their seconds as shared time, not a run's alone.

Prints valid and test accuracy (mean ± sample sd over seeds) and wall seconds per variant, and a paired bootstrap
over the test rows (the same resampled rows on both sides; each side the mean over its seeds): the whole minus each
part alone, mean difference and 95% percentile interval. Each run's test predictions are cached beside it
(test_predictions.npy).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from compare_linear import mean_sd, our_test_predictions, train_seed  # noqa: E402

VARIANTS = {"whole": [], "rnn": ["model.ngrams=null", "model.combine=sum"],
            "branch": ["model.rnn=none", "model.combine=sum"]}


def train_run(config: Path, seed: int, run_dir: Path, overrides: list[str]) -> float:
    """Wall seconds of one `sentiment train` (compare_linear.train_seed); a finished run is read, not trained again
    (its seconds from seconds.json, 0.0 where it has none)."""
    if (run_dir / "results.json").is_file():
        return json.loads((run_dir / "seconds.json").read_text()) if (run_dir / "seconds.json").is_file() else 0.0
    seconds = train_seed(["--config", str(config)], seed, run_dir, overrides)
    (run_dir / "seconds.json").write_text(json.dumps(seconds))
    return seconds


def test_predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    cached = run_dir / "test_predictions.npy"
    if cached.is_file():
        both = np.load(cached)
        return both[0], both[1]
    pred, gold = our_test_predictions(run_dir)
    np.save(cached, np.stack([pred, gold]))
    return pred, gold


def bootstrap_difference(gold: np.ndarray, ours: list[np.ndarray], theirs: list[np.ndarray], resamples: int,
                         seed: int = 0) -> tuple[float, float, float]:
    """Accuracy, ours minus theirs, each the mean over its seeds, on resampled test rows (the same rows for both):
    (observed difference, 2.5th percentile, 97.5th percentile)."""
    per_row = (np.mean([p == gold for p in ours], axis=0) - np.mean([p == gold for p in theirs], axis=0))
    rng = np.random.default_rng(seed)
    n, diffs = len(gold), []
    block = max(1, min(1000, 20_000_000 // max(n, 1)))
    for start in range(0, resamples, block):
        rows = rng.integers(0, n, size=(min(block, resamples - start), n))
        diffs.append(per_row[rows].mean(axis=1))
    diff = np.concatenate(diffs)
    return float(per_row.mean()), float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "compare_parts")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (give each --set run.threads=1)")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.config.is_file():
        sys.exit(f"error: {args.config} not found")

    jobs = [(v, s) for s in args.seeds for v in args.variants]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        seconds = dict(zip(jobs, pool.map(lambda job: train_run(
            args.config, job[1], args.runs_dir / job[0] / f"seed{job[1]}", args.overrides + VARIANTS[job[0]]), jobs)))

    report: dict = {"config": str(args.config), "seeds": args.seeds, "overrides": args.overrides, "variants": {}}
    predictions, gold = {}, None
    print(f"\n{'variant':8s} {'valid':>15s} {'test':>15s} {'seconds':>9s}")
    for v in args.variants:
        results = [json.loads((args.runs_dir / v / f"seed{s}" / "results.json").read_text()) for s in args.seeds]
        valid = [r["valid"]["accuracy"] for r in results]
        test = [r["test"]["accuracy"] for r in results]
        secs = [seconds[(v, s)] for s in args.seeds]
        print(f"{v:8s} {mean_sd(valid):>15s} {mean_sd(test):>15s} {np.mean(secs):9.0f}")
        report["variants"][v] = {"valid": valid, "test": test, "seconds": secs,
                                 "parts": [r["test"].get("parts") for r in results]}
        preds = [test_predictions(args.runs_dir / v / f"seed{s}") for s in args.seeds]
        predictions[v] = [p for p, _ in preds]
        gold = preds[0][1]
        assert all(np.array_equal(g, gold) for _, g in preds), "the variants' test rows differ"
    if "whole" in predictions:
        print(f"\npaired bootstrap over the {len(gold):,} test rows ({args.resamples:,} resamples; each side the mean "
              "of its seeds): accuracy, the whole minus")
        for v in predictions:
            if v == "whole":
                continue
            diff, lo, hi = bootstrap_difference(gold, predictions["whole"], predictions[v], args.resamples)
            print(f"  {v:8s} {100 * diff:+.2f} points, 95% [{100 * lo:+.2f}, {100 * hi:+.2f}]")
            report["variants"][v]["whole_minus_this"] = {"difference": diff, "low": lo, "high": hi}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
