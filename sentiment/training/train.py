"""The training loop: config in, run directory out.

Everything a resumed run needs is in last.pt: model, optimizer, scheduler, early-stopping state, the
position inside the epoch (data order is a function of seed and epoch) and every RNG, so on CPU an
interrupted-and-resumed run ends bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn as nn

from sentiment.data.batching import BucketBatchSampler, UnlabeledStream, collate
from sentiment.runs import (BEST, LAST, RESULTS, append_metrics, check_membership, code_version, load_checkpoint,
                                  load_labels, read_metrics, save_checkpoint, truncate_metrics, write_run_files)
from sentiment.atomic import atomic_write_text
from sentiment.config import Config
from sentiment.errors import SentimentError
from sentiment.inference.evaluate import Metrics, evaluate
from sentiment.floats import flush_denormals
from sentiment.device import describe_device, resolve_device
from sentiment.distributed import (Rank, all_reduce_sum, any_rank, broadcast, broadcast_weights, rank_device)
from sentiment.distributed import init as init_distributed
from sentiment.data.labels import LabelSpace
from sentiment.model import build_model
from sentiment.training.objectives import COLUMNS, Batch, ExtraObjectives
from sentiment.data.prepare import PreparedData, prepare_data


class TrainingInterrupted(SentimentError):
    exit_code = 130


class TrainingDiverged(SentimentError):
    exit_code = 3


class Reporter(Protocol):
    """How the loop tells the outside world what it does (the CLI draws progress bars with it)."""

    def epoch_start(self, epoch: int, epochs: int, n_batches: int, done: int) -> None: ...
    def step(self, done: int, loss: float, accuracy: float, tokens_per_s: float) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...
    def note(self, message: str) -> None: ...  # something the user should know once, e.g. a fallback taken


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps and saves before leaving."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def graceful_stop(repeat_grace: float | None = None) -> Iterator[StopFlag]:
    """First Ctrl-C/SIGTERM asks the loop to stop after the current step; a second one stops at once. Under
    torchrun a terminal's Ctrl-C reaches every rank and then torchrun sends its own SIGTERM: a repeat within
    `repeat_grace` seconds (default: 5 under torchrun, none otherwise) is the same request, so it does not
    cost the checkpoint being written."""
    flag = StopFlag()
    if repeat_grace is None:
        repeat_grace = 5.0 if int(os.environ.get("WORLD_SIZE", 1)) > 1 else 0.0
    first = {"at": 0.0}

    def handler(signum, frame):
        if flag:
            if time.monotonic() - first["at"] < repeat_grace:
                return
            raise KeyboardInterrupt
        flag.signal = signum
        first["at"] = time.monotonic()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches completed in the current epoch
    global_step: int = 0
    best_valid_accuracy: float = -1.0
    best_epoch: int = 0
    epochs_without_gain: int = 0
    # running sums of the current epoch, so a mid-epoch resume reports the same epoch metrics
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    tokens: int = 0
    seconds: float = 0.0
    schedule_steps: int = 0  # the steps the LR schedule spans, fixed when the run starts
    world_size: int = 1  # processes the steps above were counted with (each step: one batch per process)
    # the extra objectives' running sums in the current epoch (their mean per step is a metrics column)
    objective_sums: dict = field(default_factory=dict)
    objective_steps: int = 0
    unlabeled_epoch: int = 0  # the unlabeled stream's place: its pass, and batches done in that pass
    unlabeled_step: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def lr_factor(cfg: Config, total_steps: int):
    warmup, kind = cfg.train.warmup_steps, cfg.train.lr_schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1.0 - progress
        return 1.0

    return factor


def _kept(run_dir: Path) -> str:
    """What a diverged run leaves: the last good checkpoint, or nothing."""
    return (f"{run_dir / LAST} holds the last good state" if (run_dir / LAST).exists()
            else "no checkpoint was written before it")


def _diverged(run_dir: Path, loss: torch.Tensor, grad_norm: torch.Tensor | None, epoch: int,
              step_in_epoch: int) -> TrainingDiverged:
    kept = _kept(run_dir)
    what = (f"loss became {loss.item()}" if not torch.isfinite(loss)
            else f"gradient norm became {grad_norm.item()} (loss {loss.item():.4f})")
    return TrainingDiverged(f"{what} at epoch {epoch + 1}, step {step_in_epoch + 1}; stopped. "
                            f"{kept}; try a lower train.lr or set train.grad_clip")


class _DeviceSums:
    """The lazy path's running sums, kept on the device and read when the loop reports or saves."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.skipped = torch.zeros((), dtype=torch.float32, device=device)
        self.parts: dict[str, torch.Tensor] = {}

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int, parts: dict[str, torch.Tensor]) -> None:
        self.loss_sum += loss.detach().double() * n
        self.correct += correct
        for name, value in parts.items():
            if name not in self.parts:
                self.parts[name] = torch.zeros((), dtype=torch.float64, device=self.loss_sum.device)
            self.parts[name] += value.double()

    def flag(self, value: torch.Tensor, rank: Rank) -> torch.Tensor:
        """1.0 where `value` (loss + gradient norm) is not finite on any rank: fused Adam's found_inf."""
        bad = (~torch.isfinite(value)).float().reshape(())  # a scalar, as fused Adam wants it
        if rank.distributed:  # every rank skips the same steps, or their weights would part
            import torch.distributed as dist

            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self.skipped += bad
        return bad

    def settle(self, state: "LoopState", rank: Rank, diverged: Callable[[str], Exception]) -> None:
        names = list(self.parts)
        values = torch.stack([self.loss_sum, self.correct.double(), self.skipped.double(),
                              *(self.parts[n] for n in names)]).tolist()  # one wait
        loss_sum, correct, skipped = values[:3]
        self.loss_sum.zero_()
        self.correct.zero_()
        for name, value in zip(names, values[3:]):
            self.parts[name].zero_()
            state.objective_sums[name] = state.objective_sums.get(name, 0.0) + value
        state.loss_sum += loss_sum
        state.correct += int(correct)
        if skipped:
            raise diverged(f"{int(skipped)} step(s) had a non-finite loss or gradient (they were skipped)")


def _diverged_lazily(run_dir: Path, what: str, epoch: int, step_in_epoch: int) -> TrainingDiverged:
    kept = _kept(run_dir)
    return TrainingDiverged(f"{what}, by epoch {epoch + 1}, step {step_in_epoch}; stopped. {kept}; try a lower "
                            "train.lr or set train.grad_clip")


def _resumed_schedule_steps(cfg: Config, checkpoint: dict[str, Any], total_steps: int) -> int:
    """The LR schedule of a resumed run spans the steps it was started with. A decaying schedule cannot
    stretch to a changed train.epochs without changing the learning rates already used, so that is refused."""
    saved = checkpoint["loop"].get("schedule_steps")
    saved_epochs = checkpoint.get("config", {}).get("train", {}).get("epochs", cfg.train.epochs)
    if saved_epochs != cfg.train.epochs and cfg.train.lr_schedule != "constant":
        raise SentimentError(
            f"cannot resume with train.epochs={cfg.train.epochs}: this run's {cfg.train.lr_schedule} learning-rate "
            f"schedule decays over its {saved_epochs} epochs. Resume with train.epochs={saved_epochs}, or start a "
            "new run (a constant schedule can be resumed with more or fewer epochs)")
    return int(saved) if saved else total_steps


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def supervised_objective(space: LabelSpace, weights: torch.Tensor | None = None) -> Objective:
    """The supervised loss: (model, ids, lengths, class indices) -> (mean loss, rows predicted right), both
    tensors, so the loop reads them when it reports and no step waits for the device."""

    def objective(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(ids, lengths)
        return space.loss(logits, labels, weights), space.correct(logits.detach(), labels)

    return objective


def class_weights(cfg: Config, data: PreparedData, device: torch.device) -> torch.Tensor | None:
    """train.class_weights: balanced gives each class the weight n / (K * n_class) of the training split."""
    if cfg.train.class_weights is None:
        return None
    weights = data.label_space.balanced_weights(data.train.labels.astype(np.int64))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _wrap(model: nn.Module, rank: Rank, device: torch.device, manual: bool = False) -> nn.Module:
    """DistributedDataParallel under torchrun. manual: the model itself, whose gradients the loop averages
    (the extra objectives run several forward and backward passes per step, which DDP's hooks do not follow)."""
    if not rank.distributed or manual:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _regroup(cfg: Config, state: LoopState, scheduler: torch.optim.lr_scheduler.LambdaLR, world_size: int) -> None:
    """A run resumed on another number of processes continues from the same global place: the batches done
    in this epoch, the steps done and the schedule's length are counted in batches of all ranks, then divided
    among the new number of processes (the data order is the same; which rank reads which batch is not)."""
    old = state.world_size
    state.step_in_epoch = state.step_in_epoch * old // world_size
    state.global_step = state.global_step * old // world_size
    state.schedule_steps = max(1, state.schedule_steps * old // world_size)
    state.unlabeled_step = state.unlabeled_step * old // world_size
    state.world_size = world_size
    scheduler.lr_lambdas = [lr_factor(cfg, state.schedule_steps)]
    scheduler.last_epoch = scheduler.last_epoch * old // world_size  # optimizer steps, counted like the rest
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
        group["lr"] = lr


def _average_gradients(params: list[nn.Parameter], rank: Rank) -> None:
    """What DDP does, in one all-reduce: every rank's gradients replaced by their mean."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = all_reduce_sum(rank, flat) / rank.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _extra_objectives(cfg: Config, data: PreparedData, rank: Rank, reporter: Reporter | None, state: "LoopState",
                      weights: torch.Tensor | None) -> tuple[ExtraObjectives | None, UnlabeledStream | None]:
    """The extra objectives a config names (None: the plain loop), and the unlabeled stream they read."""
    t = cfg.train
    has_unlabeled = data.unlabeled is not None and len(data.unlabeled) > 0
    note = getattr(reporter, "note", None) if rank.is_main else None
    if has_unlabeled and not t.uses_unlabeled() and note:
        note(f"data.unlabeled: its {len(data.unlabeled):,} texts count in the vocabulary only; "
             "train.virtual_adversarial or train.entropy_minimization would train on them")
    if not t.has_extra_objectives():
        return None, None
    objectives = ExtraObjectives(t, data.label_space, weights, has_unlabeled=has_unlabeled)
    if t.uses_unlabeled() and not has_unlabeled and note:
        named = [n for n in ("virtual_adversarial", "entropy_minimization") if getattr(t, n) is not None]
        note(f"train.{' and train.'.join(named)} run on the labeled batches: this data has no unlabeled texts "
             "(set data.unlabeled)")
    stream = None
    if objectives.wants_unlabeled_batch:
        stream = UnlabeledStream(data.unlabeled.lengths(t.unlabeled_max_len or cfg.data.max_len),
                                 t.unlabeled_batch_size, seed=cfg.run.seed, num_replicas=rank.world_size,
                                 rank=rank.rank, epoch=state.unlabeled_epoch, step=state.unlabeled_step)
        if len(stream) == 0:
            raise SentimentError(f"{len(data.unlabeled):,} unlabeled texts make fewer batches of "
                                 f"{t.unlabeled_batch_size} than there are processes ({rank.world_size}): lower "
                                 "train.unlabeled_batch_size")
    return objectives, stream


def _embeddings_trainable(cfg: Config, epoch: int) -> bool:
    m = cfg.model
    return not m.freeze_embeddings or (m.unfreeze_after is not None and epoch >= m.unfreeze_after)


def train(cfg: Config, run_dir: Path, *, data: PreparedData | None = None, resume: bool = False,
          reporter: Reporter | None = None, stop: StopFlag | None = None, rank: Rank | None = None) -> dict[str, Any]:
    """Train as `cfg` says into `run_dir` (created by the caller, by the main rank under torchrun). Returns the
    final results. Under torchrun (`rank`: from distributed.from_env()) the model is wrapped in
    DistributedDataParallel, each rank steps over its own share of every epoch's batches, and only the main
    rank writes."""
    run_dir = Path(run_dir)
    rank = rank or Rank()
    code_version()  # the commit as training starts: results.json records it, whatever is committed meanwhile
    flush_denormals(cfg.run.flush_denormal)  # effective on torch's threads if nothing computed before us
    if cfg.run.threads or rank.distributed:
        torch.set_num_threads(cfg.run.threads or 1)  # ranks share the cores: one thread each unless told
    device = rank_device(rank, resolve_device(cfg.run.device))
    init_distributed(rank, device)
    seed_everything(cfg.run.seed)

    checkpoint = None
    if resume:
        from sentiment.runs import load_run

        _, vocab = load_run(run_dir)
        space = load_labels(run_dir)
        for stray in run_dir.glob(".*.tmp"):  # a write cut short by kill -9: never loaded, only disk space
            stray.unlink(missing_ok=True)
        checkpoint = load_checkpoint(run_dir / LAST, vocab)
        data = data or prepare_data(cfg.data, vocab, label_space=space)
        check_membership(run_dir, data.membership)
    else:
        data = data or prepare_data(cfg.data, embedding_seed=cfg.run.seed)
        if rank.is_main:
            write_run_files(run_dir, cfg, data.vocab, data.label_space, data.membership)

    model = build_model(cfg, len(data.vocab), data.vocab.pad_index, data.label_space.num_outputs)
    if data.embeddings is not None:
        model.load_embeddings(data.embeddings)
    if cfg.model.normalize_embeddings and checkpoint is None:
        model.set_word_frequencies(data.vocab.counts)
    model.to(device)
    params = list(model.parameters())
    use_amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    ran_on = describe_device(device, amp_dtype if use_amp else None)
    # Lazy host syncs (default on CUDA): the loop never waits for the device inside a step. A non-finite
    # gradient makes fused Adam skip that step on the device (found_inf), and the loop reads the flag, the loss
    # and the accuracy when it reports. fp16's grad scaler skips overflow steps itself, so it keeps the eager path.
    lazy = (cfg.train.lazy_sync if cfg.train.lazy_sync is not None else device.type == "cuda") and not scaler.is_enabled()
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                 **({"fused": True} if lazy else {}))
    sampler = BucketBatchSampler(data.train.lengths(cfg.data.max_len), cfg.train.batch_size, seed=cfg.run.seed,
                                 bucket=cfg.train.bucket, num_replicas=rank.world_size, rank=rank.rank)
    if len(sampler) == 0:
        raise SentimentError(f"{len(data.train):,} training rows make fewer batches of {cfg.train.batch_size} than "
                             f"there are processes ({rank.world_size}): lower train.batch_size or the process count")
    total_steps = math.ceil(len(sampler) / cfg.train.grad_accum) * cfg.train.epochs  # optimizer steps
    if checkpoint is not None:
        total_steps = _resumed_schedule_steps(cfg, checkpoint, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
    weights = class_weights(cfg, data, device)
    objective = supervised_objective(data.label_space, weights)

    state = LoopState(schedule_steps=total_steps)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = LoopState(**{"schedule_steps": total_steps, **checkpoint["loop"]})
        set_rng_state(checkpoint["rng"])
        if state.world_size != rank.world_size:
            _regroup(cfg, state, scheduler, rank.world_size)
        if rank.is_main:
            truncate_metrics(run_dir, state.epoch)
    if rank.distributed:
        # every rank starts from the same weights (one seed); dropout masks differ by rank
        torch.manual_seed(cfg.run.seed * 1_000_003 + rank.rank * 7919 + state.global_step)
    state.world_size = rank.world_size
    extras, stream = _extra_objectives(cfg, data, rank, reporter, state, weights)
    manual = extras is not None  # the loop averages gradients itself (_average_gradients)
    if manual and rank.distributed:
        broadcast_weights(rank, model)
    net = _wrap(model, rank, device, manual)  # what the loop calls: DDP averages gradients across ranks
    unlabeled_len = cfg.train.unlabeled_max_len or cfg.data.max_len

    def backward(loss: torch.Tensor, retain_graph: bool = False) -> None:
        with torch.autocast(device.type, enabled=False):  # backward runs in the dtypes forward chose
            scaler.scale(loss / cfg.train.grad_accum if cfg.train.grad_accum > 1 else loss).backward(
                retain_graph=retain_graph)

    def snapshot() -> dict[str, Any]:
        if not all(bool(torch.isfinite(p).all()) for p in params):  # not reachable through the checks above
            raise TrainingDiverged(f"the weights are not finite at epoch {state.epoch + 1}; nothing was saved over "
                                   f"{run_dir / LAST}")
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "loop": asdict(state), "rng": rng_state(),
                "vocab": data.vocab.itos, "config": cfg.to_dict()}

    def save(name: str) -> None:
        if rank.is_main:  # one writer; the others' state is the same but for RNGs and their place in the data
            save_checkpoint(run_dir / name, snapshot())

    pending = _DeviceSums(device) if lazy else None
    last_report = 0.0

    def settle(epoch: int) -> None:
        """Lazy path: read the device's sums into the loop state, and stop if a step was skipped as non-finite."""
        if pending is not None:
            pending.settle(state, rank, lambda what: _diverged_lazily(run_dir, what, epoch, state.step_in_epoch))

    net.train()
    last_saved = time.monotonic()
    patience = cfg.train.early_stopping_patience
    stopped_early = patience is not None and state.epochs_without_gain >= patience  # a resumed, finished run
    for epoch in range(state.epoch, cfg.train.epochs if not stopped_early else state.epoch):
        trainable = _embeddings_trainable(cfg, epoch)
        if trainable != model.embedding.weight.requires_grad:
            model.set_embedding_trainable(trainable)
            net = _wrap(model, rank, device, manual)  # DDP syncs the parameters that needed gradients when built
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        # under DDP each row weighs the same whichever rank reads it (DDP alone averages the ranks' batch means)
        shares = (rank.world_size * np.array([len(b) for b in batches]) / sampler.step_rows()) if rank.distributed else None
        if reporter:
            reporter.epoch_start(epoch + 1, cfg.train.epochs, len(batches), state.step_in_epoch)
        started = time.perf_counter() - state.seconds
        accum = cfg.train.grad_accum
        for i in range(state.step_in_epoch, len(batches)):
            indices = batches[i]
            # train.grad_accum batches make one optimizer step (a group ends early at the epoch's end)
            boundary = (i + 1) % accum == 0 or i + 1 == len(batches)
            ids, lengths, labels = collate(data.train, indices, cfg.data.max_len, cfg.data.truncate, data.vocab.pad_index)
            # lengths stay on the CPU: the model checks them there and packing needs them there
            if device.type == "cuda":  # pinned: the copies below really are asynchronous
                ids, labels = ids.pin_memory(), labels.pin_memory()
            ids, labels = ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if i % accum == 0:
                optimizer.zero_grad(set_to_none=True)
            parts: dict[str, torch.Tensor] = {}
            if extras is None:
                # DDP all-reduces gradients on the group's last backward only
                with net.no_sync() if rank.distributed and not boundary else nullcontext():
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        loss, correct = objective(net, ids, lengths, labels)
                    weighed = loss * float(shares[i]) if shares is not None and shares[i] != 1.0 else loss
                    scaler.scale(weighed / accum if accum > 1 else weighed).backward()
            else:
                unlabeled = None
                if stream is not None:
                    u_ids, u_lengths, _ = collate(data.unlabeled, stream.next(), unlabeled_len, cfg.data.truncate,
                                                  data.vocab.pad_index)
                    if device.type == "cuda":
                        u_ids = u_ids.pin_memory()
                    unlabeled = Batch(u_ids.to(device, non_blocking=True), u_lengths)
                    state.unlabeled_epoch, state.unlabeled_step = stream.epoch, stream.step
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss, correct, parts = extras.step(model, Batch(ids, lengths, labels), unlabeled, backward)
                if boundary and rank.distributed:
                    _average_gradients(params, rank)
            if boundary:
                grad_norm = None
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    grad_norm = nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                elif not scaler.is_enabled():
                    grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                # A finite loss can still give an infinite or NaN gradient, and one step on it turns every weight
                # into NaN. Checked before stepping, in one read with the loss. fp16's grad scaler skips such
                # steps itself (an overflow there is routine), so only its loss is checked.
                if pending is not None:
                    optimizer.found_inf = pending.flag(loss.detach() + grad_norm, rank)  # no wait: Adam skips it
                else:
                    finite = bool(torch.isfinite(loss if grad_norm is None or scaler.is_enabled() else loss + grad_norm))
                    if any_rank(rank, not finite):  # every rank stops at the same step (a collective under DDP only)
                        raise _diverged(run_dir, loss, grad_norm, epoch, state.step_in_epoch)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()

            state.step_in_epoch += 1
            state.global_step += 1
            if pending is not None:
                pending.add(loss, correct, len(indices), parts)
            else:
                state.loss_sum += loss.item() * len(indices)
                state.correct += int(correct)
                for name, value in parts.items():
                    state.objective_sums[name] = state.objective_sums.get(name, 0.0) + value.item()
            state.objective_steps += 1 if parts else 0
            state.seen += len(indices)
            state.tokens += int(lengths.sum())  # lengths are on the CPU
            state.seconds = time.perf_counter() - started
            if reporter and (pending is None or time.monotonic() - last_report >= 0.5 or i + 1 == len(batches)):
                settle(epoch)  # this rank's loss and accuracy; tokens/s of all ranks (they take equal shares)
                reporter.step(state.step_in_epoch, state.loss_sum / state.seen, state.correct / state.seen,
                              rank.world_size * state.tokens / max(state.seconds, 1e-9))
                last_report = time.monotonic()
            if not boundary:
                continue  # a checkpoint never holds half an accumulated gradient
            # under DDP the ranks agree on a stop every 8 steps (a collective: the device would wait for it)
            if (not rank.distributed or state.global_step % 8 == 0) and any_rank(rank, bool(stop)):
                settle(epoch)
                save(LAST)
                raise TrainingInterrupted(
                    f"interrupted at epoch {epoch + 1}, step {state.step_in_epoch}; saved {run_dir / LAST}. "
                    f"Resume with: sentiment train --resume {run_dir}")
            if time.monotonic() - last_saved >= 60 * cfg.run.checkpoint_minutes:
                # a kill -9 or a crash loses at most this much work
                settle(epoch)
                save(LAST)
                last_saved = time.monotonic()

        settle(epoch)
        # In this process (workers=1): a SIGTERM to the whole process group would kill scoring workers and
        # fail the epoch, where the loop itself stops cleanly after the step. Forking saves ~1 s per epoch.
        valid = evaluate(model, data.valid, data.label_space, batch_size=cfg.train.eval_batch_size, device=device,
                         max_len=cfg.data.eval_max_len, truncate=cfg.data.truncate, workers=1, rank=rank)
        names = extras.names if extras is not None else []
        loss_sum, correct, seen, tokens, steps, *part_sums = all_reduce_sum(rank, torch.tensor(
            [state.loss_sum, state.correct, state.seen, state.tokens, state.objective_steps,
             *(state.objective_sums.get(n, 0.0) for n in names)], dtype=torch.float64)).tolist()
        row = {"epoch": epoch + 1, "step": state.global_step,
               "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "valid_loss": valid.loss, "valid_accuracy": valid.accuracy, "valid_macro_f1": valid.macro_f1,
               "lr": scheduler.get_last_lr()[0],
               "seconds": state.seconds, "tokens_per_s": tokens / max(state.seconds, 1e-9),
               "valid_seconds": valid.seconds, "processes": rank.world_size, "device": ran_on,
               "global_batch_size": cfg.train.batch_size * rank.world_size * cfg.train.grad_accum}
        for name, value in zip(names, part_sums):  # each objective's mean loss per step, before its weight
            row[COLUMNS[name]] = value / max(steps, 1)
        improved = valid.accuracy > state.best_valid_accuracy
        state = LoopState(epoch=epoch + 1, global_step=state.global_step, schedule_steps=state.schedule_steps,
                          world_size=rank.world_size, unlabeled_epoch=state.unlabeled_epoch,
                          unlabeled_step=state.unlabeled_step,
                          best_valid_accuracy=max(valid.accuracy, state.best_valid_accuracy),
                          best_epoch=epoch + 1 if improved else state.best_epoch,
                          epochs_without_gain=0 if improved else state.epochs_without_gain + 1)
        row["best"] = improved
        if rank.is_main:
            append_metrics(run_dir, row)
        if improved:
            save(BEST)
        save(LAST)
        last_saved = time.monotonic()
        if reporter:
            reporter.epoch_end(row)
        if patience is not None and state.epochs_without_gain >= patience:
            break

    return finish(cfg, run_dir, data, device, rank)


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
                               "unlabeled_texts": len(data.unlabeled) if data.unlabeled is not None else 0}
    # the test split is read once, here, for the checkpoint validation chose (files may have no test split)
    splits = {"valid": data.valid} | ({"test": data.test} if cfg.run.eval_test and len(data.test) else {})
    for name, split in splits.items():
        m: Metrics = evaluate(model, split, data.label_space, batch_size=cfg.train.eval_batch_size, device=device,
                              max_len=cfg.data.eval_max_len, truncate=cfg.data.truncate, rank=rank)
        results[name] = m.to_dict()
    results["train_seconds"] = sum(r["seconds"] for r in rows)
    import json

    if rank.is_main:
        atomic_write_text(run_dir / RESULTS, json.dumps(results, indent=2))
    return broadcast(rank, results)
