"""Our model against TF-IDF + logistic regression on the very same splits, both scored on the test split,
over one split or several.

    python benchmarks/compare_linear.py --config configs/airline_tweets.yaml [--seeds 1 2 3] [--set KEY=VALUE ...]
        [--split-seeds 1 2 3 4 5] [--runs-dir runs/compare_linear] [--grid 0.25 0.5 ...] [--reuse] [--json FILE]
    python benchmarks/compare_linear.py --data FILE --label-column COL [--text-column COL] [--config START] ...

--config: the config our runs train with (its data, its splits). --data FILE (with --label-column, and
--text-column where it is not `text`): the own-data default, exactly as `sentiment train --data FILE
--label-column COL` builds it (sentiment.config.own_data_config: OWN_DATA_RECIPE, or --config as the start, then
--set), and the children get the same flags, so they pick data.max_len from the texts as a user's run does.

Ours: for each split seed S and each seed T, `python -m sentiment train [--config CONFIG] [--data FILE
--label-column COL ...] --set run.seed=T --set run.eval_test=true [--set ...] --set data.split_seed=S --run-dir
RUNS_DIR/splitS/seedT --overwrite` as a child process (its output in RUNS_DIR/splitS/seedT.log), then that run's
results.json (the checkpoint chosen on validation) and its test predictions. Without --split-seeds: the config's
data.split_seed only, nothing added to --set, and the runs in RUNS_DIR/seedT (as before split seeds existed).
--reuse reads finished runs there instead of training (every one must have its results.json).

Baseline, for each split: scikit-learn's TfidfVectorizer (word 1-2 grams, sublinear tf) + LogisticRegression, on
the tokens our data layer gives the config's rows (sentiment.data.sources.load_source: the same cleaning,
tokenizer and lowercasing, and the same train/valid/test rows, checked against each of that split's runs'
splits.npz), fitted on the train rows, C chosen on the valid rows by macro-F1 (ties go to the smaller C), scored
once on the test rows.

Prints, per split: accuracy and macro-F1 (valid, test) per seed and as mean ± sample sd, the baseline's, and a
paired bootstrap over its test rows (the same resampled rows for both sides; ours is the mean over seeds on each
resample; the i-th split's resamples drawn by numpy's default_rng(i)): ours minus TF-IDF + LR on the whole test
split, the 95% percentile interval, and the share of resamples ours is ahead. With several splits, pooled: each
split's ours (mean over seeds) and baseline as mean ± sd over the splits, and the bootstrap in which resample b
resamples every split's test rows on its own and averages the splits' differences: the mean of the splits'
differences, its 95% interval and the share ahead. Several splits make one comparison more sensitive (one
1,464-tweet test split cannot separate less than about 1.7 points); their test rows must differ (carved by
data.split_seed, not a test file). --json FILE: all of it, with each split's test labels and predictions (ours
per seed, the baseline's), from which the intervals can be recomputed. Needs scikit-learn (the bench or dev extra).
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
METRICS = ("accuracy", "macro_f1")


def source_flags(args: argparse.Namespace) -> list[str]:
    """The flags that name the data and recipe for `sentiment train`: --config and/or --data and its columns."""
    flags = ["--config", str(args.config.resolve())] if args.config is not None else []
    if args.data is not None:
        flags += ["--data", str(args.data), "--label-column", args.label_column]
        if args.text_column is not None:
            flags += ["--text-column", args.text_column]
    return flags


def split_config(args: argparse.Namespace, overrides: list[str]):
    """The config a child `sentiment train` with these overrides resolves (own_data_config under --data)."""
    from sentiment.config import load_config, own_data_config

    if args.data is None:
        return load_config(args.config, overrides)
    files = {"train_file": args.data, "valid_file": None, "test_file": None, "text_column": args.text_column,
             "label_column": args.label_column}
    return own_data_config(args.config, overrides, files)


def train_seed(flags: list[str], seed: int, run_dir: Path, overrides: list[str]) -> float:
    """Wall seconds of `sentiment train` for one seed, run as a child process; its output goes to a log."""
    cmd = [sys.executable, "-m", "sentiment", "train", *flags, "--set", f"run.seed={seed}",
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
        sys.exit(f"{run_dir}: sentiment train failed ({rc}):\n  " + "\n  ".join(tail))
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


def figures(gold: np.ndarray, pred: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of pred against gold on each resample of rows ([B, n] row numbers): two [B] arrays."""
    b, n = rows.shape
    codes = (gold.astype(np.int64) * k + pred.astype(np.int64))[rows] + (np.arange(b) * k * k)[:, None]
    confusions = np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)
    return np.trace(confusions, axis1=1, axis2=2) / n, macro_f1(confusions)


def bootstrap_differences(gold: np.ndarray, ours: list[np.ndarray], theirs: np.ndarray, k: int, resamples: int,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Test rows resampled with replacement by numpy's default_rng(seed), the same rows for both sides: per
    resample, ours (the mean over seeds) minus theirs, in accuracy and macro-F1 ([resamples] each)."""
    rng = np.random.default_rng(seed)
    n = len(gold)
    out: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    block = max(1, min(1000, 20_000_000 // max(n, 1)))  # [block, n] index arrays, not [resamples, n]
    for start in range(0, resamples, block):
        rows = rng.integers(0, n, size=(min(block, resamples - start), n))
        ours_acc, ours_f1 = zip(*(figures(gold, p, k, rows) for p in ours))
        theirs_acc, theirs_f1 = figures(gold, theirs, k, rows)
        out["accuracy"].append(np.mean(ours_acc, axis=0) - theirs_acc)
        out["macro_f1"].append(np.mean(ours_f1, axis=0) - theirs_f1)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def interval(diff: np.ndarray) -> tuple[float, float, float]:
    """(2.5th percentile, 97.5th percentile, share of resamples above 0) of bootstrap differences."""
    return float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5)), float((diff > 0).mean())


def paired_bootstrap(gold: np.ndarray, ours: list[np.ndarray], theirs: np.ndarray, k: int, resamples: int,
                     seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """bootstrap_differences summed up: for accuracy and macro-F1, (2.5th percentile, 97.5th percentile, share of
    resamples where ours is ahead)."""
    diffs = bootstrap_differences(gold, ours, theirs, k, resamples, seed)
    return {name: interval(diff) for name, diff in diffs.items()}


def mean_sd(values: list[float], scale: float = 100.0) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{scale * statistics.mean(values):.2f} ± {scale * sd:.2f}"


def mean_and_sd(values: list[float]) -> dict[str, float | None]:
    """{"mean", "sd"} (sample sd; None for one value), for the JSON."""
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else None}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="the config our runs train with (its data, its splits); with --data: "
                    "the start instead of the own-data recipe, as in `sentiment train --config C --data FILE`")
    ap.add_argument("--data", type=Path, help="your labeled texts, as `sentiment train --data FILE` trains on them "
                    "(the own-data default without --config)")
    ap.add_argument("--label-column", help="with --data: the column holding the label (default label)")
    ap.add_argument("--text-column", help="with --data: the column holding the text (default text)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="run.seed of our runs on each split")
    ap.add_argument("--split-seeds", type=int, nargs="+",
                    help="data.split_seed of each split compared (default: the config's only, runs in RUNS_DIR/seedT)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (and the data the baseline reads), repeatable")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "compare_linear",
                    help="parent of the run directories [splitS/]seedT (default: runs/compare_linear)")
    ap.add_argument("--grid", type=float, nargs="+", default=list(C_GRID), help="values of C tried on valid")
    ap.add_argument("--resamples", type=int, default=RESAMPLES, help="paired-bootstrap resamples")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --runs-dir instead of training")
    ap.add_argument("--json", type=Path, help="also write the figures (and each split's test predictions) here")
    args = ap.parse_args()
    if args.config is None and args.data is None:
        ap.error("--config CONFIG or --data FILE is needed")
    if args.data is None and (args.label_column or args.text_column):
        ap.error("--label-column and --text-column go with --data FILE")
    for flag, values in (("--seeds", args.seeds), ("--split-seeds", args.split_seeds or [])):
        if len(set(values)) != len(values):
            ap.error(f"{flag}: each value once")
    if args.split_seeds and any(o.split("=", 1)[0].strip() == "data.split_seed" for o in args.overrides):
        ap.error("--split-seeds sets data.split_seed: leave it out of --set")
    if args.resamples < 1:
        ap.error("--resamples must be at least 1")
    if args.data is not None:
        args.data = args.data.resolve()  # the children run in the repository root
    return args


def plan_splits(args: argparse.Namespace, runs_dir: Path) -> list[dict]:
    """Each split: its seed, overrides, config, runs' parent directory and source rows (data.train_limit applied,
    as the runs store them), before any training, so that a bad config or data fails at once."""
    from sentiment.data.prepare import split_rows
    from sentiment.data.sources import load_source

    splits = []
    for split_seed in args.split_seeds or [None]:
        overrides = args.overrides + ([f"data.split_seed={split_seed}"] if split_seed is not None else [])
        cfg = split_config(args, overrides)
        source = load_source(cfg.data, with_unlabeled=False)
        source.splits, source.membership = split_rows(cfg.data, source, None)
        splits.append({"split_seed": cfg.data.split_seed, "overrides": overrides, "cfg": cfg, "source": source,
                       "dir": runs_dir / f"split{split_seed}" if split_seed is not None else runs_dir})
    for i, a in enumerate(splits):  # resampling one test split as if it were several would fake the power
        for b in splits[i + 1:]:
            if np.array_equal(a["source"].membership["test"], b["source"].membership["test"]):
                sys.exit(f"error: split seeds {a['split_seed']} and {b['split_seed']} give the same test rows (a test "
                         "file?): --split-seeds compares splits whose test rows data.split_seed carves")
    return splits


def our_runs(args: argparse.Namespace, split: dict) -> list[tuple[int, dict, float | None]]:
    """(seed, results.json, wall seconds or None) of each seed's run on the split: trained, or read (--reuse)."""
    runs = []
    for seed in args.seeds:
        run_dir = split["dir"] / f"seed{seed}"
        if args.reuse:
            if not (run_dir / "results.json").is_file():
                sys.exit(f"--reuse: {run_dir} has no results.json")
            wall = None
        else:
            wall = train_seed(source_flags(args), seed, run_dir, split["overrides"])
        runs.append((seed, json.loads((run_dir / "results.json").read_text()), wall))
    if any("test" not in r for _, r, _ in runs):
        sys.exit("the runs have no test split (data.test_fraction 0 and no test file): nothing to compare on")
    return runs


def print_split_table(runs: list[tuple[int, dict, float | None]], base: dict, grid: list[float]) -> dict:
    """Our seeds' figures (results.json) and the baseline's, as a table; returns ours per figure and seed."""
    w = 14
    print(f"\n{'':>12}{'valid acc %':>{w}}{'valid mF1 %':>{w}}{'test acc %':>{w}}{'test mF1 %':>{w}}{'wall s':>{w}}")
    for seed, r, wall in runs:
        print(f"{'seed ' + str(seed):>12}{100 * r['valid']['accuracy']:>{w}.2f}{100 * r['valid']['macro_f1']:>{w}.2f}"
              f"{100 * r['test']['accuracy']:>{w}.2f}{100 * r['test']['macro_f1']:>{w}.2f}"
              f"{wall if wall is not None else float('nan'):>{w}.0f}")
    fig = {f"{split}_{metric}": [r[split][metric] for _, r, _ in runs]
           for split in ("valid", "test") for metric in METRICS}
    print(f"{'ours':>12}{mean_sd(fig['valid_accuracy']):>{w}}{mean_sd(fig['valid_macro_f1']):>{w}}"
          f"{mean_sd(fig['test_accuracy']):>{w}}{mean_sd(fig['test_macro_f1']):>{w}}   (mean ± sample sd over "
          f"{len(runs)} seed(s))")
    print(f"{'TF-IDF+LR':>12}{100 * base['valid_accuracy']:>{w}.2f}{100 * base['valid_macro_f1']:>{w}.2f}"
          f"{100 * base['test_accuracy']:>{w}.2f}{100 * base['test_macro_f1']:>{w}.2f}{base['seconds']:>{w}.1f}"
          f"   (C {base['C']:g} chosen on valid macro-F1; {base['features']:,} features)")
    if base["C"] in (min(grid), max(grid)) and len(grid) > 2:
        print(f"  NOTE: the chosen C {base['C']:g} is at the edge of the grid: a wider grid might do better")
    print("  baseline on valid per C: " + "; ".join(f"C {c:g}: acc {a:.2%} mF1 {f:.2%}" for c, a, f in base["tried"]))
    return {**fig, "wall_seconds": [wall for _, _, wall in runs]}


def print_differences(what: str, summary: dict) -> None:
    for name in METRICS:
        s = summary[name]
        label = "macro-F1" if name == "macro_f1" else name
        print(f"    {what} {label:<9} 95% interval {100 * s['low']:+.2f} to {100 * s['high']:+.2f} points "
              f"(difference {100 * s['difference']:+.2f}); ours ahead in {s['ahead']:.1%} of resamples")


def score_split(args: argparse.Namespace, index: int, split: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """One split: the splits.npz check, the baseline, both sides' test figures and the paired bootstrap over its
    test rows (default_rng(index)). Returns the split's summary (for the JSON) and its bootstrap differences."""
    from sentiment.runs import load_split_membership

    source, runs = split["source"], split["runs"]
    for seed, _, _ in runs:  # the baseline reads exactly the rows every run was trained, chosen and scored on
        theirs = load_split_membership(split["dir"] / f"seed{seed}")
        if any(not np.array_equal(source.membership[k], theirs[k]) for k in ("train", "valid", "test")):
            sys.exit(f"{split['dir'] / f'seed{seed}'}'s run has other splits than data.split_seed="
                     f"{split['split_seed']} gives now (data or split_seed changed?)")
    names = list(source.label_space.names)
    k = len(names)
    base = baseline(source, tuple(args.grid), names)
    print(f"\n== split seed {split['split_seed']}: train {len(source.splits['train']):,} · valid "
          f"{len(source.splits['valid']):,} · test {len(source.splits['test']):,} rows; classes {', '.join(names)} ==")
    ours_fig = print_split_table(runs, base, args.grid)
    gold, theirs = base["test_gold"], base["test_predictions"]
    ours = []
    for seed, r, _ in runs:
        pred, their_gold = our_test_predictions(split["dir"] / f"seed{seed}")
        if not np.array_equal(their_gold, gold):
            sys.exit(f"seed {seed}: the test rows' labels differ from the baseline's (not the same rows?)")
        if abs((pred == gold).mean() - r["test"]["accuracy"]) > 1e-9:
            print(f"  NOTE: seed {seed}'s predictions score {(pred == gold).mean():.4%} here, results.json "
                  f"{r['test']['accuracy']:.4%}")
        ours.append(pred)
    whole = np.arange(len(gold))[None, :]  # the test split itself, as one "resample"
    ours_whole = [figures(gold, p, k, whole) for p in ours]
    theirs_whole = figures(gold, theirs, k, whole)
    test = {f"{side}_{name}": float(value) for j, name in enumerate(METRICS) for side, value in
            (("ours", np.mean([f[j][0] for f in ours_whole])), ("baseline", theirs_whole[j][0]))}
    diffs = bootstrap_differences(gold, ours, theirs, k, args.resamples, seed=index)
    boot = {name: {"difference": test[f"ours_{name}"] - test[f"baseline_{name}"],
                   **dict(zip(("low", "high", "ahead"), interval(diffs[name])))} for name in METRICS}
    print(f"\n  paired bootstrap over the {len(gold):,} test rows ({args.resamples:,} resamples; ours = mean of "
          f"{len(ours)} seed(s)), ours minus TF-IDF+LR:")
    print_differences("test", boot)
    summary = {"split_seed": split["split_seed"], "overrides": split["overrides"],
               "rows": {name: len(source.splits[name]) for name in ("train", "valid", "test")}, "classes": names,
               "seeds": args.seeds, "ours": ours_fig,
               "baseline": {key: value for key, value in base.items() if key not in ("test_predictions", "test_gold")},
               "test": test, "bootstrap": {**boot, "rng_seed": index},
               "test_gold": gold.tolist(), "test_predictions": {"ours": [p.tolist() for p in ours],
                                                                "baseline": theirs.tolist()}}
    return summary, diffs


def pool(summaries: list[dict], diffs: list[dict[str, np.ndarray]]) -> tuple[dict, dict]:
    """Over the splits: each side's test figures as mean ± sd, and the pooled bootstrap (resample b of every split,
    the splits' differences averaged): mean of the splits' differences, 95% interval, share ahead."""
    over = {key: mean_and_sd([s["test"][key] for s in summaries])
            for key in ("ours_accuracy", "baseline_accuracy", "ours_macro_f1", "baseline_macro_f1")}
    pooled = {}
    for name in METRICS:
        per_split = [s["bootstrap"][name]["difference"] for s in summaries]
        over[f"difference_{name}"] = mean_and_sd(per_split)
        pooled[name] = {"difference": statistics.mean(per_split),
                        **dict(zip(("low", "high", "ahead"), interval(np.mean([d[name] for d in diffs], axis=0))))}
    return over, pooled


def print_pooled(summaries: list[dict], over: dict, pooled: dict, resamples: int) -> None:
    w = 12
    print(f"\n== pooled over {len(summaries)} splits ==\n\n{'split seed':>12}{'ours acc %':>{w + 4}}{'LR acc %':>{w}}"
          f"{'95% acc':>{w + 6}}{'ours mF1 %':>{w + 4}}{'LR mF1 %':>{w}}{'95% mF1':>{w + 6}}")
    for s in summaries:
        cells = ""
        for name in METRICS:
            b = s["bootstrap"][name]
            span = f"{100 * b['low']:+.2f}..{100 * b['high']:+.2f}"
            cells += (f"{mean_sd(s['ours'][f'test_{name}']):>{w + 4}}{100 * s['test'][f'baseline_{name}']:>{w}.2f}"
                      f"{span:>{w + 6}}")
        print(f"{s['split_seed']:>12}{cells}")
    cells = "".join(f"{mean_sd([s['test'][f'ours_{name}'] for s in summaries]):>{w + 4}}"
                    f"{mean_sd([s['test'][f'baseline_{name}'] for s in summaries]):>{w + 4}}{'':>{w + 2}}"
                    for name in METRICS)
    print(f"{'mean ± sd':>12}{cells}   (over splits; ours per split = mean over seeds)")
    print(f"\n  pooled paired bootstrap ({resamples:,} resamples; in each, every split's test rows resampled on their "
          f"own and the {len(summaries)} splits' differences averaged), ours minus TF-IDF+LR:")
    print_differences("test", pooled)


def main() -> None:
    args = parse_args()
    try:
        import sklearn  # noqa: F401  (checked before hours of training, not after)
    except ImportError:
        sys.exit("needs scikit-learn: pip install -e '.[bench]'")
    from sentiment.errors import SentimentError

    runs_dir = args.runs_dir.resolve()
    try:
        splits = plan_splits(args, runs_dir)
    except SentimentError as e:
        sys.exit(f"error: {e}")
    what = " ".join(source_flags(args)).replace(str(ROOT) + "/", "")
    print(f"== compare_linear: {what} ({' '.join(args.overrides) or 'no overrides'}) over split seed(s) "
          f"{' '.join(str(s['split_seed']) for s in splits)} × seeds {' '.join(map(str, args.seeds))} vs TF-IDF "
          f"1-2 grams + logistic regression, same splits ==")
    for split in splits:
        split["runs"] = our_runs(args, split)
    summaries, diffs = [], []
    for index, split in enumerate(splits):
        try:
            summary, split_diffs = score_split(args, index, split)
        except SentimentError as e:
            sys.exit(f"error: {e}")
        summaries.append(summary)
        diffs.append(split_diffs)
    over, pooled = pool(summaries, diffs)
    if len(splits) > 1:
        print_pooled(summaries, over, pooled, args.resamples)
    if args.json:
        report = {"config": str(args.config) if args.config else None, "data": str(args.data) if args.data else None,
                  "label_column": args.label_column, "text_column": args.text_column, "overrides": args.overrides,
                  "seeds": args.seeds, "split_seeds": [s["split_seed"] for s in splits], "resamples": args.resamples,
                  "splits": summaries, "over_splits": over, "pooled": pooled}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
