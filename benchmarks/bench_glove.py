"""Benchmark GloVe loading on a real file: first load (parse + write cache) and cached load.

    python benchmarks/bench_glove.py --source ../shared/data/glove.6B.50d.zip   # or a glove.*.txt

Each measurement runs in a fresh child process (so its peak RSS is its own and a cached load starts
cold, as in a new training run), against a fresh temporary cache directory: one first load, then three
cached loads (median reported). As a same-run baseline it times a naive pure-Python parse
(`[float(x) for x in parts]` per line) of the same file, and checks all three give identical vectors
(exit code 1 if they differ). The first load and the naive parse do the same work (text to vectors); the
cached load reads a cache instead, so its figure is against our own first load (what the cache saves), not
against the parse.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_busy_share  # noqa: E402


def naive_parse(source: Path, member: str | None) -> tuple[list[str], np.ndarray]:
    """What a first implementation would do: split every line and float() every value in Python."""
    with open_text(source, member) as f:
        words, rows = [], []
        for line in f:
            parts = line.rstrip().split(" ")
            words.append(parts[0])
            rows.append([float(x) for x in parts[1:]])
    return words, np.array(rows, dtype=np.float32)


def open_text(source: Path, member: str | None) -> io.TextIOBase:
    if member is None:
        return open(source, encoding="utf-8", errors="replace", newline="\n")
    zf = zipfile.ZipFile(source)
    return io.TextIOWrapper(zf.open(member), encoding="utf-8", errors="replace", newline="\n")


def zip_member(source: Path) -> str | None:
    if source.suffix.lower() != ".zip":
        return None
    with zipfile.ZipFile(source) as zf:
        names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1].startswith("glove") and n.endswith(".txt")]
    if len(names) != 1:
        sys.exit(f"{source} holds {len(names)} glove*.txt members; this benchmark needs exactly one")
    return names[0]


def run_phase(phase: str, source: Path, cache: Path) -> dict:
    """Child process: one timed load; prints a JSON line."""
    if phase == "naive":
        t = time.perf_counter()
        words, vectors = naive_parse(source, zip_member(source))
        wall = time.perf_counter() - t
        skipped = 0
    else:
        from sentiment.data.glove import load_glove

        t = time.perf_counter()
        glove = load_glove(source, cache)
        wall = time.perf_counter() - t
        words, vectors, skipped = glove.words, glove.vectors, glove.skipped_lines
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; before hashing
    digest = hashlib.sha256(np.ascontiguousarray(vectors).data)
    digest.update("\n".join(words).encode())
    return {"wall": wall, "rss_mb": rss_mb, "words": len(words), "dim": int(vectors.shape[1]),
            "skipped": skipped, "digest": digest.hexdigest()[:16]}


def child(phase: str, source: Path, cache: Path) -> dict:
    cmd = [sys.executable, __file__, "--source", str(source), "--phase", phase, "--cache", str(cache)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="glove.*.txt or a .zip holding one")
    ap.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    ap.add_argument("--phase", choices=["first", "cached", "naive"], help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    source = args.source.resolve()
    if args.phase:
        print(json.dumps(run_phase(args.phase, source, args.cache)))
        return 0
    if not source.is_file():
        sys.exit(f"no such file: {source}")

    load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"
    busy = cpu_busy_share()
    load += f", CPUs {busy:.0%} busy over 1 s" if busy is not None else ""
    member = zip_member(source)
    print(f"source: {args.source} ({source.stat().st_size:,} bytes{f', member {member}' if member else ''})")
    print(f"machine: {os.cpu_count()} CPUs; at start {load}; "
          f"python {sys.version.split()[0]}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench-glove-") as tmp:
        cache = Path(tmp) / "cache"
        first = child("first", source, cache)
        cached = [child("cached", source, cache) for _ in range(3)]
        naive = child("naive", source, cache)
        cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 2**20

    cached_wall = statistics.median(r["wall"] for r in cached)
    same = first["digest"] == naive["digest"] and all(r["digest"] == first["digest"] for r in cached)
    print(f"{first['words']:,} words, dim {first['dim']}, {first['skipped']} skipped lines; cache {cache_mb:.0f} MB; "
          f"first, cached and naive results identical: {'yes' if same else 'NO'}")

    def row(name: str, wall: float, rss: float, extra: str = "") -> None:
        print(f"{name:<38} {wall:7.3f} s  peak RSS {rss:6.0f} MB{extra}")

    row("first load (parse + write cache)", first["wall"], first["rss_mb"])
    row("cached load (median of 3)", cached_wall, max(r["rss_mb"] for r in cached),
        "  runs: " + " ".join(f"{r['wall']:.3f}" for r in cached) + f"  ({first['wall'] / cached_wall:.0f}x faster than "
        "the first load: the cache saves the parse)")
    row("baseline: naive pure-Python parse", naive["wall"], naive["rss_mb"],
        f"  ({naive['wall'] / first['wall']:.1f}x the first load's time, the same work)")
    figures = {"script": "bench_glove", "notes": [f"first, cached and naive results identical: {same}"], "rows": [
        {"figure": f"GloVe {first['words']:,} x {first['dim']}: first load (parse + write cache) vs a naive Python parse",
         "ours": first["wall"], "baseline_name": "naive pure-Python parse", "baseline": naive["wall"], "unit": "s",
         "ratio": naive["wall"] / first["wall"], "higher_is_better": False, "sample": "1 run each", "headline": False},
        {"figure": "GloVe: cached load (median of 3) vs our first load: what the cache saves (not a parse)",
         "ours": cached_wall, "baseline_name": "first load (parse + write cache)", "baseline": first["wall"],
         "unit": "s", "ratio": first["wall"] / cached_wall, "higher_is_better": False, "sample": "median of 3",
         "headline": False}]}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
