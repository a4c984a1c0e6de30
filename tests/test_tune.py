"""`sentiment tune` against the real things: trials are real `sentiment train` processes on the tiny dataset, the
study lives in real SQLite and PostgreSQL databases, and a worker is killed with SIGKILL mid-trial.

One local study of 3 trials run by two workers (a module fixture) is copied for the tests that continue it, so
each of them pays only for the trials it adds."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.config import load_config
from sentiment.errors import SentimentError
from sentiment.training.tune import TrialObjective, TuneSettings, read_metrics_rows
from sentiment.training.tune_space import read_space
from conftest import make_imdb, one_line_error

optuna = pytest.importorskip("optuna")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMEOUT = 120.0  # seconds for one tune process; a hang fails the test instead of blocking the suite
SPACE = """\
train.lr: {low: 3.0e-3, high: 3.0e-2, log: true}
model.hidden_size: {low: 8, high: 24, step: 8}
model.rnn: [gru, lstm]
"""


def base_config(data_dir: Path, epochs: int = 1) -> str:
    # TINY_TRAINING as a file (the trials' --set add to it): the tiny dataset in a second
    return (f"data: {{data_dir: {data_dir}, workers: 1}}\n"
            f"train: {{epochs: {epochs}, batch_size: 16, lr_schedule: constant, warmup_steps: 0}}\n"
            "model: {ngrams: null, embed_dropout: 0.1, output_dropout: 0.0}\n"
            )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    make_imdb(root / "data")
    (root / "base.yaml").write_text(base_config(root / "data"), encoding="utf-8")
    (root / "space.yaml").write_text(SPACE, encoding="utf-8")
    return root


def tune_args(root: Path, study_dir: Path, trials: int, *extra: str) -> list[str]:
    return ["tune", "--config", str(root / "base.yaml"), "--space", str(root / "space.yaml"), "--trials", str(trials),
            "--study-dir", str(study_dir), "--set", "run.threads=1", "--set", "data.workers=1", *extra]


def start_tune(root: Path, study_dir: Path, trials: int, *extra: str, log: str = "tune") -> subprocess.Popen:
    out = open(root / f"{log}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "sentiment", *tune_args(root, study_dir, trials, *extra)],
                            cwd=root, env=ENV, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, root: Path, log: str = "tune") -> str:
    try:
        code = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (root / f"{log}.log").read_text(errors="replace")
    assert code == 0, text
    return text


def run_in_process(root: Path, study_dir: Path, trials: int, *extra: str) -> str:
    result = CliRunner().invoke(app, tune_args(root, study_dir, trials, *extra))
    assert result.exit_code == 0, result.output
    return result.output


def trials_of(study_dir: Path, storage: str | None = None) -> list:
    url = storage or f"sqlite:///{study_dir.resolve() / 'study.db'}"
    return optuna.load_study(study_name=study_dir.name, storage=url).get_trials()


def finished(trials: list) -> dict[int, float]:
    return {t.number: t.value for t in trials if t.state.name == "COMPLETE"}


@pytest.fixture(scope="module")
def shared_study(workdir: Path) -> tuple[Path, str]:
    """3 trials run by two worker processes (--jobs 2) on one local study."""
    study_dir = workdir / "first" / "study"
    output = finish(start_tune(workdir, study_dir, 3, "--jobs", "2"), workdir)
    return study_dir, output


def copy_study(shared: Path, tmp_path: Path) -> Path:
    """The shared study in a directory of the same name (the study's name), to continue without changing it."""
    copy = tmp_path / "copy" / shared.name
    shutil.copytree(shared, copy)
    return copy


# ---------------------------------------------------------------- the space file
@pytest.mark.parametrize("space, needles", [
    ("train.lrr: {low: 0.001, high: 0.01}", ["space.yaml", "train.lrr", "did you mean 'lr'"]),
    ("train.lr: {low: 0.01, high: 0.001}", ["train.lr", "impossible range", "below high"]),
    ("train.weight_decay: {low: 0.0, high: 0.01, log: true}", ["train.weight_decay", "log needs low > 0"]),
    ("model.dropout: {low: 0.1, high: 1.0}", ["model.dropout", "must be in [0, 1)"]),
    ("model.hidden_size: {low: 8, high: 64.5}", ["model.hidden_size", "integers"]),
    ("model.rnn: {low: 1, high: 2}", ["model.rnn", "list of choices"]),
    ("model.rnn: [gru, transformer]", ["model.rnn", "transformer"]),
    ("train.lr: {low: 0.001, high: 0.01, lg: true}", ["train.lr", "'lg'"]),
])
def test_a_bad_space_is_one_error_line_before_any_trial(workdir: Path, tmp_path: Path, space: str, needles: list):
    (tmp_path / "space.yaml").write_text(space + "\n", encoding="utf-8")
    study_dir = tmp_path / "study"
    result = CliRunner().invoke(app, ["tune", "--config", str(workdir / "base.yaml"), "--space",
                                      str(tmp_path / "space.yaml"), "--trials", "2", "--study-dir", str(study_dir)])
    one_line_error(result.exit_code, result.output, *needles)
    assert not study_dir.exists()  # no study, no trial


def test_a_space_reads_ranges_and_choices_typed_by_the_config(workdir: Path, tmp_path: Path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE + "model.ngrams.n: [1, 2, 3]\ntrain.epochs: {low: 1, high: 3}\n", encoding="utf-8")
    space = {d.key: d for d in read_space(path, {}, [])}
    assert (space["train.lr"].kind, space["train.lr"].low, space["train.lr"].log) == ("float", 3e-3, True)
    assert (space["model.hidden_size"].kind, space["model.hidden_size"].step) == ("int", 8)
    assert space["model.rnn"].choices == ("gru", "lstm")
    assert space["train.epochs"].kind == "int"
    with pytest.raises(SentimentError, match="also given by --set"):
        read_space(path, {}, ["train.lr=0.01"])


@pytest.mark.parametrize("module, extra, needles", [
    ("optuna", [], ["sentiment[tune]"]),
    ("psycopg", ["--storage", "postgresql://u@127.0.0.1:1/db"], ["psycopg[binary]"]),
])
def test_a_missing_optional_dependency_is_one_error_line(workdir: Path, tmp_path: Path, monkeypatch, module: str,
                                                         extra: list, needles: list):
    monkeypatch.setitem(sys.modules, module, None)  # import fails, as when it is not installed
    result = CliRunner().invoke(app, tune_args(workdir, tmp_path / "study", 2, *extra))
    one_line_error(result.exit_code, result.output, *needles)
    assert not (tmp_path / "study").exists()


# ---------------------------------------------------------------- a local study
def test_two_workers_share_one_local_study(shared_study):
    study_dir, output = shared_study
    trials = trials_of(study_dir)
    # two workers finishing at once may both ask for the third trial: the higher number gives way (surplus)
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert all(t.state.name == "FAIL" and not t.params for t in surplus)  # never trained
    trials = [t for t in trials if t not in surplus]
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials), [(t.number, t.state) for t in trials]
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers ran trials"
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3  # workers starting at once draw apart
    for t in trials:
        assert (study_dir / t.user_attrs["run_dir"] / "best.pt").is_file()
        assert not (study_dir / t.user_attrs["run_dir"] / "results.json").read_text().count('"test"')  # valid only
    assert "3 of 3 trials finished" in output and "its test figure" in output
    lines = (study_dir / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("number,state,valid_accuracy,epochs,train.lr,model.hidden_size,model.rnn")
    assert len(lines) == 1 + 3 + len(surplus) and sum(",SURPLUS," in line for line in lines) == len(surplus)


def test_best_yaml_is_the_config_with_the_best_values_and_resolves_for_train(shared_study):
    study_dir, _ = shared_study
    trials = trials_of(study_dir)
    best = max((t for t in trials if t.value is not None), key=lambda t: (t.value, -t.number))
    cfg = load_config(study_dir / "best.yaml")
    assert cfg.train.lr == pytest.approx(best.params["train.lr"])
    assert (cfg.model.hidden_size, cfg.model.rnn) == (best.params["model.hidden_size"], best.params["model.rnn"])
    assert cfg.train.epochs == 1 and cfg.model.ngrams is None  # the base config's keys
    assert cfg.run.eval_test  # the trials' run.eval_test=false is theirs, not the tuned config's
    result = CliRunner().invoke(app, ["train", "--config", str(study_dir / "best.yaml"), "--print-config"])
    assert result.exit_code == 0 and f"hidden_size: {best.params['model.hidden_size']}" in result.output


def test_the_same_command_again_adds_no_trial_to_a_finished_study(shared_study, workdir: Path):
    study_dir = shared_study[0]
    before = [(t.number, t.state, t.value) for t in trials_of(study_dir)]
    output = run_in_process(workdir, study_dir, 3)
    assert [(t.number, t.state, t.value) for t in trials_of(study_dir)] == before
    assert "3 of 3 trials finished" in output and "its test figure" in output  # read once, then kept
    other = CliRunner().invoke(app, tune_args(workdir, study_dir, 4, "--set", "train.epochs=2"))
    one_line_error(other.exit_code, other.output, "started with another config", "train.epochs: 1 then, 2 now")
    assert [(t.number, t.state, t.value) for t in trials_of(study_dir)] == before  # refused before any trial


def test_a_worker_killed_mid_trial_loses_no_trial_and_the_study_goes_on_to_n(shared_study, workdir: Path,
                                                                             tmp_path: Path):
    study_dir = copy_study(shared_study[0], tmp_path)
    before = finished(trials_of(study_dir))
    killed = len(trials_of(study_dir))  # the next trial's number (3, or 4 after a surplus one)
    proc = start_tune(workdir, study_dir, 4, "--heartbeat", "1", log="killed")
    run_dir = study_dir / "trials" / f"{killed:04d}"
    deadline = time.monotonic() + TIMEOUT
    while not (run_dir / "config.yaml").is_file():  # the trial's training has started
        assert proc.poll() is None and time.monotonic() < deadline, (workdir / "killed.log").read_text()
        time.sleep(0.1)
    trainer = _trainer_of(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if trainer is not None:  # PR_SET_PDEATHSIG: the trial's training dies with its worker
        _wait_gone(trainer)
    states = {t.number: t.state.name for t in trials_of(study_dir)}
    assert states[killed] == "RUNNING"  # as the killed worker left it
    output = run_in_process(workdir, study_dir, 4, "--heartbeat", "1")
    after = {t.number: t for t in trials_of(study_dir)}
    assert after[killed].state.name == "FAIL"  # its heartbeat stopped: failed, and not counted
    # --trials 4 over 3 finished ones: exactly one more, the finished ones as they were
    assert sorted(after) == list(range(killed + 2)) and after[killed + 1].state.name == "COMPLETE"
    assert finished(after.values()) == {**before, killed + 1: after[killed + 1].value}
    assert "4 of 4 trials finished · 1 failed" in output
    rows = (study_dir / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + killed + 2 and rows[1 + killed].startswith(f"{killed},FAIL,")


def _trainer_of(run_dir: Path) -> int | None:
    """The pid of the `sentiment train` writing run_dir (from /proc), or None if it already ended."""
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            args = Path(cmdline).read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run_dir).encode() in args and b"train" in args:
            return int(cmdline.split("/")[2])
    return None


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            if status == "Z":
                return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.1)
    pytest.fail(f"the killed worker's training process {pid} still runs")


class PruneAtFirstEpoch(optuna.pruners.BasePruner):
    """A real pruner with the simplest policy: prune as soon as an epoch is reported."""

    def prune(self, study, trial) -> bool:
        return bool(trial.intermediate_values)


def test_a_pruned_trial_is_stopped_after_the_epoch_it_reported(workdir: Path, tmp_path: Path):
    (tmp_path / "base.yaml").write_text(base_config(workdir / "data", epochs=20), encoding="utf-8")
    settings = TuneSettings(space=str(workdir / "space.yaml"), trials=1, study_dir=str(tmp_path),
                            config=str(tmp_path / "base.yaml"), overrides=["run.threads=1"])
    space = read_space(Path(settings.space), {}, [])
    study = optuna.create_study(direction="maximize", pruner=PruneAtFirstEpoch())
    study.optimize(TrialObjective(settings, space, "test", study, None), n_trials=1)
    (trial,) = study.trials
    assert trial.state.name == "PRUNED"
    epochs = len(read_metrics_rows(tmp_path / "trials" / "0000"))
    assert 1 <= epochs < 20  # stopped by SIGTERM, not run to its end


# ---------------------------------------------------------------- PostgreSQL, shared by processes
def _missing(reason: str):
    """Without CI a missing server or driver skips, saying why; under CI=true it fails."""
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> str:
    """A real PostgreSQL server (Debian's, off PATH) on 127.0.0.1 in its own temporary directory, run as the
    postgres user when this is root; yields a database URL and stops the server after the module."""
    try:
        import psycopg
    except ImportError:
        _missing('psycopg is not installed (pip install "psycopg[binary]")')
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not bins:
        _missing("no PostgreSQL server in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    as_postgres: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="sentiment-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        if shutil.which("runuser") is None:
            _missing("runuser is missing: cannot run PostgreSQL as the postgres user")
        try:
            shutil.chown(home, "postgres", "postgres")
        except LookupError:
            _missing("no postgres user (Debian's postgresql package creates it)")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), home / "data"
    try:
        subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w",
                        "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')[-500:]}")
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE tune_test")
        yield f"postgresql://postgres@127.0.0.1:{port}/tune_test"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"],
                       capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def test_two_tune_processes_share_a_postgresql_study(postgres: str, workdir: Path):
    # two "machines": each its own study directory, one study (the same --study-name) in the database
    dirs = [workdir / f"machine{i}" / "study" for i in (1, 2)]
    procs = [start_tune(workdir, d, 2, "--storage", postgres, "--study-name", "shared", log=f"pg{i}")
             for i, d in enumerate(dirs)]
    outputs = [finish(p, workdir, log=f"pg{i}") for i, p in enumerate(procs)]
    trials = optuna.load_study(study_name="shared",
                               storage=postgres.replace("postgresql://", "postgresql+psycopg://")).get_trials()
    assert sorted(t.number for t in trials) == [0, 1]  # two trials in all, not two each
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "each process ran one of the study's trials"
    for t in trials:  # each trial's run directory is on the "machine" that ran it
        assert sum((d / t.user_attrs["run_dir"] / "best.pt").is_file() for d in dirs) == 1
    assert all("2 of 2 trials finished" in out for out in outputs), outputs
