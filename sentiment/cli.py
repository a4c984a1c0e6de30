"""The `sentiment` command line. Each command parses its options, calls one library function and prints
the result with rich. Library errors (SentimentError) become one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

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


# ---------------------------------------------------------------- download
@app.command()
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
ConfigOption = typer.Option(None, "--config", "-c", help="YAML experiment config (defaults: the CPU recipe).")
SetOption = typer.Option([], "--set", help="Override a config key, e.g. --set model.rnn=gru (repeatable).")


@app.command()
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


# ---------------------------------------------------------------- train
# metrics.jsonl columns of the extra objectives (sentiment.training.objectives.COLUMNS; not imported: it loads torch)
OBJECTIVE_COLUMNS = ("train_adversarial_loss", "train_virtual_adversarial_loss", "train_entropy")


class RichReporter:
    """Draws the training loop's progress: one live bar for the current epoch, a table row per finished epoch."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None
        self.header_done = False

    def epoch_start(self, epoch: int, epochs: int, n_batches: int, done: int) -> None:
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                                     console=console, transient=True)
            self.progress.start()
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=n_batches, completed=done, stats="")

    def step(self, done: int, loss: float, accuracy: float, tokens_per_s: float) -> None:
        self.progress.update(self.task, completed=done,
                             stats=f"loss {loss:.4f} · acc {accuracy:.2%} · {tokens_per_s:,.0f} tok/s")

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.remove_task(self.task)
        out = self.progress.console  # printing through the live display keeps the bar below the rows
        if not self.header_done:
            if row.get("processes", 1) > 1 or row.get("global_batch_size"):
                on = f"{escape(row['device'])} · " if row.get("device") else ""
                out.print(f"{on}{row.get('processes', 1)} process(es) · global batch {row['global_batch_size']:,} "
                          "(batch_size × processes × grad_accum) · tok/s of all processes")
            out.print(f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'valid loss':>10} {'valid acc':>9} "
                      f"{'time':>7} {'tok/s':>9}")
            self.header_done = True
        mark = " [green]★ best[/]" if row.get("best") else ""
        # the extra objectives' losses (train.adversarial, ...), named as in metrics.jsonl
        extras = "".join(f" · {key.removeprefix('train_').removesuffix('_loss').replace('_', ' ')} {row[key]:.4f}"
                         for key in OBJECTIVE_COLUMNS if key in row)
        out.print(f"{row['epoch']:>5} {row['train_loss']:>10.4f} {row['train_accuracy']:>9.2%} "
                  f"{row['valid_loss']:>10.4f} {row['valid_accuracy']:>9.2%} {row['seconds']:>6.0f}s "
                  f"{row['tokens_per_s']:>9,.0f}{mark}{extras}")

    def note(self, message: str) -> None:
        (self.progress.console if self.progress is not None else console).print(f"[yellow]note:[/] {message}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@app.command()
def train(
    config: Optional[Path] = ConfigOption,
    set_: list[str] = SetOption,
    run_dir: Optional[Path] = typer.Option(None, help="Output directory (default: runs/<config>-<time>)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this directory from its last.pt."),
    overwrite: bool = typer.Option(False, help="Replace --run-dir if it already exists."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="Train with this many processes on this "
                                        "machine (DistributedDataParallel through torch.distributed.run, as "
                                        "`torchrun --standalone --nproc-per-node N -m sentiment train ...`): one per "
                                        "GPU, or CPU processes of one thread each."),
) -> None:
    """Train a classifier as a config says; the run directory gets config, vocab, metrics and checkpoints.

    Under torchrun every process runs this command: the main one writes and prints, the others train their
    share of each epoch's batches.
    """
    from sentiment.config import dump_config, load_config
    from sentiment import distributed
    from sentiment.data.prepare import prepare_data
    from sentiment.floats import flush_denormals
    from sentiment.device import resolve_device
    from sentiment.training.train import graceful_stop
    from sentiment.training.train import train as train_run

    if nproc is not None and "RANK" not in os.environ:
        with user_errors():
            _launch(nproc)
        return
    with user_errors():
        rank = distributed.from_env()
        if resume is not None:
            cfg, target = _resume_config(resume, config, set_)
        else:
            cfg = load_config(config, set_)
            target = run_dir or Path(cfg.run.output_dir) / f"{cfg.run.name or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"
        if print_config:
            if rank.is_main:
                console.print(dump_config(cfg), end="", markup=False, highlight=False)
            return
        flush_denormals(cfg.run.flush_denormal)  # before any torch work starts its worker threads
        device = distributed.rank_device(rank, resolve_device(cfg.run.device))
        distributed.init(rank, device)
        try:
            target = distributed.broadcast(rank, target)  # rank 0's clock names the run
            data = None
            if resume is None:
                # everything that can fail on bad input (run dir, device, data, GloVe) is checked before the run
                # directory is created, or an --overwrite'n one deleted
                distributed.together(rank, lambda: _claim_run_dir(target, overwrite, check_only=True),
                                     only=rank.is_main, what="checking the run directory")
                data = distributed.once_per_machine(rank, lambda: prepare_data(cfg.data, embedding_seed=cfg.run.seed))
                distributed.together(rank, lambda: _claim_run_dir(target, overwrite), only=rank.is_main,
                                     what="creating the run directory")
            if rank.is_main:
                processes = f" · {rank.world_size} processes" if rank.distributed else ""
                console.print(f"run directory: [bold]{escape(str(target))}[/]{processes}", soft_wrap=True)
            reporter = RichReporter() if rank.is_main else None
            try:
                with graceful_stop() as stop:
                    results = train_run(cfg, target, data=data, resume=resume is not None, reporter=reporter,
                                        stop=stop, rank=rank)
            finally:
                if reporter is not None:
                    reporter.close()
        finally:
            distributed.shutdown()
    if rank.is_main:
        _print_results(results)


_TORCHRUN_LOG = re.compile(r"^(\[?[WIEF]\d{4}|\*{5}|Setting OMP_NUM_THREADS|Traceback|  |\S+Error|\[rank|torch\.distributed)")


def _launch(nproc: int) -> None:
    """`sentiment train --nproc N ...` as torch.distributed.run would start it, on this machine. Rank 0's
    output is shown as is; every rank's output is also in a log directory, which a failure names."""
    import signal
    import subprocess
    import tempfile

    args = sys.argv[1:]
    i = args.index("--nproc") if "--nproc" in args else next(k for k, a in enumerate(args) if a.startswith("--nproc="))
    args = args[:i] + args[i + (1 if "=" in args[i] else 2):]
    log_dir = Path(tempfile.mkdtemp(prefix="sentiment-ranks-"))
    others = ",".join(f"{r}:3" for r in range(1, nproc))  # ranks > 0: stdout and stderr to their log files only
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "--log-dir", str(log_dir), *(["--redirects", others] if others else []), "-m", "sentiment", *args]
    env = {**os.environ, "TORCHELASTIC_ERROR_FILE": str(log_dir / "error.json")}
    launcher = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)

    def forward(signum, frame):  # Ctrl-C on a terminal reaches torchrun too; a `kill` of this process would not
        launcher.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stderr = launcher.communicate()[1]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    done = subprocess.CompletedProcess(cmd, launcher.returncode, None, stderr)
    ours = [line for line in done.stderr.splitlines() if line and not _TORCHRUN_LOG.match(line)]
    if done.returncode == 0:
        for line in ours:  # rank 0's notes (skipped rows, ...), without torchrun's own logging
            err_console.print(line, soft_wrap=True, highlight=False, markup=False)
        return
    # torchrun's own report is a long traceback; rank 0's one-line error says what went wrong
    reasons = [line.removeprefix("error: ") for line in ours if line.startswith(("error:", "interrupted"))]
    reason = reasons[0] if reasons else f"a training process exited with code {done.returncode}"
    error = SentimentError(f"{reason} [{nproc} processes; each rank's output: {log_dir}]")
    error.exit_code = 130 if reason.startswith("interrupted") else 1
    raise error


def _claim_run_dir(path: Path, overwrite: bool, check_only: bool = False) -> None:
    if path.exists() and not path.is_dir():
        raise SentimentError(f"run directory {path} is a file: choose another --run-dir")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise SentimentError(f"run directory {path} already exists: pass --resume {path} to continue it, "
                                 "--overwrite to replace it, or another --run-dir")
        if check_only:
            return
        shutil.rmtree(path)
    if not check_only:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SentimentError(f"cannot create run directory {path}: {e.strerror or e}") from None


def _resume_config(run_dir: Path, config: Path | None, overrides: list[str]):
    from sentiment.runs import LAST, load_run
    from sentiment.config import config_from_dict, load_config

    saved, _ = load_run(run_dir)
    if not (run_dir / LAST).exists():
        raise SentimentError(f"{run_dir} has no last.pt to resume from (it never finished a step)")
    if config is not None:
        wanted = load_config(config, overrides)
        wanted.run.name = saved.run.name
    else:
        from sentiment.config import apply_overrides

        wanted = config_from_dict(apply_overrides(saved.to_dict(), overrides))
    changed = _changed_keys(saved.to_dict(), wanted.to_dict())
    allowed = {"train.epochs", "train.early_stopping_patience", "train.eval_batch_size", "run.device",
               "run.threads", "run.eval_test", "run.output_dir", "run.checkpoint_minutes", "run.flush_denormal", "data.data_dir",
               "data.workers"}
    refused = [k for k in changed if k not in allowed]
    if refused:
        raise SentimentError(f"cannot resume {run_dir} with a changed config ({', '.join(refused)}): "
                             "those keys change the model or its training; start a new run instead")
    return wanted, run_dir


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in a.keys() | b.keys():
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _changed_keys(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k}")
    return sorted(keys)


def _print_results(results: dict[str, Any]) -> None:
    console.print(f"best epoch: {results['best_epoch']} of {results['epochs_run']}")
    for split in ("valid", "test"):
        if split in results:
            m = results[split]
            f1 = f"F1 {m['f1']:.4f}" if "f1" in m else f"macro-F1 {m['macro_f1']:.4f}"
            console.print(f"{split}: accuracy [bold]{m['accuracy']:.2%}[/] · loss {m['loss']:.4f} · {f1} "
                          f"({m['n']:,} rows)")


# ---------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    run: Path = typer.Option(..., "--run", help="A run directory written by `sentiment train`."),
    split: str = typer.Option("test", help="Split of the run's own data to evaluate: test or valid."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
    batch_size: Optional[int] = typer.Option(None, help="Evaluation batch size (default: the run's eval_batch_size)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the run's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluate on other labeled texts instead: a .csv, "
                                        ".tsv, .jsonl or .parquet file, or a directory with pos/ and neg/ folders "
                                        "of .txt reviews (the aclImdb layout)."),
    text_column: Optional[str] = typer.Option(None, help="Column (CSV/TSV/Parquet) or field (JSONL) of --data "
                                              "holding the text (default: the run's data.text_column)."),
    label_column: Optional[str] = typer.Option(None, help="Column or field of --data holding the label (default: "
                                               "the run's data.label_column): the run's label names; two-class "
                                               "runs also take 1/0, pos/neg, positive/negative, true/false."),
) -> None:
    """Evaluate a run's checkpoint on its test (or valid) split, or on labeled texts (--data): accuracy,
    macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from sentiment.inference.labeled import evaluate_labeled
    from sentiment.inference.runtime import evaluate_run

    with user_errors():
        if split not in ("test", "valid"):
            raise SentimentError(f"--split must be test or valid, got {split!r}")
        _check_checkpoint(checkpoint)
        if batch_size is not None and batch_size < 1:
            raise SentimentError(f"--batch-size must be >= 1, got {batch_size}")
        if data is not None:
            metrics, skipped = evaluate_labeled(run, data, text_column=text_column, label_column=label_column,
                                                checkpoint=checkpoint, device=device, batch_size=batch_size)
            title = f"{data} · {checkpoint}.pt"
        else:
            metrics = evaluate_run(run, split=split, checkpoint=checkpoint, batch_size=batch_size, device=device)
            skipped, title = 0, f"{split} split · {checkpoint}.pt"
    _note_skipped(skipped)
    _print_metrics(metrics.to_dict(), title, as_json)


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in ("best", "last"):
        raise SentimentError(f"--checkpoint must be best or last, got {checkpoint!r}")


def _note_skipped(skipped: int) -> None:
    if skipped:
        err_console.print(f"[yellow]note:[/] skipped {skipped:,} empty review{'s' if skipped != 1 else ''} "
                          "(no text)", soft_wrap=True)


def _print_metrics(m: dict[str, Any], title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(m))
        return
    table = Table(title=title, show_header=False)
    rows = [("accuracy", "{:.2%}"), ("macro-F1", "{:.4f}"), ("loss", "{:.4f}")]
    if "f1" in m:  # two classes: the positive class's figures, as before
        rows += [("precision", "{:.4f}"), ("recall", "{:.4f}"), ("f1", "{:.4f}")]
    for key, fmt in rows + [("n", "{:,}")]:
        table.add_row(key, fmt.format(m["macro_f1" if key == "macro-F1" else key]))
    console.print(table)
    per_class = Table(title="per class")
    for column in ("label", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for c in m["per_class"]:
        per_class.add_row(escape(c["label"]), f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                          f"{c['support']:,}")
    console.print(per_class)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for name in m["labels"]:
        cm.add_column(f"predicted {escape(name)}", justify="right")
    for name, row in zip(m["labels"], m["confusion"]):
        cm.add_row(escape(name), *(f"{v:,}" for v in row))
    console.print(cm)


# ---------------------------------------------------------------- predict
@app.command()
def predict(
    texts: Optional[list[str]] = typer.Argument(None, help="Reviews to classify (default: --file, else standard "
                                                "input, one review per line)."),
    run: Path = typer.Option(..., "--run", help="A run directory written by `sentiment train`."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Reviews from a file: plain text one per line, "
                                        ".csv/.tsv with a header, or .jsonl (see --text-column); - for stdin."),
    text_column: str = typer.Option("text", help="Column (CSV/TSV) or field (JSONL) of --file holding the text."),
    threshold: Optional[float] = typer.Option(None, help="Two-class runs only: the probability of the positive "
                                              "class from which a text gets it (default 0.5). Runs with more "
                                              "classes predict the most probable one."),
    checkpoint: str = typer.Option("best", help="Which checkpoint: best or last."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the run's eval_batch_size)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, mps (default: the run's)."),
    as_json: Optional[bool] = typer.Option(None, "--json/--table", help="JSON lines or a table (default: a table "
                                           "on a terminal, JSON lines when piped)."),
) -> None:
    """Label texts with a trained run, with every class's probability (JSON: label, probs, and for two
    classes probability, of the positive one).

    Reviews are tokenized as the run's training did and cut to data.eval_max_len tokens (5,000 tokens if the
    run kept whole reviews); empty reviews are skipped and counted.
    """
    from sentiment.inference.predict import predict_texts, prediction_rows
    from sentiment.data.readers import read_stream, read_texts

    with user_errors():
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SentimentError(f"--threshold must be between 0 and 1, got {threshold}")
        _check_checkpoint(checkpoint)
        if batch_size is not None and batch_size < 1:
            raise SentimentError(f"--batch-size must be >= 1, got {batch_size}")
        if texts and file is not None:
            raise SentimentError("give reviews as arguments or with --file, not both")
        if texts:
            inputs = list(texts)
        elif file is not None and str(file) != "-":
            inputs = read_texts(file, text_column)
        else:
            if sys.stdin.isatty():
                err_console.print("reading reviews from standard input, one per line (Ctrl-D to finish)…")
            inputs = read_stream(sys.stdin.buffer.read())
        probs, space = predict_texts(run, inputs, checkpoint=checkpoint, device=device, batch_size=batch_size)
        rows = prediction_rows(probs, space, threshold)
    _note_skipped(sum("error" in r for r in rows))
    if as_json if as_json is not None else not sys.stdout.isatty():
        _write_jsonl(rows)
    else:
        _print_predictions(inputs, rows, space)


def _write_jsonl(rows: list[dict[str, Any]]) -> None:
    try:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`| head`): no traceback; the Python docs' recipe for a quiet exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None


def _print_predictions(texts: list[str], rows: list[dict[str, Any]], space: Any) -> None:
    from rich.text import Text

    table = Table()
    # on a narrow terminal only the review preview shrinks
    table.add_column("#", justify="right", min_width=len(str(len(rows))))
    table.add_column("text", max_width=60)
    table.add_column("label", min_width=8)
    heading = f"P({space.names[1]})" if space.binary else "P(label)"
    table.add_column(escape(heading), justify="right", min_width=len(heading))
    colors = {space.names[0]: "red", space.names[-1]: "green"} if space.binary else {}
    for i, (text, row) in enumerate(zip(texts, rows), 1):
        # one line per text, cut with an ellipsis (the table shows 60 characters at most)
        preview = Text(" ".join(text[:200].split()), no_wrap=True, overflow="ellipsis")
        if "error" in row:
            table.add_row(str(i), preview, "[dim]skipped[/]", "[dim]empty[/]")
        else:
            label = escape(row["label"])
            shown = row["probability"] if space.binary else row["probs"][row["label"]]
            color = colors.get(row["label"])
            table.add_row(str(i), preview, f"[{color}]{label}[/]" if color else label, f"{shown:.4f}")
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
