"""Which validation split predicts IMDB test accuracy: carved by movie, or at random?

Every configuration is trained once on IMDB train minus *both* validation splits (the movie split and
the random split, 2,500 reviews each, disjoint by construction of the order below), so the two
splits judge the very same models. Each model is scored at the end of its schedule (last.pt: no
selection on any split) on both validation splits and on test. The table then shows, for each
split, the Spearman rank correlation of validation with test accuracy over the configurations and
the test accuracy lost by trusting the split's pick instead of the best test figure.

The same runs decide the CPU recipe's choices on the movie split (the default): each configuration
changes one choice of configs/imdb_cpu.yaml. Results are appended to OUT/results.jsonl as they come,
so an interrupted study continues where it stopped.

    .venv/bin/python scripts/validation_study.py [--out bench/validation_study] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentiment.runs import LAST, load_checkpoint, read_metrics  # noqa: E402
from sentiment.config import load_config  # noqa: E402
from sentiment.data.corpus import load_corpus  # noqa: E402
from sentiment.inference.evaluate import evaluate  # noqa: E402
from sentiment.floats import flush_denormals  # noqa: E402
from sentiment.data.imdb import imdb_dir, movie_ids, movie_validation_split, validation_split  # noqa: E402
from sentiment.paths import cache_dir  # noqa: E402
from sentiment.data.prepare import prepare_data  # noqa: E402
from sentiment.training.train import build_model, train  # noqa: E402

RECIPE = "configs/imdb_cpu.yaml"
# name -> overrides of the CPU recipe. Each differs from it in one choice (or, for the last two, in how
# much it can memorise), by more than the ~0.6-point noise of a 2,500-review split where we could tell.
CONFIGS: dict[str, list[str]] = {
    "recipe": [],
    "max_len_200": ["data.max_len=200"],
    "max_len_100": ["data.max_len=100"],
    "max_len_50": ["data.max_len=50"],
    "epochs_1": ["train.epochs=1"],
    "constant_lr_no_output_dropout": ["train.lr=0.001", "train.lr_schedule=constant", "train.warmup_steps=0",
                                      "model.output_dropout=0.0"],
    "pooling_last": ["model.pooling=last"],
    "lstm": ["model.rnn=lstm"],
    "no_glove": ["data.glove_dim=null", "model.embed_dim=50"],
    "memorise": ["data.vocab_max_size=100000", "data.max_len=200", "model.embed_dropout=0.0",
                 "model.output_dropout=0.0", "train.epochs=6", "train.lr_schedule=constant", "train.warmup_steps=0",
                 "train.lr=0.002"],
}


def study_splits(data_dir: Path, fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Corpus rows: the movie validation split, a random validation split drawn from what the movie
    split left, the remaining train reviews, and test."""
    corpus, _ = load_corpus(data_dir, lowercase=True, workers=os.cpu_count() or 1, cache_dir=cache_dir(data_dir))
    train_all = corpus.select("train")
    movies = movie_ids(imdb_dir(data_dir), [corpus.names[i] for i in train_all])
    if movies is None:
        raise SystemExit("this study needs train/urls_pos.txt and urls_neg.txt from the IMDB archive")
    labels = corpus.labels[train_all]
    rest, movie_valid = movie_validation_split(labels, movies, fraction, seed)
    # the same number of reviews as a fraction of all of train, drawn at random from the rest
    rest_train, random_valid = validation_split(labels[rest], fraction * len(labels) / len(rest), seed)
    return {"train": train_all[rest[rest_train]], "valid": train_all[movie_valid],
            "valid_random": train_all[rest[random_valid]], "test": corpus.select("test")}


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x):  # ties share their mean rank
            r[x == value] = r[x == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def run_one(name: str, overrides: list[str], indices: dict[str, np.ndarray], out: Path, threads: int) -> dict:
    cfg = load_config(Path(RECIPE), [*overrides, f"run.threads={threads}", "run.eval_test=false",
                                     f"run.name={name}"])
    data = prepare_data(cfg.data, embedding_seed=cfg.run.seed, indices=indices)
    run_dir = out / name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    train(cfg, run_dir, data=data)
    train_wall = time.perf_counter() - started
    state = load_checkpoint(run_dir / LAST, data.vocab)
    model = build_model(cfg, len(data.vocab), data.vocab.pad_index)
    model.load_state_dict(state["model"])
    row = {"name": name, "overrides": overrides, "seed": cfg.run.seed, "train_wall_s": train_wall,
           "train_reviews": len(data.train), "per_epoch_valid_movie": [r["valid_accuracy"] for r in read_metrics(run_dir)]}
    evals = {"valid_movie": data.valid, "valid_random": data.extra["valid_random"], "test": data.test}
    for split, encoded in evals.items():
        m = evaluate(model, encoded, batch_size=cfg.train.eval_batch_size, max_len=cfg.data.eval_max_len,
                     truncate=cfg.data.truncate)
        row[split] = m.accuracy
    if name == "recipe":  # eval_max_len: the same model reading 400 tokens instead of whole reviews
        for split in ("valid_movie", "valid_random"):
            m = evaluate(model, evals[split], batch_size=cfg.train.eval_batch_size, max_len=400,
                         truncate=cfg.data.truncate)
            row[f"{split}_eval_max_len_400"] = m.accuracy
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/validation_study"))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SENTIMENT_DATA_DIR", "data")))
    parser.add_argument("--only", nargs="*", default=None, help="configurations to (re)run; default: the missing ones")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", action="store_true", help="only print the table from results.jsonl")
    args = parser.parse_args()
    flush_denormals(True)
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.jsonl"
    done = {}
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            row = json.loads(line)
            done[row["name"]] = row
    if not args.report:
        indices = study_splits(args.data_dir, 0.1, 42)
        print(f"train {len(indices['train']):,} · valid (movie) {len(indices['valid']):,} · valid (random) "
              f"{len(indices['valid_random']):,} · test {len(indices['test']):,}", flush=True)
        os.environ.setdefault("SENTIMENT_DATA_DIR", str(args.data_dir))
        wanted = args.only if args.only else [n for n in CONFIGS if n not in done]
        for name in wanted:
            print(f"[{datetime.now():%H:%M:%S}] {name}: {' '.join(CONFIGS[name]) or '(the recipe)'}", flush=True)
            row = run_one(name, CONFIGS[name], indices, args.out, args.threads)
            done[name] = row
            with results_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"    valid movie {row['valid_movie']:.2%} · valid random {row['valid_random']:.2%} · "
                  f"test {row['test']:.2%} · {row['train_wall_s']:.0f} s", flush=True)
    report(done)


def report(done: dict[str, dict]) -> None:
    rows = [done[n] for n in CONFIGS if n in done]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\nvalidation study · {datetime.now():%Y-%m-%d} · commit {commit} · {os.cpu_count()} cores · torch "
          f"{torch.__version__} · {platform.processor() or platform.machine()} · seed {rows[0]['seed'] if rows else '-'}")
    print(f"{'configuration':32} {'valid movie':>11} {'valid random':>12} {'test':>7} {'train s':>8}")
    for r in rows:
        print(f"{r['name']:32} {r['valid_movie']:>11.2%} {r['valid_random']:>12.2%} {r['test']:>7.2%} "
              f"{r['train_wall_s']:>8.0f}")
    if len(rows) >= 3:
        test = [r["test"] for r in rows]
        best_test = max(test)
        for split in ("valid_movie", "valid_random"):
            valid = [r[split] for r in rows]
            pick = rows[int(np.argmax(valid))]
            print(f"{split:13}: Spearman rho with test {spearman(valid, test):+.3f}; picks {pick['name']} "
                  f"(test {pick['test']:.2%}), {100 * (best_test - pick['test']):.2f} points below the best test "
                  f"figure; mean valid - test gap {100 * np.mean(np.array(valid) - np.array(test)):+.2f} points")
    if "recipe" in done and "valid_movie_eval_max_len_400" in done["recipe"]:
        r = done["recipe"]
        print(f"recipe reading 400 tokens at evaluation instead of whole reviews: valid movie "
              f"{r['valid_movie_eval_max_len_400']:.2%} (whole: {r['valid_movie']:.2%}), valid random "
              f"{r['valid_random_eval_max_len_400']:.2%} (whole: {r['valid_random']:.2%})")
    for r in rows:
        print(f"  {r['name']:30} valid (movie) by epoch: " + " ".join(f"{a:.2%}" for a in r["per_epoch_valid_movie"]))


if __name__ == "__main__":
    main()
