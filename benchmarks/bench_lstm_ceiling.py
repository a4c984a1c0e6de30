"""Scoring speed of the classic model against a REFERENCE from this machine's matmul rate (not a bound).

    python benchmarks/bench_lstm_ceiling.py [--batch 256] [--length 230] [--reps 2] [--threads 2]

The sgemm reference: the classic model (2-layer BiLSTM 256 on 50d embeddings) does F floating-point
operations per token in matrix products, F = sum over layers and directions of 2 x 4 x hidden x
(input + hidden) (= 4.40 MFLOP; the embedding lookup, gate nonlinearities and final Linear are left out).
A large, square sgemm (torch.mm of n x n float32 matrices) is measured here with the same threads, best of
a few runs, before and after the model runs. sgemm FLOP/s / F is the tokens/s the model would score if all
its matrix products ran at that torch.mm rate and nothing else took time. For all threads the reference uses
the larger of the N-thread sgemm and N x the one-thread sgemm.

It is NOT an upper bound, and the file's old name ("ceiling") overstates it: ours has scored above it, a
`make bench BENCH_ARGS=--quick` at commit 26c111f reading 1.41x of it on 1 thread and 1.07x on 2 (issue 30).
Why is not established: the model's own kernels (the LSTM's batched input projections and recurrent
products) may run faster than torch.mm on these square sizes, or the sgemm may have been timed at a busier
moment. Read a ratio as ours' tokens/s over the reference's, a figure to compare runs on one machine by,
not as the share of a ceiling reached.

Measured against it, in one process, on random token ids of one length (no padding):
  ours, 1 thread     SentimentRNN (exact padded layout), inference_mode, one batch at a time
  bare, 1 thread     four single-layer unidirectional nn.LSTM calls on ready inputs (no embedding, no
                     reversal, no padding logic): what our layout costs against bare LSTM calls
  ours, all threads  sentiment.inference.evaluate.predict_logits (one single-threaded process per thread), on
                     --threads batches of that size or more (at least 120,000 tokens, so that it forks)
Each is printed as a multiple of the sgemm reference (above 1.00x: faster than the reference).
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np
import torch
from torch import nn


def flops_per_token(model) -> int:
    """Matrix-product FLOPs per token of the recurrent stack: 2 x gates x hidden x (input + hidden) per module."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}
    total = 0
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            dirs = 2 if module.bidirectional else 1
            for layer in range(module.num_layers):
                inp = module.input_size if layer == 0 else module.hidden_size * dirs
                total += dirs * 2 * gates[type(module).__name__] * module.hidden_size * (inp + module.hidden_size)
    return total


def sgemm_flops(threads: int, sizes=(512, 1024, 2048), seconds: float = 1.0) -> tuple[float, int]:
    """Best FLOP/s of torch.mm on n x n float32 matrices with `threads` threads, and the n that gave it."""
    torch.set_num_threads(threads)
    best, best_n = 0.0, sizes[0]
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        spent = 0.0
        while True:  # at least once, however short `seconds`
            start = time.perf_counter()
            torch.mm(a, b)
            dt = time.perf_counter() - start
            spent += dt
            if 2 * n**3 / dt > best:
                best, best_n = 2 * n**3 / dt, n
            if spent >= seconds:
                break
    return best, best_n


def tokens_per_s(fn, tokens: int, reps: int) -> float:
    with torch.inference_mode():
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return tokens * reps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--length", type=int, default=230, help="tokens per review (IMDB's mean is ~265)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=common.usable_cores(), help="for the all-threads rows")
    ap.add_argument("--gemm-seconds", type=float, default=1.0, help="time spent on each sgemm size (0: one product)")
    ap.add_argument("--gemm-sizes", type=int, nargs="+", default=[512, 1024, 2048], help="n of the n x n products")
    ap.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    args = ap.parse_args()
    flush = common.set_flush_denormal(True)  # before torch starts any thread, as bench_train does
    torch.set_num_threads(1)
    from sentiment.data.batching import EncodedSplit
    from sentiment.inference.evaluate import predict_logits
    from sentiment.model import SentimentRNN

    common.print_header("== bench_lstm_ceiling: classic-model scoring vs the sgemm reference (not a bound) ==",
                        args.threads)
    print(f"  {flush}")
    torch.manual_seed(0)
    B, T, V, N = args.batch, args.length, 10_002, args.threads
    ours = SentimentRNN(V, 50, 256, 2, "lstm", True, 0.5, 0.5, 0.0, "last", 0, "never").eval()
    F = flops_per_token(ours)
    # the reference is the machine's best sgemm: measured before and again after the model runs, the higher kept
    gemm = [sgemm_flops(1, args.gemm_sizes, args.gemm_seconds), sgemm_flops(N, args.gemm_sizes, args.gemm_seconds)]
    torch.set_num_threads(1)

    layer1, layer2 = nn.LSTM(50, 256, batch_first=True).eval(), nn.LSTM(512, 256, batch_first=True).eval()
    ids, lengths = torch.randint(2, V, (B, T)), torch.full((B,), T)
    x1, x2 = torch.randn(B, T, 50), torch.randn(B, T, 512)
    ours_tps = tokens_per_s(lambda: ours(ids, lengths), B * T, args.reps)
    bare_tps = tokens_per_s(lambda: (layer1(x1), layer1(x1), layer2(x2), layer2(x2)), B * T, args.reps)
    # all threads: N batches of B reviews of length T, scored as `sentiment eval` scores (a process per thread)
    all_tps = None
    if N > 1:
        # at least N batches, and enough tokens for predict_logits to fork its processes (it scores small jobs in-process)
        n_docs = B * max(N, -(-120_000 // (B * T)))
        split = EncodedSplit(ids=np.random.default_rng(0).integers(2, V, n_docs * T).astype(np.int32),
                             offsets=np.arange(n_docs + 1, dtype=np.int64) * T, labels=np.zeros(n_docs, np.int8))
        torch.set_num_threads(N)
        predict_logits(ours, split, batch_size=B)  # warm-up
        start = time.perf_counter()
        for _ in range(args.reps):
            predict_logits(ours, split, batch_size=B)
        all_tps = n_docs * T * args.reps / (time.perf_counter() - start)
    after = [sgemm_flops(1, args.gemm_sizes, args.gemm_seconds), sgemm_flops(N, args.gemm_sizes, args.gemm_seconds)]
    (gemm1, n1), (gemmN, nN) = (max(b, a) for b, a in zip(gemm, after))
    ref1, refN = gemm1 / F, max(gemmN, N * gemm1) / F
    print(f"classic model: {F / 1e6:.2f} MFLOP per token in matrix products (2-layer BiLSTM 256 on 50d)")
    print(f"sgemm fp32 (n x n torch.mm, n in {'/'.join(map(str, args.gemm_sizes))}, {args.gemm_seconds:g} s each, before and after the "
          f"model runs), best: 1 thread {gemm1 / 1e9:.1f} GFLOP/s (n={n1}; before {gemm[0][0] / 1e9:.1f}, after "
          f"{after[0][0] / 1e9:.1f}); {N} threads {gemmN / 1e9:.1f} GFLOP/s (n={nN}; before {gemm[1][0] / 1e9:.1f}, "
          f"after {after[1][0] / 1e9:.1f})")

    figures = common.Figures("bench_lstm_ceiling")
    print(f"random ids, batch {B}, length {T} (no padding), inference, {args.reps} timed reps after a warm-up")
    print(f"  sgemm reference, 1 thread:  {ref1:>9,.0f} tokens/s  (= {gemm1 / 1e9:.1f} GFLOP/s / {F / 1e6:.2f} MFLOP; "
          "not a bound)")
    print(f"    ours, 1 thread                        {ours_tps:>9,.0f} tokens/s = {ours_tps / ref1:5.2f}x the reference"
          f"  ({ours_tps * F / 1e9:.1f} GFLOP/s)")
    print(f"    four bare nn.LSTM calls, 1 thread     {bare_tps:>9,.0f} tokens/s = {bare_tps / ref1:5.2f}x the reference"
          f"  (ours is {ours_tps / bare_tps:.2f}x of it)")
    if all_tps is not None:
        print(f"  sgemm reference, {N} threads: {refN:>9,.0f} tokens/s  (= max({N}-thread sgemm, {N} x 1-thread sgemm) / "
              f"{F / 1e6:.2f} MFLOP; not a bound)")
        print(f"    ours, {N} single-thread processes       {all_tps:>9,.0f} tokens/s = {all_tps / refN:5.2f}x the "
              f"reference  ({all_tps * F / 1e9:.1f} GFLOP/s; {n_docs // B} batches per rep)")
    if max(ours_tps / ref1, bare_tps / ref1, (all_tps or 0) / refN) > 1:
        print("  note: a row is above 1.00x, which the reference allows: it is not a bound (possible causes: the model's "
              "products ran faster than torch.mm on n x n, or the sgemm was timed at a busier moment; see --help)")
    sample = f"batch {B} x length {T}, {args.reps} reps"
    figures.add("scoring, classic model, 1 thread: ours against the sgemm reference (not a bound)", ours_tps,
                "sgemm reference (1-thread sgemm / FLOP per token)", ref1, "tokens/s", sample=sample, headline=N == 1)
    if all_tps is not None:
        figures.add(f"scoring, classic model, {N} threads: ours against the sgemm reference (not a bound)", all_tps,
                    f"sgemm reference (best of {N}-thread sgemm and {N} x 1-thread, / FLOP per token)", refN,
                    "tokens/s", sample=sample, headline=True)
    figures.write(args.json)


if __name__ == "__main__":
    main()
