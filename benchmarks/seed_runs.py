"""Train one config over several values of run.seed and print validation and test accuracy as
mean ± sample standard deviation: the form every accuracy claim in the README takes.

Each seed is a plain `sentiment train` run (its own run directory, model chosen on validation, test
read once at the end). Already finished run directories are read, not retrained, so the summary can
be printed again, or completed after an interruption.

    .venv/bin/python benchmarks/seed_runs.py --config configs/imdb_cpu.yaml --seeds 1 2 3 [--set KEY=VALUE ...]

--parallel starts every seed at once: on a GPU that a small recurrent model leaves mostly idle, three
seeds side by side finish in about the time of one and a half run alone. Their seconds are then shared
time, not the time of a run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seed_command(config: Path, seed: int, run_dir: Path, overrides: list[str], threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "sentiment", "train", "--config", str(config), "--run-dir", str(run_dir),
           "--set", f"run.seed={seed}"]
    if threads:
        cmd += ["--set", f"run.threads={threads}"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def run_seeds(commands: dict[int, list[str]], parallel: bool) -> dict[int, float]:
    """Each seed's whole-command seconds (from its group's start to its own end); the seeds one after
    another, or all at once with parallel."""
    walls = {}
    for group in ([list(commands)] if parallel else [[seed] for seed in commands]):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            logs = {seed: open(Path(tmp) / f"seed{seed}.err", "w+") for seed in group}  # a pipe could fill
            procs = {seed: subprocess.Popen(commands[seed], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=logs[seed])
                     for seed in group}
            while any(seed not in walls for seed in group):
                for seed, proc in procs.items():
                    if seed not in walls and proc.poll() is not None:
                        walls[seed] = time.perf_counter() - started
                time.sleep(0.2)
            for seed, proc in procs.items():
                logs[seed].seek(0)
                last = logs[seed].read().strip().splitlines()[-1:]
                logs[seed].close()
                if proc.returncode != 0:
                    raise SystemExit(f"seed {seed} failed ({' '.join(commands[seed])}): {last}")
    return walls


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--out", type=Path, default=None, help="parent of the run directories (default: runs/seeds-<config>)")
    parser.add_argument("--threads", type=int, default=None, help="run.threads for each run (default: the config's)")
    parser.add_argument("--parallel", action="store_true", help="start every seed at once (for a GPU); the wall "
                        "seconds are then each run's share of the time together")
    parser.add_argument("--rescore-max-len", type=int, default=None, metavar="N",
                        help="also score each run's best.pt reading at most N tokens per review (head+tail as "
                             "configured), on valid and test: what a run with data.eval_max_len=N would report for "
                             "the same checkpoint (its best epoch was still chosen as the run was configured)")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / f"seeds-{args.config.stem}"
    commands = {}
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        if not (run_dir / "results.json").is_file():
            if run_dir.exists():
                raise SystemExit(f"{run_dir} exists without results.json: resume it (sentiment train --resume "
                                 f"{run_dir}) or remove it")
            print(f"[{datetime.now():%H:%M:%S}] seed {seed} -> {run_dir}", flush=True)
            commands[seed] = seed_command(args.config, seed, run_dir, args.overrides, args.threads)
    walls = run_seeds(commands, args.parallel)
    rows = [(seed, json.loads((out / f"seed{seed}" / "results.json").read_text()), walls.get(seed))
            for seed in args.seeds]
    ran_on = rows[0][1].get("device") or f"{os.cpu_count()} cores"
    side = " (side by side)" if args.parallel else ""
    print(f"\n{args.config} {' '.join(args.overrides)} · {len(rows)} seeds · {datetime.now():%Y-%m-%d} · "
          f"{ran_on}{side} · commit {rows[0][1].get('commit', '?')} · split {rows[0][1].get('valid_split', '?')}")
    print(f"{'seed':>6} {'best epoch':>10} {'valid':>8} {'test':>8} {'train s':>8} {'wall s':>8}")
    for seed, r, wall in rows:
        print(f"{seed:>6} {r['best_epoch']:>10} {r['valid']['accuracy']:>8.2%} {r['test']['accuracy']:>8.2%} "
              f"{r['train_seconds']:>8.0f} {wall if wall is not None else float('nan'):>8.0f}")
    valid = [r["valid"]["accuracy"] for _, r, _ in rows]
    test = [r["test"]["accuracy"] for _, r, _ in rows]
    print(f"{'mean ± sd':>17} {mean_sd(valid):>8} (valid) {mean_sd(test)} (test), n = {len(rows)}")
    if all("macro_f1" in r["valid"] for _, r, _ in rows):  # runs since label spaces: macro-F1 too
        f1_valid = [r["valid"]["macro_f1"] for _, r, _ in rows]
        f1_test = [r["test"]["macro_f1"] for _, r, _ in rows]
        print(f"{'macro-F1 ×100':>17} {mean_sd(f1_valid):>8} (valid) {mean_sd(f1_test)} (test), n = {len(rows)}")
    if args.rescore_max_len:
        rescore(out, [seed for seed, _, _ in rows], args.rescore_max_len)


def rescore(out: Path, seeds: list[int], max_len: int) -> None:
    sys.path.insert(0, str(ROOT))
    from sentiment.inference.evaluate import evaluate
    from sentiment.data.prepare import prepare_data
    from sentiment.inference.runtime import load_trained

    print(f"\nbest.pt of each run, reading at most {max_len} tokens per review")
    valid, test = [], []
    for seed in seeds:
        run = load_trained(out / f"seed{seed}", "best")
        data = prepare_data(run.cfg.data, run.vocab)
        figures = [evaluate(run.model, split, batch_size=run.cfg.train.eval_batch_size, device=run.device,
                            max_len=max_len, truncate=run.cfg.data.truncate).accuracy for split in (data.valid, data.test)]
        valid.append(figures[0])
        test.append(figures[1])
        print(f"{seed:>6} {'':>10} {figures[0]:>8.2%} {figures[1]:>8.2%}")
    print(f"{'mean ± sd':>17} {mean_sd(valid):>8} (valid) {mean_sd(test)} (test), n = {len(seeds)}")


if __name__ == "__main__":
    main()
