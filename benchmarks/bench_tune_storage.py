"""Which local file should hold a `sentiment tune` study: SQLite (Optuna's RDBStorage, with the heartbeat tune
uses) or Optuna's journal file (JournalStorage + JournalFileBackend)? Several worker processes run trials of a
trivial objective (three reported steps each) on one study at once, so the storage is all they do: the worst case
for contention. Prints, per storage, trials per second, errors (e.g. SQLite's "database is locked") and whether
every trial number is distinct. The figures and the choice they led to: docs/tuning.md.

    python benchmarks/bench_tune_storage.py --workers 2 --trials 150
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def storage(kind: str, directory: Path):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    if kind == "sqlite":  # as sentiment tune opens it
        return optuna.storages.RDBStorage(f"sqlite:///{directory / 'study.db'}", heartbeat_interval=60,
                                          engine_kwargs={"connect_args": {"timeout": 60}})
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(directory / "journal.log")))


def worker(kind: str, directory: Path, trials: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors: list[str] = []

    def objective(trial):
        x, y = trial.suggest_float("x", -1, 1), trial.suggest_int("y", 0, 10)
        for step in range(3):
            trial.report(x * x + step, step)
        return x * x + y

    started = time.perf_counter()
    study = optuna.load_study(study_name="bench", storage=storage(kind, directory))
    done = 0
    while done < trials:
        try:
            study.optimize(objective, n_trials=1)
            done += 1
        except Exception as e:  # a storage error: counted, and the worker goes on
            errors.append(f"{type(e).__name__}: {str(e)[:120]}")
    return {"trials": done, "errors": len(errors), "first_error": errors[0] if errors else None,
            "seconds": round(time.perf_counter() - started, 2)}


def measure(kind: str, workers: int, trials: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory(prefix=f"bench-tune-{kind}-") as tmp:
        directory = Path(tmp)
        optuna.create_study(study_name="bench", storage=storage(kind, directory), direction="maximize",
                            sampler=optuna.samplers.TPESampler(seed=0))
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", kind, str(directory), str(trials)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(workers)]
        results = [json.loads(p.communicate()[0]) for p in procs]
        wall = time.perf_counter() - started
        numbers = [t.number for t in optuna.load_study(study_name="bench", storage=storage(kind, directory)).trials]
    return {"storage": kind, "workers": workers, "trials": len(numbers), "distinct_numbers": len(set(numbers)),
            "errors": sum(r["errors"] for r in results), "wall_s": round(wall, 1),
            "trials_per_s": round(len(numbers) / wall, 1),
            "ms_per_trial_per_worker": round(1000 * wall * workers / max(1, len(numbers)), 1),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), None)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # a worker process started by measure()
        print(json.dumps(worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="concurrent worker processes (default 2)")
    parser.add_argument("--trials", type=int, default=150, help="trials each worker runs (default 150)")
    parser.add_argument("--storage", choices=["sqlite", "journal", "both"], default="both")
    args = parser.parse_args()
    for kind in (["sqlite", "journal"] if args.storage == "both" else [args.storage]):
        print(json.dumps(measure(kind, args.workers, args.trials)), flush=True)


if __name__ == "__main__":
    main()
