"""status.json: how a run ended, as recording_status writes it and read_status / writer_runs read it."""

from __future__ import annotations

import os
import subprocess

import pytest

from sentiment.errors import SentimentError
from sentiment.runstatus import read_status, recording_status, writer_runs


class Interrupted(SentimentError):
    exit_code = 130  # as sentiment.training.engine.TrainingInterrupted


def test_running_then_finished(tmp_path):
    assert read_status(tmp_path) is None
    with recording_status(tmp_path):
        during = read_status(tmp_path)
    assert during["status"] == "running" and during["pid"] == os.getpid() and writer_runs(during)
    assert read_status(tmp_path)["status"] == "finished"


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt(), "interrupted"),
                                           (Interrupted("interrupted at epoch 2, step 3"), "interrupted"),
                                           (SentimentError("loss became nan\nat step 3"), "failed"),
                                           (MemoryError(), "failed")])
def test_the_error_that_ends_a_run_is_recorded_and_raised(tmp_path, error, status):
    with pytest.raises(type(error)):
        with recording_status(tmp_path):
            raise error
    record = read_status(tmp_path)
    assert record["status"] == status
    assert record["error"] == (str(error).splitlines()[0] if str(error) else type(error).__name__)


def test_other_ranks_write_nothing(tmp_path):
    with recording_status(tmp_path, write=False):
        pass
    assert not list(tmp_path.iterdir())


def test_a_running_status_of_a_gone_process_or_another_host_is_not_a_writer(tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()
    with recording_status(tmp_path):
        record = read_status(tmp_path)
    assert not writer_runs({**record, "pid": child.pid})
    assert not writer_runs({**record, "host": "elsewhere"})
    assert not writer_runs({**record, "process_start": record["process_start"] + 1})  # the pid reused since


def test_a_file_that_is_not_a_status_is_an_error_naming_it(tmp_path):
    (tmp_path / "status.json").write_text('{"status": "sleeping"}')
    with pytest.raises(SentimentError, match="status.json is not a run status file"):
        read_status(tmp_path)
    (tmp_path / "status.json").write_text('{"status": "runn')
    with pytest.raises(SentimentError, match="status.json is unreadable"):
        read_status(tmp_path)
