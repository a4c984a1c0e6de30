"""Benchmark `sentiment predict` end to end on 100,000 airline tweets, against a one-tweet-at-a-time loop.

    .venv/bin/python scripts/bench_predict_tweets.py --run runs/bench_tweets/seed1 --csv ../shared/data/airline_tweets.csv
        [--tweets 100000] [--baseline 1000] [--work-dir DIR] [--quick]

The approach of scripts/bench_predict.py (IMDB), for a run trained on the airline tweets (any number of
classes): --tweets texts drawn with replacement (seeded) from the real file, written to a CSV with a text
column in --work-dir (default: a temp dir under /tmp, removed afterwards; never inside the repository);
then `sentiment predict --run RUN --file THAT.csv --json` timed as a child process: tweets/s end to end
(interpreter start, model load, reading the CSV, cleaning and tokenizing on the run's data.workers
processes, scoring, writing the JSON lines) and the child's peak RSS.

Baseline, in this process, same machine, same run: --baseline of those tweets, evenly spaced, each
cleaned and tokenized with the run's Encoding (its Cleaning, so URLs and @mentions become xxurl/xxuser as
in training; lowercase; one memo of chunks, as predict keeps per worker), encoded with the run's vocab, cut
to the run's data.eval_max_len with its truncation mode, and scored alone as a batch of one, with torch's
threads as the run sets them. Model load is excluded from the baseline, which flatters it. Both give every
class's probability; the largest absolute difference over the baseline's tweets and classes is printed
(same computation, different batching: expect ~1e-6), and whether both pick the same label.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np

ROOT = benchlib.ROOT


def resample(real_csv: Path, n: int, seed: int) -> list[str]:
    from sentiment.data.readers import read_table

    texts = read_table(real_csv, "text", None).texts
    return [texts[i] for i in np.random.default_rng(seed).integers(0, len(texts), size=n).tolist()]


def time_predict(run_dir: Path, path: Path, out: Path, names: list[str]) -> tuple[float, float, np.ndarray]:
    """(seconds, peak RSS in MB, [N, K] probabilities, NaN rows for skipped texts) of `sentiment predict --json`."""
    seconds, rss, rows = benchlib.run_predict(run_dir, path, out)
    probs = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        if "probs" in row:
            probs[i] = [row["probs"][name] for name in names]
    return seconds, rss, probs


def time_one_at_a_time(run_dir: Path, texts: list[str]) -> tuple[float, np.ndarray, str]:
    """Seconds to score each text alone as predict would (same cleaning, tokens, length limit), and the [N, K]
    probabilities."""
    import torch

    from sentiment.data.batching import truncate
    from sentiment.inference.predict import encoding_of
    from sentiment.inference.runtime import load_trained
    from sentiment.data.tokenize import Tokenizer

    run = load_trained(run_dir)  # sets torch's threads as the run's config says, as predict does
    enc = encoding_of(run)
    tokenizer = Tokenizer(lowercase=enc.lowercase, cleaning=enc.cleaning)
    space = run.label_space
    probs = np.full((len(texts), space.num_classes), np.nan)
    start = time.perf_counter()
    with torch.inference_mode():
        for i, text in enumerate(texts):
            ids = truncate(np.asarray(enc.vocab.encode(tokenizer(text)), dtype=np.int64), enc.max_len, enc.truncate)
            if len(ids):  # predict skips token-less texts too
                logits = run.model(torch.from_numpy(ids)[None].to(run.device), torch.tensor([len(ids)]))
                probs[i] = space.probabilities(logits.float().cpu().numpy())[0]  # as predict computes them
    seconds = time.perf_counter() - start
    how = (f"max_len {enc.max_len} ({'data.eval_max_len' if run.cfg.data.eval_max_len else 'whole texts: predict cap'}),"
           f" truncate {enc.truncate}, cleaning {enc.cleaning.key()}, torch threads {torch.get_num_threads()}")
    return seconds, probs, how


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run directory trained on the airline tweets")
    parser.add_argument("--csv", type=Path, help="the real airline tweets CSV (default: data/airline_tweets.csv)")
    parser.add_argument("--tweets", type=int, default=None, help="tweets for predict, drawn with replacement "
                        "(default 100,000; --quick 5,000)")
    parser.add_argument("--baseline", type=int, default=None,
                        help="of those, tweets for the one-at-a-time loop, evenly spaced (default 1,000; --quick 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    parser.add_argument("--work-dir", type=Path, help="keep the CSV and predict's output here (default: a temp dir "
                        "under /tmp, removed afterwards)")
    parser.add_argument("--quick", action="store_true", help="5,000 tweets, 200 one at a time: a smoke test")
    parser.add_argument("--json", help="also write the figures to this file (for scripts/bench.py)")
    args = parser.parse_args()
    n_tweets = args.tweets or (5000 if args.quick else 100_000)
    n_base = args.baseline or (200 if args.quick else 1000)
    real = (args.csv or ROOT / "data" / "airline_tweets.csv").resolve()
    if not real.is_file():
        sys.exit(f"{real} not found: pass --csv PATH to the airline tweets, e.g. --csv ../shared/data/airline_tweets.csv")
    if args.work_dir is not None:
        work_dir = args.work_dir.resolve()
        if work_dir == ROOT or ROOT in work_dir.parents:
            sys.exit(f"--work-dir {work_dir} is inside the repository: generated data goes elsewhere")

    from sentiment.runs import load_labels, load_run

    # as `sentiment predict` does (run.flush_denormal, default on), before any torch work starts its threads
    flush_note = benchlib.set_flush_denormal(getattr(load_run(args.run)[0].run, "flush_denormal", True))
    names = list(load_labels(args.run).names)
    benchlib.print_header("== bench_predict_tweets: `sentiment predict` on tweets end to end vs one tweet at a time ==")
    print(f"  {flush_note} (the run's run.flush_denormal, as predict sets it)")
    texts = resample(real, n_tweets, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-predict-tweets-") as tmp:
        where = args.work_dir.resolve() if args.work_dir else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"tweets-{n_tweets}-seed{args.seed}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text"])
            writer.writerows([t] for t in texts)
        size_mb = path.stat().st_size / 1e6
        seconds, rss_mb, probs = time_predict(args.run, path, where / "predictions.jsonl", names)
        if len(probs) != len(texts):
            sys.exit(f"sentiment predict wrote {len(probs):,} rows for {len(texts):,} tweets")
        base_idx = np.unique(np.linspace(0, len(texts) - 1, min(n_base, len(texts))).round().astype(np.int64))
        base_seconds, base_probs, how = time_one_at_a_time(args.run, [texts[i] for i in base_idx])

    ours = probs[base_idx]
    both = ~np.isnan(ours[:, 0]) & ~np.isnan(base_probs[:, 0])
    diff = float(np.abs(ours[both] - base_probs[both]).max()) if both.any() else float("nan")
    same_label = float((ours[both].argmax(1) == base_probs[both].argmax(1)).mean()) if both.any() else float("nan")
    same_skips = bool(np.array_equal(np.isnan(ours[:, 0]), np.isnan(base_probs[:, 0])))
    n_base = len(base_idx)
    rate, base_rate = len(texts) / seconds, n_base / base_seconds
    skipped = int(np.isnan(probs[:, 0]).sum())
    print(f"run: {args.run} (classes: {', '.join(names)})")
    print(f"tweets: {len(texts):,} drawn with replacement (seed {args.seed}) from {real.name}; {size_mb:.1f} MB CSV, "
          f"column text; {skipped:,} skipped as empty by predict")
    print(f"  sentiment predict --json (child process)      {seconds:8.2f} s end to end -> {rate:>8,.0f} tweets/s; "
          f"peak RSS {rss_mb:,.0f} MB")
    print(f"  one at a time, batch of one ({n_base:,} evenly spaced of them)  {base_seconds:8.2f} s -> "
          f"{base_rate:>8,.0f} tweets/s  [{how}; model load excluded]")
    figures = benchlib.Figures("bench_predict_tweets")
    r = figures.add("predict on tweets, end to end: sentiment predict vs one tweet at a time", rate,
                    "one tweet at a time, same cleaning and length limit", base_rate, "tweets/s", headline=True,
                    sample=f"{len(texts):,} resampled airline tweets (baseline {n_base:,}, evenly spaced)")
    print(f"  speed-up: {r:.1f}x")
    print(f"  largest |probability difference| between the two over the {int(both.sum()):,} tweets both scored "
          f"(all {len(names)} classes): {diff:.2e}; same label: {same_label:.2%}; same tweets skipped as empty: "
          f"{'yes' if same_skips else 'NO'}")
    figures.note(f"predict_tweets vs one-at-a-time: largest |P difference| {diff:.2e} over {int(both.sum()):,} tweets")
    figures.write(args.json)


if __name__ == "__main__":
    main()
