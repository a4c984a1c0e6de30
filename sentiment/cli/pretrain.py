"""`sentiment pretrain`: the encoder as a language model over the training and unlabeled texts (one process, or
several through torchrun with `--nproc`). Fine-tune from its run with `sentiment train --set model.init_from=RUN`."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from sentiment.cli.app import ConfigOption, SetOption, app, console, user_errors
from sentiment.cli.train import RichReporter, RunStart, _claim_run_dir, _forget_start, _launch, _print_recovered
from sentiment.config import check_pretrain_config
from sentiment.errors import SentimentError
from sentiment.runlock import RunLock, held_by_parent, no_checkpoint_error
from sentiment.training.tensorboard import tensorboard_enabled

# what a resumed pretraining may change: where and how fast it runs, and its time budget
RESUMABLE_KEYS = {"pretrain.max_minutes", "train.eval_batch_size", "run.device", "run.threads", "run.output_dir",
                  "run.checkpoint_minutes", "run.flush_denormal", "run.tensorboard", "data.data_dir", "data.workers"}


class LanguageModelReporter(RichReporter):
    """The training bar, with perplexity where the classifier shows accuracy."""

    def step(self, done: int, loss: float, accuracy: float, tokens_per_s: float) -> None:
        self.progress.update(self.task, completed=done,
                             stats=f"loss {loss:.3f} · ppl {math.exp(min(loss, 700)):,.1f} · {tokens_per_s:,.0f} tok/s")

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.remove_task(self.task)
        out = self.progress.console
        if not self.header_done:
            out.print(f"{'epoch':>5} {'fwd ppl':>9} {'bwd ppl':>9} {'held-out fwd':>12} {'held-out bwd':>12} "
                      f"{'time':>7} {'tok/s':>9}")
            self.header_done = True
        mark = " [green]★ best[/]" if row.get("best") else ""
        train = [math.exp(min(row[f"train_{d}_loss"], 700)) for d in ("forward", "backward")]
        out.print(f"{row['epoch']:>5} {train[0]:>9,.1f} {train[1]:>9,.1f} {row['valid_forward_perplexity']:>12,.1f} "
                  f"{row['valid_backward_perplexity']:>12,.1f} {row['seconds']:>6.0f}s {row['tokens_per_s']:>9,.0f}{mark}")


@app.command(short_help='Pretrain the encoder as a language model on unlabeled text, to fine-tune from.')
def pretrain(
    config: Optional[Path] = ConfigOption,
    set_: list[str] = SetOption,
    run_dir: Optional[Path] = typer.Option(None, help="Output directory (default: runs/<config>-<time>)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the pretraining in this directory from its last.pt."),
    overwrite: bool = typer.Option(False, help="Replace --run-dir if it already exists."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="Pretrain with this many processes on this "
                                        "machine (DistributedDataParallel, as `sentiment train --nproc`)."),
) -> None:
    """Pretrain the encoder as a language model (forward: next token; backward: previous token) on the training
    split's texts and data.unlabeled, as the config's `pretrain:` section says. Fine-tune from the run directory with
    `sentiment train --set model.init_from=RUN_DIR`."""
    from sentiment import distributed
    from sentiment.config import dump_config, load_config
    from sentiment.data.prepare import prepare_data
    from sentiment.device import resolve_device
    from sentiment.floats import flush_denormals

    if nproc is not None and "RANK" not in os.environ and not print_config:
        with user_errors():
            check_pretrain_config(load_config(config, set_)) if resume is None else None
            _launch(nproc, config, set_, run_dir, resume, overwrite, resume_config=_resume_config,
                    default_run_dir=_default_run_dir)
        return
    with user_errors():
        rank = distributed.from_env()
        if rank.is_main and not print_config:  # before --resume reads it: a killed --overwrite may have moved it
            _print_recovered(resume or run_dir)
        if resume is not None:
            cfg, target = _resume_config(resume, config, set_)
        else:
            cfg = load_config(config, set_)
            check_pretrain_config(cfg)
            target = run_dir or _default_run_dir(cfg)
        if print_config:
            if rank.is_main:
                console.print(dump_config(cfg), end="", markup=False, highlight=False)
            return
        tensorboard_enabled(cfg.run.tensorboard)  # true without the package: refused before the data are read
        flush_denormals(cfg.run.flush_denormal)
        device = distributed.rank_device(rank, resolve_device(cfg.run.device))
        distributed.init(rank, device)
        lock = None
        try:
            target = distributed.broadcast(rank, target)
            if rank.is_main and not held_by_parent(target):
                lock = RunLock(target)  # one writer per run directory, until this process ends
            distributed.together(rank, lambda: lock.acquire(), only=lock is not None, what="locking the run directory")
            data, start = None, []
            try:
                if resume is None:
                    distributed.together(rank, lambda: _claim_run_dir(target, overwrite, check_only=True),
                                         only=rank.is_main, what="checking the run directory")
                    data = distributed.once_per_machine(rank, lambda: prepare_data(cfg.data, embedding_seed=cfg.run.seed))
                    distributed.together(rank, lambda: start.append(_claim_run_dir(target, overwrite)),
                                         only=rank.is_main, what="creating the run directory")
                if rank.is_main:
                    console.print(f"run directory: [bold]{escape(str(target))}[/]", soft_wrap=True)
                results = _pretrain_reporting(cfg, target, data, resume is not None, rank, start[0] if start else None)
            except BaseException:  # a new run that fails before its first checkpoint leaves what was there
                if start:
                    _forget_start(target, start[0])
                raise
            if start:
                start[0].drop_replaced()
        finally:
            if lock is not None:
                lock.release()
            distributed.shutdown()
    if rank.is_main:
        console.print(f"best epoch: {results['best_epoch']} of {results['epochs_run']} · {results['passes']:.2f} passes "
                      f"over {results['train_tokens']:,} tokens")
        if "held_out_forward_perplexity" in results:
            console.print(f"held-out perplexity: forward [bold]{results['held_out_forward_perplexity']:,.1f}[/] · "
                          f"backward [bold]{results['held_out_backward_perplexity']:,.1f}[/]")
        console.print(f"fine-tune with: sentiment train --set model.init_from={escape(str(target))}", soft_wrap=True)


def _default_run_dir(cfg: Any) -> Path:
    return Path(cfg.run.output_dir) / f"{cfg.run.name or 'pretrain'}-{datetime.now():%Y%m%d-%H%M%S}"


def _pretrain_reporting(cfg: Any, target: Path, data: Any, resume: bool, rank: Any, start: RunStart | None) -> dict:
    """The pretraining, drawn by LanguageModelReporter on the main rank; a run an --overwrite replaces is deleted
    once the new one has written its first checkpoint."""
    from sentiment.training.pretrain import pretrain as pretrain_run
    from sentiment.training.train import graceful_stop

    reporter = LanguageModelReporter() if rank.is_main else None
    try:
        with graceful_stop() as stop:
            return pretrain_run(cfg, target, data=data, resume=resume, reporter=reporter, stop=stop, rank=rank,
                                saved=start.drop_replaced if start is not None else None)
    finally:
        if reporter is not None:
            reporter.close()


def _resume_config(run_dir: Path, config: Path | None, overrides: list[str]):
    from sentiment.config import apply_overrides, config_from_dict, load_config
    from sentiment.runs import LAST, load_run
    from sentiment.training.resume import changed_keys

    saved, _ = load_run(run_dir, pretraining=True)
    if not (run_dir / LAST).exists():
        raise no_checkpoint_error(run_dir)  # another process still starting it, or it never finished a step
    if config is not None:
        wanted = load_config(config, overrides)
        wanted.run.name = saved.run.name
    else:
        wanted = config_from_dict(apply_overrides(saved.to_dict(), overrides))
    refused = [k for k in changed_keys(saved.to_dict(), wanted.to_dict()) if k not in RESUMABLE_KEYS]
    if refused:
        raise SentimentError(f"cannot resume {run_dir} with a changed config ({', '.join(refused)}): those keys change "
                             "the language model or its training; start a new run instead")
    return wanted, run_dir
