"""Benchmark `sentiment predict` end to end against a one-text-at-a-time loop: on IMDB test reviews (default)
or on texts resampled from a CSV of your own (--csv, e.g. the airline tweets, any number of classes).

    python benchmarks/bench_predict.py [--run runs/NAME] [--imdb-test data/aclImdb/test] [--texts N] [--baseline 1000]
    python benchmarks/bench_predict.py --run runs/bench_tweets/seed1 --csv data/airline_tweets.csv [--texts 100000]

The texts: IMDB: --texts test reviews (default all 25,000), half from test/pos and half from test/neg, evenly
spaced within each folder, written one per line (newlines inside reviews become spaces). --csv: --texts texts
(default 100,000) drawn with replacement (seeded) from the file's --text-column, written as a one-column CSV.
Either file goes to a temp dir (or --work-dir, never inside the repository). Then `sentiment predict --run RUN
--file THAT --json` is timed as a child process: texts/s end to end (interpreter start, model load, reading,
cleaning and tokenizing on the run's data.workers processes, scoring, writing the JSON lines) and the
child's peak RSS.

Baseline, in this process, same machine, same run: --baseline of those texts, evenly spaced (both labels and
the real length mix), each cleaned and tokenized as predict does (the run's cleaning, lowercasing and a memo
of chunks), encoded with the run's vocab, cut to the run's data.eval_max_len (or predict's cap for whole
texts) with its truncation mode, and scored alone as a batch of one, with torch's threads as the run sets
them. Model load is excluded from the baseline, which flatters it. Both give every class's probability; the
largest absolute difference over the baseline's texts and classes is printed (same computation, different
batching: expect ~1e-6), and whether both pick the same label.

Without --run (IMDB only), an untrained run of --config (default configs/imdb_cpu.yaml) is written to a temp
dir with the real vocab: the speed does not depend on the weights, and the output says so.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np

ROOT = common.ROOT


def pick_reviews(imdb_test: Path, n: int | None) -> tuple[list[str], np.ndarray, int]:
    """n reviews (all if None), half pos and half neg, evenly spaced within each folder; and how many exist."""
    texts, labels = [], []
    for label, folder in ((1, "pos"), (0, "neg")):  # pos/ then neg/, each in the order of the review ids
        files = sorted((imdb_test / folder).glob("*.txt"), key=lambda p: (len(p.stem), p.stem))
        texts += [f.read_text(encoding="utf-8", errors="replace") for f in files]
        labels += [label] * len(files)
    labels = np.asarray(labels, dtype=np.int64)
    if not texts:
        sys.exit(f"no reviews under {imdb_test}/pos or /neg: pass --imdb-test or --data-dir")
    keep = []
    for label in (1, 0):
        members = np.flatnonzero(labels == label)
        want = len(members) if n is None else min(len(members), n // 2 + (n % 2 if label == 1 else 0))
        keep.append(members[np.unique(np.linspace(0, len(members) - 1, want).round().astype(np.int64))] if want else
                    members[:0])
    keep = np.concatenate(keep)
    return [texts[i].replace("\r", " ").replace("\n", " ") for i in keep], labels[keep], len(texts)


def resample(csv_path: Path, column: str, n: int, seed: int) -> list[str]:
    """n texts drawn with replacement (seeded) from the file's column."""
    from sentiment.data.readers import read_table

    texts = read_table(csv_path, column, None).texts
    return [texts[i] for i in np.random.default_rng(seed).integers(0, len(texts), size=n).tolist()]


def write_texts(texts: list[str], where: Path, as_csv: bool) -> Path:
    path = where / ("texts.csv" if as_csv else "texts.txt")
    if as_csv:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text"])
            writer.writerows([t] for t in texts)
    else:
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def time_predict(run_dir: Path, path: Path, out: Path, names: list[str]) -> tuple[float, float, np.ndarray]:
    """(seconds, peak RSS in MB, [N, K] probabilities, NaN rows for skipped texts) of `sentiment predict --json`."""
    seconds, rss, rows = common.run_predict(run_dir, path, out)
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
    from sentiment.data.hashing import NgramBatch, bags, hash_tokens
    from sentiment.inference.predict import encoding_of
    from sentiment.inference.runtime import load_trained
    from sentiment.ngrams import spec_of

    run = load_trained(run_dir)  # sets torch's threads as the run's config says, as predict does
    enc = encoding_of(run)
    spec = spec_of(run.model)  # a model with the n-gram branch also reads each text's n-grams

    def ngrams_of(tokens: list[str]) -> dict:
        if spec is None:
            return {}
        hashes = hash_tokens(tokens)
        if not spec.whole_text:
            hashes = truncate(hashes, enc.max_len, enc.truncate)
        ids, offsets, counts = bags(hashes, np.array([0, len(hashes)]), spec.n, spec.buckets)
        return {"ngrams": NgramBatch(torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(counts))}

    tokenizer = common.Tokenizer(lowercase=enc.lowercase, cleaning=enc.cleaning)
    space = run.label_space
    probs = np.full((len(texts), space.num_classes), np.nan)
    start = time.perf_counter()
    with torch.inference_mode():
        for i, text in enumerate(texts):
            tokens = tokenizer(text)
            ids = truncate(np.asarray(enc.vocab.encode(tokens), dtype=np.int64), enc.max_len, enc.truncate)
            if len(ids):  # predict skips token-less texts too
                logits = run.model(torch.from_numpy(ids)[None].to(run.device), torch.tensor([len(ids)]),
                                   **ngrams_of(tokens))
                probs[i] = space.probabilities(logits.float().cpu().numpy())[0]  # as predict computes them
    seconds = time.perf_counter() - start
    how = (f"max_len {enc.max_len} ({'data.eval_max_len' if run.cfg.data.eval_max_len else 'whole texts: predict cap'}),"
           f" truncate {enc.truncate}, cleaning {enc.cleaning.key()}, torch threads {torch.get_num_threads()}")
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
    run_dir.mkdir(exist_ok=True)
    write_run_files(run_dir, cfg, data.vocab)
    save_checkpoint(run_dir / BEST, {"model": model.state_dict(), "vocab": data.vocab.itos, "config": cfg.to_dict()})
    return run_dir


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory written by `sentiment train` (default, IMDB only: "
                        "an untrained run of --config, for speed only)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "imdb_cpu.yaml",
                        help="config of the untrained run used without --run")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--imdb-test", type=Path, help="an extracted aclImdb/test (default: DATA_DIR/aclImdb/test)")
    parser.add_argument("--csv", type=Path, help="resample the texts from this table instead of IMDB (needs --run)")
    parser.add_argument("--text-column", default="text", help="--csv's text column (default: text)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --csv resampling")
    parser.add_argument("--texts", "--reviews", "--tweets", type=int, default=None,
                        help="texts for predict (default: IMDB all 25,000 test reviews; --csv 100,000)")
    parser.add_argument("--baseline", type=int, default=1000,
                        help="of those, texts for the one-at-a-time loop, evenly spaced (default 1000)")
    parser.add_argument("--work-dir", type=Path, help="keep the texts and predict's output here (default: a temp dir)")
    parser.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    args = parser.parse_args(argv)
    if args.csv is not None and args.run is None:
        parser.error("--csv needs --run: a run trained on such texts")
    if args.work_dir is not None and (args.work_dir.resolve() == ROOT or ROOT in args.work_dir.resolve().parents):
        parser.error(f"--work-dir {args.work_dir} is inside the repository: generated data goes elsewhere")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # as `sentiment predict` does (run.flush_denormal, default on), before any torch work starts its threads
    flush = True
    if args.run is not None:
        from sentiment.runs import load_run

        flush = getattr(load_run(args.run)[0].run, "flush_denormal", True)
    flush_note = common.set_flush_denormal(flush)
    source = "IMDB test reviews" if args.csv is None else f"texts resampled from {args.csv.name}"
    common.print_header(f"== bench_predict: `sentiment predict` end to end vs one text at a time, on {source} ==")
    print(f"  {flush_note} (the run's run.flush_denormal, as predict sets it)")
    if args.csv is None:
        texts, labels, total = pick_reviews(args.imdb_test or Path(args.data_dir) / "aclImdb" / "test", args.texts)
        what_texts = (f"{len(texts):,} of {total:,} test reviews ({int(labels.sum()):,} pos, {int((labels == 0).sum()):,} "
                      "neg, evenly spaced in each folder), one per line")
    else:
        if not args.csv.is_file():
            sys.exit(f"{args.csv} not found")
        texts = resample(args.csv, args.text_column, args.texts or 100_000, args.seed)
        what_texts = f"{len(texts):,} drawn with replacement (seed {args.seed}) from {args.csv}, one-column CSV"
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        where = args.work_dir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        if args.run is None:
            run_dir = untrained_run(args.config, args.data_dir, where)
            what = f"UNTRAINED model of {args.config} with the real vocab (speed only; accuracy meaningless)"
        else:
            run_dir, what = args.run, str(args.run)
        from sentiment.runs import load_labels

        names = list(load_labels(run_dir).names)
        path = write_texts(texts, where, as_csv=args.csv is not None)
        size_mb = path.stat().st_size / 1e6
        seconds, rss_mb, probs = time_predict(run_dir, path, where / "predictions.jsonl", names)
        if len(probs) != len(texts):
            sys.exit(f"sentiment predict wrote {len(probs):,} rows for {len(texts):,} texts")
        base_idx = np.unique(np.linspace(0, len(texts) - 1, min(args.baseline, len(texts))).round().astype(np.int64))
        base_seconds, base_probs, how = time_one_at_a_time(run_dir, [texts[i] for i in base_idx])
    report(args, what, what_texts, size_mb, names, texts, probs, seconds, rss_mb, base_idx, base_seconds, base_probs, how)


def report(args, what, what_texts, size_mb, names, texts, probs, seconds, rss_mb, base_idx, base_seconds, base_probs,
           how) -> None:
    ours = probs[base_idx]
    both = ~np.isnan(ours[:, 0]) & ~np.isnan(base_probs[:, 0])
    diff = float(np.abs(ours[both] - base_probs[both]).max()) if both.any() else float("nan")
    same_label = float((ours[both].argmax(1) == base_probs[both].argmax(1)).mean()) if both.any() else float("nan")
    same_skips = bool(np.array_equal(np.isnan(ours[:, 0]), np.isnan(base_probs[:, 0])))
    n_base = len(base_idx)
    rate, base_rate = len(texts) / seconds, n_base / base_seconds
    print(f"run: {what} (classes: {', '.join(names)})")
    print(f"texts: {what_texts}; {size_mb:.1f} MB; {int(np.isnan(probs[:, 0]).sum()):,} skipped as empty by predict")
    print(f"  sentiment predict --json (child process)      {seconds:8.2f} s end to end -> {rate:>8,.0f} texts/s; "
          f"peak RSS {rss_mb:,.0f} MB")
    print(f"  one at a time, batch of one ({n_base:,} evenly spaced of them)  {base_seconds:8.2f} s -> "
          f"{base_rate:>8,.0f} texts/s  [{how}; model load excluded]")
    figures = common.Figures("bench_predict")
    kind = "IMDB test reviews" if args.csv is None else f"texts resampled from {args.csv.name}"
    r = figures.add(f"predict, end to end, {kind}: sentiment predict vs one text at a time", rate,
                    "one text at a time, same cleaning and length limit", base_rate, "texts/s", headline=True,
                    sample=f"{len(texts):,} {kind} (baseline {n_base:,}, evenly spaced)")
    print(f"  speed-up: {r:.1f}x")
    print(f"  largest |probability difference| between the two over the {int(both.sum()):,} texts both scored "
          f"(all {len(names)} classes): {diff:.2e}; same label: {same_label:.2%}; same texts skipped as empty: "
          f"{'yes' if same_skips else 'NO'}")
    figures.note(f"predict vs one-at-a-time: largest |P difference| {diff:.2e} over {int(both.sum()):,} texts")
    figures.write(args.json)


if __name__ == "__main__":
    main()
