"""`sentiment tune`: a hyperparameter study on Optuna, each trial a `sentiment train`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich import box
from rich.table import Table

from sentiment.errors import SentimentError

from sentiment.cli.app import ConfigOption, SetOption, app, console, user_errors

SHOWN_TRIALS = 6  # the best trials in the printed table (one column each); trials.csv holds them all


@app.command(short_help="Tune a config's hyperparameters on validation (Optuna): trials of `train` over a space.")
def tune(
    config: Optional[Path] = ConfigOption,
    space: Path = typer.Option(..., "--space", help="YAML file of the keys to tune: `train.lr: {low: 1.0e-4, high: "
                               "1.0e-2, log: true}` (a range; int keys: `step:`), `model.rnn: \\[gru, lstm]` (choices)."),
    trials: int = typer.Option(..., "--trials", help="The study's total of finished (complete or pruned) trials: "
                               "the same command run again continues the study to this many. Failed ones do not "
                               "count."),
    study_dir: Path = typer.Option(..., "--study-dir", help="Where the trials' run directories (trials/NNNN), "
                                   "best.yaml, trials.csv and, by default, the study's SQLite file go."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Where the study lives (default: SQLite in "
                                          "--study-dir). A PostgreSQL URL, postgresql://USER:PASSWORD@HOST/DB, "
                                          "lets `sentiment tune` on several machines share one study."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="The study's name in --storage (default: "
                                             "--study-dir's name)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Start no trial after this many seconds (a "
                                            "running one finishes)."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes on this machine, each training one trial with "
                             "cores / jobs threads."),
    seed: int = typer.Option(0, "--seed", help="Seeds the sampler (TPE); each trial's training uses run.seed."),
    pruner: str = typer.Option("median", "--pruner", help="Stop unpromising trials by their validation accuracy "
                               "per epoch: median (below the median of earlier trials at that epoch, from epoch 2 "
                               "and after 5 trials), halving (successive halving), or none."),
    heartbeat: int = typer.Option(60, "--heartbeat", help="Seconds between a running trial's heartbeats; a trial "
                                  "silent for twice this (its worker was killed) is marked failed."),
    set_: list[str] = SetOption,
    data_file: Optional[Path] = typer.Option(None, "--data", help="Tune on your own labeled texts, as `train "
                                             "--data` trains (without --config: the short-text recipe)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="With --data: the text's column."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="With --data: the label's column."),
    valid_data: Optional[Path] = typer.Option(None, "--valid-data", help="With --data: the validation file."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="With --data: the test file."),
) -> None:
    """Search the space's values for the best validation accuracy: each trial trains the config with its values
    into --study-dir/trials/NNNN (run.eval_test false), and is pruned when its epochs fall behind. At the end
    nothing is retrained: the best trial's test figure is read once, --study-dir/best.yaml (train it with
    `sentiment train --config`) and trials.csv are written, and the best trials are shown."""
    from sentiment.cli.train import _own_data
    from sentiment.training.tune import TuneSettings, quiet_optuna, tune as run_tune

    with user_errors():
        own = _own_data(data_file, text_column, label_column, valid_data, test_data, None)
        settings = TuneSettings(space=str(space), trials=trials, study_dir=str(study_dir),
                                config=str(config) if config else None,
                                data={k: str(v) for k, v in own.items() if v is not None} if own else None,
                                overrides=list(set_), storage=storage, study_name=study_name, timeout=timeout,
                                jobs=jobs, seed=seed, pruner=pruner, heartbeat=heartbeat)
        quiet_optuna()
        progress = _TuneProgress()
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a `kill` ends the running trial, as Ctrl-C does
        try:
            summary = run_tune(settings, on_progress=progress.update, on_note=progress.note)
        finally:
            signal.signal(signal.SIGTERM, previous)
            progress.close()
        _print_summary(summary)
        if summary["best"] is None:
            raise SentimentError(f"no trial completed: see {summary['table']} and the logs in "
                                 f"{study_dir / 'trials'}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _TuneProgress:
    """One live bar: finished trials of --trials, the best validation accuracy so far, running and failed ones."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def update(self, p: Any) -> None:
        if self.progress is None:
            self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.fields[stats]}"), console=console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("trials", total=p.total, stats="")
        best = f"best valid {p.best:.2%}" if p.best is not None else "no trial finished yet"
        self.progress.update(self.task, completed=min(p.done, p.total),
                             stats=f"{best} · {p.running} running · {p.failed} failed")

    def note(self, message: str) -> None:
        (self.progress.console if self.progress else console).print(f"[yellow]note:[/] {escape(message)}",
                                                                    soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _print_summary(summary: dict[str, Any]) -> None:
    rows, p = summary["rows"], summary["progress"]
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3, "SURPLUS": 4}
    shown = sorted(rows, key=lambda r: (order.get(r["state"], 5), -(r["valid_accuracy"] or 0), r["number"]))
    keys = [k for k in (rows[0] if rows else {}) if k not in ("number", "state", "valid_accuracy", "epochs",
                                                                "seconds", "worker", "run_dir", "error")]
    # trials as columns, keys as rows: eight tuned keys still fit 80 columns; trials.csv has every trial
    console.print(f"study {escape(summary['study'])} · {p.done} of {p.total} trials finished"
                  f"{f' · {p.failed} failed' if p.failed else ''}", soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("trial", style="bold")
    for r in shown[:SHOWN_TRIALS]:
        table.add_column(str(r["number"]), justify="right")
    lines = [("state", lambda r: STATES.get(r["state"], r["state"].lower())),
             ("valid acc", lambda r: f"{r['valid_accuracy']:.2%}" if r["valid_accuracy"] is not None else ""),
             ("epochs", lambda r: str(r["epochs"])),
             *((name, lambda r, k=k: _value(r[k])) for name, k in zip(_short_names(keys), keys)),
             ("time", lambda r: f"{r['seconds']:.0f}s" if r["seconds"] is not None else "")]
    for name, cell in lines:
        table.add_row(escape(name), *(cell(r) for r in shown[:SHOWN_TRIALS]))
    console.print(table)
    if len(shown) > SHOWN_TRIALS:
        console.print(f"(the best {SHOWN_TRIALS} of {len(shown)}; all in {escape(summary['table'])})")
    best = summary["best"]
    if best is None:
        return
    console.print(f"best: trial {best['number']} · valid accuracy [bold]{best['valid']:.2%}[/] · "
                  f"run {escape(best['run_dir'])}", soft_wrap=True)
    if "test" in best:
        t = best["test"]
        console.print(f"its test figure (read once, chose nothing): accuracy [bold]{t['accuracy']:.2%}[/] · "
                      f"macro-F1 {t.get('macro_f1', float('nan')):.4f} ({t.get('n', 0):,} rows)")
    elif best.get("test_note"):
        console.print(f"[yellow]note:[/] {escape(best['test_note'])}", soft_wrap=True)
    console.print(f"best config: {escape(best['config'])} (sentiment train --config {escape(best['config'])})"
                  f" · all trials: {escape(summary['table'])}", soft_wrap=True)


STATES = {"COMPLETE": "done", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "SURPLUS": "surplus"}


def _short_names(keys: list[str]) -> list[str]:
    """Column names: the keys without their section (train.lr -> lr), unless two would read alike."""
    short = [k.split(".", 1)[-1] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys)]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else escape(str(value))
