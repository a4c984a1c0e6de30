"""Helpers shared by the benchmark scripts: the machine header, denormal flushing, length-stratified batch
samples, the figures file that benchmarks/bench.py collects, and the few measuring helpers the package does
not need (a one-text tokenizer, the padding share of batches, a split's token count). Not a benchmark itself."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run straight from a checkout without installing the package
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_lines(threads: int | None = None) -> list[str]:
    """Who measured what, where and when: date, cores, CPU model, library versions, thread count, load."""
    lines = [f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"machine: {cpu_model()}; os.cpu_count() {os.cpu_count()}, usable cores (affinity) {usable_cores()}"]
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import torch

        versions.append(f"torch {torch.__version__}")
        threads = threads if threads is not None else torch.get_num_threads()
    except ImportError:
        pass
    if threads is not None:
        versions.append(f"torch threads {threads}")
    lines.append("software: " + ", ".join(versions))
    try:
        lines.append("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)")
    except OSError:
        pass
    return lines


def cpu_busy_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over the next `seconds` (Linux /proc/stat): is anything else running?"""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def print_header(title: str, threads: int | None = None) -> None:
    print(title)
    for line in machine_lines(threads):
        print("  " + line)


def set_flush_denormal(enabled: bool) -> str:
    """Flush denormal floats to zero (or not) in this thread. Call it before torch starts its thread pool:
    worker threads copy the floating-point mode of the thread that creates them, so switching later leaves
    them as they were. Returns a phrase for the output."""
    import torch

    supported = torch.set_flush_denormal(enabled)
    if not supported:
        return "flush_denormal: not supported on this CPU (denormals kept)"
    return f"flush_denormal: {'on' if enabled else 'OFF'} (set at process start, before any torch thread pool)"


def stratified(keys: np.ndarray, n: int) -> np.ndarray:
    """Positions of n items spread over the distribution of keys: sort by key, cut into n strata of equal
    count, take the middle item of each. Every stratum of lengths is represented once, from the shortest
    to the longest; the single most extreme item is not (it is the edge of the last stratum)."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    n = max(1, min(n, len(order)))
    picks = ((np.arange(n) + 0.5) * len(order) / n).astype(np.int64)
    return order[np.unique(np.minimum(picks, len(order) - 1))]


def plural(n: int, word: str, suffix: str = "s") -> str:
    return f"{n:,} {word}{'' if n == 1 else suffix}"


def describe(values) -> str:
    """min / median / max of integer values (lengths), for naming what a sample covered."""
    v = np.asarray(values)
    if not len(v):
        return "none"
    return f"min {int(v.min()):,} / median {int(np.median(v)):,} / max {int(v.max()):,}"


def bootstrap_ratio(base_seconds: np.ndarray, ours_seconds: np.ndarray, reps: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """90% interval of sum(base)/sum(ours) over batches resampled with replacement (paired: same batches)."""
    base, ours = np.asarray(base_seconds, float), np.asarray(ours_seconds, float)
    if len(base) < 2:
        r = float(base.sum() / ours.sum())
        return r, r
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(reps, len(base)))
    ratios = base[idx].sum(axis=1) / ours[idx].sum(axis=1)
    return float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))


class Figures:
    """The figures a script reports, for benchmarks/bench.py's summary (written with --json FILE)."""

    def __init__(self, script: str):
        self.script = script
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def add(self, figure: str, ours: float, baseline_name: str, baseline: float, unit: str, *,
            higher_is_better: bool = True, sample: str = "", headline: bool = False) -> float:
        """One figure with its same-run baseline; returns the speed-up (> 1: ours is faster)."""
        ratio = (ours / baseline if higher_is_better else baseline / ours) if ours and baseline else float("nan")
        self.rows.append({"figure": figure, "ours": ours, "baseline_name": baseline_name, "baseline": baseline,
                          "unit": unit, "ratio": ratio, "higher_is_better": higher_is_better, "sample": sample,
                          "headline": headline})
        return ratio

    def note(self, text: str) -> None:
        self.notes.append(text)

    def write(self, path: str | Path | None) -> None:
        if path:
            Path(path).write_text(json.dumps({"script": self.script, "rows": self.rows, "notes": self.notes},
                                             indent=1), encoding="utf-8")


def run_predict(run_dir: Path, path: Path, out: Path) -> tuple[float, float, list[dict]]:
    """(seconds, peak RSS in MB, JSON rows) of `sentiment predict --run RUN --file PATH --json`, as a child
    process writing to `out`."""
    import resource
    import subprocess
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "sentiment", "predict", "--run", str(run_dir), "--file", str(path), "--json"]
    start = time.perf_counter()
    with open(out, "w") as sink:
        proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sentiment predict failed ({proc.returncode}): {proc.stderr.strip()}")
    # kilobytes on Linux; the largest of the waited-for children (this one is the first, and its workers)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, rss, [json.loads(line) for line in Path(out).read_text().splitlines() if line]


class Tokenizer:
    """One text at a time, as `sentiment predict` tokenizes (its cleaning, split into whitespace chunks, each
    distinct chunk tokenized once and kept in a memo): the one-at-a-time baselines' tokenizer."""

    def __init__(self, lowercase: bool = True, cleaning=None, memo_size: int = 200_000):
        from sentiment.data.tokenize import IMDB_CLEANING, ChunkMemo

        self.cleaning = IMDB_CLEANING if cleaning is None else cleaning
        self._memo = ChunkMemo(lowercase, memo_size)

    def __call__(self, text: str) -> list[str]:
        from sentiment.data.tokenize import split_chunks

        chunks = split_chunks(text, self.cleaning)
        memo = self._memo.fill(chunks)
        return [token for chunk in chunks for token in memo[chunk]]


def padding_share(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padded positions among all positions computed over (padding / (padding + real tokens))."""
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return 1.0 - real / total if total else 0.0


def n_tokens(split) -> int:
    """Tokens of an EncodedSplit (its ids between its first and last offset)."""
    return int(split.offsets[-1] - split.offsets[0])
