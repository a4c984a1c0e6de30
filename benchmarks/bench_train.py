"""Training and evaluation throughput of our loop against the classic recipe's own loop, in one run.

    python benchmarks/bench_train.py --data-dir data [--batches 40] [--eval-reviews 2000] [--threads 2]

The model for every row is the classic recipe, configs/imdb_bilstm.yaml with data.glove_dim=50: 2-layer
BiLSTM 256 over GloVe 50d, final states concatenated (pooling: last), vocab 10k, batch 30, Adam 1e-3.

HEADLINE (training): ours against the classic recipe's own loop over the same length-bucketed batches,
without packing (nn.LSTM on the padded batch: fast, but the padding leaks into the backward direction, so
it is not exact). The two loops take turns batch by batch over the same sampled batches, so a busy moment
of a shared machine hits both alike. Ratio: ours' non-pad tokens/s over the classic loop's, with a 90%
bootstrap interval over the sampled batches.

Secondary rows, labelled as such:
  random   the classic loop over random (not bucketed) batches padded to their longest review
  packed   the classic loop with pack_padded_sequence (exact; its CPU backward is quadratic in length, so
           fewer batches), against ours on the same batches
  denormal the headline pair in two child processes, one flushing denormals and one keeping them,
           stepped in turns on a few of the headline batches, the longest among them (the mode is the
           only difference); per-batch seconds are printed, shortest first

Every sample of batches is drawn across the real length distribution: the batches are sorted by padded
length, cut into N strata of equal count, and the middle batch of each stratum is taken; they run in a
shuffled order. The output names the count and the min/median/max padded length of every sample.

Denormal floats (tiny gradients on long reviews with pooling: last) can slow CPU arithmetic badly, so the
process flushes them to zero from its start (torch.set_flush_denormal(True), before torch starts a thread)
for ours and the baselines alike; --no-flush-denormal keeps them, to show the effect.

Evaluation of evenly spaced test reviews (both labels, the real length mix): the classic loop (no_grad,
batch 30 bucketed, packed as the recipe does it, and unpacked) against ours (sentiment.inference.evaluate.
predict_logits: inference_mode, length-sorted token-budget batches, exact, one single-threaded process per
torch thread). The ratio is against the faster of the two classic loops. Same cores for all.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

ROOT = common.ROOT
CONFIG = ROOT / "configs" / "imdb_bilstm.yaml"


class ClassicLSTM(nn.Module):
    """The tutorial model: Embedding -> Dropout -> nn.LSTM(2 layers, bidirectional) -> cat(h[-2], h[-1]) -> Linear."""

    def __init__(self, vocab: int, dim: int, hidden: int = 256, layers: int = 2, dropout: float = 0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.rnn = nn.LSTM(dim, hidden, num_layers=layers, bidirectional=True, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, pack: bool) -> torch.Tensor:
        x = self.dropout(self.embedding(ids))
        if pack:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(x)
        return self.fc(self.dropout(torch.cat((h[-2], h[-1]), dim=1))).squeeze(1)


class TrainLoop:
    """One training loop (model, Adam), stepped one batch at a time so that loops can be interleaved."""

    def __init__(self, model: nn.Module, split, pack: bool | None = None, lr: float = 1e-3):
        self.model, self.split, self.pack = model, split, pack
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.seconds: dict[int, float] = {}  # batch position -> seconds of its timed step

    def step(self, indices: np.ndarray, key: int | None = None) -> float:
        """Collate, forward, backward, Adam on one batch; timed under `key` unless it is None (warm-up)."""
        self.model.train()
        start = time.perf_counter()
        ids, lengths, labels = collate(self.split, indices)
        logits = self.model(ids, lengths, self.pack) if self.pack is not None else self.model(ids, lengths)
        loss = self.loss_fn(logits, labels.float())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        seconds = time.perf_counter() - start
        if key is not None:
            self.seconds[key] = seconds
        return seconds


# imported after common has put the checkout on sys.path
from sentiment.data.batching import BucketBatchSampler, collate  # noqa: E402
from sentiment.config import load_config  # noqa: E402
from sentiment.inference.evaluate import predict_logits  # noqa: E402
from sentiment.data.prepare import gather_docs, prepare_data  # noqa: E402
from sentiment.training.train import build_model  # noqa: E402


def setup(args):
    """The classic config, its data, the batch lists and the two models (same seed -> same weights in a child)."""
    cfg = load_config(CONFIG, ["data.glove_dim=50", f"data.data_dir={args.data_dir}", *args.overrides])
    try:
        data = prepare_data(cfg.data)
        glove = "GloVe 50d"
    except Exception as e:  # no GloVe file: random embeddings are as fast
        data = prepare_data(cfg.data, with_embeddings=False)
        glove = f"random (GloVe not loaded: {str(e).splitlines()[0][:80]})"
    torch.manual_seed(0)
    m = cfg.model
    classic = ClassicLSTM(len(data.vocab), cfg.data.glove_dim, m.hidden_size, m.num_layers, m.dropout)
    ours = build_model(cfg, len(data.vocab), data.vocab.pad_index)
    if data.embeddings is not None:
        ours.load_embeddings(data.embeddings)
        with torch.no_grad():
            classic.embedding.weight.copy_(ours.embedding.weight)
    lengths = data.train.lengths(cfg.data.max_len)
    bs = cfg.train.batch_size
    bucket = BucketBatchSampler(lengths, bs, seed=cfg.run.seed).batches()  # epoch 1 of a training run
    random = BucketBatchSampler(lengths, bs, seed=cfg.run.seed, bucket=False).batches()
    return cfg, data, glove, classic, ours, lengths, bucket, random


def padded(lengths: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
    return np.array([int(lengths[b].max()) for b in batches])


def real_tokens(lengths: np.ndarray, batches: list[np.ndarray], positions) -> int:
    return int(sum(int(lengths[batches[p]].sum()) for p in positions))


def shuffled(positions: np.ndarray, seed: int = 0) -> list[int]:
    return [int(p) for p in np.random.default_rng(seed).permutation(positions)]


def interleave(loops: list[TrainLoop], batches: list[np.ndarray], positions: list[int], warmup: np.ndarray) -> None:
    """One untimed warm-up step per loop, then each batch on every loop in turn, the order alternating."""
    for loop in loops:
        loop.step(warmup)
    for k, pos in enumerate(positions):
        for loop in (loops if k % 2 == 0 else loops[::-1]):
            loop.step(batches[pos], pos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--threads", type=int, default=common.usable_cores(), help="torch threads (default: usable cores)")
    ap.add_argument("--batches", type=int, default=40, help="HEADLINE sample: bucketed batches, one per length stratum")
    ap.add_argument("--random-batches", type=int, default=12, help="random-batch row sample (0: skip)")
    ap.add_argument("--packed-batches", type=int, default=6,
                    help="packed row: this many of the headline batches, spread over their lengths (0: skip)")
    ap.add_argument("--denormal-batches", type=int, default=4,
                    help="flush_denormal on/off row: this many of the headline batches (one per stratum, the "
                    "longest always among them), two child processes (0: skip)")
    ap.add_argument("--eval-reviews", type=int, default=2000, help="evenly spaced test reviews to score (0: skip)")
    ap.add_argument("--no-flush-denormal", action="store_true",
                    help="keep denormal floats (torch's default) instead of flushing them to zero")
    ap.add_argument("--eval-only", action="store_true", help="skip the training comparison")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable (e.g. a smaller model for a smoke test: the figures are for the "
                    "classic recipe as configured)")
    ap.add_argument("--json", help="also write the figures to this file (for benchmarks/bench.py)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the denormal row's child processes
    args = ap.parse_args()

    # first, before anything can start torch's thread pool: the pool's threads copy this thread's mode
    flush_note = common.set_flush_denormal(not args.no_flush_denormal)
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)

    common.print_header("== bench_train: training and evaluation throughput, classic-recipe model ==",
                          args.threads)
    print(f"  {flush_note}")
    cfg, data, glove, classic, ours, lengths, bucket, random = setup(args)
    figures = common.Figures("bench_train")
    m = cfg.model
    print(f"model: {CONFIG.relative_to(ROOT)} with data.glove_dim=50: {m.num_layers}-layer Bi{m.rnn.upper()} "
          f"{m.hidden_size}, pooling {m.pooling}, batch {cfg.train.batch_size}, vocab {len(data.vocab):,}, "
          f"embeddings {glove}; the classic loop's model has the same sizes and embeddings")
    if not args.eval_only and args.batches > 0:
        compare_training(args, figures, classic, ours, data.train, lengths, bucket, random)
    if args.eval_reviews > 0:
        compare_evaluation(args, figures, classic, ours, data.test)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    figures.write(args.json)


def compare_training(args, figures, classic, ours, train, lengths, bucket, random) -> None:
    pad_b, pad_r = padded(lengths, bucket), padded(lengths, random)
    print(f"train split: {len(train):,} reviews -> {len(bucket)} bucketed batches (padded length "
          f"{common.describe(pad_b)}), {len(random)} random batches (padded length {common.describe(pad_r)})")
    print("training: collate + forward + backward + Adam per batch, non-pad tokens/s; one untimed warm-up step "
          "per loop on the sample's median batch first")

    head = common.stratified(pad_b, args.batches)  # positions into bucket, shortest first
    warm = bucket[int(head[len(head) // 2])]
    order = shuffled(head)
    tokens = real_tokens(lengths, bucket, head)
    print(f"\nHEADLINE  ours vs the classic recipe's loop: the same bucketed batches, no packing, interleaved "
          f"batch by batch")
    print(f"  sample: {len(head)} of {len(bucket)} bucketed batches, one from the middle of each length stratum; "
          f"padded length {common.describe(pad_b[head])}; {tokens:,} non-pad tokens")
    plain = TrainLoop(copy.deepcopy(classic), train, pack=False)
    mine = TrainLoop(copy.deepcopy(ours), train)
    interleave([plain, mine], bucket, order, warm)
    s_plain = np.array([plain.seconds[p] for p in head])
    s_ours = np.array([mine.seconds[p] for p in head])
    tps_plain, tps_ours = tokens / s_plain.sum(), tokens / s_ours.sum()
    epoch = len(bucket) / len(head)

    def row(name: str, tps: float, seconds: float, est: float | None = None) -> None:
        extra = f"; epoch of {len(bucket)} batches est. {est:,.0f} s" if est is not None else ""
        print(f"    {name:<58} {tps:>8,.0f} tokens/s  ({seconds:.1f} s timed{extra})")

    row("classic loop (nn.LSTM, bucketed, no packing, not exact)", tps_plain, s_plain.sum(), s_plain.sum() * epoch)
    row("ours (SentimentRNN, bucketed, exact)", tps_ours, s_ours.sum(), s_ours.sum() * epoch)
    lo, hi = common.bootstrap_ratio(s_plain, s_ours)
    ratio = figures.add("training, classic model: ours vs the classic loop (bucketed, no packing)", tps_ours,
                        "classic loop, bucketed, no packing", tps_plain, "tokens/s", headline=True,
                        sample=f"{len(head)} bucketed batches, padded length {common.describe(pad_b[head])}")
    print(f"  speed-up ours / classic loop = {ratio:.2f}x  (90% bootstrap interval over the {len(head)} batches: "
          f"{lo:.2f}-{hi:.2f}x)")
    third = max(1, len(head) // 3)
    for name, part in (("shortest third", head[:third]), ("longest third", head[-third:])):
        r = sum(plain.seconds[p] for p in part) / sum(mine.seconds[p] for p in part)
        print(f"    {name} of the sample (padded length {int(pad_b[part].min()):,}-{int(pad_b[part].max()):,}): {r:.2f}x")

    print("\nsecondary rows (labelled; not the headline)")
    if args.random_batches > 0:
        rpos = common.stratified(pad_r, args.random_batches)
        rtok = real_tokens(lengths, random, rpos)
        loop = TrainLoop(copy.deepcopy(classic), train, pack=False)
        loop.step(random[int(rpos[0])])  # warm-up on the shortest
        for p in shuffled(rpos):
            loop.step(random[p], p)
        secs = sum(loop.seconds.values())
        tps = rtok / secs
        print(f"  [random] classic loop over RANDOM batches padded to their longest review, no packing")
        print(f"    sample: {len(rpos)} of {len(random)} random batches, one per length stratum; padded length "
              f"{common.describe(pad_r[rpos])}")
        row("classic loop, random batches", tps, secs, secs * len(random) / len(rpos))
        r = figures.add("training, classic model: ours vs the classic loop over random padded batches (secondary)",
                        tps_ours, "classic loop, random batches, no packing", tps, "tokens/s",
                        sample=f"{len(rpos)} random batches, padded length {common.describe(pad_r[rpos])}")
        print(f"    ours (headline sample) / random-batch loop = {r:.2f}x")
    sub = head[common.stratified(pad_b[head], args.packed_batches)] if args.packed_batches > 0 else []
    if len(sub):
        loop = TrainLoop(copy.deepcopy(classic), train, pack=True)
        loop.step(bucket[int(head[0])])  # warm-up on the shortest batch of the sample (a packed step is slow)
        for p in shuffled(sub):
            loop.step(bucket[p], p)
        ptok = real_tokens(lengths, bucket, sub)
        s_packed = sum(loop.seconds[p] for p in sub)
        s_mine = sum(mine.seconds[p] for p in sub)
        print(f"  [packed] classic loop with pack_padded_sequence (exact), on {len(sub)} of the headline batches, "
              f"padded length {common.describe(pad_b[sub])}")
        row("classic loop, bucketed, packed", ptok / s_packed, s_packed)
        row("ours on the same batches (from the headline run)", ptok / s_mine, s_mine)
        r = figures.add("training, classic model: ours vs the packed classic loop (secondary)", ptok / s_mine,
                        "classic loop, bucketed, packed", ptok / s_packed, "tokens/s",
                        sample=f"{len(sub)} bucketed batches, padded length {common.describe(pad_b[sub])}")
        print(f"    ours / packed loop = {r:.2f}x on the same batches")
    sub = head[common.stratified(pad_b[head], args.denormal_batches - 1)] if args.denormal_batches > 1 else head[:0]
    if args.denormal_batches > 0:  # and the sample's longest batch, where denormals would show first
        sub = np.unique(np.append(sub, head[-1]))
        sub = sub[np.argsort(pad_b[sub], kind="stable")]
        denormal_row(args, figures, sub, lengths, bucket, pad_b)


def denormal_row(args, figures, positions, lengths, bucket, pad_b) -> None:
    """The headline pair in two child processes, one flushing denormals and one keeping them (the mode cannot
    be changed for threads that already exist), stepped batch by batch in turns: only one runs at a time,
    both start from the same weights and see the same batches, so the mode is the only difference."""
    def start(flush: bool) -> subprocess.Popen:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--data-dir", args.data_dir,
               "--threads", str(args.threads), "--child"] + ([] if flush else ["--no-flush-denormal"]) \
            + [a for o in args.overrides for a in ("--set", o)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if proc.stdout.readline().strip() != "ready":  # set up one after the other, not at once
            raise RuntimeError(f"the flush={flush} child did not start")
        return proc

    def ask(proc: subprocess.Popen, line: str) -> str:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return proc.stdout.readline()

    print(f"  [denormal] the headline pair in two child processes, flush_denormal ON in one and OFF in the other, "
          f"stepped in turns on {len(positions)} of the headline batches (one per stratum and the longest), padded "
          f"length {common.describe(pad_b[positions])}")
    procs = {}
    try:
        for mode in ("on", "off"):
            procs[mode] = start(mode == "on")
        warm = min(positions, key=lambda p: pad_b[p])
        for proc in procs.values():
            ask(proc, f"warm {int(warm)}")
        seconds = {"on": [], "off": []}
        for k, p in enumerate(shuffled(np.asarray(positions), seed=1)):  # the order used below too
            for mode in (("on", "off") if k % 2 == 0 else ("off", "on")):
                seconds[mode].append(json.loads(ask(procs[mode], str(p))))
    except (RuntimeError, OSError, ValueError) as e:
        print(f"    skipped: {e}")
        return
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    tok = real_tokens(lengths, bucket, positions)
    order = shuffled(np.asarray(positions), seed=1)
    for p in positions:  # per batch, shortest first: a length-dependent effect shows here
        k = order.index(int(p))
        on, off = seconds["on"][k], seconds["off"][k]
        print(f"    padded length {int(pad_b[p]):>5,}: flush on / off seconds  classic loop {on['plain']:.2f} / "
              f"{off['plain']:.2f}, ours {on['ours']:.2f} / {off['ours']:.2f}")
    for name, key in (("classic loop", "plain"), ("ours", "ours")):
        on, off = (sum(r[key] for r in seconds[m]) for m in ("on", "off"))
        print(f"    {name:<14} flush on {tok / on:>8,.0f} tokens/s ({on:.1f} s); flush off {tok / off:>8,.0f} tokens/s "
              f"({off:.1f} s): flushing is {off / on:.2f}x the speed of keeping denormals")
        figures.add(f"training, {name}: flush_denormal on vs off (secondary)", tok / on,
                    "same loop, denormals kept", tok / off, "tokens/s",
                    sample=f"{len(positions)} bucketed batches, padded length {common.describe(pad_b[positions])}")


def child(args) -> None:
    """The denormal row's child: ours and the classic loop, stepped on the batch positions read from stdin."""
    _, data, _, classic, ours, _, bucket, _ = setup(args)
    plain, mine = TrainLoop(classic, data.train, pack=False), TrainLoop(ours, data.train)
    print("ready", flush=True)
    for k, line in enumerate(sys.stdin):
        word = line.split()
        if word[0] == "warm":
            plain.step(bucket[int(word[1])])
            mine.step(bucket[int(word[1])])
            print("{}", flush=True)
            continue
        batch = bucket[int(word[0])]
        out = {}
        for name, loop in ((("plain", plain), ("ours", mine)) if k % 2 else (("ours", mine), ("plain", plain))):
            out[name] = loop.step(batch)
        print(json.dumps(out), flush=True)


@torch.no_grad()
def classic_eval(model: ClassicLSTM, split, pack: bool, batch_size: int = 30) -> float:
    model.eval()
    start = time.perf_counter()
    for idx in BucketBatchSampler(split.lengths(), batch_size, seed=0):
        ids, lengths, _ = collate(split, idx)
        model(ids, lengths, pack)
    return time.perf_counter() - start


def compare_evaluation(args, figures, classic, ours, test) -> None:
    # an evenly spaced subset keeps the length distribution (and both labels) of the whole test set
    keep = np.unique(np.linspace(0, len(test) - 1, min(args.eval_reviews, len(test))).astype(np.int64))
    ids, offsets = gather_docs(test.ids, test.offsets, keep)
    subset = type(test)(ids=ids, offsets=offsets, labels=test.labels[keep])
    tokens = common.n_tokens(subset)
    print(f"\nevaluation (scoring only, whole reviews): {len(subset):,} evenly spaced test reviews "
          f"({int(subset.labels.sum()):,} positive), {tokens:,} tokens, length {common.describe(subset.lengths())}; "
          f"each loop first scores the 30 shortest, untimed")
    short = np.argsort(subset.lengths(), kind="stable")[:30]
    ids, offsets = gather_docs(subset.ids, subset.offsets, short)
    warm = type(test)(ids=ids, offsets=offsets, labels=subset.labels[short])
    classic_eval(classic, warm, True)
    classic_eval(classic, warm, False)
    predict_logits(ours, warm, batch_size=256)
    times = {
        "classic loop (no_grad, batch 30 bucketed, packed)": classic_eval(classic, subset, True),
        "classic loop (no_grad, batch 30 bucketed, no packing)": classic_eval(classic, subset, False),
    }
    start = time.perf_counter()
    predict_logits(ours, subset, batch_size=256)
    t_ours = time.perf_counter() - start
    for name, t in times.items():
        print(f"    {name:<62} {t:7.1f} s  {tokens / t:>8,.0f} tokens/s")
    print(f"    {'ours (inference_mode, token-budget batches, exact, 1 process per thread)':<62} {t_ours:7.1f} s  "
          f"{tokens / t_ours:>8,.0f} tokens/s")
    best = min(times, key=times.get)
    r = figures.add("evaluation, classic model: ours vs the faster classic loop", tokens / t_ours, best,
                    tokens / times[best], "tokens/s", headline=True,
                    sample=f"{len(subset):,} test reviews, length {common.describe(subset.lengths())} tokens")
    print(f"  speed-up ours / faster classic loop ({best.split('bucketed, ')[-1].rstrip(')')}) = {r:.2f}x")


if __name__ == "__main__":
    main()
