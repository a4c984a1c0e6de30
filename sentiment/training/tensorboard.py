"""TensorBoard event files in the run directory, written through the engine's reporting seam.

`TensorBoardReporter` is a Reporter (engine.py) that writes what the loop reports and passes every call on to the
reporter it wraps (the CLI's progress bars, or none). Per logging step, under the run's global step: train/loss,
train/accuracy (the batches since the last report), train/lr and train/tokens_per_s. Per epoch, at the step the
epoch ended: every number of its metrics.jsonl row as epoch/<column>. At the end: the config's hyperparameters
(flattened dotted keys, scalars only) with the final figures (final/<name>), for TensorBoard's HPARAMS tab.

A resumed run continues the same curves: its writer opens with purge_step = the checkpoint's global step + 1, so
TensorBoard hides what the interrupted process logged after that checkpoint (it is trained again), and no step
appears twice. Only the main rank writes (the task creates the log there alone).

run.tensorboard: auto writes events where the tensorboard package is installed, true requires it (one error line
naming the `track` extra, before training starts), false writes none.
"""

from __future__ import annotations

import importlib.util
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sentiment.config import Config, flat_config
from sentiment.errors import SentimentError

NOT_INSTALLED = ("run.tensorboard: true needs the tensorboard package: pip install 'sentiment[track]' (or set "
                 "run.tensorboard: auto, which writes event files only where it is installed)")
# metrics.jsonl columns that are not curves: where the row sits, and how the run was laid out
NOT_CURVES = frozenset({"epoch", "step", "processes", "global_batch_size", "best", "partial"})


def tensorboard_installed() -> bool:
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):  # a broken install, or a module entry without a spec
        return False


def tensorboard_enabled(setting: bool | str) -> bool:
    """Whether a run with run.tensorboard = setting writes event files; true without the package is an error."""
    if setting is False:
        return False
    installed = tensorboard_installed()
    if setting is True and not installed:
        raise SentimentError(NOT_INSTALLED)
    return installed


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The config's scalar leaves (numbers, strings, booleans) under dotted keys; lists and nulls left out."""
    return {k: v for k, v in flat_config(cfg.to_dict()).items() if isinstance(v, (bool, int, float, str))}


def final_figures(results: dict[str, Any]) -> dict[str, float]:
    """results.json's headline figures: accuracy and macro-F1 of each split scored (a classifier), held-out
    perplexity and loss (pretraining), and the best epoch."""
    figures: dict[str, float] = {}
    for split in ("valid", "test"):
        for name in ("accuracy", "macro_f1", "loss"):
            value = _number((results.get(split) or {}).get(name)) if isinstance(results.get(split), dict) else None
            if value is not None:
                figures[f"final/{split}_{name}"] = value
    for key, value in results.items():
        if key.startswith("held_out_") and _number(value) is not None:
            figures[f"final/{key}"] = float(value)
    if _number(results.get("best_epoch")) is not None:
        figures["final/best_epoch"] = float(results["best_epoch"])
    return figures


class TensorBoardReporter:
    """A Reporter that writes event files and passes every call on to `inner` (None: to no one)."""

    def __init__(self, run_dir: Path, inner: Any = None, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.inner = inner
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, flush_secs=30)
        self.last_step = max(0, (purge_step or 1) - 1)

    @property
    def reporter(self) -> "TensorBoardReporter":
        """What the engine is given (as NoTensorBoard.reporter)."""
        return self

    def epoch_start(self, epoch: int, epochs: int, n_batches: int, done: int) -> None:
        if self.inner is not None:
            self.inner.epoch_start(epoch, epochs, n_batches, done)

    def step(self, done: int, loss: float, accuracy: float, tokens_per_s: float) -> None:
        if self.inner is not None:
            self.inner.step(done, loss, accuracy, tokens_per_s)

    def scalars(self, global_step: int, values: dict[str, float]) -> None:
        """A logging step's figures (the engine calls this after step())."""
        for name, value in values.items():
            if _number(value) is not None:
                self.writer.add_scalar(f"train/{name}", value, global_step)
        self.last_step = global_step
        if getattr(self.inner, "scalars", None) is not None:
            self.inner.scalars(global_step, values)

    def epoch_end(self, row: dict[str, Any]) -> None:
        step = int(row.get("step", self.last_step))
        for name, value in row.items():
            if name not in NOT_CURVES and _number(value) is not None:
                self.writer.add_scalar(f"epoch/{name}", value, step)
        self.writer.add_scalar("epoch/epoch", row.get("epoch", 0), step)
        self.last_step = step
        if self.inner is not None:
            self.inner.epoch_end(row)

    def note(self, message: str) -> None:
        if self.inner is not None:
            self.inner.note(message)

    def hparams(self, cfg: Config, results: dict[str, Any]) -> None:
        """The run's hyperparameters and final figures, at its last step (the HPARAMS tab reads these)."""
        from torch.utils.tensorboard.summary import hparams

        figures = final_figures(results)
        experiment, start, end = hparams(hyperparameters(cfg), figures)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary, self.last_step)
        for name, value in figures.items():
            self.writer.add_scalar(name, value, self.last_step)

    def close(self) -> None:
        self.writer.close()


class NoTensorBoard:
    """What a run without event files (run.tensorboard false, the package missing under auto, or a rank other than
    the main one) uses in TensorBoardReporter's place: the task's own reporter, and nothing written."""

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter

    def hparams(self, cfg: Config, results: dict[str, Any]) -> None:
        pass


@contextmanager
def tensorboard_log(cfg: Config, run_dir: Path, reporter: Any, *, main: bool,
                    checkpoint: dict[str, Any] | None) -> Iterator[Any]:
    """`with tensorboard_log(cfg, run_dir, reporter, main=rank.is_main, checkpoint=last_pt) as log:` then
    Engine(..., reporter=log.reporter) and, after the final figures, log.hparams(cfg, results). checkpoint: the
    last.pt a resumed run continues from (its global step is where the curves go on)."""
    if not main or not tensorboard_enabled(cfg.run.tensorboard):
        yield NoTensorBoard(reporter)
        return
    purge_step = int(checkpoint["loop"]["global_step"]) + 1 if checkpoint is not None else None
    board = TensorBoardReporter(run_dir, reporter, purge_step)
    try:
        yield board
    finally:
        board.close()
