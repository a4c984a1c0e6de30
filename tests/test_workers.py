"""Worker processes: results in order, Ctrl-C left to the main process, a killed worker is an error."""

from __future__ import annotations

import os
import signal
import time

import pytest

from sentiment.errors import SentimentError
from sentiment.workers import run_in_workers


@pytest.fixture(autouse=True)
def no_hang():
    # a regression here would hang (Pool.map waits forever for a dead worker's result): fail instead
    def fail(signum, frame):
        raise AssertionError("run_in_workers hung")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def square_slowly(x: int) -> int:
    time.sleep(0.05 * (x % 3))  # finish out of order
    return x * x


def interrupt_self(x: int) -> int:
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to every process in the group
    time.sleep(0.1)
    return x + 1


def die(x: int) -> int:
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, say
    time.sleep(5)
    return x


def refuse(x: int) -> int:
    raise SentimentError(f"bad input {x}")


def test_results_come_back_in_task_order():
    assert run_in_workers(square_slowly, list(range(10)), 2) == [x * x for x in range(10)]


def test_workers_leave_ctrl_c_to_the_main_process():
    assert run_in_workers(interrupt_self, [1, 2, 3], 2) == [2, 3, 4]


def test_a_killed_worker_is_an_error_not_a_hang():
    start = time.monotonic()
    with pytest.raises(SentimentError, match="killed by signal 9"):
        run_in_workers(die, [0, 1], 2)
    assert time.monotonic() - start < 4  # long before the surviving worker's 5 s task would end


def test_errors_raised_in_a_worker_reach_the_caller():
    with pytest.raises(SentimentError, match="bad input"):
        run_in_workers(refuse, [7], 1)
