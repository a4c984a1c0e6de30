"""The rank seam: the one place that knows about torchrun's processes.

torchrun (or `sentiment train --nproc N`, which runs torch.distributed.run) starts one process per rank and
sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables. Everything else asks this module: is this
the main process (the only one that writes the run directory and prints), the main one on its machine (the
one that fills the data caches), and how to agree with the other ranks. Without torchrun there is one
rank and every call here is free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch

from sentiment.errors import SentimentError

# No collective waits longer than this for a rank that died or hangs (torch's default is 10-30 minutes).
TIMEOUT = timedelta(seconds=float(os.environ.get("SENTIMENT_DIST_TIMEOUT", 120)))
T = TypeVar("T")
_collective_device = torch.device("cpu")  # nccl reduces CUDA tensors only: set by init()


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes the run directory, checkpoints and metrics, and prints."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The process that fills this machine's data caches while the others on it wait."""
        return self.local_rank == 0


def from_env() -> Rank:
    """This process's rank, from torchrun's environment (one rank without it)."""
    try:
        rank = Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise SentimentError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if not 0 <= rank.rank < rank.world_size:
        raise SentimentError(f"RANK={rank.rank} is outside WORLD_SIZE={rank.world_size}")
    return rank


def init(rank: Rank, device: torch.device) -> None:
    """Join the process group: nccl between GPUs, gloo on CPU. A no-op for one rank."""
    import torch.distributed as dist

    if not rank.distributed or dist.is_initialized():
        return
    global _collective_device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
        _collective_device = device
    try:
        dist.init_process_group(backend=backend, timeout=TIMEOUT, rank=rank.rank, world_size=rank.world_size,
                                **({"device_id": device} if backend == "nccl" else {}))
    except (RuntimeError, ValueError) as e:
        raise SentimentError(f"rank {rank.rank} could not join the process group ({backend}): "
                             f"{str(e).strip().splitlines()[0][:200]}") from None


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(rank: Rank, values: torch.Tensor) -> torch.Tensor:
    """The sum of `values` over ranks (a new tensor on values' device)."""
    if not rank.distributed:
        return values
    import torch.distributed as dist

    reduced = values.to(_collective_device, copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(values.device)


def any_rank(rank: Rank, flag: bool) -> bool:
    """True on every rank when it is true on one (a stop request, say): ranks must leave a loop together."""
    if not rank.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    return bool(all_reduce_sum(rank, t).item() > 0)


def broadcast(rank: Rank, obj: Any) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if not rank.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_device(rank: Rank, device: torch.device) -> torch.device:
    """One GPU per process: rank k on a machine uses cuda:LOCAL_RANK (NCCL refuses two ranks on one GPU)."""
    if rank.distributed and device.type == "cuda":
        if rank.local_rank >= torch.cuda.device_count():
            raise SentimentError(f"LOCAL_RANK={rank.local_rank} but this machine has {torch.cuda.device_count()} "
                                 "GPUs: start at most one process per GPU (--nproc-per-node)")
        return torch.device("cuda", rank.local_rank)
    return device


def broadcast_weights(rank: Rank, model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers into every rank's copy of the model."""
    if not rank.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            moved = tensor.data.to(_collective_device)
            dist.broadcast(moved, src=0)
            tensor.data.copy_(moved)


def together(rank: Rank, step: Callable[[], T], *, only: bool = True, what: str = "a step") -> T | None:
    """Run `step` on the ranks where `only` is true, then agree: if it failed on any rank, every rank raises
    (the failing one its own error, the others a line that points at it), instead of waiting at the next
    collective until the timeout. Returns step's result (None where it did not run)."""
    result, error = None, None
    if only:
        try:
            result = step()
        except SentimentError as e:
            error = e
    if not rank.distributed:
        if error is not None:
            raise error
        return result
    failed = all_reduce_sum(rank, torch.tensor([float(error is not None) * (rank.rank + 1)]))
    if error is not None:
        raise error
    if failed.item() > 0:
        raise SentimentError(f"stopped: another rank failed in {what} (its own error says why)")
    return result


def once_per_machine(rank: Rank, step: Callable[[], T], what: str = "preparing the data") -> T:
    """`step` on this machine's local rank 0 first (it fills the caches), then on the other ranks here (which
    read them): machines need not share a filesystem, and no two processes tokenize the same data."""
    result = together(rank, step, only=rank.is_local_main, what=what)
    later = together(rank, step, only=not rank.is_local_main, what=what)
    return result if rank.is_local_main else later  # type: ignore[return-value]
