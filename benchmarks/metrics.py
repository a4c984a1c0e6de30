"""What finished runs' metrics.jsonl (and results.json) show, for one run or several side by side: each
epoch's time so far, validation accuracy, steps, ms/step and tokens/s; with --target, the time each run took
to first reach a validation accuracy; with --budget, the best each reached within that many seconds; with two
runs, the second's median time per step over the first's; with --png, validation accuracy against time.

    .venv/bin/python benchmarks/metrics.py RUN [RUN ...] [--target 0.88] [--budget 3600] [--png curve.png]

Time is training plus validation seconds summed over the finished epochs that metrics.jsonl records
(startup, data preparation and the final test excluded), so runs measured on the same machine compare
fairly; the first run is the baseline of the ratios. Nothing is inferred beyond what the files prove:
  --target   reached: the time up to the end of the first epoch at or above the target. Not reached: the
             recorded time is a LOWER bound, and a ratio involving it is printed as a bound (">" or "<");
             with no finished epoch the file proves no time at all, and no ratio is printed.
  --budget   the best validation accuracy within the budget, and the test accuracy of results.json when the
             epoch validation chose over the whole run finished within the budget (else none).
  2 runs     median ms/step over each run's epochs after its first, where it has more than one (the first
             pays for cuDNN's algorithm search and the allocator's warm-up): e.g. train.lazy_sync true
             against false.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from sentiment.runs import read_metrics  # noqa: E402


@dataclass
class Epoch:
    epoch: int
    elapsed: float  # training + validation seconds up to this epoch's end
    valid_accuracy: float
    steps: int
    ms_per_step: float
    tokens_per_s: float | None


def epochs(rows: list[dict]) -> list[Epoch]:
    """The finished epochs of a run's metrics rows (a row without a validation accuracy is not one)."""
    out, elapsed, previous_step = [], 0.0, 0
    for row in rows:
        if "valid_accuracy" not in row or "seconds" not in row:
            continue
        elapsed += row["seconds"] + row.get("valid_seconds", 0.0)
        step = row.get("step", previous_step)
        steps, previous_step = step - previous_step, step
        out.append(Epoch(row.get("epoch", len(out) + 1), elapsed, row["valid_accuracy"], steps,
                         1000 * row["seconds"] / max(steps, 1), row.get("tokens_per_s")))
    return out


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


def time_to(run: list[Epoch], target: float) -> Outcome:
    best = None
    for e in run:
        best = e.valid_accuracy if best is None else max(best, e.valid_accuracy)
        if e.valid_accuracy >= target:
            return Outcome(e.elapsed, True, e.epoch, best)
    return Outcome(run[-1].elapsed if run else 0.0, False, len(run), best)


def describe(o: Outcome, target: float) -> str:
    if o.reached:
        return f"{o.seconds:.0f} s to {target:.0%} valid accuracy (epoch {o.epochs})"
    if not o.proven:
        return "not reached: no finished epoch in metrics.jsonl (no time proven)"
    return (f"> {o.seconds:.0f} s: not reached in {o.epochs} finished epoch{'s' if o.epochs != 1 else ''} "
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


def within_budget(run: list[Epoch], results: dict, budget: float) -> str:
    inside = [e.valid_accuracy for e in run if e.elapsed <= budget]
    best = f"{max(inside):.2%}" if inside else "no epoch finished"
    chosen, test = results.get("best_epoch", 0), results.get("test", {}).get("accuracy")
    # the checkpoint validation chose over the whole run is the budget's choice too if it finished within it
    fits = 0 < chosen <= len(run) and run[chosen - 1].elapsed <= budget
    tail = (f"; test {test:.2%} (the epoch validation chose, {chosen}, finished within the budget)"
            if fits and test is not None else
            "; no test figure for the budget (validation chose a later epoch, or the run is unfinished)")
    return f"best valid within {budget / 60:.0f} min: {best}{tail}"


def median_ms_per_step(run: list[Epoch]) -> float:
    timed = run[1:] if len(run) > 1 else run
    return statistics.median(e.ms_per_step for e in timed)


def draw(curves: dict[Path, list[Epoch]], budget: float | None, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, points in curves.items():
        ax.plot([e.elapsed / 60 for e in points], [100 * e.valid_accuracy for e in points], marker="o", label=run.name)
    if budget:
        ax.axvline(budget / 60, color="grey", linestyle=":")
    ax.set(xlabel="minutes (training + validation)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories written by `sentiment train`")
    parser.add_argument("--target", type=float, default=None, help="validation accuracy, 0-1: time to reach it")
    parser.add_argument("--budget", type=float, default=None, help="seconds: the best each run reached within them")
    parser.add_argument("--png", type=Path, default=None, help="draw validation accuracy against time here")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "metrics.jsonl").is_file()]
    if missing:
        raise SystemExit(f"error: no metrics.jsonl in {', '.join(missing)}")
    curves = {run: epochs(read_metrics(run)) for run in args.runs}
    outcomes = []
    for i, (run, points) in enumerate(curves.items()):
        results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
        print(f"{run} · {results.get('device', '?')}")
        for e in points:
            tokens = f"{e.tokens_per_s:>10,.0f} tok/s" if e.tokens_per_s is not None else ""
            print(f"  epoch {e.epoch:>2}  {e.elapsed / 60:7.1f} min  valid {e.valid_accuracy:.2%}  {e.steps:>6} steps  "
                  f"{e.ms_per_step:8.2f} ms/step  {tokens}")
        if args.budget is not None:
            print("  " + within_budget(points, results, args.budget))
        elif results.get("test", {}).get("accuracy") is not None:
            print(f"  test (best epoch {results.get('best_epoch', '?')}): {results['test']['accuracy']:.2%}")
        if args.target is not None:
            outcomes.append(time_to(points, args.target))
            tail = "baseline" if i == 0 else ratio(outcomes[-1], outcomes[0])
            print(f"  {describe(outcomes[-1], args.target)}; {tail}")
    if len(curves) == 2 and all(curves.values()):
        (a, ra), (b, rb) = curves.items()
        ma, mb = median_ms_per_step(ra), median_ms_per_step(rb)
        print(f"median ms/step: {ma:.2f} ({a.name}) against {mb:.2f} ({b.name}): {b.name} takes {mb / ma:.2f}x the "
              "time per step")
    if args.png:
        draw(curves, args.budget, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
