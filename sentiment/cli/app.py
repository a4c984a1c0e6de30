"""The Typer app every command registers on, the consoles, one-line errors, and options several commands share."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from sentiment.errors import SentimentError

app = typer.Typer(
    help="Train, evaluate and serve recurrent text classifiers (BiLSTM/BiGRU + GloVe) on IMDB or your own labeled text (CSV, TSV, JSONL, Parquet, Hugging Face datasets), with two or more classes.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_debug = False


def _print_version(value: bool) -> None:
    if value:
        import platform

        import torch

        from sentiment import __version__

        console.print(f"sentiment {__version__} (torch {torch.__version__}, Python {platform.python_version()})",
                      highlight=False)
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version (and torch's) and exit.")) -> None:
    global _debug
    _debug = debug


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our errors (and Ctrl-C outside training) into one line on stderr and an exit code."""
    try:
        yield
    except SentimentError as e:
        if _debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        if _debug:
            raise
        err_console.print("[bold red]interrupted[/]", soft_wrap=True)
        raise typer.Exit(130) from None


DataDirOption = typer.Option(None, "--data-dir", envvar="SENTIMENT_DATA_DIR",
                             help="Data directory (default: data/, or $SENTIMENT_DATA_DIR).")


ConfigOption = typer.Option(None, "--config", "-c", help="YAML experiment config (defaults: the CPU recipe).")
SetOption = typer.Option([], "--set", help="Override a config key, e.g. --set model.rnn=gru (repeatable).")


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in ("best", "last"):
        raise SentimentError(f"--checkpoint must be best or last, got {checkpoint!r}")


def _note_skipped(skipped: int) -> None:
    if skipped:
        err_console.print(f"[yellow]note:[/] skipped {skipped:,} empty review{'s' if skipped != 1 else ''} "
                          "(no text)", soft_wrap=True)


