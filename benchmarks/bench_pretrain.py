"""Pretraining throughput of this checkout against an earlier commit's code, in one command, one after the other.

    python benchmarks/bench_pretrain.py --baseline REV [--config configs/imdb_cpu_pretrain.yaml] [--tokens 600000]
        [--threads 2] [--rounds 2] [--data-dir data] [--set KEY=VALUE ...]

Both sides run `python -m sentiment pretrain --config CONFIG` on the same data, config and threads, each from its
own source tree (REV is checked out into a temporary git worktree, removed at the end), for one epoch of
--tokens tokens (pretrain.epoch_tokens, pretrain.epochs=1, no held-out scoring beyond the epoch's). The sides take
turns (--rounds times each, baseline first), so a busy moment of a shared machine hits both alike. Per run it
prints the epoch's training tokens/s (metrics.jsonl), the minor page faults, user and system CPU seconds and
peak RSS of the run's process (getrusage), then the ratio of the medians, this checkout over REV.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(tree: Path, args: argparse.Namespace, run_dir: Path) -> dict:
    overrides = [f"pretrain.epoch_tokens={args.tokens}", "pretrain.epochs=1", f"run.threads={args.threads}",
                 f"data.data_dir={args.data_dir.resolve()}", "pretrain.max_minutes=null", *args.overrides]
    cmd = [sys.executable, "-m", "sentiment", "pretrain", "--config", str(args.config.resolve()),
           "--run-dir", str(run_dir), *[a for o in overrides for a in ("--set", o)]]
    usage = run_dir.with_suffix(".rusage.json")
    # through a wrapper whose own children are this run alone, so the peak RSS is this run's (getrusage's
    # RUSAGE_CHILDREN keeps the largest child ever)
    wrapper = ("import json, resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "json.dump(dict(minflt=u.ru_minflt, utime=u.ru_utime, stime=u.ru_stime, maxrss=u.ru_maxrss), "
               "open(sys.argv[1], 'w')); sys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, str(usage), *cmd], cwd=tree,
                          env={**_env(), "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{tree}: pretrain failed:\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    u = json.loads(usage.read_text())
    return {"tokens_per_s": rows[-1]["tokens_per_s"], "minor_faults": u["minflt"], "user_s": round(u["utime"], 1),
            "system_s": round(u["stime"], 1), "peak_rss_mb": round(u["maxrss"] / 1024), "wall_s": round(wall, 1)}


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the commit to compare with (e.g. d69ae74)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "imdb_cpu_pretrain.yaml")
    ap.add_argument("--tokens", type=int, default=600_000, help="training tokens per run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    base_tree = work / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.baseline],
                   check=True, capture_output=True)
    try:
        commit = subprocess.run(["git", "-C", str(base_tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        here = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        results: dict[str, list[dict]] = {"baseline": [], "this": []}
        for r in range(args.rounds):
            for side, tree in (("baseline", base_tree), ("this", ROOT)):
                row = run_once(tree, args, work / f"{side}-{r}")
                results[side].append(row)
                print(json.dumps({"side": side, "commit": commit if side == "baseline" else here, "round": r, **row}),
                      flush=True)
        medians = {side: statistics.median(row["tokens_per_s"] for row in rows) for side, rows in results.items()}
        print(json.dumps({"baseline_commit": commit, "this_commit": here, "threads": args.threads,
                          "tokens_per_run": args.tokens, "rounds": args.rounds,
                          "median_tokens_per_s": {k: round(v) for k, v in medians.items()},
                          "ratio": round(medians["this"] / medians["baseline"], 2)}))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
