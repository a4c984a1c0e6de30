"""Airline tweets, 3 classes: our model (trained by the CLI over several seeds) against TF-IDF + logistic
regression on the very same split, both scored on the fixed stratified 10% test split.

    .venv/bin/python benchmarks/bench_tweets.py --csv ../shared/data/airline_tweets.csv [--seeds 1 2 3]
        [--runs-dir runs/bench_tweets] [--threads N] [--set KEY=VALUE ...] [--reuse] [--quick]

Ours: for each seed, `python -m sentiment train --config configs/airline_tweets.yaml --set
data.train_file=CSV --set run.seed=S --run-dir RUNS_DIR/seedS --overwrite` as a child process (wall seconds
of the whole command: start, prepare, training, scoring test), then that run's results.json: valid and test
accuracy and macro-F1 of the checkpoint chosen on validation. The child's output goes to RUNS_DIR/seedS.log.

Baseline, in the same command: TF-IDF (word 1-2 grams, sublinear tf, scikit-learn's default lowercasing
and token pattern, on the raw tweets) + multinomial logistic regression, fitted on exactly the run's train
rows (splits.npz), C chosen on the run's valid rows by macro-F1 (the figure that does not reward
predicting `negative`, 63% of tweets; ties go to the smaller C), then scored once on the run's test rows.
The split depends on data.split_seed only, so it is the same for every seed (checked) and the baseline,
deterministic but for its solver, runs once.

Prints per seed and mean ± sample sd over seeds: accuracy and macro-F1 (valid, test), training wall time;
the baseline's figures, the difference in points and the ratio; and how sure the test difference is: a
paired bootstrap over the test tweets (BOOTSTRAP resamples of the 1,464 rows, the same rows for both sides;
ours is the mean over seeds on each resample), which prints the difference's 95% percentile interval and
the share of resamples in which ours is ahead. --quick: seed 1 only and one epoch: a
smoke test of the script, not a result. --reuse: read runs already in RUNS_DIR instead of training (no
wall time then).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np
from compare_linear import macro_f1, mean_sd, paired_bootstrap  # noqa: F401  (one bootstrap for both)

ROOT = common.ROOT
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
BOOTSTRAP = 10_000
QUICK_C_GRID = (1.0, 4.0)


def tweets_csv(given: Path | None) -> Path:
    path = given or ROOT / "data" / "airline_tweets.csv"
    if not path.is_file():
        sys.exit(f"{path} not found: pass --csv PATH to the airline tweets (Tweets.csv, columns text and "
                 "airline_sentiment), e.g. --csv ../shared/data/airline_tweets.csv")
    return path


def train_seed(config: Path, csv: Path, seed: int, run_dir: Path, overrides: list[str]) -> float:
    """Wall seconds of `sentiment train` for one seed, as a child process; its output goes to a log beside the run."""
    cmd = [sys.executable, "-m", "sentiment", "train", "--config", str(config), "--set", f"data.train_file={csv}",
           "--set", f"run.seed={seed}"]
    for o in overrides:
        cmd += ["--set", o]
    cmd += ["--run-dir", str(run_dir), "--overwrite"]
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  seed {seed}: {' '.join(cmd[2:])}  (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as sink:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        sys.exit(f"seed {seed}: sentiment train failed ({rc}):\n  " + "\n  ".join(tail))
    return seconds


def baseline(table, splits: dict[str, np.ndarray], label_names: list[str], grid: tuple[float, ...]) -> dict:
    """TF-IDF (1-2 grams) + logistic regression on the run's train rows of `table` (the tweets as
    sentiment.data.readers.read_table reads them), C chosen on valid macro-F1, test once."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    texts, labels = np.asarray(table.texts, dtype=object), np.asarray(table.labels, dtype=object)
    x_text = {name: texts[rows] for name, rows in splits.items()}
    y = {name: labels[rows] for name, rows in splits.items()}

    def scores(model, x, gold) -> tuple[float, float]:
        pred = model.predict(x)
        return (float(accuracy_score(gold, pred)),
                float(f1_score(gold, pred, labels=label_names, average="macro", zero_division=0)))

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = {"train": vectorizer.fit_transform(x_text["train"])}  # fitted on train rows only
    x["valid"], x["test"] = vectorizer.transform(x_text["valid"]), vectorizer.transform(x_text["test"])
    tried = []
    best = None
    for c in grid:
        model = LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"])
        acc, f1 = scores(model, x["valid"], y["valid"])
        tried.append((c, acc, f1))
        if best is None or f1 > best[2]:  # strictly better: a tie keeps the smaller C
            best = (c, acc, f1, model)
    seconds = time.perf_counter() - start
    c, valid_acc, valid_f1, model = best
    test_acc, test_f1 = scores(model, x["test"], y["test"])
    return {"C": c, "valid_accuracy": valid_acc, "valid_macro_f1": valid_f1, "test_accuracy": test_acc,
            "test_macro_f1": test_f1, "seconds": seconds, "tried": tried, "features": x["train"].shape[1],
            "n": {name: len(rows) for name, rows in splits.items()},
            "test_predictions": model.predict(x["test"]), "test_gold": y["test"]}  # for the paired bootstrap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, help="the airline tweets CSV (default: data/airline_tweets.csv)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "airline_tweets.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every seed's run, repeatable (variants)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench_tweets",
                    help="parent of the run directories seedS (default: runs/bench_tweets)")
    ap.add_argument("--threads", type=int, help="run.threads of each run (default: the config's)")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --runs-dir instead of training")
    ap.add_argument("--quick", action="store_true", help="seed 1 only, one epoch, two values of C: a smoke test")
    ap.add_argument("--json", help="also write the figures to this file (for scripts/bench.py)")
    args = ap.parse_args()
    csv = tweets_csv(args.csv.resolve() if args.csv else None)
    seeds = args.seeds[:1] if args.quick else args.seeds
    overrides = list(args.overrides)
    if args.threads:
        overrides.insert(0, f"run.threads={args.threads}")
    if args.quick:
        overrides.append("train.epochs=1")
    grid = QUICK_C_GRID if args.quick else C_GRID
    runs_dir = args.runs_dir.resolve()

    common.print_header("== bench_tweets: airline tweets (3 classes), ours over seeds vs TF-IDF + logistic "
                          "regression on the same split ==", args.threads)
    print(f"  data: {csv}; config: {args.config}; overrides: {' '.join(overrides) or 'none'}")
    if args.quick:
        print("  QUICK: one seed, one epoch, C in {1, 4}: checks that the script works; the figures are not results")

    rows = []
    for seed in seeds:
        run_dir = runs_dir / f"seed{seed}"
        wall = None
        if args.reuse:
            if not (run_dir / "results.json").is_file():
                sys.exit(f"--reuse: {run_dir} has no results.json")
        else:
            wall = train_seed(args.config, csv, seed, run_dir, overrides)
        rows.append((seed, json.loads((run_dir / "results.json").read_text()), wall))

    from sentiment.runs import load_labels, load_split_membership
    from sentiment.inference.predict import predict_texts
    from sentiment.data.readers import read_table

    splits = load_split_membership(runs_dir / f"seed{seeds[0]}")
    for seed in seeds[1:]:
        other = load_split_membership(runs_dir / f"seed{seed}")
        if any(not np.array_equal(splits[k], other[k]) for k in ("train", "valid", "test")):
            sys.exit(f"seed {seed}'s split differs from seed {seeds[0]}'s: the baseline would need one run per "
                     "split (was data.split_seed or the data changed between runs?)")
    splits = {k: splits[k] for k in ("train", "valid", "test")}
    labels = list(load_labels(runs_dir / f"seed{seeds[0]}").names)
    table = read_table(csv, "text", "airline_sentiment")
    base = baseline(table, splits, labels, grid)

    first = rows[0][1]
    print(f"\nsplit (same for every seed, split_seed): train {len(splits['train']):,} · valid {len(splits['valid']):,}"
          f" · test {len(splits['test']):,} rows; classes {', '.join(labels)}; commit {first.get('commit', '?')}")
    if first.get("test", {}).get("n") not in (None, len(splits["test"])):
        print(f"  NOTE: results.json scored {first['test']['n']:,} test rows, splits.npz lists {len(splits['test']):,}")
    w = 14
    print(f"\n{'seed':>10} {'best epoch':>10} {'valid acc %':>{w}} {'valid mF1 %':>{w}} {'test acc %':>{w}} "
          f"{'test mF1 %':>{w}} {'train s':>8} {'wall s':>{w}}")
    for seed, r, wall in rows:
        print(f"{seed:>10} {r['best_epoch']:>10} {100 * r['valid']['accuracy']:>{w}.2f} "
              f"{100 * r['valid']['macro_f1']:>{w}.2f} {100 * r['test']['accuracy']:>{w}.2f} "
              f"{100 * r['test']['macro_f1']:>{w}.2f} {r.get('train_seconds', float('nan')):>8.0f}"
              f" {wall if wall is not None else float('nan'):>{w}.0f}")
    fig = {key: [r[split][metric] for _, r, _ in rows] for key, split, metric in
           (("va", "valid", "accuracy"), ("vf", "valid", "macro_f1"), ("ta", "test", "accuracy"),
            ("tf", "test", "macro_f1"))}
    walls = [w for _, _, w in rows if w is not None]
    print(f"{'mean ± sd':>21} {mean_sd(fig['va']):>{w}} {mean_sd(fig['vf']):>{w}} {mean_sd(fig['ta']):>{w}} "
          f"{mean_sd(fig['tf']):>{w}} {'':>8} {mean_sd(walls, 1.0) if walls else 'n/a':>{w}}   (n = {len(rows)} "
          "seeds, sample sd)")
    print(f"{'TF-IDF+LR':>21} {100 * base['valid_accuracy']:>{w}.2f} {100 * base['valid_macro_f1']:>{w}.2f} "
          f"{100 * base['test_accuracy']:>{w}.2f} {100 * base['test_macro_f1']:>{w}.2f} {'':>8} {base['seconds']:>{w}.1f}   "
          f"(C {base['C']:g} of {', '.join(f'{c:g}' for c in grid)}, chosen on valid macro-F1; "
          f"{base['features']:,} features; wall = vectorize + {len(grid)} fits)")
    if base["C"] in (min(grid), max(grid)) and len(grid) > 2:
        print(f"  NOTE: the chosen C {base['C']:g} is at the edge of the grid: a wider grid might do better")
    print("  baseline valid figures per C: " + "; ".join(f"C {c:g}: acc {a:.2%} mF1 {f:.2%}" for c, a, f in base["tried"]))

    figures = common.Figures("bench_tweets")
    sample = (f"{len(splits['test']):,} test tweets (fixed stratified 10%), {len(rows)} seed(s) "
              f"{' '.join(map(str, seeds))}, mean")
    print()
    for key, what, base_key, headline in (("ta", "test accuracy", "test_accuracy", False),
                                         ("tf", "test macro-F1", "test_macro_f1", True),
                                         ("va", "valid accuracy", "valid_accuracy", False),
                                         ("vf", "valid macro-F1", "valid_macro_f1", False)):
        ours = statistics.mean(fig[key])
        ratio = figures.add(f"airline tweets, {what}: ours vs TF-IDF 1-2 grams + logistic regression", 100 * ours,
                            f"TF-IDF+LR, C {base['C']:g} chosen on valid macro-F1", 100 * base[base_key], "%",
                            sample=sample, headline=headline)
        print(f"  {what:<15} ours {mean_sd(fig[key])}%  |  TF-IDF+LR {100 * base[base_key]:.2f}%  |  "
              f"{100 * (ours - base[base_key]):+.2f} points, ratio {ratio:.3f}")
    test_texts = [table.texts[i] for i in splits["test"]]
    index = {name: i for i, name in enumerate(labels)}
    gold = np.array([index[g] for g in base["test_gold"]])
    theirs = np.array([index[p] for p in base["test_predictions"]])
    ours = []
    for seed, r, _ in rows:
        probs, _ = predict_texts(runs_dir / f"seed{seed}", test_texts, device="cpu")
        pred = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        if abs((pred == gold).mean() - r["test"]["accuracy"]) > 1e-9:
            print(f"  NOTE: seed {seed}'s predictions score {(pred == gold).mean():.4%} here, results.json "
                  f"{r['test']['accuracy']:.4%} (different rows scored?)")
        ours.append(pred)
    boot = paired_bootstrap(gold, ours, theirs, len(labels), BOOTSTRAP)
    print(f"\n  paired bootstrap over the {len(gold):,} test tweets ({BOOTSTRAP:,} resamples; ours = mean of "
          f"{len(ours)} seed(s)), ours minus TF-IDF+LR:")
    for name, (low, high, ahead) in boot.items():
        print(f"    test {name.replace('_', '-'):<9} 95% interval {100 * low:+.2f} to {100 * high:+.2f} points; "
              f"ours ahead in {ahead:.1%} of resamples")
    figures.note(f"paired bootstrap, test accuracy difference 95% interval {100 * boot['accuracy'][0]:+.2f} to "
                 f"{100 * boot['accuracy'][1]:+.2f} points, macro-F1 {100 * boot['macro_f1'][0]:+.2f} to "
                 f"{100 * boot['macro_f1'][1]:+.2f}")
    if walls:
        ratio = figures.add("airline tweets, training wall time: sentiment train (child process) vs TF-IDF+LR "
                            "(vectorize + C grid)", statistics.mean(walls), f"TF-IDF+LR, {len(grid)} values of C",
                            base["seconds"], "s", higher_is_better=False, sample=f"mean over {len(walls)} seed(s)")
        print(f"  training wall  ours {mean_sd(walls, 1.0)} s  |  TF-IDF+LR {base['seconds']:.1f} s (all "
              f"{len(grid)} fits)  |  ratio {ratio:.3f} (<1: ours is slower)")
    figures.note(f"tweets: split train {len(splits['train']):,} / valid {len(splits['valid']):,} / test "
                 f"{len(splits['test']):,}; overrides: {' '.join(overrides) or 'none'}")
    figures.write(args.json)


if __name__ == "__main__":
    main()
