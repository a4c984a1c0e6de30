"""Benchmark `sentiment predict` end to end on IMDB test reviews, against a one-review-at-a-time loop.

    python scripts/bench_predict.py --run runs/NAME [--imdb-test data/aclImdb/test] [--reviews N] [--baseline 1000]

Takes --reviews test reviews (default all 25,000), half from test/pos and half from test/neg, evenly spaced
within each folder; writes them one per line into a temp file (newlines inside reviews become spaces), then
times `sentiment predict --run RUN --file THAT --json` as a child process: reviews/s end to end (interpreter
start, model load, reading, tokenizing, scoring, writing the JSON lines) and the child's peak RSS.

Baseline, in this process, same machine, same run: --baseline of those reviews, evenly spaced (so both
labels and the real length mix), each tokenized, encoded and cut exactly as predict does (the run's
data.eval_max_len, or predict's cap for whole reviews, same truncation mode) and scored alone as a batch
of one, with torch's threads as the run sets them. Model load is excluded from the baseline, which
flatters it. Both give P(positive); the largest absolute difference between the two over the baseline's
reviews is printed (same computation, different batching: expect ~1e-6).

Without --run, an untrained run of --config (default configs/imdb_cpu.yaml) is written to a temp dir with
the real vocab: the speed does not depend on the weights, and the output says so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np

ROOT = benchlib.ROOT


def pick_reviews(imdb_test: Path, n: int | None) -> tuple[list[str], np.ndarray, int]:
    """n reviews (all if None), half pos and half neg, evenly spaced within each folder; and how many exist."""
    from sentiment.inference.labeled import read_labeled

    texts, labels = read_labeled(imdb_test)  # pos/ then neg/, each in the natural file order
    keep = []
    for label in (1, 0):
        members = np.flatnonzero(labels == label)
        want = len(members) if n is None else min(len(members), n // 2 + (n % 2 if label == 1 else 0))
        keep.append(members[np.unique(np.linspace(0, len(members) - 1, want).round().astype(np.int64))] if want else
                    members[:0])
    keep = np.concatenate(keep)
    return [texts[i].replace("\r", " ").replace("\n", " ") for i in keep], labels[keep], len(texts)


def time_predict(run_dir: Path, path: Path, out: Path) -> tuple[float, float, list[float]]:
    """(seconds, peak RSS in MB, probabilities) of `sentiment predict --json` on the file, as a child process."""
    seconds, rss, rows = benchlib.run_predict(run_dir, path, out)
    return seconds, rss, [row.get("probability", float("nan")) for row in rows]


def time_one_at_a_time(run_dir: Path, texts: list[str]) -> tuple[float, np.ndarray, str]:
    """Seconds to score each text alone as predict would (same tokens, same length limit), and the P(positive)s."""
    import torch

    from sentiment.data.batching import truncate
    from sentiment.inference.predict import encoding_of
    from sentiment.inference.runtime import load_trained
    from sentiment.data.tokenize import Tokenizer

    run = load_trained(run_dir)  # sets torch's threads as the run's config says, as predict does
    enc = encoding_of(run)
    tokenizer = Tokenizer(lowercase=enc.lowercase)
    probs = np.full(len(texts), np.nan)
    start = time.perf_counter()
    with torch.inference_mode():
        for i, text in enumerate(texts):
            ids = truncate(np.asarray(enc.vocab.encode(tokenizer(text)), dtype=np.int64), enc.max_len, enc.truncate)
            if len(ids):  # predict skips token-less reviews too
                logit = run.model(torch.from_numpy(ids)[None].to(run.device), torch.tensor([len(ids)]))
                probs[i] = 1.0 / (1.0 + np.exp(-float(logit.float().item())))  # as predict computes it
    seconds = time.perf_counter() - start
    how = (f"max_len {enc.max_len} ({'data.eval_max_len' if run.cfg.data.eval_max_len else 'whole reviews: predict cap'}),"
           f" truncate {enc.truncate}, torch threads {torch.get_num_threads()}")
    return seconds, probs, how


def untrained_run(config: Path, data_dir: str, where: Path) -> Path:
    """A run directory holding an untrained model of `config` with the real vocab (for speed only)."""
    import torch

    from sentiment.runs import BEST, save_checkpoint, write_run_files
    from sentiment.config import load_config
    from sentiment.data.prepare import prepare_data
    from sentiment.training.train import build_model

    cfg = load_config(config, [f"data.data_dir={data_dir}"])
    data = prepare_data(cfg.data, with_embeddings=False)
    torch.manual_seed(0)
    model = build_model(cfg, len(data.vocab), data.vocab.pad_index)
    run_dir = where / "untrained-run"
    run_dir.mkdir()
    write_run_files(run_dir, cfg, data.vocab)
    save_checkpoint(run_dir / BEST, {"model": model.state_dict(), "vocab": data.vocab.itos, "config": cfg.to_dict()})
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory written by `sentiment train` (default: an untrained "
                        "run of --config, for speed only)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "imdb_cpu.yaml",
                        help="config of the untrained run used without --run")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--imdb-test", type=Path, help="an extracted aclImdb/test (default: DATA_DIR/aclImdb/test)")
    parser.add_argument("--reviews", "--limit", type=int, default=None,
                        help="test reviews for predict, half pos and half neg, evenly spaced (default: all)")
    parser.add_argument("--baseline", type=int, default=1000,
                        help="of those, reviews for the one-at-a-time loop, evenly spaced (default 1000)")
    parser.add_argument("--json", help="also write the figures to this file (for scripts/bench.py)")
    args = parser.parse_args()
    imdb_test = args.imdb_test or Path(args.data_dir) / "aclImdb" / "test"

    # as `sentiment predict` does (run.flush_denormal, default on), before any torch work starts its threads
    flush = True
    if args.run is not None:
        from sentiment.runs import load_run

        flush = getattr(load_run(args.run)[0].run, "flush_denormal", True)
    flush_note = benchlib.set_flush_denormal(flush)
    benchlib.print_header("== bench_predict: `sentiment predict` end to end vs one review at a time ==")
    print(f"  {flush_note} (the run's run.flush_denormal, as predict sets it)")
    texts, labels, total = pick_reviews(imdb_test, args.reviews)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.run is None:
            run_dir = untrained_run(args.config, args.data_dir, tmp)
            what = f"UNTRAINED model of {args.config} with the real vocab (speed only; accuracy meaningless)"
        else:
            run_dir, what = args.run, str(args.run)
        path = tmp / "reviews.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        size_mb = path.stat().st_size / 1e6
        seconds, rss_mb, probs = time_predict(run_dir, path, tmp / "out.jsonl")
        base_idx = np.unique(np.linspace(0, len(texts) - 1, min(args.baseline, len(texts))).round().astype(np.int64))
        base_seconds, base_probs, how = time_one_at_a_time(run_dir, [texts[i] for i in base_idx])

    ours = np.asarray(probs, dtype=np.float64)[base_idx]
    both = ~np.isnan(ours) & ~np.isnan(base_probs)
    diff = float(np.abs(ours[both] - base_probs[both]).max()) if both.any() else float("nan")
    same_skips = bool(np.array_equal(np.isnan(ours), np.isnan(base_probs)))
    n_base = len(base_idx)
    rate, base_rate = len(texts) / seconds, n_base / base_seconds
    print(f"run: {what}")
    print(f"reviews: {len(texts):,} of {total:,} ({int(labels.sum()):,} pos, {int((labels == 0).sum()):,} neg, evenly "
          f"spaced in each folder; {size_mb:.1f} MB, one per line)")
    print(f"  sentiment predict --json (child process)      {seconds:8.2f} s end to end -> {rate:>7,.0f} reviews/s; "
          f"peak RSS {rss_mb:,.0f} MB")
    print(f"  one at a time, batch of one ({n_base:,} evenly spaced of them; {int(labels[base_idx].sum()):,} pos)  "
          f"{base_seconds:8.2f} s -> {base_rate:>7,.0f} reviews/s  [{how}; model load excluded]")
    figures = benchlib.Figures("bench_predict")
    r = figures.add("predict, end to end: sentiment predict vs one review at a time", rate,
                    "one review at a time, same length limit", base_rate, "reviews/s", headline=True,
                    sample=f"{len(texts):,} test reviews (baseline {n_base:,}), half pos, half neg")
    print(f"  speed-up: {r:.1f}x")
    print(f"  largest |P(positive) difference| between the two over the {int(both.sum()):,} reviews both scored: "
          f"{diff:.2e}; same reviews skipped as empty: {'yes' if same_skips else 'NO'}")
    figures.note(f"predict vs one-at-a-time: largest |P difference| {diff:.2e} over {int(both.sum()):,} reviews")
    figures.write(args.json)


if __name__ == "__main__":
    main()
