"""What the bag-of-n-grams branch costs: a training step and scoring with the branch against the same model
without it, in one run.

    python benchmarks/bench_ngrams.py --data-dir data [--batches 24] [--eval-reviews 2000] [--threads 2]
    python benchmarks/bench_ngrams.py --buckets 20,24 [--steps 20] [--data-dir data | --synthetic] [--threads 1]

The model: configs/imdb_cpu_ngrams.yaml (the CPU recipe's BiGRU(128) + the branch over hashed 1-2 grams of
the whole review, 2**22 buckets), and the same config with model.ngrams=null, the recurrent parts starting
from the same weights. The branch's Naive Bayes scale comes from the training rows, as training computes it.

Training: collate (the ids, and for the branch the review's n-grams) + forward + loss + backward + Adam with
the engine's parameter groups (the branch's own lr and weight decay), the two models stepped in turns over
the same length-stratified batches of a first epoch, so a busy moment hits both alike. Scoring:
sentiment.inference.evaluate.predict_logits over evenly spaced test reviews in one process, each model
--reps times (3) in turns, the fastest pass counting. Each figure is seconds with the branch against seconds without it; the branch's share is
1 - without / with.

--buckets B1,B2,...: instead, what the table's size costs an optimizer step (model.ngrams.sparse). The branch
alone (the config's n, weighting, lr and weight decay; its per-bucket scale left at 1) at 2**B buckets, its
table dense (Adam updates every row) and sparse (LazyAdam updates the batch's rows), each --steps (20) steps of
forward + loss + backward + optimizer step over the same batches after one untimed step; the n-grams are
collated before the clock starts. Batches: the training split's first batches of an epoch (--data-dir), or
--synthetic IMDB-shaped ones (train.batch_size texts of 100 to 600 tokens drawn Zipf-like from 100,000 words).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch
import torch.nn.functional as F

from sentiment.config import load_config
from sentiment.data.batching import BucketBatchSampler, collate
from sentiment.data.prepare import prepare_data
from sentiment.errors import SentimentError
from sentiment.inference.evaluate import predict_logits
from sentiment.ngrams import NgramBatch, NgramBranch, NgramSpec, bags, collate_ngrams, init_statistics, ngram_inputs
from sentiment.training.lazy_adam import build_optimizer
from sentiment.training.train import build_model, optimizer_groups

ROOT = common.ROOT
CONFIG = ROOT / "configs" / "imdb_cpu_ngrams.yaml"


class Stepper:
    """One model and its Adam, stepped one batch at a time so that two can take turns."""

    def __init__(self, cfg, model, split):
        self.cfg, self.model, self.split = cfg, model, split
        self.opt = build_optimizer(optimizer_groups(model, cfg), lr=cfg.train.lr)  # the engine's (LazyAdam: sparse)
        self.seconds: list[float] = []

    def step(self, indices: np.ndarray, timed: bool = True) -> None:
        self.model.train()
        start = time.perf_counter()
        ids, lengths, labels = collate(self.split, indices, self.cfg.data.max_len, self.cfg.data.truncate)
        inputs = ngram_inputs(self.model, self.split, indices, self.cfg.data.max_len, self.cfg.data.truncate)
        loss = F.binary_cross_entropy_with_logits(self.model(ids, lengths, **inputs), labels.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if timed:
            self.seconds.append(time.perf_counter() - start)


def setup(args):
    cfg = load_config(CONFIG, [f"data.data_dir={args.data_dir}", *args.overrides])
    plain_cfg = load_config(CONFIG, [f"data.data_dir={args.data_dir}", *args.overrides, "model.ngrams=null"])
    data = prepare_data(cfg.data, token_hashes=True)
    outputs = data.label_space.num_outputs
    torch.manual_seed(0)
    with_branch = build_model(cfg, len(data.vocab), data.vocab.pad_index, outputs)
    without = build_model(plain_cfg, len(data.vocab), data.vocab.pad_index, outputs)
    if data.embeddings is not None:
        with_branch.load_embeddings(data.embeddings)
    shared = {k: v for k, v in with_branch.state_dict().items() if not k.startswith("ngrams.")}
    without.load_state_dict(shared)
    init_statistics(with_branch, cfg, data.train, data.label_space.num_classes)
    return cfg, plain_cfg, data, with_branch, without


def compare_training(args, figures, cfg, plain_cfg, data, with_branch, without) -> None:
    lengths = data.train.lengths(cfg.data.max_len)
    batches = BucketBatchSampler(lengths, cfg.train.batch_size, seed=cfg.run.seed).batches()
    padded = np.array([int(lengths[b].max()) for b in batches])
    picks = common.stratified(padded, args.batches)
    order = [int(p) for p in np.random.default_rng(0).permutation(picks)]
    loops = [Stepper(cfg, with_branch, data.train), Stepper(plain_cfg, without, data.train)]
    for loop in loops:  # one untimed warm-up step each
        loop.step(batches[order[0]], timed=False)
    for k, pos in enumerate(order):
        for loop in (loops if k % 2 == 0 else loops[::-1]):
            loop.step(batches[pos])
    ours, base = sum(loops[0].seconds), sum(loops[1].seconds)
    sample = f"{len(order)} bucketed batches of {cfg.train.batch_size}, padded length {common.describe(padded[order])}"
    print(f"training: {sample}")
    print(f"  with the branch {ours / len(order):.3f} s/step, without {base / len(order):.3f} s/step: the branch "
          f"is {1 - base / ours:.1%} of a step")
    figures.add(f"training step with the n-gram branch (its share: {1 - base / ours:.1%})", ours / len(order),
                "the same model without it", base / len(order), "s", higher_is_better=False, sample=sample,
                headline=True)


def compare_scoring(args, figures, cfg, data, with_branch, without) -> None:
    test = data.test
    keep = np.unique(np.linspace(0, len(test) - 1, min(args.eval_reviews, len(test))).astype(np.int64))
    subset = test.take(keep)
    seconds = {0: [], 1: []}
    for rep in range(args.reps):
        for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
            model = (with_branch, without)[which]
            start = time.perf_counter()
            predict_logits(model, subset, max_len=cfg.data.eval_max_len, truncate=cfg.data.truncate, workers=1)
            seconds[which].append(time.perf_counter() - start)
    ours, base = min(seconds[0]), min(seconds[1])
    sample = f"{len(subset):,} evenly spaced test reviews, length {common.describe(subset.lengths())}"
    print(f"scoring: {sample}")
    print(f"  with the branch {ours:.2f} s, without {base:.2f} s (best of {args.reps} each): the branch is "
          f"{1 - base / ours:.1%} of scoring")
    figures.add(f"scoring with the n-gram branch (its share: {1 - base / ours:.1%})", ours,
                "the same model without it", base, "s", higher_is_better=False, sample=sample)


def synthetic_batches(n_batches: int, batch_size: int, spec: NgramSpec, seed: int = 0):
    """IMDB-shaped batches of the branch's inputs: texts of 100..600 tokens over 100,000 words drawn with Zipf-like
    frequencies (rank^-1.1), hashed to n-grams by the branch's own function; random labels."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**63, size=100_000, dtype=np.int64).astype(np.uint64)  # a word's token hash
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    p /= p.sum()
    out = []
    for _ in range(n_batches):
        lengths = rng.integers(100, 601, size=batch_size)
        flat = words[rng.choice(len(words), size=int(lengths.sum()), p=p)]
        ids, offsets, counts = bags(flat, np.concatenate([[0], np.cumsum(lengths)]), spec.n, spec.buckets)
        out.append((NgramBatch(*map(torch.from_numpy, (ids, offsets, counts))),
                    torch.from_numpy(rng.integers(0, 2, size=batch_size)).float()))
    return out


def compare_buckets(args, figures) -> None:
    """Seconds per optimizer step of the branch alone, dense against sparse, at each 2**B buckets."""
    cfg = load_config(CONFIG, [f"data.data_dir={args.data_dir}", *args.overrides])
    g = cfg.model.ngrams
    data = None if args.synthetic else prepare_data(cfg.data, token_hashes=True)
    print(f"the branch alone: 1..{g.n}-grams ({g.weighting}, scale 1), lr {g.lr or cfg.train.lr}, weight decay "
          f"{g.weight_decay}, batch {cfg.train.batch_size}, {args.steps} timed steps after one untimed; "
          f"{'synthetic IMDB-shaped batches' if data is None else 'the first batches of a training epoch'}")
    if data is not None:
        lengths = data.train.lengths(cfg.data.max_len)
        epoch = BucketBatchSampler(lengths, cfg.train.batch_size, seed=cfg.run.seed).batches()
        indices = [epoch[k % len(epoch)] for k in range(args.steps + 1)]  # round again if the data is small
        labels = [torch.as_tensor(data.train.labels[b]).float() for b in indices]
    for log2 in args.buckets:
        spec = NgramSpec(g.n, 2**log2, g.text == "whole")
        if data is None:
            batches = synthetic_batches(args.steps + 1, cfg.train.batch_size, spec)
        else:
            batches = [(collate_ngrams(data.train, b, spec, cfg.data.max_len, cfg.data.truncate), y)
                       for b, y in zip(indices, labels)]
        rows = np.mean([len(np.unique(b.ids.numpy())) for b, _ in batches])
        seconds = {}
        for sparse in (False, True):
            torch.manual_seed(0)
            branch = NgramBranch(spec, 1, g.weighting, g.norm, g.dropout, sparse=sparse).train()
            settings = {"lr": g.lr or cfg.train.lr, "weight_decay": g.weight_decay}
            opt = build_optimizer([{"params": [branch.bias], **settings},
                                   {"params": [branch.table.weight], **settings, "sparse": sparse}], lr=cfg.train.lr)
            times = []
            for k, (batch, y) in enumerate(batches):
                start = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                F.binary_cross_entropy_with_logits(branch(batch)[:, 0], y).backward()
                opt.step()
                if k:  # the first step allocates Adam's moments
                    times.append(time.perf_counter() - start)
            seconds[sparse] = sum(times) / len(times)
            del branch, opt
        sample = f"{args.steps} steps, {rows:,.0f} distinct n-gram rows per batch on average"
        print(f"  2**{log2} buckets: dense {seconds[False]:.4f} s/step, sparse {seconds[True]:.4f} s/step "
              f"({seconds[False] / seconds[True]:.1f}x; {sample})")
        figures.add(f"optimizer step of the branch alone at 2**{log2} buckets, sparse table (LazyAdam)",
                    seconds[True], "the dense table (Adam)", seconds[False], "s", higher_is_better=False,
                    sample=sample, headline=log2 == max(args.buckets))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--threads", type=int, default=common.usable_cores(), help="torch threads (default: usable cores)")
    ap.add_argument("--batches", type=int, default=24, help="training batches timed, one per length stratum (0: skip)")
    ap.add_argument("--eval-reviews", type=int, default=2000, help="evenly spaced test reviews to score (0: skip)")
    ap.add_argument("--reps", type=int, default=3, help="scoring passes per model, in turns; the fastest counts")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable (e.g. a smaller model for a smoke test)")
    ap.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    ap.add_argument("--buckets", type=lambda s: [int(b) for b in s.split(",")], metavar="B1,B2",
                    help="instead: an optimizer step of the branch alone, dense against sparse, at 2**B buckets")
    ap.add_argument("--steps", type=int, default=20, help="--buckets: optimizer steps timed per table")
    ap.add_argument("--synthetic", action="store_true", help="--buckets: generated IMDB-shaped batches, no data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.buckets:
        common.print_header("== bench_ngrams: what the table's size costs an optimizer step, dense and sparse ==",
                            args.threads)
        figures = common.Figures("bench_ngrams")
        try:
            compare_buckets(args, figures)
        except SentimentError as e:
            sys.exit(f"error: {e}")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        figures.write(args.json)
        return
    common.print_header("== bench_ngrams: the n-gram branch's share of a training step and of scoring ==",
                        args.threads)
    try:
        cfg, plain_cfg, data, with_branch, without = setup(args)
    except SentimentError as e:  # a mistyped --set, a missing data directory: one line, as the CLI says it
        sys.exit(f"error: {e}")
    g = cfg.model.ngrams
    print(f"model: {CONFIG.relative_to(ROOT)}: Bi{cfg.model.rnn.upper()} {cfg.model.hidden_size} + n-grams 1..{g.n} "
          f"in {g.buckets:,} buckets ({g.weighting}, {g.text} text), batch {cfg.train.batch_size}, vocab "
          f"{len(data.vocab):,}; against model.ngrams=null with the same recurrent weights")
    figures = common.Figures("bench_ngrams")
    if args.batches > 0:
        compare_training(args, figures, cfg, plain_cfg, data, with_branch, without)
    if args.eval_reviews > 0:
        compare_scoring(args, figures, cfg, data, with_branch, without)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    figures.write(args.json)


if __name__ == "__main__":
    main()
