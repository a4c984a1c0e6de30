"""Training and evaluation throughput of our loop against the classic recipe's, in one run.

    python scripts/bench_train.py --data-dir data [--batches 40] [--eval-reviews 25000]

Same model size for all: the classic recipe (2-layer BiLSTM 256, embedding 50d here, batch 30).
Training, in non-pad tokens per second over the same number of batches:
  plain-random   nn.LSTM over random batches padded to the longest review, no packing (not exact)
  plain-bucket   nn.LSTM over the classic recipe's length-bucketed batches, no packing (not exact)
  packed-bucket  the classic recipe as written: bucketed + pack_padded_sequence (exact; a few batches)
  ours           SentimentRNN: bucketed batches, exact per-direction layout, no packing
Evaluation of the test reviews: the classic loop (no_grad, batch 30 bucketed, packed) against ours
(sentiment.evaluate.predict_logits: inference_mode, length-sorted token-budget batches, exact padded
layout, one single-threaded process per torch thread).
"""

from __future__ import annotations

import argparse
import copy
import resource
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from sentiment.batching import BucketBatchSampler, collate
from sentiment.config import load_config
from sentiment.evaluate import predict_logits
from sentiment.prepare import gather_docs, prepare_data
from sentiment.train import build_model


class ClassicLSTM(nn.Module):
    """The tutorial model: Embedding -> Dropout -> nn.LSTM(2 layers, bidirectional) -> cat(h[-2], h[-1]) -> Linear."""

    def __init__(self, vocab: int, dim: int, hidden: int = 256):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.rnn = nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, dropout=0.5, batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(2 * hidden, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, pack: bool) -> torch.Tensor:
        x = self.dropout(self.embedding(ids))
        if pack:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(x)
        return self.fc(self.dropout(torch.cat((h[-2], h[-1]), dim=1))).squeeze(1)


class TrainLoop:
    """One training loop (model, Adam, its own batches), stepped one batch at a time so that several loops
    can be interleaved: on a shared, noisy machine a slow minute then hits every loop alike."""

    def __init__(self, model: nn.Module, split, batches: list, pack: bool | None = None):
        self.model, self.split, self.batches, self.pack = model, split, batches, pack
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.tokens, self.seconds = 0, 0.0

    def step(self, i: int) -> None:
        """Batch i: forward, backward, Adam; batch 0 is warm-up and not counted."""
        self.model.train()
        start = time.perf_counter()
        ids, lengths, labels = collate(self.split, self.batches[i])
        logits = self.model(ids, lengths, self.pack) if self.pack is not None else self.model(ids, lengths)
        loss = self.loss_fn(logits, labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if i >= 1:
            self.seconds += time.perf_counter() - start
            self.tokens += int(lengths.sum())


@torch.no_grad()
def classic_eval(model: ClassicLSTM, split, batch_size: int = 30) -> float:
    model.eval()
    start = time.perf_counter()
    for idx in BucketBatchSampler(split.lengths(), batch_size, seed=0):
        ids, lengths, _ = collate(split, idx)
        model(ids, lengths, True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--batches", type=int, default=40, help="timed training batches per loop")
    ap.add_argument("--packed-batches", type=int, default=4, help="timed batches for the packed loop (slow)")
    ap.add_argument("--eval-reviews", type=int, default=25000, help="test reviews for the evaluation comparison")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-only", action="store_true", help="skip the training comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(None, ["data.vocab_max_size=10000", "data.max_len=null", "data.glove_dim=null",
                             "model.embed_dim=50", "model.rnn=lstm", "model.hidden_size=256", "model.num_layers=2",
                             "model.pooling=last", "model.pack=never", "train.batch_size=30",
                             f"data.data_dir={args.data_dir}"])
    data = prepare_data(cfg.data, with_embeddings=False)
    train, test = data.train, data.test
    lengths = train.lengths()
    bucket = BucketBatchSampler(lengths, 30, seed=1).batches()
    random = BucketBatchSampler(lengths, 30, seed=1, bucket=False).batches()

    classic = ClassicLSTM(len(data.vocab), 50)
    ours = build_model(cfg, len(data.vocab))
    if not args.eval_only:
        compare_training(args, classic, ours, train, random, bucket)
    compare_evaluation(args, classic, ours, test)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def compare_training(args, classic, ours, train, random, bucket) -> None:
    # The question that is close, ours against the plain loop over the same bucketed batches, is timed with
    # the two loops taking turns batch by batch (same batches, same moment of a shared machine). The other
    # two baselines are far apart from ours and run after, on their own: the random-batch loop's huge padded
    # tensors would otherwise change the allocator's state under the loops being compared.
    loops = {
        "plain-bucket": TrainLoop(copy.deepcopy(classic), train, bucket, pack=False),
        "ours": TrainLoop(ours, train, bucket),
        "plain-random": TrainLoop(copy.deepcopy(classic), train, random, pack=False),
        "packed-bucket": TrainLoop(copy.deepcopy(classic), train, bucket, pack=True),
    }
    for i in range(args.batches + 1):
        pair = ("plain-bucket", "ours") if i % 2 else ("ours", "plain-bucket")
        for name in pair:
            loops[name].step(i)
    for i in range(args.batches + 1):
        loops["plain-random"].step(i)
    for i in range(args.packed_batches + 1):
        loops["packed-bucket"].step(i)
    tps = {name: loop.tokens / loop.seconds for name, loop in loops.items()}
    print(f"training, classic-recipe model (2-layer BiLSTM 256, emb 50, batch 30), {args.threads} threads; "
          f"plain-bucket and ours interleaved batch by batch")
    for name, loop in loops.items():
        print(f"  {name:<14} {tps[name]:>9,.0f} non-pad tokens/s  ({loop.seconds:.1f} s)")
    r1, r2 = tps["ours"] / tps["plain-random"], tps["ours"] / tps["plain-bucket"]
    print(f"  ours / plain-random  = {r1:.2f}x  (target >= 2)  {'PASS' if r1 >= 2 else 'FAIL'}")
    print(f"  ours / plain-bucket  = {r2:.2f}x  (target >= 1)  {'PASS' if r2 >= 1 else 'FAIL'}")
    print(f"  ours / packed-bucket = {tps['ours'] / tps['packed-bucket']:.1f}x")


def compare_evaluation(args, classic, ours, test) -> None:
    # an evenly spaced subset keeps the length distribution (and both labels) of the whole test set
    keep = np.unique(np.linspace(0, len(test) - 1, min(args.eval_reviews, len(test))).astype(np.int64))
    ids, offsets = gather_docs(test.ids, test.offsets, keep)
    subset = type(test)(ids=ids, offsets=offsets, labels=test.labels[keep])
    t_classic = classic_eval(classic, subset)
    start = time.perf_counter()
    predict_logits(ours, subset, batch_size=256)
    t_ours = time.perf_counter() - start
    tokens = subset.n_tokens()
    print(f"evaluation of {len(subset):,} test reviews ({tokens:,} tokens)")
    print(f"  classic loop (no_grad, batch 30, packed)   {t_classic:7.1f} s  {tokens / t_classic:>9,.0f} tokens/s")
    print(f"  ours (inference_mode, token-budget batches, 1 process per thread) {t_ours:7.1f} s  {tokens / t_ours:>9,.0f} tokens/s")
    print(f"  speed-up {t_classic / t_ours:.2f}x (target >= 2)  {'PASS' if t_classic / t_ours >= 2 else 'FAIL'}")


if __name__ == "__main__":
    main()
