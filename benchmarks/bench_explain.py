"""Benchmark explaining one review against predicting it: seconds for `Explainer.explain` (Integrated Gradients over
the recurrent part at the default steps + the branch's exact share) of one LENGTH-token IMDB test review against
`Predictor.probabilities` of the same review, both loaded once in this process, median of --reps after a warm-up.

    python benchmarks/bench_explain.py [--run runs/NAME] [--data-dir data] [--length 400] [--reps 5] [--threads 2]

The review: the first test review (pos/ then neg/, in file order) with at least LENGTH tokens, cut to its first
LENGTH tokens joined by spaces (re-tokenized: the count printed is the real one). Without --run an untrained run
of --config (default configs/imdb_cpu.yaml: BiGRU + n-gram branch) is written to a temp dir with the real vocab:
the speed does not depend on the weights. Target (issue 32): <= 1 s on 2 cores at the default steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = common.ROOT
TARGET_SECONDS = 1.0


def pick_review(imdb_test: Path, length: int, enc) -> str:
    from sentiment.inference.predict import text_tokens

    for folder in ("pos", "neg"):
        for path in sorted((imdb_test / folder).glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
            tokens = text_tokens([path.read_text(encoding="utf-8", errors="replace")], enc)[0]
            if len(tokens) >= length:
                return " ".join(tokens[:length])
    sys.exit(f"no review of {length} tokens under {imdb_test}: pass --length or --data-dir")


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory (default: an untrained run of --config)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "imdb_cpu.yaml")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--length", type=int, default=400, help="tokens of the review (default 400)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of each, median (default 5)")
    parser.add_argument("--steps", type=int, default=None, help="Integrated Gradients steps (default: explain's)")
    parser.add_argument("--threads", type=int, default=common.usable_cores(), help="torch threads")
    parser.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    args = parser.parse_args(argv)

    import torch

    from bench_predict import untrained_run
    from sentiment.inference.explain import DEFAULT_STEPS, Explainer
    from sentiment.inference.predict import load_predictor

    steps = args.steps or DEFAULT_STEPS
    common.print_header("== bench_explain: explaining one review vs predicting it ==", args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        run_dir = args.run or untrained_run(args.config, args.data_dir, Path(tmp))
        what = str(args.run) if args.run else f"UNTRAINED model of {args.config} with the real vocab (speed only)"
        predictor = load_predictor(run_dir)
        torch.set_num_threads(args.threads)  # after the load, which sets the run's own
        explainer = Explainer(predictor.model, predictor.enc, predictor.space, predictor.device)
        text = pick_review(Path(args.data_dir) / "aclImdb" / "test", args.length, predictor.enc)
        predict_s = median_seconds(lambda: predictor.probabilities([text]), args.reps)
        explain_s = median_seconds(lambda: explainer.explain([text], steps=steps), args.reps)
        e = explainer.explain([text], steps=steps)[0]
    print(f"run: {what}")
    print(f"review: {len(e.tokens)} tokens ({sum(e.read)} read by the recurrent part); steps {steps}; "
          f"torch threads {torch.get_num_threads()}; median of {args.reps}")
    print(f"  predict  {predict_s:.3f} s")
    print(f"  explain  {explain_s:.3f} s  ({explain_s / predict_s:.1f}x predict; target <= {TARGET_SECONDS:.0f} s: "
          f"{'met' if explain_s <= TARGET_SECONDS else 'NOT met'}); completeness error {e.completeness_error:.2%}")
    figures = common.Figures("bench_explain")
    figures.add(f"explain one {len(e.tokens)}-token review ({steps} steps) vs predicting it", explain_s,
                "predicting it", predict_s, "s", higher_is_better=False,
                sample=f"1 review, median of {args.reps}, {torch.get_num_threads()} threads")
    figures.note(f"explain {explain_s:.3f} s against a target of <= {TARGET_SECONDS:.0f} s; completeness error "
                 f"{e.completeness_error:.2%}")
    figures.write(args.json)


if __name__ == "__main__":
    main()
