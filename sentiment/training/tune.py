"""`sentiment tune`: an Optuna study whose trials are `sentiment train` runs of one config with overrides.

Each trial is a `sentiment train` subprocess into its own run directory (STUDY_DIR/trials/NNNN) with the
trial's values as --set overrides and run.eval_test false: choices use validation only. This process follows the
run's metrics.jsonl, reports each epoch's validation accuracy to the pruner and stops a pruned trial with SIGTERM
(the engine stops after its step). A worker killed mid-trial takes its trial's process with it (PR_SET_PDEATHSIG)
and stops its heartbeat: another worker, or the same command run again, marks that trial failed, and failed
trials do not count toward --trials. The study lives in an Optuna RDB storage: SQLite in the study directory by
default (docs/tuning.md: why not the journal file), or a PostgreSQL URL shared by workers on many machines.
At the end nothing is retrained: the best trial's test figure is read once, and best.yaml and trials.csv are
written.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import yaml

from sentiment.atomic import atomic_write_text
from sentiment.config import (Config, apply_overrides, config_from_dict, load_config, own_data_raw, read_yaml)
from sentiment.errors import SentimentError
from sentiment.training.tune_space import Dimension, override_texts, read_space

# sentiment.runs names these too; not imported from there, as it imports torch (a worker only reads JSON)
METRICS_FILE, RESULTS_FILE, CONFIG_FILE = "metrics.jsonl", "results.json", "config.yaml"
TRIALS_DIR, BEST_FILE, TABLE_FILE, DB_FILE = "trials", "best.yaml", "trials.csv", "study.db"
PRUNERS = ("median", "halving", "none")
MACHINE_KEYS = ("run.threads", "data.workers")  # tune sets them per trial (cores / --jobs); best.yaml leaves them
POLL_SECONDS = 0.5  # how often a running trial's metrics are read
OPEN_ATTEMPTS = 4  # tries to open the storage (a race between workers creating its tables), ~3 s in all
FAILURES_IN_A_ROW = 3  # a worker whose trials all fail this many times in a row stops: a config error, not bad luck
# the train flags the own-data keys come from (sentiment train --data ...)
DATA_FLAGS = {"train_file": "--data", "valid_file": "--valid-data", "test_file": "--test-data",
              "text_column": "--text-column", "label_column": "--label-column"}


@dataclasses.dataclass
class TuneSettings:
    """Everything a worker needs (passed to --jobs workers as JSON)."""

    space: str
    trials: int
    study_dir: str
    config: str | None = None
    data: dict[str, str] | None = None  # own data: train_file, valid_file, test_file, text_column, label_column
    overrides: list[str] = dataclasses.field(default_factory=list)
    storage: str | None = None  # null: SQLite in study_dir
    study_name: str | None = None  # null: study_dir's name
    timeout: float | None = None  # seconds after which no new trial starts
    jobs: int = 1
    seed: int = 0
    pruner: str = "median"
    heartbeat: int = 60  # seconds between a running trial's heartbeats; stale (failed) after twice that
    worker_index: int = 0  # which of --jobs workers this is (it seeds the sampler apart from the others)

    @property
    def name(self) -> str:
        return self.study_name or Path(self.study_dir).resolve().name

    def threads(self) -> int:
        """Threads of each trial: this machine's cores shared by the --jobs workers."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // self.jobs)


class TrialFailed(Exception):
    """A trial's `sentiment train` failed: the trial is FAIL, the study goes on."""


class SurplusTrial(Exception):
    """Another worker's trial, started at the same moment, already makes the study's --trials."""


@dataclasses.dataclass
class Progress:
    done: int  # complete + pruned
    total: int
    running: int
    failed: int
    best: float | None


# ---------------------------------------------------------------- the study
def base_raw(settings: TuneSettings) -> dict[str, Any]:
    """The config mapping every trial starts from, before --set: the config file, or (--data) the own-data recipe
    or the config file with the data keys."""
    if settings.data is not None:
        return own_data_raw(Path(settings.config) if settings.config else None, settings.data)
    return read_yaml(Path(settings.config)) if settings.config else {}


def check_settings(settings: TuneSettings) -> tuple[Config, list[Dimension]]:
    """The base config and the space, checked before any trial starts."""
    if settings.trials < 1:
        raise SentimentError(f"--trials must be >= 1, got {settings.trials}")
    if settings.jobs < 1:
        raise SentimentError(f"--jobs must be >= 1, got {settings.jobs}")
    if settings.pruner not in PRUNERS:
        raise SentimentError(f"--pruner must be one of {', '.join(PRUNERS)}, got {settings.pruner!r}")
    if settings.heartbeat < 1:
        raise SentimentError(f"--heartbeat must be >= 1 second, got {settings.heartbeat}")
    if settings.timeout is not None and settings.timeout <= 0:
        raise SentimentError(f"--timeout must be > 0 seconds, got {settings.timeout}")
    raw = base_raw(settings)
    cfg = config_from_dict(apply_overrides(copy.deepcopy(raw), settings.overrides))
    space = read_space(Path(settings.space), raw, settings.overrides)
    if cfg.data.dataset == "files":  # what each trial would refuse first, said once here
        for key in ("train_file", "valid_file", "test_file"):
            path = getattr(cfg.data, key)
            if path and not Path(path).exists():
                raise SentimentError(f"data.{key} {path} not found")
    return cfg, space


def storage_url(settings: TuneSettings) -> str:
    """--storage as SQLAlchemy reads it: SQLite in the study directory by default; postgresql:// with psycopg 3."""
    url = settings.storage
    if not url:
        return f"sqlite:///{Path(settings.study_dir).resolve() / DB_FILE}"
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg://" + url[len(scheme):]
    if url.startswith("postgresql+psycopg://"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SentimentError('a PostgreSQL --storage needs the psycopg driver: pip install "psycopg[binary]"') \
                from None
    return url


def shown_url(url: str) -> str:
    """A storage URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return scheme + sep + rest


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SentimentError("sentiment tune needs Optuna: pip install 'sentiment[tune]'") from None
    return optuna


def open_study(settings: TuneSettings, space: list[Dimension], cfg: Config) -> Any:
    """The study in --storage, created if missing; a study started with another space or config is refused."""
    optuna = _optuna()
    url = storage_url(settings)
    Path(settings.study_dir).mkdir(parents=True, exist_ok=True)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            study = optuna.create_study(storage=_storage(settings), study_name=settings.name, direction="maximize",
                                        load_if_exists=True, pruner=_pruner(optuna, settings.pruner))
            break
        except ImportError as e:
            raise SentimentError(f"--storage {shown_url(url)}: {e}") from None
        except Exception as e:  # SQLAlchemy's errors: the database cannot be reached or read, or a race
            # Two workers opening a new PostgreSQL database at once both create Optuna's tables, and one fails
            # (UniqueViolation on pg_type): measured in tests/test_tune.py. Once the tables exist, a retry opens.
            if attempt + 1 < OPEN_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SentimentError(f"cannot open the study in {shown_url(url)}: {first}") from None
    _check_same_study(study, settings, space, cfg)
    return study


def _storage(settings: TuneSettings) -> Any:
    """Optuna's RDBStorage for --storage, with the heartbeat; SQLite waits up to 60 s for its lock (not 5)."""
    optuna = _optuna()
    url = storage_url(settings)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is marked experimental
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=settings.heartbeat)


def _load(settings: TuneSettings) -> Any:
    return _optuna().load_study(study_name=settings.name, storage=_storage(settings))


def _pruner(optuna: Any, name: str) -> Any:
    if name == "median":  # not before epoch 2, nor before 5 trials have finished: early figures are noise
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "halving":  # rungs at epochs 1, 3, 9, ...: a third of the trials go on from each
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _comparable(cfg: Config) -> dict[str, Any]:
    """The config a study's trials share, without what differs between machines (paths, run settings)."""
    d = cfg.to_dict()
    d.pop("run")
    for key in ("data_dir", "train_file", "valid_file", "test_file", "unlabeled", "workers"):
        d["data"].pop(key)
    return json.loads(json.dumps(d))


def _check_same_study(study: Any, settings: TuneSettings, space: list[Dimension], cfg: Config) -> None:
    wanted = {"space": json.loads(json.dumps([d.to_dict() for d in space])), "config": _comparable(cfg)}
    attrs = study.user_attrs
    if "space" not in attrs:
        trials_dir = Path(settings.study_dir) / TRIALS_DIR
        if not study.trials and trials_dir.is_dir() and any(trials_dir.iterdir()):
            raise SentimentError(f"{trials_dir} holds trials of another study: choose another --study-dir")
        for key, value in wanted.items():
            study.set_user_attr(key, value)
        return
    for key, value in wanted.items():
        if attrs.get(key) != value:
            what = "its keys or ranges differ" if key == "space" else _first_difference(attrs.get(key), value, "")
            raise SentimentError(f"study {settings.name} in {shown_url(storage_url(settings))} was started with another "
                                 f"{'space' if key == 'space' else 'config'} ({what}): continue it with the same "
                                 "config, --set and space, or start another (--study-name, --study-dir)")


def _first_difference(old: Any, new: Any, path: str) -> str:
    """`model.hidden_size: 128 then, 64 now` for the first key where two configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))
    return f"{path}: {old!r} then, {new!r} now"


# ---------------------------------------------------------------- one worker
def run_worker(settings: TuneSettings, on_progress: Callable[[Progress], None] | None = None) -> None:
    """Run trials until the study holds --trials complete or pruned ones (or --timeout passes). Trials that other
    workers run count; a running trial whose heartbeat stopped is marked failed and run again."""
    optuna = _optuna()
    cfg, space = check_settings(settings)
    study = open_study(settings, space, cfg)
    started, failures = time.monotonic(), 0
    worker = f"{socket.gethostname()}:{os.getpid()}"
    while True:
        _fail_stale(optuna, study)
        progress = study_progress(study, settings.trials)
        if on_progress:
            on_progress(progress)
        if progress.done >= settings.trials:
            return
        if settings.timeout is not None and time.monotonic() - started > settings.timeout:
            return
        if progress.done + progress.running >= settings.trials:  # wait: a running trial may yet fail
            time.sleep(max(POLL_SECONDS, min(5.0, settings.heartbeat / 2)))
            continue
        study.sampler = _sampler(optuna, settings, len(study.get_trials(deepcopy=False)))
        objective = TrialObjective(settings, space, worker, study, on_progress)
        study.optimize(objective, n_trials=1, catch=(TrialFailed, SurplusTrial))
        if objective.failed is None:
            failures = 0
            continue
        failures += 1
        if failures >= FAILURES_IN_A_ROW:
            raise SentimentError(f"{failures} trials in a row failed; the last: {objective.failed}")


def _fail_stale(optuna: Any, study: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fail_stale_trials is marked experimental
        optuna.storages.fail_stale_trials(study)


def _sampler(optuna: Any, settings: TuneSettings, n_trials: int) -> Any:
    """TPE seeded by --seed, the study's trial count and the worker: a continued study does not replay its first
    trials' draws, and workers asking at the same count draw apart (--jobs workers by their index, machines
    sharing a database by their host name), while one worker's study is the same every time."""
    import zlib

    import numpy as np

    entropy = [settings.seed, n_trials, settings.worker_index]
    if settings.storage:  # possibly shared with other machines
        entropy.append(zlib.crc32(socket.gethostname().encode()))
    return optuna.samplers.TPESampler(seed=int(np.random.SeedSequence(entropy).generate_state(1)[0]))


def study_progress(study: Any, total: int) -> Progress:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    surplus = sum(t.state == TrialState.FAIL and bool(t.user_attrs.get("surplus")) for t in trials)
    return Progress(count[TrialState.COMPLETE] + count[TrialState.PRUNED], total, count[TrialState.RUNNING],
                    count[TrialState.FAIL] - surplus, max(values) if values else None)


class TrialObjective:
    """One trial: `sentiment train` with the trial's values, followed epoch by epoch for the pruner."""

    def __init__(self, settings: TuneSettings, space: list[Dimension], worker: str, study: Any,
                 on_progress: Callable[[Progress], None] | None) -> None:
        self.settings, self.space, self.worker, self.study = settings, space, worker, study
        self.on_progress = on_progress
        self.failed: str | None = None

    def __call__(self, trial: Any) -> float:
        self._check_quota(trial)
        params = {d.key: d.suggest(trial) for d in self.space}
        name = f"{trial.number:04d}"
        run_dir = Path(self.settings.study_dir) / TRIALS_DIR / name
        log = run_dir.parent / f"{name}.log"
        trial.set_user_attr("run_dir", f"{TRIALS_DIR}/{name}")
        trial.set_user_attr("worker", self.worker)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._train(trial, params, run_dir, log)
        except TrialFailed as e:
            self.failed = f"trial {trial.number}: {e} (its output: {log})"
            trial.set_user_attr("error", str(e))
            raise

    def _check_quota(self, trial: Any) -> None:
        """Two workers may both see room for one more trial and ask at once: the higher number gives way."""
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ahead = [t for t in self.study.get_trials(deepcopy=False, states=counted) if t.number < trial.number]
        if len(ahead) >= self.settings.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"the study had {self.settings.trials} trials when this one started")

    def _train(self, trial: Any, params: dict[str, Any], run_dir: Path, log: Path) -> float:
        optuna = _optuna()
        threads = self.settings.threads()
        cmd = [sys.executable, "-m", "sentiment", "train", *train_args(self.settings),
               *_sets([f"run.threads={threads}", f"data.workers={threads}", *self.settings.overrides,
                       *override_texts(params), "run.eval_test=false"]),
               "--run-dir", str(run_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        started = time.monotonic()
        with open(log, "wb") as out:
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
        try:
            reported, last_progress = 0, 0.0
            while child.poll() is None:
                time.sleep(POLL_SECONDS)
                before, reported = reported, _report(trial, run_dir, reported)
                if reported > before and trial.should_prune():  # asked once per epoch: it reads every trial
                    _stop(child)
                    trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
                    raise optuna.TrialPruned(f"at epoch {reported}")
                if self.on_progress and time.monotonic() - last_progress > 2:
                    self.on_progress(study_progress(self.study, self.settings.trials))
                    last_progress = time.monotonic()
            _report(trial, run_dir, reported)  # the epochs after the last look: later trials are pruned against them
        finally:
            if child.poll() is None:  # interrupted, or this worker ends: the trial's process ends with it
                _stop(child)
        trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
        if child.returncode != 0:
            raise TrialFailed(_last_error(log) or f"sentiment train exited with code {child.returncode}")
        return _finished(trial, run_dir, self.settings)


def train_args(settings: TuneSettings) -> list[str]:
    """The config and data flags of each trial's `sentiment train`."""
    args = ["--config", settings.config] if settings.config else []
    for key, value in (settings.data or {}).items():
        if value is not None:
            args += [DATA_FLAGS[key], str(value)]
    return args


def _sets(texts: list[str]) -> list[str]:
    return [arg for text in texts for arg in ("--set", text)]


def read_metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows (sentiment.runs.read_metrics without importing torch)."""
    try:
        lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _report(trial: Any, run_dir: Path, reported: int) -> int:
    """Report the epochs' validation accuracies not reported yet; returns how many epochs are reported."""
    for row in read_metrics_rows(run_dir):
        epoch = row.get("epoch")
        if isinstance(epoch, int) and epoch > reported and "valid_accuracy" in row:
            trial.report(float(row["valid_accuracy"]), epoch)
            reported = epoch
    return reported


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM (the engine stops after its step), then SIGKILL if it lingers."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _last_error(log: Path) -> str | None:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.removeprefix("error: ").strip() for line in lines if line.startswith(("error:", "interrupted"))]
    return errors[-1] if errors else (lines[-1].strip()[:300] if lines else None)


def _finished(trial: Any, run_dir: Path, settings: TuneSettings) -> float:
    """The trial's objective: the validation accuracy of the checkpoint validation chose (results.json)."""
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
        valid = results["valid"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TrialFailed(f"{run_dir / RESULTS_FILE} is missing or unreadable") from None
    trial.set_user_attr("best_epoch", results.get("best_epoch"))
    trial.set_user_attr("valid_macro_f1", valid.get("macro_f1"))
    if settings.data is not None and not settings.config:  # train --data chose data.max_len from the texts
        data = read_yaml(run_dir / CONFIG_FILE).get("data") or {}
        trial.set_user_attr("chosen", {k: data.get(k) for k in ("max_len", "eval_max_len")})
    return float(valid["accuracy"])


def die_with_parent() -> None:
    """In a trial's (or worker's) process before it starts: the kernel kills it when the process that started it
    dies, kill -9 included, so a killed worker leaves no training behind (as `train --nproc` does for torchrun)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------- the study, end to end
def tune(settings: TuneSettings, on_progress: Callable[[Progress], None] | None = None,
         on_note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the study to --trials with --jobs workers on this machine, then summarise it (summarise)."""
    cfg, space = check_settings(settings)
    open_study(settings, space, cfg)  # created once here, not by K workers at once
    if settings.jobs == 1:
        run_worker(settings, on_progress)
    else:
        _run_workers(settings, on_progress, on_note)
    return summarise(settings, space)


def _run_workers(settings: TuneSettings, on_progress: Callable[[Progress], None] | None,
                 on_note: Callable[[str], None] | None) -> None:
    """--jobs K: K worker processes on one storage; this process shows progress and waits for them."""
    logs = Path(settings.study_dir) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    workers = []
    for i in range(settings.jobs):
        log = logs / f"worker-{i}.log"
        own = json.dumps(dataclasses.asdict(dataclasses.replace(settings, worker_index=i)))
        with open(log, "ab") as out:
            workers.append((subprocess.Popen([sys.executable, "-m", "sentiment.training.tune_worker", own],
                                             stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent), log))
    study = _load(settings)
    try:
        while any(p.poll() is None for p, _ in workers):
            if on_progress:
                on_progress(study_progress(study, settings.trials))
            time.sleep(1.0)
    finally:
        for p, _ in workers:
            if p.poll() is None:
                _stop(p)
    failed = [(p, log) for p, log in workers if p.returncode != 0]
    for p, log in failed:
        reason = _last_error(log) or f"exited with code {p.returncode}"
        if p.returncode < 0:
            reason = f"killed by {signal.Signals(-p.returncode).name}"
        if on_note:
            on_note(f"a worker ended early: {reason} (its output: {log})")
    if len(failed) == len(workers) and study_progress(study, settings.trials).done < settings.trials:
        raise SentimentError(f"every worker failed; the last: {_last_error(failed[-1][1])} (output: {logs})")


def summarise(settings: TuneSettings, space: list[Dimension]) -> dict[str, Any]:
    """The study's trials as rows (written to trials.csv), its best trial with its test figure (read once and
    kept with the study), and best.yaml."""
    study = _load(settings)
    rows = [_row(t, space) for t in study.get_trials(deepcopy=False)]
    study_dir = Path(settings.study_dir)
    _write_table(study_dir / TABLE_FILE, rows, space)
    summary: dict[str, Any] = {"study": settings.name, "storage": shown_url(storage_url(settings)), "rows": rows,
                               "progress": study_progress(study, settings.trials), "table": str(study_dir / TABLE_FILE),
                               "best": None}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return summary
    best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    best_path = study_dir / BEST_FILE
    write_best(best_path, settings, best, len(rows))
    summary["best"] = {"number": best.number, "valid": best.value, "params": best.params,
                       "run_dir": str(study_dir / best.user_attrs.get("run_dir", "")), "config": str(best_path),
                       **read_test_figure(study, best, settings)}
    return summary


def _row(t: Any, space: list[Dimension]) -> dict[str, Any]:
    values = list(t.intermediate_values.values())
    attrs = t.user_attrs
    return {"number": t.number, "state": "SURPLUS" if attrs.get("surplus") else t.state.name,
            "valid_accuracy": t.value if t.value is not None else (values[-1] if values else None),
            "epochs": len(values), **{d.key: t.params.get(d.key) for d in space},
            "seconds": attrs.get("seconds"), "worker": attrs.get("worker"), "run_dir": attrs.get("run_dir"),
            "error": attrs.get("error")}


def _write_table(path: Path, rows: list[dict[str, Any]], space: list[Dimension]) -> None:
    import io

    buf = io.StringIO()
    fields = ["number", "state", "valid_accuracy", "epochs", *(d.key for d in space), "seconds", "worker", "run_dir",
              "error"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_best(path: Path, settings: TuneSettings, best: Any, n_trials: int) -> None:
    """The config the trials started from with the best trial's values: `sentiment train --config best.yaml` trains
    it (checked here: it loads and resolves). Data paths stay as given (relative to where tune ran)."""
    # run.threads and data.workers are how the trials shared this machine, not a choice of the study
    kept = [text for text in settings.overrides if text.split("=", 1)[0].strip() not in MACHINE_KEYS]
    raw = apply_overrides(base_raw(settings), [*kept, *override_texts(best.params)])
    chosen = best.user_attrs.get("chosen") or {}
    named = {text.split("=", 1)[0].strip() for text in settings.overrides}
    for key, value in chosen.items():  # --data without --config: the lengths train chose from the texts
        if value is not None and f"data.{key}" not in named:
            raw.setdefault("data", {})[key] = value
    if not isinstance(raw.get("run"), dict):
        raw["run"] = {}
    raw["run"].setdefault("name", f"{settings.name}-best")
    header = (f"# sentiment tune: the best of study {settings.name}'s {n_trials} trials, trial {best.number} "
              f"(validation accuracy {best.value:.4f}), with its values:\n"
              + "".join(f"#   {k}: {v!r}\n" for k, v in best.params.items())
              + f"# train it: sentiment train --config {path}\n")
    text = header + yaml.safe_dump(json.loads(json.dumps(raw)), sort_keys=False)
    atomic_write_text(path, text)
    load_config(path)  # one error now, not at the user's next train


def read_test_figure(study: Any, best: Any, settings: TuneSettings) -> dict[str, Any]:
    """The best trial's test figure, read once per best trial (kept in the study's attributes): never a choice."""
    key = f"test:{best.number}"
    if key in study.user_attrs:
        return {"test": study.user_attrs[key]}
    run_dir = Path(settings.study_dir) / best.user_attrs.get("run_dir", "")
    if best.user_attrs.get("worker", "").split(":")[0] != socket.gethostname() or not (run_dir / "best.pt").is_file():
        return {"test_note": f"trial {best.number} ran on {best.user_attrs.get('worker', '?')}: its test figure is "
                             f"read where its run directory is (sentiment eval --run ...)"}
    from sentiment.inference.runtime import evaluate_run

    try:
        metrics = evaluate_run(run_dir, split="test").to_dict()
    except SentimentError as e:
        return {"test_note": str(e)}
    figure = {k: metrics[k] for k in ("accuracy", "macro_f1", "n") if k in metrics}
    study.set_user_attr(key, figure)
    return {"test": figure}


def quiet_optuna() -> None:
    """Optuna's own log lines (a trial finished, a trial failed with its traceback) off: tune says it its way."""
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
