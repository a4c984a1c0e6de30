"""The training engine: one loop over a stream of batches and an objective, whatever is being trained.

The engine owns what every kind of training needs: the optimizer (Adam; fused on the lazy path; LazyAdam for a
group marked "sparse", lazy_adam.py) and the learning-rate schedule, gradient accumulation, mixed precision
(autocast, fp16's GradScaler), gradient clipping, the NaN guard, DDP, checkpoints (last.pt, best.pt) and exact
resume (every RNG and the stream's place), signals (StopFlag from `graceful_stop`: save and raise TrainingInterrupted), early stopping, a
wall-clock budget, metrics.jsonl rows and progress reporting. A task (the classifier in train.py; the
language-model pretraining later) supplies the parts that differ:

    engine = Engine(model, stream, objective, validate, settings, run_dir, rank=rank, device=device, seed=seed,
                    reporter=reporter, stop=stop, checkpoint=last_pt_or_None, extra_state=lambda: {...},
                    before_epoch=None)
    engine.run()                    # trains to settings.epochs (or the budget, early stopping, a stop request)

- `model`: an nn.Module already on `device`, its weights initialised (seeded by the task).
- `stream` (`Stream`): `set_epoch(epoch) -> n` batches this rank reads in that epoch; `batch(i)` batch i of the
  current epoch, on the device, with `.rows` (what the loss is averaged over) and `.tokens` (for tokens/s); the
  order is a function of (seed, epoch), so the engine's (epoch, step_in_epoch) is the stream's place.
  `restore(state)` after a checkpoint is loaded continues any side stream from `state`; `record(state)` after each
  batch writes that side place back (the classifier's unlabeled texts use LoopState.unlabeled_epoch/_step).
- `objective` (`Objective`): `objective(model, batch) -> (loss, stats)`, loss a scalar tensor, stats tensors:
  "correct" (rows predicted right; accuracy), and one value per entry of `objective.columns` (optional attribute,
  name -> the metrics.jsonl column of its mean per step). A plain function is an objective. One that needs
  gradients of its own (AT, VAT) sets `backward_inside = True`: it gets `backward=` (scaled for accumulation and
  fp16) and back-propagates itself; the engine then averages gradients across ranks itself, not through DDP.
- `validate(model) -> (metrics, score)`: after each epoch, on every rank (a collective evaluation may share the
  work); metrics are the row's validation columns (keys ending in "seconds" go after the timing columns), and
  best.pt is the epoch with the highest score (an LM: minus the held-out loss). Rows also get epoch, step,
  train_loss, train_accuracy, lr, seconds, tokens_per_s, processes, device, global_batch_size and best.
- `rank` (distributed.Rank) and `seed`: under torchrun each rank reseeds from (seed, rank, step) for its own
  dropout; the main rank alone writes. `reporter` (`Reporter`, main rank only): epoch_start/step/epoch_end/note
  (and scalars, where it logs curves: tensorboard.py).
- `stop`: a StopFlag (`with graceful_stop() as stop:`): checked after each optimizer step (under DDP every
  Ranks.AGREE_EVERY steps, agreed), then last.pt is saved and TrainingInterrupted raised (exit code 130).
- `settings` (`EngineSettings`): epochs, optimizer, schedule, accumulation, clipping, AMP, host syncs,
  early-stopping patience, checkpoint_minutes, batch_size (for the row's global batch) and max_minutes (a
  budget per start: at the budget last.pt is saved where the epoch stopped, as an interruption saves it, and the
  run ends normally after scoring the partial epoch; `--resume` continues that epoch from its next batch).
- `extra_state()`: what the task adds to every checkpoint (the classifier: vocab and config).
- `param_groups`: the optimizer's parameter groups, each with its own "lr" (discriminative rates); default one.
- `saved(path)`: told on the main rank after each checkpoint is written (a replaced run is deleted only then).
- `before_epoch(epoch)`: a hook before each epoch (the classifier unfreezes embeddings there; the engine
  re-wraps DDP when the parameters that train change).
- `checkpoint`: last.pt's dict to resume from (the task has loaded and checked it); resumed on another process
  count, the place is regrouped. Exact on CPU: an interrupted-and-resumed run ends bitwise as an uninterrupted one.

Policies kept in one place each: the host-sync policy (`EagerSync` reads the loss every step; `LazySync` keeps
sums on the device and lets fused Adam skip a non-finite step), and the rank policy (`Ranks`: DDP wrapping,
gradient averaging, the steps at which ranks agree on stopping, saving and divergence, epoch sums).
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

from sentiment.device import describe_device
from sentiment.distributed import Rank, all_reduce_sum, any_rank, broadcast_weights
from sentiment.errors import SentimentError
from sentiment.training.lazy_adam import build_optimizer
from sentiment.runs import BEST, LAST, append_metrics, save_checkpoint, truncate_metrics


class TrainingInterrupted(SentimentError):
    exit_code = 130


class TrainingDiverged(SentimentError):
    exit_code = 3


class Reporter(Protocol):
    """How the loop tells the outside world what it does (the CLI draws progress bars with it). A reporter that logs
    curves (tensorboard.py) also has `scalars(global_step, values)`, called after each step(): the loss, accuracy
    and tokens/s of the batches since the last report, and the learning rate."""

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


class Stream(Protocol):
    def set_epoch(self, epoch: int) -> int: ...
    def batch(self, i: int) -> Any: ...
    def restore(self, state: "LoopState") -> None: ...
    def record(self, state: "LoopState") -> None: ...


class Objective(Protocol):
    columns: dict[str, str]
    backward_inside: bool

    def __call__(self, model: nn.Module, batch: Any, **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


Validate = Callable[[nn.Module], tuple[dict[str, Any], float]]


@dataclass
class EngineSettings:
    epochs: int
    lr: float
    batch_size: int  # per process and batch: the row's global_batch_size is this x processes x grad_accum
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # constant | cosine | linear, after warmup_steps of linear warm-up
    warmup_steps: int = 0
    grad_accum: int = 1
    grad_clip: float | None = None
    amp: bool = False  # on CUDA: bf16 autocast where supported, else fp16 with a GradScaler
    lazy_sync: bool | None = None  # None: lazy on CUDA
    early_stopping_patience: int | None = None
    checkpoint_minutes: float = 10.0
    max_minutes: float | None = None  # wall-clock budget of this start: the epoch in progress stops, saved mid-epoch


@dataclass
class LoopState:
    """The engine's place, saved in every checkpoint (field names are the checkpoint format: keep them)."""
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches completed in the current epoch
    global_step: int = 0
    best_valid_accuracy: float = -1.0  # the best validation score so far (the classifier's: accuracy); any value
    # while best_epoch is 0 (no epoch scored yet)
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
    # the objective's parts' running sums in the current epoch (their mean per step is a metrics column)
    objective_sums: dict = field(default_factory=dict)
    objective_steps: int = 0
    unlabeled_epoch: int = 0  # a side stream's place (the classifier's unlabeled texts): its pass, batches done
    unlabeled_step: int = 0


# ---------------------------------------------------------------- RNG and schedule
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


def schedule(warmup: int, kind: str, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of optimizer step `step`: linear warm-up, then constant, cosine or linear decay."""
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


# ---------------------------------------------------------------- the rank policy
class Ranks:
    """Everything the loop does differently under torchrun, in one place."""

    AGREE_EVERY = 8  # under DDP ranks agree on stop/save/divergence every this many steps (a collective waits)

    def __init__(self, rank: Rank, device: torch.device):
        self.rank, self.device = rank, device

    @property
    def distributed(self) -> bool:
        return self.rank.distributed

    def wrap(self, model: nn.Module, manual: bool) -> nn.Module:
        """DistributedDataParallel under torchrun. manual: the model itself, whose gradients `average` averages
        (an objective with several backward passes per step, which DDP's hooks do not follow)."""
        if not self.distributed or manual:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def no_sync(self, net: nn.Module, boundary: bool):
        """DDP all-reduces gradients on an accumulation group's last backward only."""
        return net.no_sync() if self.distributed and not boundary else nullcontext()

    def average(self, params: list[nn.Parameter]) -> None:
        """What DDP does, in one all-reduce: every rank's gradients replaced by their mean."""
        if not self.distributed:
            return
        for p in params:  # a sparse gradient (the n-gram table's; gloo all-reduces those) on its own
            if p.grad is not None and p.grad.is_sparse:
                p.grad = all_reduce_sum(self.rank, p.grad.coalesce()) / self.rank.world_size
        grads = [p.grad for p in params if p.grad is not None and not p.grad.is_sparse]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = all_reduce_sum(self.rank, flat) / self.rank.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def agrees_now(self, global_step: int) -> bool:
        """Whether this step is one at which every rank checks stop, save and divergence (all at the same step)."""
        return not self.distributed or global_step % self.AGREE_EVERY == 0

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag true on every rank when it is true on one, in one collective (free on one rank)."""
        if not self.distributed:
            return list(flags)
        summed = all_reduce_sum(self.rank, torch.tensor([float(f) for f in flags]))
        return [bool(v > 0) for v in summed.tolist()]

    def sum(self, values: list[float]) -> list[float]:
        return all_reduce_sum(self.rank, torch.tensor(values, dtype=torch.float64)).tolist()


# ---------------------------------------------------------------- the host-sync policy
class EagerSync:
    """Reads the loss every step: a non-finite one stops the run before the optimizer steps on it."""

    lazy = False

    def __init__(self, ranks: Ranks, diverged: Callable[..., Exception]):
        self.ranks, self.diverged = ranks, diverged

    def guard(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_norm: torch.Tensor | None,
              scaled: bool) -> None:
        # A finite loss can still give an infinite or NaN gradient, and one step on it turns every weight into NaN.
        # fp16's grad scaler skips such steps itself (an overflow there is routine), so only its loss is checked.
        finite = bool(torch.isfinite(loss if grad_norm is None or scaled else loss + grad_norm))
        if any_rank(self.ranks.rank, not finite):  # every rank stops at the same step (a collective under DDP only)
            raise self.diverged(loss=loss, grad_norm=grad_norm)

    def add(self, state: LoopState, loss: torch.Tensor, stats: dict[str, torch.Tensor], rows: int) -> None:
        state.loss_sum += loss.item() * rows
        state.correct += int(stats.get("correct", 0))
        for name, value in stats.items():
            if name != "correct":
                state.objective_sums[name] = state.objective_sums.get(name, 0.0) + value.item()

    def read(self, state: LoopState) -> None:
        pass

    def check(self) -> None:
        pass


class LazySync:
    """The lazy path (default on CUDA): the loop never waits for the device inside a step. Running sums stay on
    the device and are read when the loop reports or saves; a non-finite step is skipped on the device by fused
    Adam (found_inf), counted, and the run stops when the count is read."""

    lazy = True

    def __init__(self, ranks: Ranks, diverged: Callable[..., Exception], device: torch.device):
        self.ranks, self.diverged = ranks, diverged
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.skipped = torch.zeros((), dtype=torch.float32, device=device)
        self.skipped_read = 0.0
        self.parts: dict[str, torch.Tensor] = {}

    def guard(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_norm: torch.Tensor | None,
              scaled: bool) -> None:
        """1.0 where loss + gradient norm is not finite on any rank: fused Adam's found_inf, no wait."""
        value = loss.detach() + grad_norm
        bad = (~torch.isfinite(value)).float().reshape(())  # a scalar, as fused Adam wants it
        if self.ranks.distributed:  # every rank skips the same steps, or their weights would part
            import torch.distributed as dist

            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self.skipped += bad
        optimizer.found_inf = bad

    def add(self, state: LoopState, loss: torch.Tensor, stats: dict[str, torch.Tensor], rows: int) -> None:
        self.loss_sum += loss.detach().double() * rows
        self.correct += stats.get("correct", 0)
        for name, value in stats.items():
            if name == "correct":
                continue
            if name not in self.parts:
                self.parts[name] = torch.zeros((), dtype=torch.float64, device=self.loss_sum.device)
            self.parts[name] += value.double()

    def read(self, state: LoopState) -> None:
        """The device's sums into the loop state, in one wait."""
        names = list(self.parts)
        values = torch.stack([self.loss_sum, self.correct.double(), self.skipped.double(),
                              *(self.parts[n] for n in names)]).tolist()
        loss_sum, correct, self.skipped_read = values[:3]
        self.loss_sum.zero_()
        self.correct.zero_()
        for name, value in zip(names, values[3:]):
            self.parts[name].zero_()
            state.objective_sums[name] = state.objective_sums.get(name, 0.0) + value
        state.loss_sum += loss_sum
        state.correct += int(correct)

    def check(self) -> None:
        """Stop if a step was skipped as non-finite (by the count last read: the same on every rank)."""
        if self.skipped_read:
            raise self.diverged(what=f"{int(self.skipped_read)} step(s) had a non-finite loss or gradient (they "
                                     "were skipped)")


# ---------------------------------------------------------------- the engine
class Engine:
    """One training run's loop; see the module docstring for what a task supplies."""

    def __init__(self, model: nn.Module, stream: Stream, objective: Objective, validate: Validate,
                 settings: EngineSettings, run_dir: Path, *, rank: Rank, device: torch.device, seed: int,
                 reporter: Reporter | None = None, stop: Any = None, checkpoint: dict[str, Any] | None = None,
                 extra_state: Callable[[], dict[str, Any]] = dict,
                 before_epoch: Callable[[int], None] | None = None,
                 param_groups: list[dict[str, Any]] | None = None,
                 saved: Callable[[Path], None] | None = None) -> None:
        self.saved = saved  # told each checkpoint written (main rank): `train --overwrite` then drops the old run
        self.model, self.stream, self.objective, self.validate = model, stream, objective, validate
        self.columns: dict[str, str] = getattr(objective, "columns", {})
        self.backward_inside: bool = getattr(objective, "backward_inside", False)
        self.before_epoch = before_epoch
        self.s, self.run_dir, self.device = settings, Path(run_dir), device
        self.ranks = Ranks(rank, device)
        self.reporter, self.stop, self.extra_state = reporter, stop if stop is not None else False, extra_state
        self.params = list(model.parameters())
        self._setup_precision()
        # param_groups: the optimizer's groups, each with its own "lr" (discriminative rates); default: one, at lr.
        # A group marked "sparse": True (the n-gram table, model.ngrams.sparse) has sparse gradients: LazyAdam steps
        # the rows they touch, and clipping leaves them out (_optimizer_step)
        groups = param_groups or [{"params": self.params}]
        sparse = {id(p) for g in groups if g.get("sparse") for p in g["params"]}
        self.sparse_params = [p for p in self.params if id(p) in sparse]
        self.dense_params = [p for p in self.params if id(p) not in sparse]
        self.optimizer = build_optimizer(groups, lr=settings.lr, weight_decay=settings.weight_decay,
                                         fused=self.sync.lazy)
        n_batches = stream.set_epoch(0)
        if n_batches == 0:
            raise SentimentError(f"the data make fewer batches of {settings.batch_size} than there are processes "
                                 f"({rank.world_size}): lower the batch size or the process count")
        steps = math.ceil(n_batches / settings.grad_accum) * settings.epochs  # optimizer steps
        if checkpoint is not None:
            steps = int(checkpoint["loop"].get("schedule_steps") or steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor(steps))
        self.state = LoopState(schedule_steps=steps)
        if checkpoint is not None:
            self._resume(checkpoint)
        if rank.distributed:
            # every rank starts from the same weights (one seed); dropout masks differ by rank
            torch.manual_seed(seed * 1_000_003 + rank.rank * 7919 + self.state.global_step)
        self.state.world_size = rank.world_size
        stream.restore(self.state)
        if self.backward_inside and rank.distributed:
            broadcast_weights(rank, model)
        self.net = self._wrap()

    def _setup_precision(self) -> None:
        use_amp = self.s.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and self.amp_dtype == torch.float16)
        self.ran_on = describe_device(self.device, self.amp_dtype if use_amp else None)
        # Lazy host syncs (default on CUDA): fused Adam skips a non-finite step on the device. fp16's grad scaler
        # skips overflow steps itself, so it keeps the eager path.
        lazy = self.s.lazy_sync if self.s.lazy_sync is not None else self.device.type == "cuda"
        if lazy and not self.scaler.is_enabled():
            self.sync: EagerSync | LazySync = LazySync(self.ranks, self._diverged, self.device)
        else:
            self.sync = EagerSync(self.ranks, self._diverged)

    def _factor(self, steps: int) -> Callable[[int], float]:
        return schedule(self.s.warmup_steps, self.s.lr_schedule, steps)

    def _wrap(self) -> nn.Module:
        """What the loop calls (DDP syncs the parameters that need gradients when it is built)."""
        self.wrapped_for = tuple(p.requires_grad for p in self.params)
        return self.ranks.wrap(self.model, manual=self.backward_inside)

    # ------------------------------------------------------------ checkpoints
    def _resume(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = LoopState(**{"schedule_steps": self.state.schedule_steps, **checkpoint["loop"]})
        set_rng_state(checkpoint["rng"])
        if self.state.world_size != self.ranks.rank.world_size:
            self._regroup(self.ranks.rank.world_size)
        if self.ranks.rank.is_main:
            truncate_metrics(self.run_dir, self.state.epoch)

    def _regroup(self, world_size: int) -> None:
        """A run resumed on another number of processes continues from the same global place: the batches done in
        this epoch, the steps done and the schedule's length are counted in batches of all ranks, then divided among
        the new number of processes (the data order is the same; which rank reads which batch is not)."""
        state, scheduler, old = self.state, self.scheduler, self.state.world_size
        state.step_in_epoch = state.step_in_epoch * old // world_size
        state.global_step = state.global_step * old // world_size
        state.schedule_steps = max(1, state.schedule_steps * old // world_size)
        state.unlabeled_step = state.unlabeled_step * old // world_size
        state.world_size = world_size
        scheduler.lr_lambdas = [self._factor(state.schedule_steps)] * len(scheduler.optimizer.param_groups)
        scheduler.last_epoch = scheduler.last_epoch * old // world_size  # optimizer steps, counted like the rest
        # the rates of the new place: what LambdaLR.get_lr() computes, without its "call step()" warning
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * scheduler.lr_lambdas[0](scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    def snapshot(self) -> dict[str, Any]:
        if not all(bool(torch.isfinite(p).all()) for p in self.params):  # not reachable through the guards
            raise TrainingDiverged(f"the weights are not finite at epoch {self.state.epoch + 1}; nothing was saved "
                                   f"over {self.run_dir / LAST}")
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "loop": asdict(self.state), "rng": rng_state(), **self.extra_state()}

    def save(self, name: str) -> None:
        if self.ranks.rank.is_main:  # one writer; the others' state is the same but for RNGs and their data place
            save_checkpoint(self.run_dir / name, self.snapshot())
            if self.saved is not None:
                self.saved(self.run_dir / name)

    def _diverged(self, *, loss: torch.Tensor | None = None, grad_norm: torch.Tensor | None = None,
                  what: str | None = None) -> TrainingDiverged:
        kept, epoch, step = _kept(self.run_dir), self.state.epoch + 1, self.state.step_in_epoch
        if what is not None:  # the lazy path: read some steps after it happened
            return TrainingDiverged(f"{what}, by epoch {epoch}, step {step}; stopped. {kept}; try a lower train.lr or "
                                    "set train.grad_clip")
        what = (f"loss became {loss.item()}" if not torch.isfinite(loss)
                else f"gradient norm became {grad_norm.item()} (loss {loss.item():.4f})")
        return TrainingDiverged(f"{what} at epoch {epoch}, step {step + 1}; stopped. {kept}; try a lower train.lr "
                                "or set train.grad_clip")

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        """Train from the state's place to settings.epochs, early stopping or the budget. Raises
        TrainingInterrupted (saved) on a stop request, TrainingDiverged on a non-finite step."""
        self.net.train()
        self.last_saved = self.started = time.monotonic()
        self.last_report = 0.0
        patience = self.s.early_stopping_patience
        stopped_early = patience is not None and self.state.epochs_without_gain >= patience  # resumed, finished
        for epoch in range(self.state.epoch, self.s.epochs if not stopped_early else self.state.epoch):
            out_of_time = self._epoch(epoch)
            if out_of_time and self.state.step_in_epoch < self.n_batches:
                self._end_partial_epoch(epoch)  # saved where it stopped: --resume reads the rest of the epoch
                break
            self._end_epoch(epoch)
            if out_of_time or (patience is not None and self.state.epochs_without_gain >= patience):
                break

    def _epoch(self, epoch: int) -> bool:
        """The batches of one epoch from the state's place; True when the time budget ended it early."""
        if self.before_epoch is not None:
            self.before_epoch(epoch)  # may change which parameters train (frozen embeddings)
        n_batches = self.n_batches = self.stream.set_epoch(epoch)
        if tuple(p.requires_grad for p in self.params) != self.wrapped_for:
            self.net = self._wrap()
        if self.reporter:
            self.reporter.epoch_start(epoch + 1, self.s.epochs, n_batches, self.state.step_in_epoch)
            self.logged = self._sums()
        started = time.perf_counter() - self.state.seconds
        for i in range(self.state.step_in_epoch, n_batches):
            boundary = self._step(i, n_batches, started)
            if boundary and self._between_steps(epoch):
                self._settle()
                return True
        self._settle()
        return False

    def _step(self, i: int, n_batches: int, started: float) -> bool:
        """One batch: forward and backward, and on an accumulation group's last batch the optimizer step. True then
        (a checkpoint never holds half an accumulated gradient)."""
        accum = self.s.grad_accum
        boundary = (i + 1) % accum == 0 or i + 1 == n_batches  # a group ends early at the epoch's end
        batch = self.stream.batch(i)
        self.stream.record(self.state)
        if i % accum == 0:
            self.optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)
        if self.backward_inside:
            with autocast:
                loss, stats = self.objective(self.model, batch, backward=self.backward)
            if boundary:
                self.ranks.average(self.params)
        else:
            with self.ranks.no_sync(self.net, boundary):
                with autocast:
                    loss, stats = self.objective(self.net, batch)
                weight = getattr(batch, "weight", 1.0)  # the classifier's rows under DDP (Batch.weight)
                self.backward(loss * weight if weight != 1.0 else loss)
        if boundary:
            self._optimizer_step(loss)
        self._count(batch, loss, stats, started, last=i + 1 == n_batches)
        return boundary

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """The scaled backward pass (for accumulation and fp16), in the dtypes forward chose."""
        with torch.autocast(self.device.type, enabled=False):
            accum = self.s.grad_accum
            self.scaler.scale(loss / accum if accum > 1 else loss).backward(retain_graph=retain_graph)

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        grad_norm = None
        if self.s.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.dense_params, self.s.grad_clip)
        elif not self.scaler.is_enabled():
            grad_norm = nn.utils.get_total_norm([p.grad for p in self.dense_params if p.grad is not None])
        if grad_norm is not None and self.sparse_params:
            # Clipping leaves the sparse n-gram table out (torch clips dense gradients only): each text's n-gram
            # vector has unit L2 norm, so a batch's gradient there is bounded by its loss's. The guard below still
            # sees it: its values' norm joins the dense one (a NaN or inf there stops or skips the step alike)
            grad_norm = torch.linalg.vector_norm(torch.stack([grad_norm, self._sparse_norm()]))
        self.sync.guard(self.optimizer, loss, grad_norm, self.scaler.is_enabled())  # before stepping on it
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def _sparse_norm(self) -> torch.Tensor:
        """The L2 norm of the sparse gradients' values (uncoalesced: not finite where one value is not)."""
        norms = [torch.linalg.vector_norm(p.grad._values()) for p in self.sparse_params if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros((), device=self.device)

    def _count(self, batch: Any, loss: torch.Tensor, stats: dict[str, torch.Tensor], started: float,
               last: bool) -> None:
        state = self.state
        state.step_in_epoch += 1
        state.global_step += 1
        self.sync.add(state, loss, stats, batch.rows)
        state.objective_steps += 1 if len(stats) > ("correct" in stats) else 0
        state.seen += batch.rows
        state.tokens += batch.tokens
        state.seconds = time.perf_counter() - started
        if self.reporter and (not self.sync.lazy or time.monotonic() - self.last_report >= 0.5 or last):
            self.sync.read(state)  # this rank's loss and accuracy; tokens/s of all ranks (they take equal shares)
            if not self.ranks.distributed:
                self.sync.check()  # under DDP every rank checks at the same steps (_between_steps)
            self.reporter.step(state.step_in_epoch, state.loss_sum / state.seen, state.correct / state.seen,
                               self.ranks.rank.world_size * state.tokens / max(state.seconds, 1e-9))
            if getattr(self.reporter, "scalars", None) is not None:
                self._log_since_last_report()
            self.last_report = time.monotonic()

    def _sums(self) -> tuple[float, int, int, int, float]:
        state = self.state
        return state.loss_sum, state.correct, state.seen, state.tokens, state.seconds

    def _log_since_last_report(self) -> None:
        """A logging reporter's figures of the batches since the last report (the epoch's running means would saw
        back at each epoch's start), under the run's global step."""
        (loss_sum, correct, seen, tokens, seconds), self.logged = self.logged, self._sums()
        rows, elapsed = max(self.state.seen - seen, 1), max(self.state.seconds - seconds, 1e-9)
        self.reporter.scalars(self.state.global_step, {
            "loss": (self.state.loss_sum - loss_sum) / rows, "accuracy": (self.state.correct - correct) / rows,
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": self.ranks.rank.world_size * (self.state.tokens - tokens) / elapsed})

    def _settle(self) -> None:
        """Every rank, at the same step: the device's sums read, and a skipped non-finite step stops the run."""
        self.sync.read(self.state)
        self.sync.check()

    def _between_steps(self, epoch: int) -> bool:
        """After an optimizer step: stop on request (saved), save every checkpoint_minutes; True when the time budget
        is spent. Under DDP the ranks agree every few steps, in one collective."""
        if not self.ranks.agrees_now(self.state.global_step):
            return False
        now = time.monotonic()
        due = now - self.last_saved >= 60 * self.s.checkpoint_minutes  # a kill -9 loses at most this much work
        spent = self.s.max_minutes is not None and now - self.started >= 60 * self.s.max_minutes
        stop, due, spent = self.ranks.agree(bool(self.stop), due, spent)
        if self.sync.lazy and self.ranks.distributed:
            self._settle()
        if stop:
            self._settle()
            self.save(LAST)
            raise TrainingInterrupted(
                f"interrupted at epoch {epoch + 1}, step {self.state.step_in_epoch}; saved {self.run_dir / LAST}. "
                f"Resume with: sentiment train --resume {self.run_dir}")
        if due and not spent:
            self._settle()
            self.save(LAST)
            self.last_saved = time.monotonic()
        return spent

    def _end_partial_epoch(self, epoch: int) -> None:
        """The time budget ended the epoch after its step `step_in_epoch`: last.pt is saved at that step, as an
        interruption saves it (a resume continues the epoch exactly, bitwise as if never stopped), before the
        partial epoch is scored. Its metrics row says partial (a resume drops it and scores the whole epoch);
        best.pt is written from it only while no whole epoch has one, and the loop state keeps no trace of it (the
        best score, early stopping), so a resumed run ends as an uninterrupted one."""
        self.save(LAST)
        self.last_saved = time.monotonic()
        row, _ = self._row(epoch)
        first = self.state.best_epoch == 0  # without it, a budget shorter than an epoch leaves no best.pt
        row["partial"], row["best"] = True, first
        if self.ranks.rank.is_main:
            append_metrics(self.run_dir, row)
        if first:
            self.save(BEST)
        if self.reporter:
            self.reporter.epoch_end(row)
            self.reporter.note(f"the time budget ({self.s.max_minutes:g} minutes) ended epoch {epoch + 1} after "
                               f"{self.state.step_in_epoch:,} of {self.n_batches:,} batches: its figures are of "
                               f"those batches; last.pt is saved there and --resume continues the epoch")

    def _row(self, epoch: int) -> tuple[dict[str, Any], float]:
        """The epoch's metrics row (the model validated, the ranks' sums added) and its validation score."""
        state = self.state
        metrics, score = self.validate(self.model)
        names = list(self.columns)
        loss_sum, correct, seen, tokens, steps, *part_sums = self.ranks.sum(
            [state.loss_sum, state.correct, state.seen, state.tokens, state.objective_steps,
             *(state.objective_sums.get(n, 0.0) for n in names)])
        timing = {k: v for k, v in metrics.items() if k.endswith("seconds")}
        row = {"epoch": epoch + 1, "step": state.global_step,
               "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               **{k: v for k, v in metrics.items() if k not in timing}, "lr": self.scheduler.get_last_lr()[0],
               "seconds": state.seconds, "tokens_per_s": tokens / max(state.seconds, 1e-9), **timing,
               "processes": self.ranks.rank.world_size, "device": self.ran_on,
               "global_batch_size": self.s.batch_size * self.ranks.rank.world_size * self.s.grad_accum}
        for name, value in zip(names, part_sums):  # each part's mean per step, before its weight
            row[self.columns[name]] = value / max(steps, 1)
        return row, score

    def _end_epoch(self, epoch: int) -> None:
        """Validation, the metrics row, best.pt and last.pt, and the early-stopping count."""
        state = self.state
        row, score = self._row(epoch)
        improved = state.best_epoch == 0 or score > state.best_valid_accuracy  # the first scored epoch is the best
        self.state = LoopState(epoch=epoch + 1, global_step=state.global_step, schedule_steps=state.schedule_steps,
                               world_size=self.ranks.rank.world_size, unlabeled_epoch=state.unlabeled_epoch,
                               unlabeled_step=state.unlabeled_step,
                               best_valid_accuracy=score if improved else state.best_valid_accuracy,
                               best_epoch=epoch + 1 if improved else state.best_epoch,
                               epochs_without_gain=0 if improved else state.epochs_without_gain + 1)
        row["best"] = improved
        if self.ranks.rank.is_main:
            append_metrics(self.run_dir, row)
        if improved:
            self.save(BEST)
        self.save(LAST)
        self.last_saved = time.monotonic()
        if self.reporter:
            self.reporter.epoch_end(row)
