"""Benchmark `sentiment predict` end to end on the IMDB test reviews, against a naive one-at-a-time loop.

    python scripts/bench_predict.py --run runs/NAME --imdb-test data/aclImdb/test [--limit N] [--baseline 1000]

Writes the test reviews (pos/ then neg/) one per line into a temp file, newlines inside reviews replaced
by spaces, then times `sentiment predict --run RUN --file THAT --json > /dev/null` as a child process:
reviews/s end to end (interpreter start, model load, reading, tokenizing, scoring, writing) and the
child's peak RSS (its tokenizer workers included). The baseline, in this process and on the same
machine: the first --baseline reviews tokenized and scored one at a time (batch of one, one process),
model load excluded, so the ratio flatters the baseline if anything.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run straight from a checkout (python scripts/bench_predict.py) without installing the package.
sys.path.insert(0, str(ROOT))


def read_reviews(imdb_test: Path, limit: int | None) -> list[str]:
    from sentiment.labeled import read_labeled

    texts, _ = read_labeled(imdb_test)
    texts = texts[:limit] if limit else texts
    return [t.replace("\r", " ").replace("\n", " ") for t in texts]  # one review per line


def time_predict(run_dir: Path, path: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `sentiment predict` on the file, as a child process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "sentiment", "predict", "--run", str(run_dir), "--file", str(path), "--json"]
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.run(cmd, stdout=devnull, stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sentiment predict failed ({proc.returncode}): {proc.stderr.strip()}")
    # kilobytes on Linux; the largest of the waited-for children (only this one and its workers)
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def time_naive(run_dir: Path, texts: list[str]) -> float:
    """Seconds to score each text alone: tokenize, encode, truncate, one forward pass of batch one."""
    import numpy as np
    import torch

    from sentiment.batching import truncate
    from sentiment.predict import UNCAPPED_MAX_LEN
    from sentiment.runtime import load_trained
    from sentiment.tokenize import Tokenizer

    run = load_trained(run_dir)
    tokenizer = Tokenizer(lowercase=run.cfg.data.lowercase)
    max_len = run.cfg.data.max_len or UNCAPPED_MAX_LEN
    start = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = np.asarray(run.vocab.encode(tokenizer(text)), dtype=np.int64)
            ids = truncate(ids, max_len, run.cfg.data.truncate)
            if len(ids):
                logit = run.model(torch.from_numpy(ids)[None].to(run.device), torch.tensor([len(ids)]))
                torch.sigmoid(logit).item()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run directory written by `sentiment train`")
    parser.add_argument("--imdb-test", type=Path, required=True, help="an extracted aclImdb/test (pos/ and neg/)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N reviews (a quick check)")
    parser.add_argument("--baseline", type=int, default=1000, help="reviews for the naive loop (default 1000)")
    args = parser.parse_args()

    texts = read_reviews(args.imdb_test, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reviews.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        size_mb = path.stat().st_size / 1e6
        seconds, rss_mb = time_predict(args.run, path)
    n_base = min(args.baseline, len(texts))
    base_seconds = time_naive(args.run, texts[:n_base])

    rate, base_rate = len(texts) / seconds, n_base / base_seconds
    print(f"reviews: {len(texts):,} ({size_mb:.1f} MB, one per line) on {os.cpu_count()} CPU cores")
    print(f"sentiment predict --json: {seconds:.2f} s end to end → {rate:,.0f} reviews/s; "
          f"peak RSS {rss_mb:,.0f} MB")
    print(f"naive loop, one review at a time (first {n_base:,}): {base_seconds:.2f} s → {base_rate:,.0f} reviews/s")
    print(f"speed-up: {rate / base_rate:.1f}x")


if __name__ == "__main__":
    main()
