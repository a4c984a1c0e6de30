"""How fast can the classic model be scored on this CPU at all? One thread, random inputs.

    python scripts/bench_lstm_ceiling.py [--batch 256] [--length 230]

Times, in one process: our SentimentRNN (classic recipe: 2-layer BiLSTM 256 on 50d embeddings, exact
padded layout) against the bare minimum of the same work, four single-layer unidirectional nn.LSTM calls
on ready-made inputs (no embedding, no reversal, no padding logic). The bare figure times the number of
cores bounds what any fp32 PyTorch evaluation of this model can reach here.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from sentiment.model import SentimentRNN


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
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    B, T, V = args.batch, args.length, 10_002
    ours = SentimentRNN(V, 50, 256, 2, "lstm", True, 0.5, 0.5, 0.0, "last", 0, "never").eval()
    layer1, layer2 = nn.LSTM(50, 256, batch_first=True).eval(), nn.LSTM(512, 256, batch_first=True).eval()
    ids, lengths = torch.randint(2, V, (B, T)), torch.full((B,), T)
    x1, x2 = torch.randn(B, T, 50), torch.randn(B, T, 512)
    ours_tps = tokens_per_s(lambda: ours(ids, lengths), B * T, args.reps)
    bare_tps = tokens_per_s(lambda: (layer1(x1), layer1(x1), layer2(x2), layer2(x2)), B * T, args.reps)
    print(f"one thread, batch {B}, length {T}")
    print(f"  ours (exact, classic recipe)      {ours_tps:>9,.0f} tokens/s")
    print(f"  four bare nn.LSTM calls           {bare_tps:>9,.0f} tokens/s  (ours is {ours_tps / bare_tps:.2f}x of it)")
    print(f"  ceiling with one such process per core: {bare_tps * torch.multiprocessing.cpu_count():,.0f} tokens/s")


if __name__ == "__main__":
    main()
