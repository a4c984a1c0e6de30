"""Benchmark the prepare step on the real IMDB: list + read + tokenize + vocab + encode, cold and warm.

    python benchmarks/bench_prepare.py --data-dir data [--workers 2] [--cold-runs 1] [--warm-runs 3]

Prints, from one run:
  cold prepare   (empty cache) in a fresh child process, so the peak RSS is the prepare step's own; with
                 --cold-runs N, the median of N, each with a fresh cache
  warm prepare   (from the cache) the median of --warm-runs fresh child processes, called that; against the
                 cold prepare (what the cache saves), not against the baseline, which has no cache
  baseline       spaCy's own tokenizer doing the least a classic pipeline must: list the 50,000 labeled
                 review files, read them, strip <br /> and tokenize every text with nlp.tokenizer.pipe,
                 split across the same number of processes as ours (--workers, forked like ours, spaCy
                 loaded before the fork and inside the timing, like ours). It builds no vocab and no ids
                 and sends back only token counts, so the ratio flatters it if anything. The review files
                 are read once, untimed, before any timing, so every run reads them from the page cache.
  peak RSS       of the cold prepare: the main process's peak plus the largest single worker's peak (two
                 peaks added, which may not have coincided; not the sum over all workers at one moment)
  the GloVe first and cached loads (their naive-parse baseline is benchmarks/bench_glove.py), and the padding
  share of a bucketed epoch against random batches (batch 64).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

CHILD = r"""
import json, resource, sys, time
from sentiment.config import DataConfig
from sentiment.data.prepare import prepare_data
cfg = DataConfig(data_dir=sys.argv[1], glove_dim=None, vocab_max_size=25000, workers=int(sys.argv[2]))
t = time.perf_counter()
data = prepare_data(cfg)
wall = time.perf_counter() - t
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"wall": wall, "from_cache": data.stats["corpus_from_cache"], "reviews": data.stats["reviews"],
                  "self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "tokens": int(sum(s.offsets[-1] - s.offsets[0] for s in (data.train, data.valid, data.test)))}))
"""


def child_prepare(data_dir: str, cache: str, workers: int) -> dict:
    env = dict(os.environ, SENTIMENT_CACHE_DIR=cache, PYTHONPATH=os.pathsep.join(
        filter(None, [str(common.ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", CHILD, data_dir, str(workers)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm_page_cache(data_dir: Path) -> int:
    """Read every labeled review file once (untimed), so that ours and the baseline both read from memory."""
    from sentiment.data.imdb import imdb_dir, list_reviews

    total = 0
    for r in list_reviews(imdb_dir(data_dir)):
        with open(r.path, "rb") as f:
            total += len(f.read())
    return total


_nlp = None  # loaded before the fork: the workers inherit it, as ours inherit spaCy's rules


def _spacy_files(paths: list[str]) -> int:
    """Baseline worker: read, clean and tokenize its files with spaCy; only the non-space token count goes back."""
    from spacy.attrs import IS_SPACE

    from sentiment.data.tokenize import clean_text

    def texts():
        for path in paths:
            with open(path, "rb") as f:
                yield clean_text(f.read().decode("utf-8", errors="replace"))

    n = 0
    for doc in _nlp.tokenizer.pipe(texts(), batch_size=1000):
        n += len(doc) - int(doc.to_array([IS_SPACE]).sum())
    return n


def spacy_baseline(data_dir: Path, workers: int) -> tuple[float, int, int]:
    """(seconds, non-space tokens, processes) of the spaCy baseline: listing, reading and tokenizing, timed."""
    global _nlp
    import spacy

    from sentiment.data.imdb import imdb_dir, list_reviews
    from sentiment.workers import run_in_workers

    procs = max(1, min(workers, os.cpu_count() or 1))
    t = time.perf_counter()
    paths = [r.path for r in list_reviews(imdb_dir(data_dir))]
    _nlp = spacy.blank("en")
    shares = [paths[k::procs] for k in range(procs)]  # dealt in turn: every process gets the same mix
    counts = run_in_workers(_spacy_files, shares, procs) if procs > 1 else [_spacy_files(paths)]
    seconds = time.perf_counter() - t
    _nlp = None
    return seconds, sum(counts), procs


def glove_times(data_dir: Path, dim: int, cache: str) -> tuple[float, float] | None:
    from sentiment.data.glove import glove_file, load_glove

    try:
        path = glove_file(data_dir, dim)
    except Exception:
        return None
    t = time.perf_counter()
    load_glove(path, Path(cache))
    first = time.perf_counter() - t
    cached = []
    for _ in range(3):
        t = time.perf_counter()
        load_glove(path, Path(cache))
        cached.append(time.perf_counter() - t)
    return first, sorted(cached)[1]


def padding(data_dir: Path, cache: str) -> tuple[float, float]:
    os.environ["SENTIMENT_CACHE_DIR"] = cache
    from common import padding_share
    from sentiment.data.batching import BucketBatchSampler
    from sentiment.config import DataConfig
    from sentiment.data.prepare import prepare_data

    data = prepare_data(DataConfig(data_dir=str(data_dir), glove_dim=None))
    lengths = data.train.lengths()
    bucketed = padding_share(lengths, BucketBatchSampler(lengths, 64, seed=0).batches())
    random = padding_share(lengths, BucketBatchSampler(lengths, 64, seed=0, bucket=False).batches())
    return bucketed, random


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--glove-dim", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2, help="processes for ours (data.workers) and for the baseline")
    ap.add_argument("--cold-runs", type=int, default=1, help="cold prepares, each with a fresh cache (median)")
    ap.add_argument("--warm-runs", type=int, default=3, help="warm prepares from the cache (median)")
    ap.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    common.print_header("== bench_prepare: prepare (read + tokenize + vocab + encode) vs spaCy's tokenizer ==")
    size = warm_page_cache(data_dir)
    print(f"  review files read once, untimed, into the page cache first ({size / 1e6:.0f} MB)")
    with tempfile.TemporaryDirectory() as tmp:
        colds = []
        for i in range(max(1, args.cold_runs)):  # each with an empty cache; the last one's serves the warm runs
            cache = os.path.join(tmp, f"cache{i}")
            colds.append(child_prepare(str(data_dir), cache, args.workers))
        colds.sort(key=lambda r: r["wall"])
        cold = colds[len(colds) // 2]
        # warm is short enough for one busy second on a shared machine to decide it: a median
        warms = sorted((child_prepare(str(data_dir), cache, args.workers) for _ in range(max(1, args.warm_runs))),
                       key=lambda r: r["wall"])
        warm = warms[len(warms) // 2]
        base, base_tokens, procs = spacy_baseline(data_dir, args.workers)
        glove = glove_times(data_dir, args.glove_dim, cache)
        bucketed, random = padding(data_dir, cache)

    def line(name: str, value: str) -> None:
        print(f"{name:<68} {value}")

    print(f"{cold['reviews']:,} reviews, {cold['tokens']:,} tokens (ours); spaCy on whole texts: {base_tokens:,} "
          f"non-space tokens")
    figures = common.Figures("bench_prepare")
    on_procs = common.plural(procs, "process", "es")
    line(f"baseline: list + read + spaCy tokenizer.pipe, {on_procs}", f"{base:6.2f} s")
    what = "cold prepare" if len(colds) == 1 else f"cold prepare (median of {len(colds)})"
    ratio = figures.add(f"{what}, {common.plural(args.workers, 'worker')}, vs spaCy tokenizing the same files on {on_procs}",
                        cold["wall"], f"list + read + spaCy tokenizer.pipe, {on_procs}", base, "s",
                        higher_is_better=False, headline=True, sample=f"{cold['reviews']:,} reviews, all of them")
    cold_walls = ", ".join(f"{r['wall']:.2f}" for r in colds)
    runs = "" if len(colds) == 1 else f"; runs: {cold_walls}"
    line(f"{what} (list+read+tokenize+vocab+encode)", f"{cold['wall']:6.2f} s  "
         f"({ratio:.1f}x faster than the baseline, which builds no vocab and no ids{runs})")
    runs = ", ".join(f"{r['wall']:.2f}" for r in warms)
    ratio = figures.add(f"warm prepare (from the cache), median of {len(warms)}, vs our cold prepare", warm["wall"],
                        "cold prepare (no cache)", cold["wall"], "s", higher_is_better=False,
                        sample=f"{len(warms)} runs, median")
    from_cache = "" if all(r["from_cache"] for r in warms) else "  WARNING: not all read the cache"
    line(f"warm prepare (cached), median of {len(warms)} runs", f"{warm['wall']:6.2f} s  (runs: {runs}; "
         f"{ratio:.0f}x faster than the cold prepare){from_cache}")
    rss = cold["self_rss_mb"] + cold["workers_rss_mb"]
    line("peak RSS cold prepare: main's peak + the largest worker's peak", f"{rss:6.0f} MB (main "
         f"{cold['self_rss_mb']:.0f}, largest worker {cold['workers_rss_mb']:.0f}; two peaks added, not one moment)")
    if glove:  # their same-run baseline (a naive parse) is benchmarks/bench_glove.py
        line(f"GloVe 6B {args.glove_dim}d first load (baseline: bench_glove.py)", f"{glove[0]:6.2f} s")
        line(f"GloVe 6B {args.glove_dim}d cached load, median of 3", f"{glove[1]:6.3f} s")
    line("padding share, bucketed batches of 64", f"{bucketed:6.2%}")
    line("padding share, random batches of 64 (classic loop without buckets)", f"{random:6.2%}")
    figures.write(args.json)


if __name__ == "__main__":
    main()
