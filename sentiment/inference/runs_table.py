"""The run directories in and under some folders, each summarised: what `sentiment runs` shows, and what reads a
study's trials. Read only: no file is written or touched, no lock is taken (a writer starting meanwhile must not
find one held), and torch is never imported.

A run's status, first that applies:
  running      a live process holds its lock (sentiment.runlock.lock_holder, found in /proc/locks without locking),
               or its status.json says running and names a live process (a library caller that took no lock)
  corrupt      a file it has cannot be read (config.yaml, run.json, results.json, status.json, metrics.jsonl), or a
               finished run lacks one a finished run has (best.pt, results.json, vocab.json)
  finished / interrupted / failed     as its status.json says (sentiment.runstatus)
  incomplete   status.json says running but its process is gone (kill -9, a power cut), or the run never wrote one:
               results.json makes such a run (written before status.json existed) finished
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sentiment.config import flat_config, read_yaml
from sentiment.errors import SentimentError
from sentiment.runlock import lock_holder
from sentiment.runstatus import FINISHED, RUNNING, read_status, writer_runs

# the run files, named as in sentiment.runs (not imported from there: it loads torch)
RUN_FILE, CONFIG_FILE, VOCAB_FILE, METRICS_FILE = "run.json", "config.yaml", "vocab.json", "metrics.jsonl"
RESULTS_FILE, BEST, PRETRAIN_TEXTS = "results.json", "best.pt", "pretrain_texts.npy"
INCOMPLETE, CORRUPT = "incomplete", "corrupt"
ABSENT = "<absent>"  # a config key a run does not have, as compared
# where and how fast a run ran, not what it trained: left out of the keys that differ (each run's config has them)
NOT_COMPARED = frozenset({"run.output_dir", "run.device", "run.threads", "run.checkpoint_minutes", "run.tensorboard",
                          "run.flush_denormal", "data.workers", "train.eval_batch_size"})
HIGHER_IS_BETTER = frozenset({"valid_accuracy", "valid_macro_f1", "test_accuracy", "test_macro_f1"})


@dataclass
class RunSummary:
    path: str  # the run directory, as found under the folder given
    name: str  # its path relative to that folder (the folder's own name when it is the run)
    kind: str  # classifier | pretrain
    status: str  # running | finished | interrupted | failed | incomplete | corrupt
    detail: str | None = None  # the error of a failed or interrupted run, what is wrong with a corrupt one, ...
    started: str | None = None  # when its run files were written (ISO 8601, local time)
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml under dotted keys
    differs: dict[str, Any] = field(default_factory=dict)  # its values of the keys not alike in every run listed
    epochs: int | None = None  # as configured
    epochs_run: int = 0
    best_epoch: int | None = None
    valid_accuracy: float | None = None
    valid_macro_f1: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    held_out_perplexity: float | None = None  # pretraining runs
    wall_seconds: float | None = None  # its epochs' training and validation time (metrics.jsonl)


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file() or (path / CONFIG_FILE).is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """root and the folders under it that are run directories (not looking inside one), sorted; hidden folders
    (an --overwrite's set-aside run) and symbolic links are not followed."""
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        found += find_run_dirs(Path(entry.path))
    return found


def list_runs(dirs: list[Path]) -> list[RunSummary]:
    """Every run directory in and under each of dirs, summarised, with the config keys that differ among them."""
    runs: list[RunSummary] = []
    seen: set[Path] = set()
    for root in map(Path, dirs):
        if not root.is_dir():
            raise SentimentError(f"{root} is not a directory")
        for path in find_run_dirs(root):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            name = root.name if path == root else str(path.relative_to(root))
            runs.append(read_run(path, name or str(path)))
    _set_differences(runs)
    return runs


def _set_differences(runs: list[RunSummary]) -> None:
    """Each run's values of the config keys not alike in every run of its kind listed (a classifier's config is
    compared with classifiers', a pretraining run's with pretraining runs'). A key a run lacks (under a section it
    turned off, model.ngrams: null; or added after it was trained) is left out of its own."""
    for kind in {r.kind for r in runs}:
        configured = [r for r in runs if r.config and r.kind == kind]
        keys = sorted({k for r in configured for k in r.config} - NOT_COMPARED)
        varying = [k for k in keys if len({json.dumps(r.config.get(k, ABSENT), sort_keys=True)
                                           for r in configured}) > 1]
        for run in configured:
            run.differs = {k: run.config[k] for k in varying if k in run.config}


def read_run(path: Path, name: str) -> RunSummary:
    """One run directory's summary; what cannot be read makes it corrupt, never an exception."""
    problems: list[str] = []
    run = RunSummary(path=str(path), name=name, kind="pretrain" if (path / PRETRAIN_TEXTS).is_file() else "classifier",
                     status=INCOMPLETE)
    run.config = _read_config(path, problems)
    run.started = _started(path)
    _read_json(path / RUN_FILE, problems)
    results = _read_json(path / RESULTS_FILE, problems)
    rows = _read_metrics(path / METRICS_FILE, problems)
    try:
        record = read_status(path)
    except SentimentError as e:
        record = None
        problems.append(str(e))
    run.status, run.detail = _status(path, record, results, problems)
    _set_figures(run, results, rows)
    return run


def _status(path: Path, record: dict[str, Any] | None, results: dict[str, Any] | None,
            problems: list[str]) -> tuple[str, str | None]:
    writer = lock_holder(path)
    if writer is not None:
        return RUNNING, f"written by pid {writer}"
    if problems:
        return CORRUPT, problems[0]
    if record is None:  # written before status.json existed, or killed while starting
        return (FINISHED, None) if results is not None else (INCOMPLETE, "no status.json and no results.json")
    if record["status"] == RUNNING:
        if writer_runs(record):
            return RUNNING, f"written by pid {record['pid']} (no lock)"
        return INCOMPLETE, f"its process (pid {record.get('pid')}) ended without a word (killed?)"
    if record["status"] == FINISHED:
        missing = [n for n in (RESULTS_FILE, BEST, VOCAB_FILE, CONFIG_FILE) if not (path / n).is_file()]
        if missing:
            return CORRUPT, f"finished, but {missing[0]} is missing"
    return record["status"], record.get("error")


def _read_config(path: Path, problems: list[str]) -> dict[str, Any]:
    if not (path / CONFIG_FILE).is_file():
        return {}
    try:
        return flat_config(read_yaml(path / CONFIG_FILE))
    except SentimentError as e:
        problems.append(str(e))
        return {}


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} is unreadable ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return value


def _read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a torn line (an older writer's) is skipped, as sentiment.runs.read_metrics skips it."""
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path.name} is unreadable ({e})")
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _started(path: Path) -> str | None:
    for name in (RUN_FILE, CONFIG_FILE):
        try:
            return datetime.fromtimestamp((path / name).stat().st_mtime).isoformat(timespec="seconds")
        except OSError:
            continue
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _set_figures(run: RunSummary, results: dict[str, Any] | None, rows: list[dict[str, Any]]) -> None:
    """Best epoch and its figures: results.json's (the best checkpoint scored at the end), or for a run without one,
    its best epoch's metrics row so far."""
    section = "pretrain" if run.kind == "pretrain" else "train"
    epochs = run.config.get(f"{section}.epochs")
    run.epochs = epochs if isinstance(epochs, int) else None
    whole = [r for r in rows if not r.get("partial")]
    run.epochs_run = len({r.get("epoch") for r in whole})
    seconds = [_number(r.get("seconds")) or 0.0 for r in rows] + [_number(r.get("valid_seconds")) or 0.0 for r in rows]
    run.wall_seconds = sum(seconds) if rows else None
    best = next((r for r in reversed(rows) if r.get("best")), None)
    results = results or {}
    best_epoch = results.get("best_epoch", best.get("epoch") if best else None)
    run.best_epoch = best_epoch if isinstance(best_epoch, int) and not isinstance(best_epoch, bool) else None
    if run.kind == "pretrain":
        run.held_out_perplexity = _number(results.get("held_out_perplexity", (best or {}).get("valid_perplexity")))
        return
    for split in ("valid", "test"):
        scored = results.get(split)
        if isinstance(scored, dict):
            setattr(run, f"{split}_accuracy", _number(scored.get("accuracy")))
            setattr(run, f"{split}_macro_f1", _number(scored.get("macro_f1")))
        elif split == "valid" and best is not None:
            run.valid_accuracy, run.valid_macro_f1 = _number(best.get("valid_accuracy")), _number(best.get("valid_macro_f1"))


SORT_FIELDS = ("name", "status", "kind", "started", "best_epoch", "epochs_run", "valid_accuracy", "valid_macro_f1",
               "test_accuracy", "test_macro_f1", "held_out_perplexity", "wall_seconds")


def sort_runs(runs: list[RunSummary], key: str, reverse: bool = False) -> list[RunSummary]:
    """Runs by a summary field (SORT_FIELDS) or a dotted config key: accuracies and F1 best first, anything else
    ascending; reverse flips that. Runs without the value come last either way."""
    if key not in SORT_FIELDS and not any(key in r.config for r in runs):
        raise SentimentError(f"--sort {key}: not a column ({', '.join(SORT_FIELDS)}) nor a config key of these runs "
                             "(e.g. train.lr)")
    descending = (key in HIGHER_IS_BETTER) != reverse

    def value(run: RunSummary) -> Any:
        return getattr(run, key) if key in SORT_FIELDS else run.config.get(key)

    present = [r for r in runs if value(r) is not None]
    absent = [r for r in runs if value(r) is None]
    try:
        ordered = sorted(present, key=value, reverse=descending)
    except TypeError:  # a config key holding values of several types: compared as text
        ordered = sorted(present, key=lambda r: str(value(r)), reverse=descending)
    return ordered + absent
