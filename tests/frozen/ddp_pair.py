"""Under torchrun: train the frozen loop (tests/frozen/train_81a9968.py) and the live one in the same processes, on
the same config, each into its own run directory, for tests/test_engine_pins.py to compare bitwise.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/frozen/ddp_pair.py OUT KEY=VALUE...
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import torch.distributed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the frozen package

from frozen import train_81a9968 as frozen  # noqa: E402
from sentiment import distributed  # noqa: E402
from sentiment.config import load_config  # noqa: E402
from sentiment.data.prepare import prepare_data  # noqa: E402
from sentiment.device import resolve_device  # noqa: E402
from sentiment.training import train as live  # noqa: E402


def main(out: Path, settings: list[str]) -> None:
    cfg = load_config(None, settings)
    rank = distributed.from_env()
    device = distributed.rank_device(rank, resolve_device(cfg.run.device))
    distributed.init(rank, device)
    try:
        data = distributed.once_per_machine(rank, lambda: prepare_data(cfg.data, embedding_seed=cfg.run.seed))
        for name, loop in (("frozen", frozen), ("live", live)):
            run_dir = out / name
            distributed.together(rank, lambda: run_dir.mkdir(parents=True), only=rank.is_main, what="mkdir")
            loop.train(cfg, run_dir, data=data, rank=rank)
            # the finished loop's DDP model (its reducer, gloo work) is freed here, on every rank at once, not by a
            # garbage collection in the middle of the next loop's collectives (which aborted a rank now and then)
            gc.collect()
            torch.distributed.barrier()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
