"""Training a classifier: config in, run directory out. The task built on the training engine (engine.py): it
prepares the data and the model, and gives the engine a stream of length-bucketed labeled batches (with
unlabeled ones beside them when an objective reads them), the supervised objective (or AT/VAT/entropy
minimisation composed on it), and validation accuracy as the score that picks best.pt.

Everything a resumed run needs is in last.pt: model, optimizer, scheduler, early-stopping state, the
position inside the epoch (data order is a function of seed and epoch) and every RNG, so on CPU an
interrupted-and-resumed run ends bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from sentiment.atomic import atomic_write_text
from sentiment.config import Config
from sentiment.data.batching import BucketBatchSampler, UnlabeledStream, collate
from sentiment.data.prepare import PreparedData, prepare_data
from sentiment.device import resolve_device
from sentiment.distributed import Rank, broadcast, broadcast_weights, rank_device, sparse_gradients_supported
from sentiment.distributed import init as init_distributed
from sentiment.errors import SentimentError
from sentiment.floats import flush_denormals
from sentiment.inference.evaluate import Metrics, evaluate, predict_logits
from sentiment.model import build_model
from sentiment.ngrams import branch_tokens, init_statistics, ngram_inputs, resolve_branch
from sentiment.ngrams import parameter_groups as ngram_groups
from sentiment.data.labels import LabelSpace
from sentiment.runs import (BEST, LAST, RESULTS, check_membership, code_version, load_checkpoint, load_labels,
                            read_metrics, write_run_files)
from sentiment.runs import check_data_fingerprints, write_data_fingerprints
from sentiment.training.engine import (Engine, EngineSettings, LoopState, Reporter, StopFlag,  # noqa: F401
                                       TrainingDiverged, TrainingInterrupted, graceful_stop, rng_state, schedule,
                                       seed_everything, set_rng_state)
from sentiment.training.mixture import fit_mixture
from sentiment.training.objectives import COLUMNS, Batch, ExtraObjectives, Supervised
from sentiment.training.resume import check_resume_config
from sentiment.training.tensorboard import tensorboard_enabled, tensorboard_log
from sentiment.runstatus import recording_status
from sentiment.training.transfer import (apply_gradual_unfreeze, ignored_keys_note, load_encoder, parameter_groups,
                                         prepare_training_data, write_trained_texts)


def lr_factor(cfg: Config, total_steps: int):
    """The learning-rate factor of each optimizer step, as train.warmup_steps and train.lr_schedule say."""
    return schedule(cfg.train.warmup_steps, cfg.train.lr_schedule, total_steps)


def engine_settings(cfg: Config) -> EngineSettings:
    t = cfg.train
    return EngineSettings(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay,
                          lr_schedule=t.lr_schedule, warmup_steps=t.warmup_steps, grad_accum=t.grad_accum,
                          grad_clip=t.grad_clip, amp=t.amp, lazy_sync=t.lazy_sync,
                          early_stopping_patience=t.early_stopping_patience,
                          checkpoint_minutes=cfg.run.checkpoint_minutes)


def supervised_objective(space: LabelSpace, weights: torch.Tensor | None = None, per_part: bool = False) -> Supervised:
    """The plain loop's objective: (model, batch) -> (mean loss, {"correct": rows predicted right}); per_part: each
    part of a model.combine mixture on its own loss."""
    return Supervised(space, weights, per_part)


def class_weights(cfg: Config, data: PreparedData, device: torch.device) -> torch.Tensor | None:
    """train.class_weights: balanced gives each class the weight n / (K * n_class) of the training split."""
    if cfg.train.class_weights is None:
        return None
    weights = data.label_space.balanced_weights(data.train.labels.astype(np.int64))
    return torch.tensor(weights, dtype=torch.float32, device=device)


class LabeledStream:
    """The classifier's batches: this rank's share of each epoch's length-bucketed batches, collated onto the device,
    each with a batch of the unlabeled texts beside it when an objective reads them (that stream's place is kept in
    LoopState.unlabeled_epoch/_step)."""

    def __init__(self, cfg: Config, data: PreparedData, rank: Rank, device: torch.device, unlabeled: bool,
                 model: nn.Module) -> None:
        self.cfg, self.data, self.rank, self.device, self.wants_unlabeled = cfg, data, rank, device, unlabeled
        self.model = model  # asked only which n-gram inputs it reads (sentiment.ngrams.ngram_inputs)
        self.sampler = BucketBatchSampler(data.train.lengths(cfg.data.max_len), cfg.train.batch_size,
                                          seed=cfg.run.seed, bucket=cfg.train.bucket, num_replicas=rank.world_size,
                                          rank=rank.rank)
        self.batches: list[np.ndarray] = []
        self.unlabeled: UnlabeledStream | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> int:
        self.sampler.set_epoch(epoch)
        self.batches = self.sampler.batches()
        # under DDP each row weighs the same whichever rank reads it (DDP alone averages the ranks' batch means)
        self.weights = (self.rank.world_size * np.array([len(b) for b in self.batches]) / self.sampler.step_rows()
                        if self.rank.distributed else None)
        return len(self.batches)

    def _to_device(self, ids: torch.Tensor, labels: torch.Tensor | None = None):
        # lengths stay on the CPU: the model checks them there and packing needs them there
        if self.device.type == "cuda":  # pinned: the copies below really are asynchronous
            ids, labels = ids.pin_memory(), labels.pin_memory() if labels is not None else None
        return (ids.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True) if labels is not None else None)

    def batch(self, i: int) -> Batch:
        d, cfg = self.data, self.cfg
        ids, lengths, labels = collate(d.train, self.batches[i], cfg.data.max_len, cfg.data.truncate,
                                       d.vocab.pad_index)
        ngrams = ngram_inputs(self.model, d.train, self.batches[i], cfg.data.max_len, cfg.data.truncate,
                              self.device).get("ngrams")
        ids, labels = self._to_device(ids, labels)
        batch = Batch(ids, lengths, labels, ngrams=ngrams,
                      weight=float(self.weights[i]) if self.weights is not None else 1.0)
        if self.unlabeled is not None:
            u_len = cfg.train.unlabeled_max_len or cfg.data.max_len
            u_indices = self.unlabeled.next()
            u_ids, u_lengths, _ = collate(d.unlabeled, u_indices, u_len, cfg.data.truncate, d.vocab.pad_index)
            u_ngrams = ngram_inputs(self.model, d.unlabeled, u_indices, u_len, cfg.data.truncate,
                                    self.device).get("ngrams")
            batch.unlabeled = Batch(self._to_device(u_ids)[0], u_lengths, ngrams=u_ngrams)
        return batch

    def restore(self, state: LoopState) -> None:
        if not self.wants_unlabeled:
            return
        t = self.cfg.train
        self.unlabeled = UnlabeledStream(self.data.unlabeled.lengths(t.unlabeled_max_len or self.cfg.data.max_len),
                                         t.unlabeled_batch_size, seed=self.cfg.run.seed,
                                         num_replicas=self.rank.world_size, rank=self.rank.rank,
                                         epoch=state.unlabeled_epoch, step=state.unlabeled_step)
        if len(self.unlabeled) == 0:
            raise SentimentError(f"{len(self.data.unlabeled):,} unlabeled texts make fewer batches of "
                                 f"{t.unlabeled_batch_size} than there are processes ({self.rank.world_size}): lower "
                                 "train.unlabeled_batch_size")

    def record(self, state: LoopState) -> None:
        if self.unlabeled is not None:
            state.unlabeled_epoch, state.unlabeled_step = self.unlabeled.epoch, self.unlabeled.step


def _objective(cfg: Config, data: PreparedData, rank: Rank, reporter: Reporter | None,
               weights: torch.Tensor | None) -> tuple[Any, bool]:
    """The objective a config names (the supervised loss, or the extra objectives composed on it), and whether it
    reads a batch of unlabeled texts beside each labeled one."""
    t = cfg.train
    has_unlabeled = data.unlabeled is not None and len(data.unlabeled) > 0
    note = getattr(reporter, "note", None) if rank.is_main else None
    if has_unlabeled and not t.uses_unlabeled() and note:
        note(f"data.unlabeled: its {len(data.unlabeled):,} texts count in the vocabulary only; "
             "train.virtual_adversarial or train.entropy_minimization would train on them")
    if not t.has_extra_objectives():
        two_parts = cfg.model.rnn != "none" and cfg.model.ngrams is not None
        return supervised_objective(data.label_space, weights, per_part=two_parts and cfg.model.combine == "mixture"), False
    objectives = ExtraObjectives(t, data.label_space, weights, has_unlabeled=has_unlabeled)
    if t.uses_unlabeled() and not has_unlabeled and note:
        named = [n for n in ("virtual_adversarial", "entropy_minimization") if getattr(t, n) is not None]
        note(f"train.{' and train.'.join(named)} run on the labeled batches: this data has no unlabeled texts "
             "(set data.unlabeled)")
    return objectives, objectives.wants_unlabeled_batch


def _embeddings_trainable(cfg: Config, epoch: int) -> bool:
    m = cfg.model
    return not m.freeze_embeddings or (m.unfreeze_after is not None and epoch >= m.unfreeze_after)


def _data_and_checkpoint(cfg: Config, run_dir: Path, data: PreparedData | None, resume: bool,
                         rank: Rank) -> tuple[PreparedData, dict[str, Any] | None]:
    """A new run: its data, and the run files written. A resumed one: the run's own vocab and labels, its last.pt,
    and data whose splits are the ones it was trained on."""
    if not resume:
        data = data or prepare_training_data(cfg)
        resolve_branch(cfg, data.label_space.num_classes, branch_tokens(data))  # stored below: the run keeps its choice
        if rank.is_main:
            write_run_files(run_dir, cfg, data.vocab, data.label_space, data.membership)
            write_data_fingerprints(run_dir, data.fingerprints)
            write_trained_texts(run_dir, data)  # a fine-tune from this run must not hold them out
        return data, None
    from sentiment.runs import load_run

    saved, vocab = load_run(run_dir)
    space = load_labels(run_dir)
    for stray in run_dir.glob(".*.tmp"):  # a write cut short by kill -9: never loaded, only disk space
        stray.unlink(missing_ok=True)
    checkpoint = load_checkpoint(run_dir / LAST, vocab)
    check_resume_config(run_dir, saved, cfg, checkpoint)
    data = data or prepare_data(cfg.data, vocab, label_space=space, token_hashes=cfg.model.ngrams is not None)
    check_data_fingerprints(run_dir, data.fingerprints)  # the file named, before the rows are compared
    check_membership(run_dir, data.membership)
    return data, checkpoint


def optimizer_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the n-gram branch, if any, in a group of its own (model.ngrams.lr and
    weight_decay); the rest at train.lr, or with train.layer_lr_decay at discriminative rates per layer."""
    groups = ngram_groups(model, cfg)
    if not cfg.train.layer_lr_decay:
        return groups
    branch = [g for g in groups if "weight_decay" in g]
    in_branch = {id(p) for g in branch for p in g["params"]}
    layered = [{**g, "params": [p for p in g["params"] if id(p) not in in_branch]}
               for g in parameter_groups(model, cfg.train.lr, cfg.train.layer_lr_decay)]
    return [g for g in layered if g["params"]] + branch


def _model(cfg: Config, data: PreparedData, device: torch.device, fresh: bool) -> nn.Module:
    model = build_model(cfg, len(data.vocab), data.vocab.pad_index, data.label_space.num_outputs)
    if data.embeddings is not None:
        model.load_embeddings(data.embeddings)
    if cfg.model.normalize_embeddings and fresh:
        model.set_word_frequencies(data.vocab.counts)
    if fresh:  # the n-gram branch's weighting, from the training rows (a resumed run loads it)
        init_statistics(model, cfg, data.train, data.label_space.num_classes)
    return model.to(device)


def train(cfg: Config, run_dir: Path, *, data: PreparedData | None = None, resume: bool = False,
          reporter: Reporter | None = None, stop: StopFlag | None = None, rank: Rank | None = None,
          saved: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Train as `cfg` says into `run_dir` (created by the caller, by the main rank under torchrun). Returns the
    final results. saved(path): called on the main rank after each checkpoint is written. Under torchrun (`rank`: from distributed.from_env()) the model is wrapped in
    DistributedDataParallel, each rank steps over its own share of every epoch's batches, and only the main
    rank writes. resume: continue from run_dir's last.pt, refusing a config that changes the model or its training."""
    run_dir = Path(run_dir)
    rank = rank or Rank()
    code_version()  # the commit as training starts: results.json records it, whatever is committed meanwhile
    tensorboard_enabled(cfg.run.tensorboard)  # true without the package: refused before any work
    flush_denormals(cfg.run.flush_denormal)  # effective on torch's threads if nothing computed before us
    if cfg.run.threads or rank.distributed:
        torch.set_num_threads(cfg.run.threads or 1)  # ranks share the cores: one thread each unless told
    device = rank_device(rank, resolve_device(cfg.run.device))
    init_distributed(rank, device)
    seed_everything(cfg.run.seed)
    data, checkpoint = _data_and_checkpoint(cfg, run_dir, data, resume, rank)
    model = _model(cfg, data, device, fresh=checkpoint is None)
    if checkpoint is None and cfg.model.init_from:  # the encoder from a pretrained run, a new head
        load_encoder(model, Path(cfg.model.init_from), data.vocab)
        note = ignored_keys_note(cfg)
        if note and reporter and rank.is_main:
            reporter.note(note)
    dense_table_where_needed(model, rank, reporter)
    weights = class_weights(cfg, data, device)
    objective, reads_unlabeled = _objective(cfg, data, rank, reporter, weights)
    stream = LabeledStream(cfg, data, rank, device, reads_unlabeled, model)
    if len(stream) == 0:
        raise SentimentError(f"{len(data.train):,} training rows make fewer batches of {cfg.train.batch_size} than "
                             f"there are processes ({rank.world_size}): lower train.batch_size or the process count")

    def validate(net: nn.Module) -> tuple[dict[str, Any], float]:
        # In this process (workers=1): a SIGTERM to the whole process group would kill scoring workers and fail
        # the epoch, where the loop itself stops cleanly after the step. Forking saves ~1 s per epoch.
        row: dict[str, Any] = {}
        if getattr(net, "combine", "sum") == "mixture":  # before scoring: the whole is the mixture fit now
            row["mixture"] = fit_valid_mixture(net, cfg, data, device, rank)
        valid = evaluate(net, data.valid, data.label_space, batch_size=cfg.train.eval_batch_size, device=device,
                         max_len=cfg.data.eval_max_len, truncate=cfg.data.truncate, workers=1, rank=rank, parts=True)
        row.update({f"valid_{name}_accuracy": m["accuracy"] for name, m in (valid.parts or {}).items()})
        return {"valid_loss": valid.loss, "valid_accuracy": valid.accuracy, "valid_macro_f1": valid.macro_f1,
                "valid_seconds": valid.seconds, **row}, valid.accuracy

    def unfreeze(epoch: int) -> None:
        if cfg.model.gradual_unfreeze:
            return apply_gradual_unfreeze(model, epoch, cfg.model.unfreeze_after, cfg.model.freeze_embeddings)
        trainable = _embeddings_trainable(cfg, epoch)
        if model.has_rnn and trainable != model.embedding_trainable:
            model.set_embedding_trainable(trainable)

    with recording_status(run_dir, rank.is_main), \
            tensorboard_log(cfg, run_dir, reporter, main=rank.is_main, checkpoint=checkpoint) as log:
        engine = Engine(model, stream, objective, validate, engine_settings(cfg), run_dir, rank=rank, device=device,
                        seed=cfg.run.seed, reporter=log.reporter, stop=stop, checkpoint=checkpoint,
                        before_epoch=unfreeze, extra_state=lambda: {"vocab": data.vocab.itos, "config": cfg.to_dict()},
                        param_groups=optimizer_groups(model, cfg), saved=saved)
        engine.run()
        results = finish(cfg, run_dir, data, device, rank)
        log.hparams(cfg, results)
    return results


def dense_table_where_needed(model: nn.Module, rank: Rank, reporter: Reporter | None) -> None:
    """model.ngrams.sparse under a process group that cannot all-reduce sparse gradients (NCCL): the table trains
    with the dense update (before DDP wraps it and the optimizer is built), and the user is told once."""
    table = getattr(getattr(model, "ngrams", None), "table", None)
    if table is None or not table.sparse or sparse_gradients_supported(rank):
        return
    table.sparse = False
    if reporter and rank.is_main:
        reporter.note("model.ngrams.sparse: this process group (NCCL) cannot all-reduce sparse gradients, so the "
                      "n-gram table trains with a dense Adam update of every row")


def fit_valid_mixture(model: nn.Module, cfg: Config, data: PreparedData, device: torch.device,
                      rank: Rank) -> list[float]:
    """Fit a model.combine mixture's weights and bias on the validation split (sentiment.training.mixture) and set
    them in the model; returns [w_rnn, w_branch, *bias]. Under DDP the main rank fits on the whole split and sends
    the numbers, so every rank's model mixes alike."""
    fitted = None
    if rank.is_main:
        logits = predict_logits(model, data.valid, batch_size=cfg.train.eval_batch_size, device=device,
                                max_len=cfg.data.eval_max_len, truncate=cfg.data.truncate, workers=1, parts=True)
        weights, bias = fit_mixture(logits["rnn"], logits["branch"], data.valid.labels, data.label_space)
        fitted = [float(w) for w in weights] + [float(b) for b in bias]
    fitted = broadcast(rank, fitted)
    model.set_mixture(fitted[:2], fitted[2:])
    return fitted


def compact_json(value: Any) -> str:
    """JSON indented by 2, but every list of numbers on one line: a confusion matrix is one row per line, not one
    number per line (a 500-class results.json: ~1 MB, not 5.7)."""
    text = json.dumps(value, indent=2)
    number_list = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return number_list.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def finish(cfg: Config, run_dir: Path, data: PreparedData, device: torch.device,
           rank: Rank | None = None) -> dict[str, Any]:
    """After training: the curves plot, and the best checkpoint's figures on valid (and test). Under DDP the
    main rank reads best.pt (other machines need not see the run directory) and sends its weights to the
    others, which score their shares."""
    from sentiment.training.plot import plot_curves

    rank = rank or Rank()
    model = build_model(cfg, len(data.vocab), data.vocab.pad_index, data.label_space.num_outputs).to(device)
    rows, best_epoch = [], 0
    if rank.is_main:
        rows = read_metrics(run_dir)
        plot_curves(rows, run_dir / "curves.png")
        best = load_checkpoint(run_dir / BEST, data.vocab, map_location=device)
        model.load_state_dict(best["model"])
        best_epoch = best["loop"]["epoch"]
    broadcast_weights(rank, model)
    # what a reader needs to reproduce the figures: the code, the seeds and how validation was carved
    results: dict[str, Any] = {"best_epoch": best_epoch, "epochs_run": len(rows), "processes": rank.world_size,
                               "device": rows[-1].get("device") if rows else None,
                               "commit": code_version(), "seed": cfg.run.seed, "split_seed": cfg.data.split_seed,
                               "valid_split": data.stats.get("valid_split", cfg.data.valid_split),
                               "selected_on": "valid", "labels": list(data.label_space.names),
                               "objectives": ["supervised"] + [n for n in COLUMNS if getattr(cfg.train, n) is not None],
                               "unlabeled_texts": len(data.unlabeled) if data.unlabeled is not None else 0,
                               # few-label runs say how many labels they trained on (validation's: valid.n)
                               "train_rows": len(data.train), "init_from": cfg.model.init_from}
    if getattr(model, "combine", "sum") == "mixture":  # the weights validation chose for the best epoch
        results["mixture"] = {"rnn": float(model.mix[0]), "branch": float(model.mix[1]),
                              "bias": [float(b) for b in model.mix_bias]}
    # the test split is read once, here, for the checkpoint validation chose (files may have no test split)
    splits = {"valid": data.valid} | ({"test": data.test} if cfg.run.eval_test and len(data.test) else {})
    for name, split in splits.items():
        m: Metrics = evaluate(model, split, data.label_space, batch_size=cfg.train.eval_batch_size, device=device,
                              max_len=cfg.data.eval_max_len, truncate=cfg.data.truncate, rank=rank, parts=True)
        results[name] = m.to_dict()
    results["train_seconds"] = sum(r["seconds"] for r in rows)
    if rank.is_main:
        atomic_write_text(run_dir / RESULTS, compact_json(results))
    return broadcast(rank, results)
