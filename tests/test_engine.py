"""sentiment.training.engine beyond what the pins (test_engine_pins.py) cover: the host-sync policy under DDP, the
wall-clock budget, and a second kind of training (its own stream, objective and validation) on the same loop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from sentiment.distributed import Rank
from sentiment.runs import BEST, LAST, load_checkpoint, read_metrics
from sentiment.training.engine import Engine, EngineSettings, LoopState, TrainingInterrupted
from conftest import StopAfter


def test_lazy_sync_divergence_stops_every_rank_with_the_same_error(tmp_path):
    """Under DDP with lazy host syncs, a non-finite gradient on one rank is skipped on all (fused Adam's found_inf,
    all-reduced); every rank must then stop with the divergence error at the same step, not rank 0 alone while the
    others wait in a collective for a rank that left."""
    from test_distributed import SETTINGS, write_data

    csv = write_data(tmp_path, rows=1600)  # an epoch long enough that rank 0 reports mid-epoch
    env = {**os.environ, "SENTIMENT_DIST_TIMEOUT": "30", "OMP_NUM_THREADS": "1"}
    env.pop("SENTIMENT_CACHE_DIR", None)
    settings = [*SETTINGS, "train.epochs=1", "run.eval_test=false", "run.device=cpu", "train.lazy_sync=true",
                f"data.train_file={csv}", f"data.data_dir={tmp_path / 'data'}"]
    script = Path(__file__).parent / "engine_ddp_helper.py"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(tmp_path / "out"), *settings], capture_output=True, text=True, env=env,
                          timeout=300)
    ends = {r: (tmp_path / "out" / f"rank{r}.txt").read_text().splitlines() if (tmp_path / "out" / f"rank{r}.txt")
            .exists() else ["-", f"no report (rc {done.returncode}): {done.stderr[-1500:]}"] for r in range(2)}
    for r, (seconds, ended) in ends.items():
        assert re.match(r"TrainingDiverged: \d+ step\(s\) had a non-finite loss or gradient", ended), (r, ended)
        assert float(seconds) < 25, (r, seconds)  # not the collective's timeout
    assert ends[0][1] == ends[1][1]  # the same step, the same words


class Windows:
    """A second kind of stream: windows of a token sequence (as a language model reads text), batch i of an epoch
    a function of (epoch, i)."""

    def __init__(self, n: int = 12, rows: int = 4, width: int = 6):
        self.n, self.rows, self.width = n, rows, width
        self.tokens = torch.randint(0, 20, (1000,), generator=torch.Generator().manual_seed(0))

    def set_epoch(self, epoch: int) -> int:
        self.epoch = epoch
        return self.n

    def batch(self, i: int):
        g = torch.Generator().manual_seed(self.epoch * 1000 + i)
        starts = torch.randint(0, len(self.tokens) - self.width - 1, (self.rows,), generator=g)
        window = torch.stack([self.tokens[s:s + self.width + 1] for s in starts.tolist()])

        class B:
            inputs, targets, rows, tokens = window[:, :-1], window[:, 1:], self.rows, self.rows * self.width
        return B

    def restore(self, state: LoopState) -> None: ...
    def record(self, state: LoopState) -> None: ...


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.out = nn.Linear(8, 20)

    def forward(self, inputs):
        return self.out(self.rnn(self.embed(inputs))[0])


def lm_loss(model, batch):
    """A next-token objective: a plain function is an objective."""
    logits = model(batch.inputs)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 20), batch.targets.reshape(-1))
    return loss, {"correct": (logits.argmax(-1) == batch.targets).float().mean(-1).sum().detach()}


def lm_engine(run_dir: Path, stop=None, checkpoint=None, **settings) -> Engine:
    torch.manual_seed(0)
    model = TinyLM()
    held_out = Windows(n=2)
    held_out.set_epoch(99)

    def validate(m):
        with torch.no_grad():
            loss = float(lm_loss(m, held_out.batch(0))[0])
        return {"valid_loss": loss, "valid_perplexity": float(torch.exp(torch.tensor(loss)))}, -loss

    options = {"epochs": 2, "lr": 0.01, "batch_size": 4, "grad_clip": 1.0, "checkpoint_minutes": 10.0, **settings}
    return Engine(model, Windows(), lm_loss, validate, EngineSettings(**options), run_dir, rank=Rank(),
                  device=torch.device("cpu"), seed=0, stop=stop, checkpoint=checkpoint,
                  extra_state=lambda: {"task": "lm"})


def test_a_second_kind_of_training_runs_checkpoints_and_resumes_bitwise_on_the_engine(tmp_path):
    whole = tmp_path / "whole"
    whole.mkdir()
    lm_engine(whole).run()
    rows = read_metrics(whole)
    assert [r["epoch"] for r in rows] == [1, 2] and "valid_perplexity" in rows[0]
    assert rows[1]["train_loss"] < rows[0]["train_loss"] and rows[0]["step"] == 12
    assert load_checkpoint(whole / LAST)["task"] == "lm" and (whole / BEST).exists()

    cut = tmp_path / "cut"
    cut.mkdir()
    with pytest.raises(TrainingInterrupted):
        lm_engine(cut, stop=StopAfter(15)).run()  # epoch 2, batch 4
    saved = load_checkpoint(cut / LAST)
    assert (saved["loop"]["epoch"], saved["loop"]["step_in_epoch"]) == (1, 4)
    lm_engine(cut, checkpoint=saved).run()
    a, b = load_checkpoint(whole / LAST)["model"], load_checkpoint(cut / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_budget_ends_the_epoch_early_and_saves(tmp_path, monkeypatch):
    from sentiment.training import engine as engine_mod

    clock = {"now": 1000.0}

    def tick():  # every read of the clock: 10 s later
        clock["now"] += 10.0
        return clock["now"]

    monkeypatch.setattr(engine_mod.time, "monotonic", tick)
    run_dir = tmp_path / "budget"
    run_dir.mkdir()
    lm_engine(run_dir, epochs=5, max_minutes=1.0).run()
    rows = read_metrics(run_dir)
    assert len(rows) == 1 and rows[0]["step"] == 6 and rows[0]["partial"]  # 60 s: 6 steps of 12, scored
    loop = load_checkpoint(run_dir / LAST)["loop"]
    assert (loop["epoch"], loop["step_in_epoch"]) == (0, 6)  # saved mid-epoch, as an interruption is
    assert (run_dir / BEST).exists()  # no whole epoch has one yet: the partial epoch's


def test_a_run_the_time_budget_stopped_resumes_bitwise_as_an_uninterrupted_run(tmp_path, monkeypatch):
    """The budget stops mid-epoch 2 (after one whole epoch); resumed, the run reads the rest of that epoch and ends
    as the run that was never stopped: the same weights and the same rows (the partial row replaced)."""
    from sentiment.training import engine as engine_mod

    whole = tmp_path / "whole"
    whole.mkdir()
    lm_engine(whole, epochs=3).run()
    clock = {"now": 1000.0}

    def tick():  # every read of the clock: 10 s later
        clock["now"] += 10.0
        return clock["now"]

    cut = tmp_path / "cut"
    cut.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(engine_mod.time, "monotonic", tick)
        lm_engine(cut, epochs=3, max_minutes=3.0).run()  # 180 s: epoch 2, step 5 (the end of epoch 1 reads the clock too)
    rows = read_metrics(cut)
    assert [(r["epoch"], r.get("partial", False)) for r in rows] == [(1, False), (2, True)]
    assert load_checkpoint(cut / BEST)["loop"]["epoch"] == 1  # a whole epoch's: the partial one wrote none
    saved = load_checkpoint(cut / LAST)
    assert (saved["loop"]["epoch"], saved["loop"]["step_in_epoch"]) == (1, 5)
    lm_engine(cut, epochs=3, checkpoint=saved).run()
    a, b = load_checkpoint(whole / LAST), load_checkpoint(cut / LAST)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["loop"]["global_step"] == b["loop"]["global_step"] == 36
    same = ("epoch", "step", "train_loss", "train_accuracy", "valid_loss", "best")
    assert ([{k: r[k] for k in same} for r in read_metrics(whole)] ==
            [{k: r[k] for k in same} for r in read_metrics(cut)])
    a_best, b_best = load_checkpoint(whole / BEST), load_checkpoint(cut / BEST)
    assert all(torch.equal(a_best["model"][k], b_best["model"][k]) for k in a_best["model"])
