"""Per-step time and tokens/s of finished runs, epoch by epoch, from their metrics.jsonl: to compare two runs
that did the same work in one way and another (train.lazy_sync true against false, say).

    .venv/bin/python scripts/step_times.py RUN_A RUN_B

With two runs it also prints B's median ms/step over A's (each run's epochs after its first, where it has more
than one: the first pays for cuDNN's algorithm search and the allocator's warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml


def epochs(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    previous = 0
    for row in rows:
        row["steps"], previous = row["step"] - previous, row["step"]
        row["ms_per_step"] = 1000 * row["seconds"] / max(row["steps"], 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    medians = []
    for run_dir in args.runs:
        rows = epochs(run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        print(f"{run_dir} · {rows[-1].get('device', '?')} · train.lazy_sync={cfg['train'].get('lazy_sync')}")
        for r in rows:
            print(f"  epoch {r['epoch']}: {r['seconds']:7.2f} s  {r['steps']} steps  {r['ms_per_step']:7.2f} ms/step  "
                  f"{r['tokens_per_s']:>10,.0f} tok/s  valid {r['valid_accuracy']:.2%}")
        timed = rows[1:] if len(rows) > 1 else rows
        medians.append(statistics.median(r["ms_per_step"] for r in timed))
    if len(args.runs) == 2:
        print(f"median ms/step: {medians[0]:.2f} ({args.runs[0].name}) against {medians[1]:.2f} ({args.runs[1].name}):"
              f" {args.runs[1].name} takes {medians[1] / medians[0]:.2f}x the time per step")


if __name__ == "__main__":
    main()
