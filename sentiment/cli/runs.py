"""`sentiment runs`: a table of the run directories in and under some folders, to compare them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich import box
from rich.table import Table

from sentiment.cli.app import app, console, user_errors
from sentiment.inference.runs_table import SORT_FIELDS, RunSummary, list_runs, sort_runs
from sentiment.paths import default_runs_dir

STATUS_STYLES = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red",
                 "incomplete": "magenta", "corrupt": "bold red"}


@app.command(short_help="Compare the run directories under DIR: status, what differs, the figures.")
def runs(
    dirs: Optional[list[Path]] = typer.Argument(None, metavar="DIR", show_default=False,
                                                help="Folders to look in and under (default: $SENTIMENT_RUNS_DIR, or "
                                                     "runs/)."),
    sort: str = typer.Option("name", "--sort", help=f"Order by this column ({', '.join(SORT_FIELDS)}) or config key "
                             "(e.g. train.lr): accuracies and F1 best first, the rest ascending."),
    reverse: bool = typer.Option(False, "--reverse", help="The other way round (runs without the value stay last)."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as a JSON list (every field, the whole "
                                 "flattened config included) instead of the table."),
) -> None:
    """List the classifier and pretraining runs in and under each DIR: name, status (finished, running, interrupted,
    failed, incomplete: killed without a word, corrupt: a file unreadable), the config keys whose values differ among
    the runs listed, best epoch, validation and test accuracy and macro-F1, and time. Only reads: no file is changed
    and no lock is taken."""
    with user_errors():
        found = sort_runs(list_runs(dirs or [default_runs_dir()]), sort, reverse)
    if as_json:
        console.print(json.dumps([asdict(r) for r in found], indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    if not found:
        where = ", ".join(str(d) for d in dirs or [default_runs_dir()])
        console.print(f"no run directories in {escape(where)}", soft_wrap=True)
        return
    table = runs_table(found)
    if console.is_terminal:  # the table fits the terminal
        console.print(table)
    else:  # piped or captured: every column at its full width, not cut to rich's default of 80
        natural = console.measure(table, options=console.options.update_width(1000)).maximum
        Console(width=max(console.width, natural), no_color=console.no_color).print(table)


def _value(value: Any) -> str:
    """A config value as YAML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _pair(accuracy: float | None, f1: float | None) -> str:
    """accuracy / macro-F1, in percent."""
    if accuracy is None:
        return ""
    return f"{100 * accuracy:.2f}/{100 * f1:.2f}" if f1 is not None else f"{100 * accuracy:.2f}"


def runs_table(found: list[RunSummary]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("run", overflow="fold", min_width=8)
    table.add_column("status", min_width=11, max_width=32)
    table.add_column("differs", overflow="fold", min_width=10)
    # the figures' widths: headers may wrap, figures may not
    widths = {"best": 4, "valid acc/F1 %": 11, "test acc/F1 %": 11, "time": 5}
    for header, width in widths.items():
        table.add_column(header, justify="right", min_width=width)
    for r in found:
        status = f"[{STATUS_STYLES.get(r.status, '')}]{r.status}[/]"
        if r.status in ("failed", "corrupt") and r.detail:
            status += f"\n[dim]{escape(r.detail[:80])}[/]"
        name = escape(r.name) + (" [dim](pretrain)[/]" if r.kind == "pretrain" else "")
        differs = "\n".join(f"{escape(k)}={escape(_value(v))}" for k, v in r.differs.items())
        best = f"{r.best_epoch}/{r.epochs_run}" if r.best_epoch is not None else ""
        valid = _pair(r.valid_accuracy, r.valid_macro_f1)
        if r.held_out_perplexity is not None:  # a language model's figure: held-out perplexity
            valid = f"ppl {r.held_out_perplexity:,.1f}"
        table.add_row(name, status, differs, best, valid, _pair(r.test_accuracy, r.test_macro_f1),
                      _duration(r.wall_seconds))
    return table
