"""Validation accuracy against time for several runs, from their metrics.jsonl (and results.json) only.

    .venv/bin/python scripts/valid_curve.py RUN_A RUN_B [--budget 3600] [--png bench/semisup/curve.png]

For each run: one line per finished epoch with the time so far (training + validation seconds summed over the
epochs, as scripts/time_to_accuracy.py counts it: startup, data preparation and the final test excluded) and
the validation accuracy. With --budget, the best validation accuracy each run reached within that many
seconds, and the test accuracy of the checkpoint validation chose where that epoch finished within the budget
(results.json is written for the best epoch of the whole run; when that epoch is inside the budget, it is
also the budget's best). --png draws both curves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from sentiment.runs import read_metrics  # noqa: E402


def curve(run: Path) -> list[tuple[float, float]]:
    elapsed, points = 0.0, []
    for row in read_metrics(run):
        elapsed += row["seconds"] + row.get("valid_seconds", 0.0)
        points.append((elapsed, row["valid_accuracy"]))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--budget", type=float, default=None, help="seconds")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    curves = {}
    for run in args.runs:
        points = curve(run)
        curves[run] = points
        print(f"{run}:")
        for epoch, (t, acc) in enumerate(points, 1):
            print(f"  epoch {epoch:>2}  {t / 60:7.1f} min  valid {acc:.2%}")
        results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
        test = results.get("test", {}).get("accuracy")
        if args.budget is not None:
            inside = [acc for t, acc in points if t <= args.budget]
            chosen = results.get("best_epoch", 0)
            # the checkpoint validation chose over the whole run is the budget's choice too if it finished within it
            fits = 0 < chosen <= len(points) and points[chosen - 1][0] <= args.budget
            best = f"{max(inside):.2%}" if inside else "no epoch finished"
            tail = (f"; test {test:.2%} (the epoch validation chose, {chosen}, finished within the budget)"
                    if fits and test is not None else
                    "; no test figure for the budget (validation chose a later epoch, or the run is unfinished)")
            print(f"  best valid within {args.budget / 60:.0f} min: {best}{tail}")
        elif test is not None:
            print(f"  test (best epoch): {test:.2%}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for run, points in curves.items():
            ax.plot([t / 60 for t, _ in points], [a * 100 for _, a in points], marker="o", label=run.name)
        if args.budget:
            ax.axvline(args.budget / 60, color="grey", linestyle=":")
        ax.set(xlabel="minutes (training + validation)", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
