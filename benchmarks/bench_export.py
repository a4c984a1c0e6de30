"""Export parity and speed: the run's model exported to ONNX and torch.export, scored against the run's own
model on the same reviews (mixed lengths, the run's truncation), batched with padding in length-sorted
batches: max |Δ probability| per format, and tokens/s of each (onnxruntime vs torch at the same threads).

    python benchmarks/bench_export.py --run runs/NAME [--data data/aclImdb/test] [--reviews 2000]
                                      [--threads 2] [--formats onnx,torch] [--json]

Every backend scores the very same batches (token_budget_batches of the run's eval_batch_size), in one
process with --threads intra-op threads (torch.set_num_threads / onnxruntime's intra_op_num_threads); each is
timed --repeats times, the best kept. Exporting (a torch.export of a bidirectional model takes a while) is
not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="run directory")
    parser.add_argument("--data", type=Path, default=Path("data/aclImdb/test"),
                        help="reviews: a pos/neg directory of .txt files or a file, one review per line")
    parser.add_argument("--reviews", type=int, default=2000, help="reviews drawn (seeded)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every backend")
    parser.add_argument("--formats", default="onnx,torch", help="comma-separated: onnx, torch")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per backend (best kept)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if not formats or any(f not in ("onnx", "torch") for f in formats):
        raise SystemExit(f"error: --formats takes onnx and/or torch, got {args.formats!r}")
    if not (args.run / "config.yaml").is_file():
        raise SystemExit(f"error: {args.run} is not a run directory")

    import numpy as np
    import torch

    from bench_serve import read_reviews
    from sentiment.inference.evaluate import predict_logits
    from sentiment.inference.export import export_run
    from sentiment.inference.exported import load_exported
    from sentiment.inference.predict import drop_empty, encode_texts, encoding_of
    from sentiment.inference.runtime import load_trained

    run = load_trained(args.run, "best", "cpu")
    torch.set_num_threads(args.threads)
    enc = encoding_of(run)
    split, _ = drop_empty(encode_texts(read_reviews(args.data, args.reviews), enc))
    tokens = int(split.lengths(enc.max_len).sum())
    batch = run.cfg.train.eval_batch_size

    def timed(model) -> tuple[np.ndarray, float]:
        best, logits = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            logits = predict_logits(model, split, batch_size=batch, device="cpu", max_len=enc.max_len,
                                    truncate=enc.truncate, workers=1)
            best = min(best, time.perf_counter() - t0)
        return logits, best

    reference, seconds = timed(run.model)
    ref_probs = run.label_space.probabilities(reference)
    results = {"reviews": len(split), "tokens": tokens, "threads": args.threads,
               "torch_eager": {"tokens_per_s": tokens / seconds, "seconds": seconds}}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            out = Path(tmp) / f"model.{'onnx' if fmt == 'onnx' else 'pt2'}"
            export_run(args.run, fmt, out)
            logits, seconds = timed(load_exported(out, threads=args.threads))
            delta = float(np.abs(run.label_space.probabilities(logits) - ref_probs).max())
            results[fmt] = {"tokens_per_s": tokens / seconds, "seconds": seconds, "max_abs_delta_prob": delta}
    if args.json:
        print(json.dumps(results))
        return
    print(f"{results['reviews']:,} reviews, {tokens:,} tokens, {args.threads} thread(s)")
    print(f"{'backend':>12} {'tokens/s':>12} {'vs torch':>9} {'max |Δ prob|':>13}")
    for name in ["torch_eager", *formats]:
        row = results[name]
        ratio = row["tokens_per_s"] / results["torch_eager"]["tokens_per_s"]
        delta = f"{row['max_abs_delta_prob']:.2e}" if "max_abs_delta_prob" in row else "-"
        print(f"{name:>12} {row['tokens_per_s']:>12,.0f} {ratio:>8.2f}x {delta:>13}")


if __name__ == "__main__":
    main()
