"""Worker processes for the CPU-heavy steps (tokenizing, scoring), and how they meet signals."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from typing import Any

from sentiment.errors import SentimentError


def _worker_init() -> None:
    # Ctrl-C reaches the whole foreground process group. The main process decides what it means (training:
    # stop after this step; anything else: stop now, which ends the workers); workers that raised
    # KeyboardInterrupt too would each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the training loop's SIGTERM handler (stop after this step), under which the
    # SIGTERM that Pool.terminate() ends idle workers with only sets a flag: the pool would wait for ever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _end_now(pool: Any) -> None:
    """Kill a failed pool's workers at once. Pool.terminate() first takes the task queue's lock, which a worker
    killed from outside may have died holding: it then waited for ever (once in a full run of the suite, 2026-12-08). So the
    workers get SIGKILL here, and terminate() (which also stops the pool's threads) runs on a daemon thread that
    nothing waits for."""
    import threading

    for process in list(getattr(pool, "_pool", ()) or ()):
        if process.exitcode is None:
            process.kill()
    threading.Thread(target=pool.terminate, daemon=True).start()


def run_in_workers(fn: Callable[[Any], Any], tasks: Sequence[Any], processes: int, method: str = "fork") -> list:
    """fn over tasks in `processes` worker processes, results in task order. A worker killed from outside
    (the OOM killer, SIGTERM to the process group) is an error at once, not a wait for a result that will
    never come (which is what multiprocessing.Pool.map does)."""
    before = set(multiprocessing.active_children())
    pool = multiprocessing.get_context(method).Pool(processes, initializer=_worker_init)
    try:
        workers = [p for p in multiprocessing.active_children() if p not in before]
        result = pool.map_async(fn, tasks, chunksize=1)
        while not result.ready():
            result.wait(0.1)
            dead = next((p for p in workers if p.exitcode is not None), None)
            if dead is not None and not result.ready():
                code = dead.exitcode
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                raise SentimentError(f"a worker process died ({how}: out of memory, or stopped from outside); "
                                     "nothing from this step was kept")
        results = result.get()
    except BaseException:
        _end_now(pool)  # a failure or Ctrl-C: end the workers now
        raise
    # Done: each worker ends on the sentinel close() sends. Not `with Pool(...)`, whose exit terminates them
    # with SIGTERM: a worker blocked on the task queue's lock then survived it now and then, and the join
    # after it waited for ever (`sentiment train` and the test suite hung after scoring).
    pool.close()
    pool.join()
    return results
