"""Time each run took to first reach a validation accuracy, from the runs' metrics.jsonl.

    python scripts/time_to_accuracy.py --target 0.88 runs/imdb_cpu-A runs/imdb_bilstm-B

Time is training plus validation seconds summed over epochs (startup and the final test excluded), so
runs measured on the same machine compare fairly; the first run is the baseline of the printed ratios.
A run that never reached the target reports the time it ran as a lower bound.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sentiment.checkpoint import read_metrics


def time_to(rows: list[dict], target: float) -> tuple[float, bool, int]:
    elapsed = 0.0
    for row in rows:
        elapsed += row["seconds"] + row.get("valid_seconds", 0.0)
        if row["valid_accuracy"] >= target:
            return elapsed, True, row["epoch"]
    return elapsed, False, rows[-1]["epoch"] if rows else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--target", type=float, default=0.88)
    args = ap.parse_args()
    base = None
    for run in args.runs:
        seconds, reached, epoch = time_to(read_metrics(run), args.target)
        base = base or seconds
        what = f"epoch {epoch}" if reached else f"not reached after {epoch} epochs (lower bound)"
        ratio = f"{seconds / base:5.1f}x the first run" if run != args.runs[0] else "baseline"
        print(f"{str(run):<40} {seconds:8.0f} s to {args.target:.0%} valid accuracy ({what}); {ratio}")


if __name__ == "__main__":
    main()
