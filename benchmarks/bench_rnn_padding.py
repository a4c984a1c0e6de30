"""Why SentimentRNN avoids pack_padded_sequence on CPU: time forward+backward both ways.

One bidirectional GRU(128) layer (embed 50) on a batch of 64 reviews of length 400, on CPU with
2 threads, run with pack="never" (padded batch, reverse-within-length) and pack="always"
(pack_padded_sequence per direction), both on the same modules and weights. The packed backward
is quadratic in length on CPU (pytorch/pytorch#149194), so expect a large ratio.

    python benchmarks/bench_rnn_padding.py [--length 400] [--batch 64] [--reps 3] [--packed-reps 1] [--threads 2]

Denormal floats are flushed to zero from the start, for both paths (as in bench_train.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import common  # noqa: F401  (puts the checkout on sys.path)
import torch

# Run straight from a checkout (python benchmarks/bench_rnn_padding.py) without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sentiment.model import SentimentRNN  # noqa: E402


def time_step(model: SentimentRNN, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[float, float]:
    """One forward and one backward; returns (forward seconds, backward seconds)."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = model(ids, lengths).sum()
    mid = time.perf_counter()
    loss.backward()
    return mid - start, time.perf_counter() - mid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions, padded path (median)")
    # One packed step already takes ~15 s at length 400; more would turn seconds into minutes.
    parser.add_argument("--packed-reps", type=int, default=1, help="timed repetitions, packed path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    args = parser.parse_args()

    flush = common.set_flush_denormal(True)  # before torch starts any thread
    torch.set_num_threads(args.threads)
    common.print_header("== bench_rnn_padding: our padded layout vs pack_padded_sequence, forward+backward ==")
    print(f"  {flush}")
    torch.manual_seed(0)
    model = SentimentRNN(vocab_size=10_000, embed_dim=50, hidden_size=128, num_layers=1, rnn="gru",
                         bidirectional=True, dropout=0.0, embed_dropout=0.0, pooling="last").train()
    ids = torch.randint(1, 10_000, (args.batch, args.length))
    # Every review full length, so both paths do the same recurrent work and the difference is
    # the packing itself (mixed lengths would only let the packed path skip padded steps).
    lengths = torch.full((args.batch,), args.length)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bidirectional GRU(128) "
          f"x1 layer, embed 50, batch {args.batch}, length {args.length}")
    results = {}
    for pack in ("never", "always"):
        model.pack = pack
        time_step(model, ids[:, :16], lengths.clamp(max=16))  # warm-up, cheap at length 16
        reps = args.reps if pack == "never" else args.packed_reps
        runs = [time_step(model, ids, lengths) for _ in range(reps)]
        fwd = statistics.median(r[0] for r in runs)
        bwd = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        results[pack] = total
        print(f"pack={pack:<6}  forward {fwd:7.3f} s  backward {bwd:7.3f} s  "
              f"forward+backward {total:7.3f} s  (median of {reps})")
    print(f"ratio always/never (forward+backward): {results['always'] / results['never']:.1f}x")
    figures = common.Figures("bench_rnn_padding")
    figures.add(f"BiGRU(128) forward+backward, batch {args.batch} x length {args.length}: padded layout vs packed",
                results["never"], "the same modules with pack_padded_sequence", results["always"], "s",
                higher_is_better=False, sample=f"median of {args.reps} (packed: {args.packed_reps})")
    figures.write(args.json)


if __name__ == "__main__":
    main()
