"""Under torchrun, for tests/test_engine.py: train with lazy host syncs while rank 1's gradient turns NaN from its
step 2 on; each rank writes what it ended with (the error's class and message, or "ok") to OUT/rank<R>.txt.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/engine_ddp_helper.py OUT KEY=VALUE...
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from sentiment import distributed
from sentiment.config import load_config
from sentiment.data.prepare import prepare_data
from sentiment.device import resolve_device
from sentiment.training import train as train_mod


class NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class Quiet:
    """A reporter (rank 0 has one, as under the command line), saying nothing."""

    def epoch_start(self, *args) -> None: ...
    def step(self, *args) -> None: ...
    def epoch_end(self, row) -> None: ...
    def note(self, message) -> None: ...


def main(out: Path, settings: list[str]) -> None:
    cfg = load_config(None, settings)
    rank = distributed.from_env()
    device = distributed.rank_device(rank, resolve_device(cfg.run.device))
    distributed.init(rank, device)
    real = train_mod.supervised_objective
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        objective = real(*args, **kwargs)

        def wrapped(*args):  # (model, batch), as the engine calls an objective
            calls["n"] += 1
            loss, stats = objective(*args)
            return (NaNGradient.apply(loss) if rank.rank == 1 and calls["n"] >= 2 else loss), stats

        return wrapped

    train_mod.supervised_objective = poisoned
    started = time.monotonic()
    try:
        data = distributed.once_per_machine(rank, lambda: prepare_data(cfg.data, embedding_seed=cfg.run.seed))
        distributed.together(rank, lambda: (out / "run").mkdir(parents=True), only=rank.is_main, what="mkdir")
        train_mod.train(cfg, out / "run", data=data, rank=rank, reporter=Quiet() if rank.is_main else None)
        ended = "ok"
    except Exception as e:  # what each rank ended with is the point
        ended = f"{type(e).__name__}: {e}"
    (out / f"rank{rank.rank}.txt").write_text(f"{time.monotonic() - started:.1f}\n{ended}\n")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
