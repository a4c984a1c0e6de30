"""Every speed figure in one command: the benchmark scripts one after the other (never two at once), each
figure against a baseline timed in the same run, then one summary table.

    python benchmarks/bench.py [--data-dir data] [--run runs/NAME] [--threads 2] [--quick]   # or: make bench

Runs, in this order (each script's own --help says what it measures and against what):
  bench_prepare       prepare cold / warm (median of 3) vs spaCy listing+reading+tokenizing the same files
                      on as many processes
  bench_glove         GloVe first / cached load vs a naive Python parse
  bench_rnn_padding   our padded layout vs pack_padded_sequence, forward+backward (BiGRU 128, length 400)
  bench_lstm_ceiling  classic-model scoring against the sgemm reference (this machine's torch.mm rate / the
                      model's FLOPs per token): a reference to compare runs by, NOT a bound (ours can exceed it)
  bench_train         HEADLINE: training ours vs the classic loop (bucketed, no packing), interleaved,
                      over length-stratified batches; random/packed/denormal rows; evaluation vs the
                      faster classic loop
  bench_ngrams        the n-gram branch's share of a training step and of scoring: the CPU recipe + branch
                      (configs/imdb_cpu_ngrams.yaml) vs the same model without it, in turns
  bench_predict       `sentiment predict` end to end vs one review at a time (same length limit)
  bench_explain       explaining one 400-token review (Integrated Gradients at the default steps + the branch's
                      exact share) vs predicting it, same run, same process (target: <= 1 s on 2 cores)

Only when asked for (--with NAME..., or --only), since they need data beyond IMDB's labeled reviews (the airline
tweets: --tweets-csv, default DATA_DIR/airline_tweets.csv; IMDB's train/unsup) and take longer:
  tweets              airline tweets: ours trained over --tweets-seeds seeds vs TF-IDF + logistic regression
                      on the same split (accuracy and macro-F1; minutes per seed)
  predict_tweets      bench_predict on tweets resampled from --tweets-csv vs one tweet at a time; with
                      --tweets-run, else the tweets benchmark's first seed (runs/bench_tweets/seed1)
  objectives          seconds per training step with AT, VAT, entropy minimisation and all three against a
                      plain step (configs/imdb_cpu_semisup.yaml; needs IMDB's train/unsup, tokenized once)

The default sample sizes are meant to fit in about 10-12 minutes on 2 quiet cores, --quick in about half
(estimated from the pieces; the packed-loop row grows with the square of its batches' length), --smoke in
seconds on tiny data (for the test suite: its figures mean nothing). Every sample size can be set on its own
(they are printed before the runs and in the summary). Without --run, predict is timed with the newest
runs/*/best.pt, else with an untrained run of configs/imdb_cpu.yaml (speed only; it says so).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
ROOT = common.ROOT
SCRIPTS = ("prepare", "glove", "rnn_padding", "lstm_ceiling", "train", "ngrams", "predict", "explain")
EXTRA = ("tweets", "predict_tweets", "objectives")  # only with --with or --only
FULL = dict(train_batches=40, random_batches=12, packed_batches=6, denormal_batches=4, eval_reviews=2000,
            predict_reviews=25000, predict_baseline=1000, ceiling_batch=256, ceiling_length=230, ceiling_reps=2,
            padding_length=400, padding_reps=3, cold_runs=1,
            ngram_batches=24, tweets_seeds=3, predict_tweets=100_000, predict_tweets_baseline=1000, objective_batches=12,
            explain_length=400, explain_reps=5)
QUICK = dict(train_batches=16, random_batches=6, packed_batches=3, denormal_batches=2, eval_reviews=800,
             predict_reviews=5000, predict_baseline=300, ceiling_batch=128, ceiling_length=230, ceiling_reps=1,
             padding_length=400, padding_reps=1, cold_runs=1,
             ngram_batches=10, tweets_seeds=1, predict_tweets=20_000, predict_tweets_baseline=300, objective_batches=4,
             explain_length=400, explain_reps=3)
SMOKE = dict(train_batches=2, random_batches=1, packed_batches=1, denormal_batches=0, eval_reviews=20,
             predict_reviews=20, predict_baseline=5, ceiling_batch=4, ceiling_length=8, ceiling_reps=1,
             padding_length=8, padding_reps=1, cold_runs=1,
             ngram_batches=2, tweets_seeds=1, predict_tweets=50, predict_tweets_baseline=5, objective_batches=1,
             explain_length=20, explain_reps=1)
TWEETS_RUNS = ROOT / "runs" / "bench_tweets"  # bench_tweets.py's default --runs-dir


def newest_run() -> Path | None:
    runs_dir = Path(os.environ.get("SENTIMENT_RUNS_DIR", ROOT / "runs"))
    found = sorted(runs_dir.glob("*/best.pt"), key=lambda p: p.stat().st_mtime) if runs_dir.is_dir() else []
    return found[-1].parent if found else None


def tweets_run(args, s: dict, selected: list[str]) -> Path | None:
    """The run predict_tweets is timed with: --tweets-run, else the tweets benchmark's first seed."""
    if args.tweets_run:
        return args.tweets_run
    first = TWEETS_RUNS / "seed1"
    return first if "tweets" in selected or (first / "best.pt").is_file() else None


def commands(args, s: dict, run: Path | None, twrun: Path | None = None) -> dict[str, list[str]]:
    py, t = [sys.executable], str(args.threads)
    glove = Path(args.data_dir) / "glove" / f"glove.6B.{args.glove_dim}d.txt"
    cmds = {
        "prepare": [str(HERE / "bench_prepare.py"), "--data-dir", args.data_dir, "--workers", t,
                    "--cold-runs", str(s["cold_runs"]), "--glove-dim", str(args.glove_dim)]
                   + (["--warm-runs", "1"] if args.smoke else []),
        "glove": [str(HERE / "bench_glove.py"), "--source", str(glove)],
        "rnn_padding": [str(HERE / "bench_rnn_padding.py"), "--threads", t, "--length", str(s["padding_length"]),
                        "--reps", str(s["padding_reps"])],
        "lstm_ceiling": [str(HERE / "bench_lstm_ceiling.py"), "--threads", t, "--batch", str(s["ceiling_batch"]),
                         "--length", str(s["ceiling_length"]), "--reps", str(s["ceiling_reps"])]
                        + (["--gemm-seconds", "0", "--gemm-sizes", "256"] if args.smoke else []),
        "train": [str(HERE / "bench_train.py"), "--data-dir", args.data_dir, "--threads", t,
                  "--batches", str(s["train_batches"]), "--random-batches", str(s["random_batches"]),
                  "--packed-batches", str(s["packed_batches"]), "--denormal-batches", str(s["denormal_batches"]),
                  "--eval-reviews", str(s["eval_reviews"])] + (["--no-flush-denormal"] if args.no_flush_denormal else [])
                 + (["--set", "model.hidden_size=16"] if args.smoke else []),
        "ngrams": [str(HERE / "bench_ngrams.py"), "--data-dir", args.data_dir, "--threads", t,
                   "--batches", str(s["ngram_batches"]), "--eval-reviews", str(s["eval_reviews"])]
                  + (["--set", "model.hidden_size=16", "--set", "model.ngrams.buckets=4096"] if args.smoke else []),
        "predict": [str(HERE / "bench_predict.py"), "--data-dir", args.data_dir, "--reviews", str(s["predict_reviews"]),
                    "--baseline", str(s["predict_baseline"])] + (["--run", str(run)] if run else []),
        "explain": [str(HERE / "bench_explain.py"), "--data-dir", args.data_dir, "--threads", t, "--length",
                    str(s["explain_length"]), "--reps", str(s["explain_reps"])] + (["--run", str(run)] if run else []),
        "tweets": [str(HERE / "bench_tweets.py"), "--csv", str(args.tweets_csv), "--threads", t, "--runs-dir",
                   str(TWEETS_RUNS), "--seeds", *map(str, range(1, s["tweets_seeds"] + 1))],
        "predict_tweets": [str(HERE / "bench_predict.py"), "--csv", str(args.tweets_csv), "--texts",
                           str(s["predict_tweets"]), "--baseline", str(s["predict_tweets_baseline"])]
                          + (["--run", str(twrun)] if twrun else []),
        "objectives": [str(HERE / "bench_objectives.py"), "--data-dir", args.data_dir, "--threads", t,
                       "--batches", str(s["objective_batches"])] + [a for o in args.objectives_set for a in ("--set", o)],
    }
    if not Path(args.tweets_csv).is_file():
        for name in ("tweets", "predict_tweets"):
            cmds.pop(name)
    if twrun is None:
        cmds.pop("predict_tweets", None)
    if not glove.is_file():
        cmds.pop("glove")
    return {name: py + cmd for name, cmd in cmds.items()}


def fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "s":
        return f"{value:.3f} s" if value < 1 else f"{value:.2f} s"
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:,.0f} {unit}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SENTIMENT_DATA_DIR", "data"))
    ap.add_argument("--run", type=Path, help="run directory for the predict benchmark (default: the newest runs/*/best.pt)")
    ap.add_argument("--threads", type=int, default=common.usable_cores(),
                    help="torch threads / worker processes for ours and the baselines alike (default: usable cores)")
    ap.add_argument("--glove-dim", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="smaller samples: about half the time")
    ap.add_argument("--smoke", action="store_true", help="tiny samples that run in seconds on tiny data, for the "
                    "test suite (the figures mean nothing)")
    ap.add_argument("--only", nargs="+", choices=SCRIPTS + EXTRA, help="run only these benchmarks")
    ap.add_argument("--with", dest="extra", nargs="+", choices=EXTRA, default=[],
                    help="also run these (airline tweets; not in the default set)")
    ap.add_argument("--skip", nargs="+", choices=SCRIPTS + EXTRA, default=[], help="leave these out")
    ap.add_argument("--tweets-csv", type=Path, help="the airline tweets CSV for the tweets benchmarks "
                    "(default: DATA_DIR/airline_tweets.csv)")
    ap.add_argument("--tweets-run", type=Path, help="run trained on the tweets, for predict_tweets (default: "
                    "runs/bench_tweets/seed1, trained by the tweets benchmark)")
    ap.add_argument("--no-flush-denormal", action="store_true", help="bench_train keeps denormal floats")
    ap.add_argument("--objectives-set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for bench_objectives, repeatable")
    sizes = ap.add_argument_group("sample sizes (default: the full set; --quick: the quick set; --smoke: tiny)")
    for key, value in FULL.items():
        sizes.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                           help=f"full {value}, quick {QUICK[key]}, smoke {SMOKE[key]}")
    args = ap.parse_args(argv)
    args.tweets_csv = args.tweets_csv or Path(args.data_dir) / "airline_tweets.csv"
    preset = SMOKE if args.smoke else QUICK if args.quick else FULL
    s = {k: (getattr(args, k) if getattr(args, k) is not None else preset[k]) for k in FULL}

    # one benchmark at a time on this machine, even across two `make bench`
    lock = open(Path(tempfile.gettempdir()) / "sentiment-bench.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit("another benchmarks/bench.py is running on this machine; benchmarks must not overlap")

    run = args.run or newest_run()
    selected = [n for n in (args.only or SCRIPTS + tuple(args.extra)) if n not in args.skip]
    twrun = tweets_run(args, s, selected)
    cmds = {n: c for n, c in commands(args, s, run, twrun).items() if n in selected}
    header = common.machine_lines(args.threads)
    print("== make bench: speed figures, each against a baseline timed in the same command ==")
    for line in header:
        print("  " + line)
    busy = common.cpu_busy_share()
    if busy is not None:
        header.append(f"CPUs {busy:.0%} busy over 1 s before the first benchmark"
                      + ("  WARNING: something else is running; figures will be noisy, and torch with several "
                         "threads slows down badly on busy cores" if busy > 0.25 else ""))
        print("  " + header[-1])
    print(f"  threads / worker processes for ours and the baselines: {args.threads}")
    print("  sample sizes: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in s.items())
          + (" (smoke set: figures meaningless)" if args.smoke else " (quick set)" if args.quick else ""))
    print(f"  predict run: {run if run else 'none found: an untrained run of configs/imdb_cpu.yaml (speed only)'}")
    if "glove" in selected and "glove" not in cmds:
        print(f"  bench_glove skipped: no GloVe {args.glove_dim}d text file under {args.data_dir}/glove")
    for name in EXTRA:
        if name in selected and name not in cmds:
            why = (f"no {args.tweets_csv} (--tweets-csv)" if not Path(args.tweets_csv).is_file() else
                   "no run trained on the tweets: pass --tweets-run, or run the tweets benchmark with it")
            print(f"  bench_{name} skipped: {why}")
    if "predict_tweets" in cmds:
        print(f"  predict_tweets run: {twrun}")

    results, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name, cmd in cmds.items():
            out = Path(tmp) / f"{name}.json"
            print(f"\n\n######## bench_{name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}",
                  flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run(cmd + ["--json", str(out)], cwd=ROOT).returncode
            wall = time.perf_counter() - t0
            data = json.loads(out.read_text()) if out.exists() else {"rows": [], "notes": []}
            results.append((name, rc, wall, data))
    total = time.perf_counter() - start

    print("\n\n== summary ==")
    for line in header:
        print("  " + line)
    print(f"  threads {args.threads}; total {total / 60:.1f} min; ratio = how many times faster ours is than the "
          "baseline timed in the same run (against the sgemm reference: ours' tokens/s over it; not a bound, it can "
          "exceed 1); * = headline")
    for name, rc, wall, data in results:
        status = "" if rc == 0 else f"  [exit code {rc}: FAILED{'' if data['rows'] else ', no figures'}]"
        print(f"\nbench_{name} ({wall:.0f} s){status}")
        for r in data["rows"]:
            ratio = f"{r['ratio']:.2f}x" if not math.isnan(r["ratio"]) else "n/a"
            print(f" {'*' if r['headline'] else ' '} {ratio:>7}     {r['figure']}")
            print(f"{'':13}ours {fmt(r['ours'], r['unit'])}  |  {r['baseline_name']}: {fmt(r['baseline'], r['unit'])}"
                  f"  |  sample: {r['sample']}")
        for note in data.get("notes", []):
            print(f"{'':13}{note}")
    return 0 if all(rc == 0 and data["rows"] for _, rc, _, data in results) else 1


if __name__ == "__main__":
    sys.exit(main())
