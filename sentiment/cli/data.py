"""`sentiment download` and `sentiment prepare`."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table


from sentiment.cli.app import ConfigOption, DataDirOption, SetOption, app, console, err_console, user_errors

# ---------------------------------------------------------------- download
@app.command(short_help='Download IMDB and GloVe 6B into the data directory (resumable, checksummed).')
def download(
    data_dir: Optional[Path] = DataDirOption,
    imdb_source: Optional[str] = typer.Option(None, envvar="SENTIMENT_IMDB_SOURCE",
        help="IMDB archive: URL, file:// URL, path to aclImdb_v1.tar.gz, or an extracted aclImdb directory."),
    glove_source: Optional[str] = typer.Option(None, envvar="SENTIMENT_GLOVE_SOURCE",
        help="GloVe: URL, file:// URL, path to glove.6B.zip (or one glove.6B.<dim>d.txt/zip), or a directory."),
    glove_dim: list[int] = typer.Option([50], "--glove-dim", help="GloVe dimension(s) to install: 50, 100, 200, 300."),
    imdb_sha256: Optional[str] = typer.Option(None, help="Verify a custom IMDB source against this sha256."),
    glove_sha256: Optional[str] = typer.Option(None, help="Verify a custom GloVe source against this sha256."),
    skip_glove: bool = typer.Option(False, help="Install IMDB only."),
    force: bool = typer.Option(False, help="Download and extract again even if in place."),
) -> None:
    """Download and extract IMDB and GloVe 6B into the data directory (resumable, checksummed)."""
    from sentiment.data import download as dl
    from sentiment.paths import default_data_dir

    data_dir = data_dir or default_data_dir()
    with user_errors(), _byte_progress() as progress:
        results = [dl.download_imdb(data_dir, imdb_source, sha256=imdb_sha256, progress=progress, force=force)]
        if not skip_glove:
            for dim in glove_dim:
                results.append(dl.download_glove(data_dir, dim, glove_source, sha256=glove_sha256,
                                                 progress=progress, force=force))
    for r in results:
        console.print(f"[green]✓[/] {r.name}: {r.status} → {escape(str(r.path))}", soft_wrap=True)


@contextmanager
def _byte_progress() -> Iterator[Any]:
    """A progress callback (description, done, total) drawing one rich bar per file."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def update(description: str, done: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done, total=total)

        yield update


# ---------------------------------------------------------------- prepare


@app.command(short_help="Tokenize, split and cache a config's data; show its classes and GloVe's coverage.")
def prepare(config: Optional[Path] = ConfigOption, set_: list[str] = SetOption) -> None:
    """Tokenize the config's data, split it, build the vocab and load GloVe, filling the caches (train does this
    too): shows each split's classes and GloVe's coverage."""
    from sentiment.config import load_config
    from sentiment.data.prepare import prepare_data

    with user_errors():
        cfg = load_config(config, set_)
        with console.status("tokenizing and loading GloVe (cached after the first time)…"):
            data = prepare_data(cfg.data, embedding_seed=cfg.run.seed)
    _print_prepare_stats(data.stats)


def _print_prepare_stats(stats: dict[str, Any]) -> None:
    s = stats
    source = "cache" if s["corpus_from_cache"] else "tokenized now"
    console.print(f"{escape(str(s.get('source', 'IMDB')))}: {s['reviews']:,} rows ({source}, {s['corpus_seconds']:.1f}s) → "
                  f"train {s['train']:,} · valid {s['valid']:,} · test {s['test']:,}; vocab {s['vocab_size']:,}",
                  soft_wrap=True)
    split = s.get("valid_split", "random")
    style = "[yellow]" if split.startswith("random (") else ""
    console.print(f"{style}validation: {split} split{'[/]' if style else ''}")
    if s.get("labels_merged"):
        merged = "; ".join(f"{', '.join(map(repr, spellings))} -> {name!r}"
                           for name, spellings in s["labels_merged"].items())
        console.print(f"labels merged (space, case and 1.0 = 1 do not make classes): {escape(merged)}", soft_wrap=True)
    if s.get("empty_texts_skipped"):
        console.print(f"[yellow]skipped {s['empty_texts_skipped']:,} rows with empty text[/]")
    if s.get("duplicate_texts"):
        kept = "kept on one side of each carve"
        console.print(f"{s['duplicate_texts']:,} rows repeat an earlier row's exact text ({kept}"
                      + (f"; {s['duplicates_across_splits']:,} texts are in more than one of your split files"
                         if s.get("duplicates_across_splits") else "") + ")")
    if "unlabeled" in s:
        left_out = s.get("unlabeled_held_out_skipped", 0)
        console.print(f"unlabeled: {s['unlabeled']:,} texts from {escape(str(s['unlabeled_source']))} "
                      f"({'cache' if s.get('unlabeled_from_cache') else 'tokenized now'}, "
                      f"{s.get('unlabeled_seconds', 0):.1f}s); the vocabulary counts them"
                      + (f"; {left_out:,} equal to a validation or test text left out" if left_out else "")
                      + (f"; {s['unlabeled_empty_skipped']:,} empty skipped" if s.get("unlabeled_empty_skipped") else ""),
                      soft_wrap=True)
    if "class_counts" in s:
        table = Table(title="classes per split", title_justify="left")
        table.add_column("split")
        for name in s["labels"]:
            table.add_column(escape(name), justify="right")
        for split_name, counts in s["class_counts"].items():
            total = max(sum(counts), 1)
            table.add_row(split_name, *(f"{c:,} ({c / total:.0%})" for c in counts))
        console.print(table)
    if s.get("unlabeled_invalid_utf8_files"):
        console.print(f"[yellow]{s['unlabeled_invalid_utf8_files']} unlabeled files had invalid UTF-8 (decoded with "
                      "replacement)[/]")
    if s.get("invalid_utf8_files"):
        console.print(f"[yellow]{s['invalid_utf8_files']} review files had invalid UTF-8 (decoded with replacement)[/]")
    if "glove_vocab_coverage" in s:
        console.print(f"GloVe covers {s['glove_vocab_coverage']:.1%} of the vocab and {s['glove_token_coverage']:.1%} "
                      f"of training tokens ({s['glove_seconds']:.1f}s)"
                      + (f"; {s['glove_extra_words']:,} more GloVe words added (data.vocab_glove_extra)"
                         if s.get("glove_extra_words") else ""))
        if s.get("glove_skipped_lines"):
            console.print(f"[yellow]{s['glove_skipped_lines']} malformed GloVe lines skipped[/]")
    if "unk_token_share" in s:
        shares = s["unk_token_share"]
        console.print(f"tokens read as <unk> (words training lacks): valid {shares['valid']:.1%} · "
                      f"test {shares['test']:.1%}")


