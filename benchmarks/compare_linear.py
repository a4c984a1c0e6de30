"""Our model against TF-IDF + logistic regression on the very same splits, both scored on the test split.

    python benchmarks/compare_linear.py --config configs/airline_tweets.yaml [--seeds 1 2 3] [--set KEY=VALUE ...]
        [--runs-dir runs/compare_linear] [--grid 0.25 0.5 ...] [--reuse] [--json FILE]

Ours: for each seed, `python -m sentiment train --config CONFIG --set run.seed=S [--set ...] --run-dir
RUNS_DIR/seedS --overwrite` as a child process (its output in RUNS_DIR/seedS.log), then that run's
results.json (the checkpoint chosen on validation) and its test predictions.

Baseline: scikit-learn's TfidfVectorizer (word 1-2 grams, sublinear tf) + LogisticRegression, on the tokens
our data layer gives the config's rows (sentiment.data.sources.load_source: the same cleaning, tokenizer and
lowercasing, and the same train/valid/test rows, checked against each run's splits.npz), fitted on the train
rows, C chosen on the valid rows by macro-F1 (ties go to the smaller C), scored once on the test rows.

Prints accuracy and macro-F1 (valid, test) per seed and as mean ± sample sd, the baseline's, and a paired
bootstrap over the test rows (the same resampled rows for both sides; ours is the mean over seeds on each
resample): the 95% percentile interval of ours minus TF-IDF + LR, and the share of resamples ours is ahead.
Needs the `bench` extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)  # tweets on our tokens chose 64
RESAMPLES = 10_000


def train_seed(config: Path, seed: int, run_dir: Path, overrides: list[str]) -> float:
    """Wall seconds of `sentiment train` for one seed, run as a child process; its output goes to a log."""
    cmd = [sys.executable, "-m", "sentiment", "train", "--config", str(config), "--set", f"run.seed={seed}",
           "--set", "run.eval_test=true"]
    for o in overrides:
        cmd += ["--set", o]
    cmd += ["--run-dir", str(run_dir), "--overwrite"]
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  seed {seed}: {' '.join(cmd[2:])}  (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as sink:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        sys.exit(f"seed {seed}: sentiment train failed ({rc}):\n  " + "\n  ".join(tail))
    return time.perf_counter() - start


def token_docs(source, rows: np.ndarray) -> list[list[str]]:
    """The rows' texts as our tokens (strings)."""
    tokens = np.asarray(source.tokens, dtype=object)
    return [tokens[source.ids[source.offsets[r]:source.offsets[r + 1]]].tolist() for r in rows.tolist()]


def baseline(source, grid: tuple[float, ...], names: list[str]) -> dict:
    """TF-IDF (1-2 grams, sublinear tf) + logistic regression on the source's splits; C chosen on valid macro-F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    docs = {name: token_docs(source, source.splits[name]) for name in ("train", "valid", "test")}
    y = {name: source.labels[source.splits[name]].astype(np.int64) for name in docs}
    classes = list(range(len(names)))

    def scores(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
        return (float(accuracy_score(gold, pred)),
                float(f1_score(gold, pred, labels=classes, average="macro", zero_division=0)))

    start = time.perf_counter()
    # the texts are already token lists (our tokenizer's): no further preprocessing or tokenizing
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, analyzer="word", lowercase=False,
                                 preprocessor=None, tokenizer=lambda doc: doc, token_pattern=None)
    x = {"train": vectorizer.fit_transform(docs["train"])}  # fitted on the train rows only
    x["valid"], x["test"] = vectorizer.transform(docs["valid"]), vectorizer.transform(docs["test"])
    tried, best = [], None
    for c in grid:
        model = LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"])
        acc, f1 = scores(model.predict(x["valid"]), y["valid"])
        tried.append((c, acc, f1))
        if best is None or f1 > best[2]:  # strictly better: a tie keeps the smaller C
            best = (c, acc, f1, model)
    c, valid_acc, valid_f1, model = best
    predictions = model.predict(x["test"])
    test_acc, test_f1 = scores(predictions, y["test"])
    return {"C": c, "valid_accuracy": valid_acc, "valid_macro_f1": valid_f1, "test_accuracy": test_acc,
            "test_macro_f1": test_f1, "seconds": time.perf_counter() - start, "tried": tried,
            "features": x["train"].shape[1], "test_predictions": predictions, "test_gold": y["test"]}


def our_test_predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's best checkpoint's predicted classes on its test rows (in the source's split order), and gold."""
    from sentiment.data.prepare import prepare_data
    from sentiment.inference.evaluate import predict_logits
    from sentiment.inference.runtime import load_trained

    run = load_trained(run_dir, device="cpu")
    data = prepare_data(run.cfg.data, run.vocab, label_space=run.label_space, with_unlabeled=False,
                        token_hashes=run.cfg.model.ngrams is not None)
    logits = predict_logits(run.model, data.test, batch_size=run.cfg.train.eval_batch_size, device=run.device,
                            max_len=run.cfg.data.eval_max_len, truncate=run.cfg.data.truncate)
    return run.label_space.predictions(logits), data.test.labels.astype(np.int64)


def macro_f1(confusions: np.ndarray) -> np.ndarray:
    """Macro-F1 of each [K, K] confusion matrix (gold rows, predicted columns) in [..., K, K]."""
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    denom = confusions.sum(axis=-1) + confusions.sum(axis=-2)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean(axis=-1)


def paired_bootstrap(gold: np.ndarray, ours: list[np.ndarray], theirs: np.ndarray, k: int, resamples: int,
                     seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Test rows resampled with replacement, the same rows for both sides: per resample, ours (the mean over
    seeds) minus theirs, in accuracy and macro-F1. For each: (2.5th percentile, 97.5th percentile, share of
    resamples where ours is ahead)."""
    rng = np.random.default_rng(seed)
    n = len(gold)
    out: dict[str, list[np.ndarray]] = {"accuracy": [], "macro_f1": []}
    block = max(1, min(1000, 20_000_000 // max(n, 1)))  # [block, n] index arrays, not [resamples, n]
    for start in range(0, resamples, block):
        rows = rng.integers(0, n, size=(min(block, resamples - start), n))
        g = gold[rows]

        def figures(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = pred[rows]
            confusions = np.zeros((len(rows), k, k))
            for a in range(k):
                for b in range(k):
                    confusions[:, a, b] = ((g == a) & (p == b)).sum(axis=1)
            return (g == p).mean(axis=1), macro_f1(confusions)

        ours_acc, ours_f1 = zip(*(figures(p) for p in ours))
        theirs_acc, theirs_f1 = figures(theirs)
        out["accuracy"].append(np.mean(ours_acc, axis=0) - theirs_acc)
        out["macro_f1"].append(np.mean(ours_f1, axis=0) - theirs_f1)
    result = {}
    for name, parts in out.items():
        diff = np.concatenate(parts)
        result[name] = (float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5)), float((diff > 0).mean()))
    return result


def mean_sd(values: list[float], scale: float = 100.0) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{scale * statistics.mean(values):.2f} ± {scale * sd:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="the config our runs train with (its data, its splits)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every seed's run (and the data the baseline reads), repeatable")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "compare_linear",
                    help="parent of the run directories seedS (default: runs/compare_linear)")
    ap.add_argument("--grid", type=float, nargs="+", default=list(C_GRID), help="values of C tried on valid")
    ap.add_argument("--resamples", type=int, default=RESAMPLES, help="paired-bootstrap resamples")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --runs-dir instead of training")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()

    from sentiment.config import load_config
    from sentiment.data.prepare import split_rows
    from sentiment.data.sources import load_source
    from sentiment.errors import SentimentError
    from sentiment.runs import load_split_membership

    runs_dir = args.runs_dir.resolve()
    try:
        cfg = load_config(args.config, args.overrides)
    except SentimentError as e:
        sys.exit(f"error: {e}")
    print(f"== compare_linear: {args.config} ({' '.join(args.overrides) or 'no overrides'}) over seeds "
          f"{' '.join(map(str, args.seeds))} vs TF-IDF 1-2 grams + logistic regression, same splits ==")
    rows = []
    for seed in args.seeds:
        run_dir = runs_dir / f"seed{seed}"
        if args.reuse:
            if not (run_dir / "results.json").is_file():
                sys.exit(f"--reuse: {run_dir} has no results.json")
            wall = None
        else:
            wall = train_seed(args.config.resolve(), seed, run_dir, args.overrides)
        rows.append((seed, json.loads((run_dir / "results.json").read_text()), wall))
    if any("test" not in r for _, r, _ in rows):
        sys.exit("the runs have no test split (data.test_fraction 0 and no test file): nothing to compare on")

    source = load_source(cfg.data, with_unlabeled=False)
    # the rows training keeps (data.train_limit: a stratified subset of the training split), as the runs store them
    source.splits, source.membership = split_rows(cfg.data, source, None)
    for seed, _, _ in rows:  # the baseline reads exactly the rows every run was trained, chosen and scored on
        theirs = load_split_membership(runs_dir / f"seed{seed}")
        if any(not np.array_equal(source.membership[k], theirs[k]) for k in ("train", "valid", "test")):
            sys.exit(f"seed {seed}'s run has other splits than {args.config} gives now (data or split_seed changed?)")
    names = list(source.label_space.names)
    base = baseline(source, tuple(args.grid), names)

    print(f"\nsplit: train {len(source.splits['train']):,} · valid {len(source.splits['valid']):,} · test "
          f"{len(source.splits['test']):,} rows; classes {', '.join(names)}")
    w = 14
    print(f"\n{'':>12}{'valid acc %':>{w}}{'valid mF1 %':>{w}}{'test acc %':>{w}}{'test mF1 %':>{w}}{'wall s':>{w}}")
    for seed, r, wall in rows:
        print(f"{'seed ' + str(seed):>12}{100 * r['valid']['accuracy']:>{w}.2f}{100 * r['valid']['macro_f1']:>{w}.2f}"
              f"{100 * r['test']['accuracy']:>{w}.2f}{100 * r['test']['macro_f1']:>{w}.2f}"
              f"{wall if wall is not None else float('nan'):>{w}.0f}")
    fig = {key: [r[split][metric] for _, r, _ in rows] for key, split, metric in
           (("va", "valid", "accuracy"), ("vf", "valid", "macro_f1"), ("ta", "test", "accuracy"),
            ("tf", "test", "macro_f1"))}
    print(f"{'ours':>12}{mean_sd(fig['va']):>{w}}{mean_sd(fig['vf']):>{w}}{mean_sd(fig['ta']):>{w}}"
          f"{mean_sd(fig['tf']):>{w}}   (mean ± sample sd over {len(rows)} seed(s))")
    print(f"{'TF-IDF+LR':>12}{100 * base['valid_accuracy']:>{w}.2f}{100 * base['valid_macro_f1']:>{w}.2f}"
          f"{100 * base['test_accuracy']:>{w}.2f}{100 * base['test_macro_f1']:>{w}.2f}{base['seconds']:>{w}.1f}"
          f"   (C {base['C']:g} chosen on valid macro-F1; {base['features']:,} features)")
    if base["C"] in (min(args.grid), max(args.grid)) and len(args.grid) > 2:
        print(f"  NOTE: the chosen C {base['C']:g} is at the edge of the grid: a wider grid might do better")
    print("  baseline on valid per C: " + "; ".join(f"C {c:g}: acc {a:.2%} mF1 {f:.2%}" for c, a, f in base["tried"]))

    gold = base["test_gold"]
    ours = []
    for seed, r, _ in rows:
        pred, their_gold = our_test_predictions(runs_dir / f"seed{seed}")
        if not np.array_equal(their_gold, gold):
            sys.exit(f"seed {seed}: the test rows' labels differ from the baseline's (not the same rows?)")
        if abs((pred == gold).mean() - r["test"]["accuracy"]) > 1e-9:
            print(f"  NOTE: seed {seed}'s predictions score {(pred == gold).mean():.4%} here, results.json "
                  f"{r['test']['accuracy']:.4%}")
        ours.append(pred)
    boot = paired_bootstrap(gold, ours, base["test_predictions"], len(names), args.resamples)
    print(f"\n  paired bootstrap over the {len(gold):,} test rows ({args.resamples:,} resamples; ours = mean of "
          f"{len(ours)} seed(s)), ours minus TF-IDF+LR:")
    for name, (low, high, ahead) in boot.items():
        label = "macro-F1" if name == "macro_f1" else name
        print(f"    test {label:<9} 95% interval {100 * low:+.2f} to {100 * high:+.2f} points; "
              f"ours ahead in {ahead:.1%} of resamples")
    if args.json:
        summary = {"config": str(args.config), "overrides": args.overrides, "seeds": args.seeds,
                   "ours": {k: fig[k] for k in fig}, "baseline": {k: v for k, v in base.items()
                                                                 if k not in ("test_predictions", "test_gold")},
                   "bootstrap": boot}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
