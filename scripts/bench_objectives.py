"""What each training objective costs: seconds per step with AT, VAT, entropy minimisation and all of them,
against a plain supervised step, in one run.

    .venv/bin/python scripts/bench_objectives.py [--config configs/imdb_cpu_semisup.yaml] [--batches 12] [--threads 2]
        [--set KEY=VALUE ...]

Every row trains the config's model from the same initial weights over the same labeled batches (a
length-stratified sample of the first epoch's bucketed batches, so every row pays for the same lengths) with
the same optimizer step; rows that read unlabeled texts take the same unlabeled batches (the config's
unlabeled_batch_size and unlabeled_max_len). The variants take turns batch by batch, so a busy moment of the
machine hits them alike. Ratio: a row's median seconds per step over the plain row's. The plain row is the
loop's own path with no objective section (supervised_objective, one forward and one backward). It also
projects an epoch: a row's mean seconds per step over the sample (its strata are equal parts of the epoch's
batches by padded length) times the epoch's batch count, for configs too slow to time a whole epoch here.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import benchlib
import numpy as np

ROOT = benchlib.ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "imdb_cpu_semisup.yaml")
    parser.add_argument("--batches", type=int, default=12, help="labeled batches per variant (length-stratified)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="IMDB (with train/unsup) and GloVe (default: the config's)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here (for scripts/bench.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (as `sentiment train --set`)")
    args = parser.parse_args()
    benchlib.set_flush_denormal(True)
    import torch

    from sentiment.data.batching import BucketBatchSampler, UnlabeledStream, collate
    from sentiment.config import load_config
    from sentiment.model import build_model
    from sentiment.training.objectives import Batch, ExtraObjectives
    from sentiment.data.prepare import prepare_data
    from sentiment.training.train import supervised_objective

    torch.set_num_threads(args.threads)
    benchlib.print_header("== bench_objectives: seconds per training step, each objective against a plain step ==",
                          args.threads)
    from sentiment.errors import SentimentError

    try:  # a mistyped --set key: one line, as `sentiment train` gives it, not a traceback
        cfg = load_config(args.config, [*args.overrides, *([f"data.data_dir={args.data_dir}"] if args.data_dir else [])])
    except SentimentError as error:
        raise SystemExit(f"error: {error}") from None
    data = prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    if data.unlabeled is None:
        raise SystemExit(f"{args.config} sets no data.unlabeled: the VAT and entropy rows need unlabeled texts")
    t = cfg.train
    sampler = BucketBatchSampler(data.train.lengths(cfg.data.max_len), t.batch_size, seed=cfg.run.seed)
    all_batches = sampler.batches()
    padded = np.array([int(data.train.lengths(cfg.data.max_len)[b].max()) for b in all_batches])
    chosen = [all_batches[i] for i in benchlib.stratified(padded, args.batches)]
    stream = UnlabeledStream(data.unlabeled.lengths(t.unlabeled_max_len or cfg.data.max_len), t.unlabeled_batch_size,
                             seed=cfg.run.seed)
    unlabeled = [stream.next() for _ in chosen]
    u_len = t.unlabeled_max_len or cfg.data.max_len
    labeled_batches = [collate(data.train, b, cfg.data.max_len, cfg.data.truncate, data.vocab.pad_index) for b in chosen]
    unlabeled_batches = [collate(data.unlabeled, b, u_len, cfg.data.truncate, data.vocab.pad_index)[:2]
                         for b in unlabeled]

    base = build_model(cfg, len(data.vocab), data.vocab.pad_index, data.label_space.num_outputs)
    base.load_embeddings(data.embeddings)
    if cfg.model.normalize_embeddings:
        base.set_word_frequencies(data.vocab.counts)
    full = copy.deepcopy(t)
    sections = {"adversarial": full.adversarial, "virtual_adversarial": full.virtual_adversarial,
                "entropy_minimization": full.entropy_minimization}
    if any(v is None for v in sections.values()):
        raise SystemExit(f"{args.config} must name all three objectives (their settings are the rows' settings)")
    variants = {"plain (supervised only)": {}, "+ adversarial": {"adversarial": sections["adversarial"]},
                "+ virtual adversarial (unlabeled)": {"virtual_adversarial": sections["virtual_adversarial"]},
                "+ entropy minimisation (unlabeled)": {"entropy_minimization": sections["entropy_minimization"]},
                "all three": sections}

    runners = {}
    for name, on in variants.items():
        model = copy.deepcopy(base)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
        tc = copy.deepcopy(t)
        tc.adversarial, tc.virtual_adversarial, tc.entropy_minimization = (on.get(k) for k in sections)
        extras = ExtraObjectives(tc, data.label_space, has_unlabeled=True) if on else None
        runners[name] = (model, optimizer, extras)
    plain = supervised_objective(data.label_space)

    def step(name: str, i: int) -> float:
        model, optimizer, extras = runners[name]
        ids, lengths, labels = labeled_batches[i]
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if extras is None:
            loss, _ = plain(model, Batch(ids, lengths, labels))
            loss.backward()
        else:
            u_ids, u_lengths = unlabeled_batches[i]
            extras.step(model, Batch(ids, lengths, labels), Batch(u_ids, u_lengths),
                        lambda loss, retain_graph=False: loss.backward(retain_graph=retain_graph))
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or 1e9)
        optimizer.step()
        return time.perf_counter() - started

    for name in runners:  # warm-up: first-call allocations
        step(name, 0)
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(len(chosen)):
        for name in runners:  # in turns, batch by batch
            seconds[name].append(step(name, i))
    lengths_desc = benchlib.describe(padded[benchlib.stratified(padded, args.batches)])
    print(f"{len(chosen)} labeled batches of {t.batch_size} (padded lengths {lengths_desc}), each with an unlabeled "
          f"batch of {t.unlabeled_batch_size} read to {u_len} tokens; {args.threads} thread(s)")
    base_median = statistics.median(seconds["plain (supervised only)"])
    print(f"{'variant':<38} {'median s/step':>14} {'x plain':>8} {'epoch (projected)':>18}")
    rows = {}
    for name, values in seconds.items():
        median = statistics.median(values)
        epoch_seconds = statistics.fmean(values) * len(all_batches)
        rows[name] = {"median_seconds": median, "ratio": median / base_median}
        print(f"{name:<38} {median:>14.3f} {median / base_median:>7.2f}x {epoch_seconds / 60:>14,.1f} min")
    print(f"an epoch is {len(all_batches)} labeled batches; the projection is the mean step over the sample times that")
    if args.json:  # scripts/bench.py's summary: ratio = how many times faster than the baseline (< 1: slower)
        sample = f"{len(chosen)} labeled batches (padded {lengths_desc}) + unlabeled batches of {t.unlabeled_batch_size}"
        out = [{"figure": f"seconds per training step {name} (1 / ratio = plain steps it costs)", "unit": "s",
                "ours": row["median_seconds"], "baseline": base_median, "baseline_name": "plain supervised step",
                "ratio": base_median / row["median_seconds"], "headline": name == "all three", "sample": sample}
               for name, row in rows.items() if not name.startswith("plain")]
        args.json.write_text(json.dumps({"rows": out, "notes": []}, indent=2))


if __name__ == "__main__":
    main()
