"""Time each run took to first reach a validation accuracy, from the runs' metrics.jsonl only.

    python scripts/time_to_accuracy.py --target 0.88 runs/imdb_cpu-A runs/imdb_bilstm-B

Time is training plus validation seconds summed over the finished epochs that metrics.jsonl records
(startup and the final test excluded), so runs measured on the same machine compare fairly; the first run
is the baseline of the printed ratios. Nothing is inferred beyond what the file proves:
  reached       the time up to the end of the first epoch at or above the target
  not reached   the target was not reached in the recorded epochs: their time is a LOWER bound
  no epoch      no finished epoch in metrics.jsonl: not reached, and the file proves no time at all
                (work done inside an unfinished epoch is not recorded there, so it is not claimed)
A ratio involving a lower bound is printed as a bound (">" or "<"); with nothing proven, none is printed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from sentiment.runs import read_metrics  # noqa: E402


@dataclass
class Outcome:
    seconds: float  # time to the target if reached, else the recorded time (a lower bound); 0 with no epoch
    reached: bool
    epochs: int  # the epoch that reached it, else the number of finished epochs recorded
    best: float | None  # best validation accuracy recorded

    @property
    def proven(self) -> bool:
        """Whether the file proves any time at all."""
        return self.reached or self.epochs > 0


def time_to(rows: list[dict], target: float) -> Outcome:
    elapsed, best, epochs = 0.0, None, 0
    for row in rows:
        if "valid_accuracy" not in row or "seconds" not in row:
            continue  # not a finished epoch's row
        epochs += 1
        elapsed += row["seconds"] + row.get("valid_seconds", 0.0)
        best = row["valid_accuracy"] if best is None else max(best, row["valid_accuracy"])
        if row["valid_accuracy"] >= target:
            return Outcome(elapsed, True, row.get("epoch", epochs), best)
    return Outcome(elapsed, False, epochs, best)


def describe(o: Outcome, target: float) -> str:
    if o.reached:
        return f"{o.seconds:8.0f} s to {target:.0%} valid accuracy (epoch {o.epochs})"
    if not o.proven:
        return f"{'':>8}   not reached: no finished epoch in metrics.jsonl (no time proven)"
    return (f"> {o.seconds:6.0f} s: not reached in {o.epochs} finished epoch{'s' if o.epochs != 1 else ''} "
            f"(best {o.best:.2%}; lower bound)")


def ratio(o: Outcome, base: Outcome) -> str:
    """How many times the baseline's time this run took, as far as the files prove."""
    if not o.proven or not base.proven:
        return "no ratio (nothing proven for " + ("this run" if not o.proven else "the first run") + ")"
    if o.reached and base.reached:
        return f"{o.seconds / base.seconds:.2f}x the first run's time"
    if base.reached:  # this run: more than o.seconds
        return f"> {o.seconds / base.seconds:.2f}x the first run's time"
    if o.reached:  # the baseline took more than base.seconds
        return f"< {o.seconds / base.seconds:.2f}x the first run's time"
    return "no ratio (neither reached the target)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--target", type=float, default=0.88, help="validation accuracy, 0-1 (default 0.88)")
    args = ap.parse_args()
    missing = [str(run) for run in args.runs if not run.is_dir()]
    if missing:
        sys.exit(f"not a run directory: {', '.join(missing)}")
    outcomes = [time_to(read_metrics(run), args.target) for run in args.runs]
    for i, (run, o) in enumerate(zip(args.runs, outcomes)):
        tail = "baseline" if i == 0 else ratio(o, outcomes[0])
        print(f"{str(run):<40} {describe(o, args.target)}; {tail}")


if __name__ == "__main__":
    main()
