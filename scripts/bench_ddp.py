"""DDP on CPU: the same training run as 2 processes x 1 thread (`sentiment train --nproc 2`, gloo) against
1 process x 2 threads, in one command. Both train the same config on the same data for the same epochs;
prints tokens/s (all processes together), wall time and the validation (and test) accuracy of each.

Two cores cannot show a speed-up from more processes: the point is that the engine is correct and what it
costs. Under DDP the global batch is twice the per-process batch (batch_size x 2), so the two runs take
different numbers of optimizer steps: accuracy is for reference, not a like-for-like comparison, unless
--same-global-batch halves the per-process batch of the DDP run.

    .venv/bin/python scripts/bench_ddp.py [--config configs/imdb_cpu.yaml] [--epochs 1] [--same-global-batch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib

ROOT = benchlib.ROOT


def run(name: str, out: Path, config: Path, epochs: int, extra: list[str]) -> dict:
    run_dir = out / name
    cmd = [sys.executable, "-m", "sentiment", "train", "--config", str(config), "--run-dir", str(run_dir),
           "--overwrite", "--set", f"train.epochs={epochs}", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"{name} failed ({' '.join(cmd)}): see {out / (name + '.log')}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run_dir / "results.json").read_text())
    return {"wall": wall, "train_seconds": sum(r["seconds"] for r in rows),
            "tokens_per_s": sum(r["tokens_per_s"] * r["seconds"] for r in rows) / sum(r["seconds"] for r in rows),
            "valid": results["valid"]["accuracy"], "test": results.get("test", {}).get("accuracy"),
            "global_batch": rows[-1].get("global_batch_size")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "imdb_cpu.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "ddp")
    parser.add_argument("--same-global-batch", action="store_true",
                        help="halve the DDP run's per-process batch so both take the same optimizer steps")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here (for scripts/bench.py)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    benchlib.print_header("== bench_ddp: 2 processes x 1 thread (DDP, gloo) vs 1 process x 2 threads ==")
    common = [arg for o in args.overrides for arg in ("--set", o)]
    single = run("one_process_two_threads", args.out, args.config, args.epochs, [*common, "--set", "run.threads=2"])
    ddp_extra = [*common, "--set", "run.threads=1", "--nproc", "2"]
    if args.same_global_batch:
        from sentiment.config import load_config

        batch = load_config(args.config, args.overrides).train.batch_size
        ddp_extra += ["--set", f"train.batch_size={batch // 2}"]
    ddp = run("two_processes_one_thread", args.out, args.config, args.epochs, ddp_extra)
    print(f"config {args.config} · {args.epochs} epoch(s) · runs in {args.out}")
    print(f"{'':34} {'tokens/s':>10} {'train s':>8} {'wall s':>7} {'global batch':>12} {'valid':>7} {'test':>7}")
    for name, r in (("1 process x 2 threads (baseline)", single), ("2 processes x 1 thread (DDP)", ddp)):
        test = f"{r['test']:.2%}" if r["test"] is not None else "-"
        print(f"{name:34} {r['tokens_per_s']:>10,.0f} {r['train_seconds']:>8.0f} {r['wall']:>7.0f} "
              f"{r['global_batch']:>12} {r['valid']:>7.2%} {test:>7}")
    ratio = ddp["tokens_per_s"] / single["tokens_per_s"]
    print(f"DDP / baseline training tokens/s: {ratio:.2f}x (same model, data and lengths; 2 cores)")
    figures = benchlib.Figures("bench_ddp")
    figures.add("training tokens/s: 2 DDP processes x 1 thread vs 1 process x 2 threads", ddp["tokens_per_s"],
                "1 process x 2 threads", single["tokens_per_s"], "tokens/s")
    figures.write(args.json)


if __name__ == "__main__":
    main()
