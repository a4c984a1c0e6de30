"""`sentiment train`: one process, or several through torchrun (`--nproc`)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from sentiment.errors import SentimentError
from sentiment.training.tensorboard import tensorboard_enabled
from sentiment.runlock import (HELD_ENV, LAUNCHER_ENV, RunLock, held_by_parent, no_checkpoint_error,
                               process_alive)

from sentiment.cli.app import ConfigOption, SetOption, app, console, err_console, user_errors

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


@app.command(short_help='Train a classifier from a config (or --data FILE) into a run directory.')
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
    data_file: Optional[Path] = typer.Option(None, "--data", help="Train on your own labeled texts: a .csv, .tsv, "
                                             ".jsonl or .parquet file, or a directory with pos/ and neg/ folders "
                                             "(sets data.dataset=files, data.train_file). Without --config it "
                                             "starts from the short-text recipe and picks data.max_len from the "
                                             "texts."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="With --data: the column (field) "
                                              "holding the text (default text)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="With --data: the column (field) "
                                               "holding the label (default label)."),
    valid_data: Optional[Path] = typer.Option(None, "--valid-data", help="With --data: the validation split's "
                                              "file (default: carved from --data)."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="With --data: the test split's file "
                                             "(default: carved from --data)."),
) -> None:
    """Train a classifier as a config says; the run directory gets config, vocab, metrics and checkpoints.

    Under torchrun every process runs this command: the main one writes and prints, the others train their
    share of each epoch's batches.
    """
    from sentiment.config import dump_config

    with user_errors():
        own = _own_data(data_file, text_column, label_column, valid_data, test_data, resume)
    if nproc is not None and "RANK" not in os.environ and not print_config:
        with user_errors():  # checks the config and the data paths before torch is even imported
            _launch(nproc, config, set_, run_dir, resume, overwrite, own)
        return
    with user_errors():
        _interrupt_on_sigterm()  # until the loop's own handler: a SIGTERM while starting is an interruption
        from sentiment import distributed
        from sentiment.floats import flush_denormals
        from sentiment.device import resolve_device

        rank = distributed.from_env()
        distributed.watch_launcher()  # under --nproc: this rank ends with the launcher, however it ends
        if rank.is_main and not print_config:  # before --resume reads it: a killed --overwrite may have moved it
            _print_recovered(resume or run_dir)
        cfg, target = _config_and_target(config, set_, own, resume, run_dir)
        if print_config:
            if rank.is_main:
                console.print(dump_config(cfg), end="", markup=False, highlight=False)
            return
        tensorboard_enabled(cfg.run.tensorboard)  # true without the package: refused before the data are read
        flush_denormals(cfg.run.flush_denormal)  # before any torch work starts its worker threads
        device = distributed.rank_device(rank, resolve_device(cfg.run.device))
        distributed.init(rank, device)
        lock = None
        try:
            target = distributed.broadcast(rank, target)  # rank 0's clock names the run (plain torchrun)
            if rank.is_main and not held_by_parent(target):
                lock = RunLock(target)  # one writer per run directory, until this process ends
            distributed.together(rank, lambda: lock.acquire(), only=lock is not None, what="locking the run directory")
            data, start = None, None
            try:
                if resume is None:
                    data, start = _start_run(rank, cfg, target, overwrite,
                                             choose_lengths=own is not None and config is None, overrides=set_)
                if rank.is_main:
                    processes = f" · {rank.world_size} processes" if rank.distributed else ""
                    console.print(f"run directory: [bold]{escape(str(target))}[/]{processes}", soft_wrap=True)
                results = _train_reporting(cfg, target, data, resume is not None, rank, start)
            except BaseException:  # a new run that fails before its first checkpoint leaves what was there
                if start is not None and rank.is_main:
                    _forget_start(target, start)
                raise
            if start is not None and rank.is_main:
                start.drop_replaced()
        finally:
            if lock is not None:
                lock.release()
            distributed.shutdown()
    if rank.is_main:
        _print_results(results)


def _config_and_target(config: Path | None, overrides: list[str], own: dict[str, Any] | None, resume: Path | None,
                       run_dir: Path | None) -> tuple[Any, Path]:
    """The resolved config (a resumed run's, --data's own-data recipe, or --config's) and the run directory."""
    from sentiment.config import load_config, own_data_config

    if resume is not None:
        return _resume_config(resume, config, overrides)
    cfg = own_data_config(config, overrides, own) if own is not None else load_config(config, overrides)
    return cfg, run_dir or _default_run_dir(cfg)


class RunStart:
    """What a new run's start found and did to its directory, so that a start failing before its first checkpoint
    leaves it as it was (_forget_start): whether the directory existed (empty), and where --overwrite set the run
    it replaces aside (deleted once the new run has a checkpoint)."""

    def __init__(self, existed: bool, replaced: Path | None = None) -> None:
        self.existed, self.replaced = existed, replaced

    def drop_replaced(self, *_: Any) -> None:
        """The new run has a checkpoint: the run it replaces goes (called after each save; once is enough)."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None


def _start_run(rank: Any, cfg: Any, target: Path, overwrite: bool, choose_lengths: bool,
               overrides: list[str]) -> tuple[Any, RunStart | None]:
    """A new run: everything that can fail on bad input (run dir, device, data, GloVe) is checked before the run
    directory is created, or an --overwrite'n one set aside. Returns the prepared data, and (main rank) what the
    start did to the directory (what a failed start must undo)."""
    from sentiment import distributed
    from sentiment.cli.data import _print_prepare_stats
    from sentiment.ngrams import branch_tokens, resolve_branch
    from sentiment.training.transfer import prepare_training_data

    distributed.together(rank, lambda: _claim_run_dir(target, overwrite, check_only=True),
                         only=rank.is_main, what="checking the run directory")
    data = distributed.once_per_machine(rank, lambda: prepare_training_data(cfg))
    chosen = _choose_lengths(cfg, data, overrides) if choose_lengths else ""
    branch = resolve_branch(cfg, data.label_space.num_classes, branch_tokens(data))  # train() would; shown here
    if branch:
        chosen = "\n".join(filter(None, [chosen, f"{', '.join(branch)}: chosen for "
                                                  f"{data.label_space.num_classes} classes (set them to choose)"]))
    if rank.is_main:
        _print_prepare_stats(data.stats)
        if chosen:
            console.print(chosen, soft_wrap=True)
    start: list[RunStart] = []
    distributed.together(rank, lambda: start.append(_claim_run_dir(target, overwrite)), only=rank.is_main,
                         what="creating the run directory")
    return data, start[0] if start else None


def _train_reporting(cfg: Any, target: Path, data: Any, resume: bool, rank: Any, start: RunStart | None) -> dict:
    """The training itself, drawn by RichReporter on the main rank; the run an --overwrite replaces is deleted
    once the new one has written its first checkpoint."""
    from sentiment.training.train import graceful_stop
    from sentiment.training.train import train as train_run

    reporter = RichReporter() if rank.is_main else None
    try:
        with graceful_stop() as stop:
            return train_run(cfg, target, data=data, resume=resume, reporter=reporter, stop=stop, rank=rank,
                             saved=start.drop_replaced if start is not None else None)
    finally:
        if reporter is not None:
            reporter.close()


def _own_data(data_file: Path | None, text_column: str | None, label_column: str | None, valid_data: Path | None,
              test_data: Path | None, resume: Path | None) -> dict[str, Any] | None:
    """The data.* keys `--data` and its companions set, or None without --data."""
    given = {"--text-column": text_column, "--label-column": label_column, "--valid-data": valid_data,
             "--test-data": test_data}
    if data_file is None:
        stray = [flag for flag, value in given.items() if value is not None]
        if stray:
            raise SentimentError(f"{stray[0]} goes with --data FILE (the training file)")
        return None
    if resume is not None:
        raise SentimentError("--data starts a new run; --resume continues one with the data it was trained on")
    return {"train_file": data_file, "valid_file": valid_data, "test_file": test_data, "text_column": text_column,
            "label_column": label_column}


def _choose_lengths(cfg: Any, data: Any, overrides: list[str]) -> str:
    """`train --data` without --config: data.max_len and data.eval_max_len from the training texts' token
    counts, unless --set names them; what was chosen, as one line to print (it is stored in config.yaml)."""
    import numpy as np

    from sentiment.config import MAX_LEN_CAP, MAX_LEN_PERCENTILE, choose_max_len

    named = {s.split("=", 1)[0].strip() for s in overrides}
    keys = [k for k in ("max_len", "eval_max_len") if f"data.{k}" not in named]
    if not keys:
        return ""
    lengths = np.diff(data.train.offsets)
    chosen = choose_max_len(lengths)
    for key in keys:
        setattr(cfg.data, key, chosen)
    return (f"{' and '.join(f'data.{k}' for k in keys)} = {chosen}: the {MAX_LEN_PERCENTILE}th percentile of the "
            f"training texts' token counts (longest {int(lengths.max(initial=0)):,}; capped at {MAX_LEN_CAP}); "
            "--set data.max_len=N to choose")


def _default_run_dir(cfg: Any) -> Path:
    return Path(cfg.run.output_dir) / f"{cfg.run.name or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"


def _interrupt_on_sigterm() -> None:
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _forget_start(path: Path, start: RunStart) -> None:
    """A new run that failed before its first checkpoint leaves nothing behind (config, vocab, splits...):
    else the rerun is refused ("already exists") and so is --resume ("no last.pt"); the run an --overwrite set
    aside is put back. With a checkpoint the new run can be resumed: it stays, and the replaced run goes."""
    from sentiment.runs import LAST

    ours = path.is_dir() and not path.is_symlink()
    if ours and (path / LAST).exists():
        start.drop_replaced()
        return
    if start.replaced is not None:
        if ours:
            shutil.rmtree(path, ignore_errors=True)  # created by this start, once the old run was set aside
        if not os.path.lexists(path):  # never over something that is not ours
            os.rename(start.replaced, path)
            start.replaced = None
        return
    if not ours:
        return
    if not start.existed:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():  # an empty directory that was there stays
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() and not child.is_symlink() else child.unlink(missing_ok=True)


_TORCHRUN_LOG = re.compile(r"^(\[?[WIEF]\d{4}|\*{5}|Setting OMP_NUM_THREADS|Traceback|  |\S+Error|\[rank|torch\.distributed)")


def _launch(nproc: int, config: Path | None, overrides: list[str], run_dir: Path | None, resume: Path | None,
            overwrite: bool, own: dict[str, Any] | None = None, *, resume_config: Any = None,
            default_run_dir: Any = None) -> None:
    """`sentiment train --nproc N ...` (or `sentiment pretrain --nproc N`, with its resume_config and
    default_run_dir) as torch.distributed.run would start it, on this machine. The config, the data paths and
    the run directory are checked here first (in a second, not after torchrun's start); this process names the
    run directory and holds its lock for the ranks. Rank 0's output is shown as is; every rank's output is also
    in a log directory, which a failure names."""
    import tempfile

    from sentiment.config import load_config, own_data_config

    _interrupt_on_sigterm()  # a `kill` while checking is an interruption, as Ctrl-C is
    _print_recovered(resume or run_dir)
    if resume is not None:
        cfg, target = (resume_config or _resume_config)(resume, config, overrides)
    else:
        cfg = own_data_config(config, overrides, own) if own is not None else load_config(config, overrides)
        target = run_dir or (default_run_dir or _default_run_dir)(cfg)
    _check_data_paths(cfg, fresh=resume is None)
    tensorboard_enabled(cfg.run.tensorboard)
    args = _without_nproc(sys.argv[1:])
    if resume is None and run_dir is None:
        args += ["--run-dir", str(target)]  # the ranks write where this process locked
    with RunLock(target):
        if resume is None:
            _claim_run_dir(target, overwrite, check_only=True)
        # rank 0 creates the directory, or sets the run it replaces aside under this process's name (replaced_path)
        replaces = target.is_dir() and any(target.iterdir())
        existed, aside = target.is_dir(), replaced_path(target)
        log_dir = Path(tempfile.mkdtemp(prefix="sentiment-ranks-"))
        try:
            _run_torchrun(nproc, args, log_dir, target)
        except BaseException:
            if resume is None and (not replaces or aside.exists()):  # what rank 0 could not undo, if it died
                _forget_start(target, RunStart(existed, aside if aside.exists() else None))
            raise
        RunStart(existed, aside if aside.exists() else None).drop_replaced()


def _without_nproc(args: list[str]) -> list[str]:
    i = args.index("--nproc") if "--nproc" in args else next(k for k, a in enumerate(args) if a.startswith("--nproc="))
    return args[:i] + args[i + (1 if "=" in args[i] else 2):]


def _check_data_paths(cfg: Any, fresh: bool) -> None:
    """What preparing the data would refuse first for a missing path, checked in milliseconds."""
    from sentiment.data.glove import glove_file
    from sentiment.data.imdb import imdb_dir

    data = cfg.data
    if data.dataset == "imdb":
        imdb_dir(Path(data.data_dir))
    elif data.dataset == "files":
        for path in (data.train_file, data.valid_file, data.test_file):
            if path and not Path(path).exists():
                raise SentimentError(f"{path} not found")
        if data.unlabeled and not Path(data.unlabeled).exists():
            raise SentimentError(f"data.unlabeled: {data.unlabeled} not found")
    if fresh and data.glove_dim is not None:
        glove_file(Path(data.data_dir), data.glove_dim)


def _run_torchrun(nproc: int, args: list[str], log_dir: Path, target: Path) -> None:
    import signal
    import subprocess

    others = ",".join(f"{r}:3" for r in range(1, nproc))  # ranks > 0: stdout and stderr to their log files only
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "--log-dir", str(log_dir), *(["--redirects", others] if others else []), "-m", "sentiment", *args]
    env = {**os.environ, "TORCHELASTIC_ERROR_FILE": str(log_dir / "error.json"),
           HELD_ENV: os.path.abspath(target), LAUNCHER_ENV: str(os.getpid())}
    launcher = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    received: list[int] = []

    def forward(signum, frame):  # Ctrl-C on a terminal reaches torchrun too; a `kill` of this process would not
        received.append(signum)
        launcher.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stderr = launcher.communicate()[1]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    # rank 0's stderr (and torchrun's report) beside the other ranks' logs
    (log_dir / "rank0-stderr.log").write_text(stderr, encoding="utf-8")
    ours = [line for line in stderr.splitlines() if line and not _TORCHRUN_LOG.match(line)]
    if launcher.returncode == 0:
        for line in ours:  # rank 0's notes (skipped rows, ...), without torchrun's own logging
            err_console.print(line, soft_wrap=True, highlight=False, markup=False)
        return
    # torchrun's own report is a long traceback; rank 0's one-line error says what went wrong
    reasons = [line.removeprefix("error: ") for line in ours if line.startswith(("error:", "interrupted"))]
    cause = _failed_rank(stderr)
    if received and not reasons:
        reason = f"interrupted ({signal.Signals(received[0]).name}) while the training processes started"
    elif cause and " killed by " in cause and not received:
        reason = cause  # a rank killed from outside (kill -9, the OOM killer): rank 0's own line is a consequence
    else:
        reason = reasons[0] if reasons else cause or f"a training process exited with code {launcher.returncode}"
    error = SentimentError(f"{reason} [{nproc} processes; each rank's output: {log_dir}]")
    error.exit_code = (128 + received[0] if received and not reasons else 130) if reason.startswith("interrupted") else 1
    raise error


def _die_with_parent() -> None:
    """In torchrun's process before it starts: the kernel kills it when this launcher dies (kill -9 too); its
    ranks notice their parent gone (distributed.watch_launcher)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # not Linux: the ranks' watchdog still ends them


def _failed_rank(report: str) -> str | None:
    """"rank 1 was killed by SIGKILL" from torchrun's failure report (its root cause), or None."""
    import signal

    rank = re.findall(r"^\s*rank\s*:\s*(\d+)", report, re.M)
    code = re.findall(r"^\s*exitcode\s*:\s*(-?\d+)", report, re.M)
    if not rank or not code:
        return None
    rank_id, exit_code = rank[-1], int(code[-1])  # the root cause comes last
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"training process rank {rank_id} was killed by {name}"
    return f"training process rank {rank_id} exited with code {exit_code}"


# what makes a directory a run directory --overwrite may replace (sentiment.runs: RUN_FILE; CONFIG_FILE and
# VOCAB_FILE of runs written before run.json existed); named here, as importing sentiment.runs imports torch
RUN_MARKERS = (("run.json",), ("config.yaml", "vocab.json"))


def _claim_run_dir(path: Path, overwrite: bool, check_only: bool = False) -> RunStart | None:
    """Check the run directory (check_only), or create it: a new run goes into a missing or empty directory, or,
    with --overwrite, replaces a run directory, which is set aside (renamed beside it) until the new run has a
    checkpoint. Returns what was done (RunStart), None when only checking."""
    if overwrite and path.is_symlink():
        raise SentimentError(f"run directory {path} is a symbolic link: --overwrite replaces only a run directory "
                             "itself; give the directory it points to, or another --run-dir")
    if path.exists() and not path.is_dir():
        raise SentimentError(f"run directory {path} is a file: choose another --run-dir")
    full = path.is_dir() and any(path.iterdir())
    if full and not overwrite:
        raise SentimentError(f"run directory {path} already exists: pass --resume {path} to continue it, "
                             "--overwrite to replace it, or another --run-dir")
    if full:
        _check_replaceable(path)
    if check_only:
        return None
    if not full:
        existed = path.is_dir()
        _make_run_dir(path)
        return RunStart(existed)
    aside = replaced_path(path)
    try:
        os.rename(path, aside)  # beside it: the same filesystem, so a rename, and back the same way
    except OSError as e:
        raise SentimentError(f"cannot set {path} aside to replace it ({aside}: {e.strerror or e}); nothing was "
                             "deleted") from None
    start = RunStart(existed=False, replaced=aside)
    try:
        _make_run_dir(path)
    except BaseException:
        _forget_start(path, start)
        raise
    return start


def _make_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SentimentError(f"cannot create run directory {path}: {e.strerror or e}") from None


def replaced_path(path: Path) -> Path:
    """Where --overwrite keeps the run it replaces until the new run has a checkpoint: a hidden sibling named after
    the process holding the run's lock (under --nproc the launcher, which puts it back if the ranks fail)."""
    path = Path(os.path.abspath(path))
    holder = os.environ.get(LAUNCHER_ENV) if held_by_parent(path) else None
    return path.parent / f".{path.name}.replaced-{holder or os.getpid()}"


# what a new run writes into its directory before its first checkpoint (sentiment.runs: RUN_FILE, CONFIG_FILE,
# VOCAB_FILE, LABELS_FILE, SPLITS_FILE, DATA_FINGERPRINT_FILE, TRAIN_TEXTS, PRETRAIN_TEXTS, METRICS_FILE), its status
# (sentiment.runstatus) and TensorBoard events, besides the hidden .NAME.*.tmp of a write cut short; and the
# checkpoints that end its start (BEST, LAST)
STARTING_FILES = frozenset({"run.json", "config.yaml", "vocab.json", "labels.json", "splits.npz",
                            "data_fingerprint.json", "train_texts.npy", "pretrain_texts.npy", "metrics.jsonl",
                            "status.json"})
TENSORBOARD_EVENTS = "events.out.tfevents."  # the prefix of the event files run.tensorboard writes
CHECKPOINTS = ("best.pt", "last.pt")


def recover_replaced(path: Path) -> list[str]:
    """Undo what a process killed (kill -9, a power cut) between setting a run aside for --overwrite and the new
    run's first checkpoint left: for each `.NAME.replaced-PID` beside path whose process is gone and which holds a
    run, put it back when path holds no checkpoint (removing the new run's start, if that is all path holds), or
    delete it when path has one (it was due for deletion then). Done under path's lock, skipped while another
    process writes path. Returns one line per aside put back, deleted, or kept (path holds something else)."""
    path = Path(os.path.abspath(path))
    if held_by_parent(path) or not path.parent.is_dir():
        return []  # under --nproc: the launcher recovered before starting the ranks
    orphans = sorted(p for p in path.parent.iterdir() if _orphaned_aside(p, path.name))
    if not orphans:
        return []
    try:
        lock = RunLock(path).acquire()
    except SentimentError:
        return []  # another process writes path (its aside is its own), or path cannot be locked at all
    try:
        lines, put_back = [], False
        for aside in orphans:  # one, but for runs killed before this recovery existed
            if put_back:  # which of two old runs the user wants is not this tool's guess: the others stay
                lines.append(f"kept {aside}: another run set aside for {path}, which holds the one restored just now")
                continue
            line, put_back = _recover_aside(aside, path)
            lines.append(line)
        return lines
    finally:
        lock.release()


def _orphaned_aside(entry: Path, name: str) -> bool:
    """entry is `.NAME.replaced-PID`, a run directory set aside by a process that no longer runs."""
    match = re.fullmatch(rf"\.{re.escape(name)}\.replaced-(\d+)", entry.name)
    if match is None or entry.is_symlink() or not entry.is_dir() or process_alive(int(match.group(1))):
        return False
    return any(all((entry / marker).is_file() for marker in names) for names in RUN_MARKERS)


def _recover_aside(aside: Path, path: Path) -> tuple[str, bool]:
    """What was done with one orphaned aside, and whether it was put back."""
    pid = aside.name.rsplit("-", 1)[1]
    real_dir = path.is_dir() and not path.is_symlink()
    try:
        if real_dir and any((path / name).is_file() for name in CHECKPOINTS):
            shutil.rmtree(aside)
            return (f"deleted {aside}: the run an --overwrite (pid {pid}, gone) replaced with {path}, which has "
                    "its first checkpoint"), False
        started = real_dir and all(_written_by_a_start(child) for child in path.iterdir())
        if os.path.lexists(path) and not started:
            return (f"kept {aside}: the run an --overwrite (pid {pid}, gone) set aside; {path} now holds files "
                    "no starting run writes, so the old run stays where it is"), False
        if started:
            shutil.rmtree(path)  # the start of the replacing run, which never reached its first checkpoint
        os.rename(aside, path)
    except OSError as e:
        raise SentimentError(f"cannot recover the run set aside at {aside} for {path}: {e.strerror or e}") from None
    return (f"put back {path}: the --overwrite that set it aside (pid {pid}) ended before its new run's first "
            "checkpoint"), True


def _written_by_a_start(entry: Path) -> bool:
    if entry.is_symlink() or not entry.is_file():
        return False
    return (entry.name in STARTING_FILES or entry.name.startswith(TENSORBOARD_EVENTS)
            or (entry.name.startswith(".") and entry.name.endswith(".tmp")))


def _print_recovered(path: Path | None) -> None:
    """recover_replaced for the run directory a command names, its lines as notes."""
    for line in recover_replaced(path) if path is not None else []:
        console.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True, highlight=False)


def _check_replaceable(path: Path) -> None:
    """--overwrite deletes what it replaces: only a run directory, never the working directory, one of its
    parents, or the home directory (a mistyped --run-dir must not cost a folder of data)."""
    real = path.resolve()
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working directory was deleted
        cwd = None
    if cwd is not None and (real == cwd or real in cwd.parents):
        raise SentimentError(f"--overwrite refuses to replace {path}: it is the working directory or one of its "
                             "parents; give the run directory itself")
    home = Path.home().resolve()
    if real == home or real in home.parents:
        raise SentimentError(f"--overwrite refuses to replace {path}: it is the home directory or one of its "
                             "parents; give the run directory itself")
    if not any(all((path / name).is_file() for name in names) for names in RUN_MARKERS):
        raise SentimentError(f"--overwrite replaces only a run directory, and {path} is not one (no run.json, nor "
                             "config.yaml and vocab.json): nothing was deleted; choose another --run-dir")


def _resume_config(run_dir: Path, config: Path | None, overrides: list[str]):
    from sentiment.runs import LAST, load_labels, load_run
    from sentiment.config import config_from_dict, load_config
    from sentiment.ngrams import resolve_like
    from sentiment.training.resume import check_resume_config

    saved, _ = load_run(run_dir)
    load_labels(run_dir)  # a run that lost its class names cannot continue
    if not (run_dir / LAST).exists():
        raise no_checkpoint_error(run_dir)  # another process still starting it, or it never finished a step
    if config is not None:
        wanted = load_config(config, overrides)
        wanted.run.name = saved.run.name
    else:
        from sentiment.config import apply_overrides

        wanted = config_from_dict(apply_overrides(saved.to_dict(), overrides))
    resolve_like(wanted, saved)  # a config's auto keys mean what the run chose for its data
    check_resume_config(run_dir, saved, wanted)  # train() checks again, with last.pt's schedule
    return wanted, run_dir


PART_NAMES = {"rnn": "recurrent part", "branch": "n-gram branch"}


def _print_results(results: dict[str, Any]) -> None:
    console.print(f"best epoch: {results['best_epoch']} of {results['epochs_run']}")
    for split in ("valid", "test"):
        if split in results:
            m = results[split]
            f1 = f"F1 {m['f1']:.4f}" if "f1" in m else f"macro-F1 {m['macro_f1']:.4f}"
            console.print(f"{split}: accuracy [bold]{m['accuracy']:.2%}[/] · loss {m['loss']:.4f} · {f1} "
                          f"({m['n']:,} rows)")
            parts = m.get("parts") or {}
            if parts:  # each part of a two-part model alone, inside the trained whole
                console.print("  " + " · ".join(f"{PART_NAMES.get(n, n)} alone {p['accuracy']:.2%}"
                                                for n, p in parts.items()))
    if "mixture" in results:
        w = results["mixture"]
        console.print(f"mixture fit on valid: {w['rnn']:.3f} × recurrent part + {w['branch']:.3f} × n-gram branch")


