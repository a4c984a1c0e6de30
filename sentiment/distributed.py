"""The rank seam: the one place that knows about torchrun's processes.

torchrun (or `sentiment train --nproc N`, which runs torch.distributed.run) starts one process per rank and
sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables. Everything else asks this module: is this
the main process (the only one that writes the run directory and prints), the main one on its machine (the
one that fills the data caches), and how to agree with the other ranks. Without torchrun there is one
rank and every call here is free.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch

from sentiment.errors import SentimentError
from sentiment.runlock import LAUNCHER_ENV, process_alive

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


def sparse_gradients_supported(rank: Rank) -> bool:
    """Whether the process group all-reduces sparse gradients: gloo does, NCCL does not (one rank: no need)."""
    if not rank.distributed:
        return True
    import torch.distributed as dist

    return dist.get_backend() == "gloo"


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
    collective until the timeout. Any exception counts, not only ours. Returns step's result (None where it
    did not run)."""
    result, error = None, None
    if only:
        try:
            result = step()
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
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


# ------------------------------------------------------------------ steps of unbounded length
# A collective waits at most TIMEOUT. Preparing a large dataset cold can take longer than any timeout, so
# ranks that wait for it do not wait in a collective: they poll keys in the process group's store, with no
# deadline while the rank they wait for shows it is alive (a heartbeat it bumps every HEARTBEAT seconds).
HEARTBEAT = 1.0
_calls = {"n": 0}  # once_per_machine calls so far: the same sequence on every rank, so keys match


def once_per_machine(rank: Rank, step: Callable[[], T], what: str = "preparing the data") -> T:
    """`step` on this machine's local rank 0 first (it fills the caches), then on the other ranks here (which
    read them): machines need not share a filesystem, and no two processes tokenize the same data. However
    long `step` takes; a rank that fails (any exception) or dies meanwhile brings every rank down."""
    if not rank.distributed:
        return step()
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()
    _calls["n"] += 1
    tag = f"sentiment/once/{_calls['n']}"
    local_main = rank.rank - rank.local_rank  # torchrun numbers a machine's ranks consecutively
    store.set(f"{tag}/pid/{rank.rank}", f"{socket.gethostname()}:{os.getpid()}")
    if not rank.is_local_main:
        _wait_for(store, tag, rank, [local_main], what)  # the caches are filled: now read them
    result, error = None, None
    with _Heartbeat(store, f"{tag}/beat/{rank.rank}"):
        try:
            result = step()
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
            error = e
    store.set(f"{tag}/done/{rank.rank}", "failed" if error is not None else "ok")
    if error is not None:
        raise error
    _wait_for(store, tag, rank, range(rank.world_size), what)
    return result  # type: ignore[return-value]


def _wait_for(store: Any, tag: str, rank: Rank, ranks: Any, what: str) -> None:
    """Until every rank in `ranks` has said it is done: raise if one failed, or stopped beating for TIMEOUT
    (it died, or hangs)."""
    try:
        _poll(store, tag, rank, ranks, what)
    except RuntimeError:  # the store's server went away with the process that hosted it
        raise SentimentError(f"stopped: lost contact with the other ranks in {what} (one of them died)") from None


def _poll(store: Any, tag: str, rank: Rank, ranks: Any, what: str) -> None:
    import time

    waiting = {r: (None, time.monotonic()) for r in ranks if r != rank.rank}
    here = socket.gethostname()
    while waiting:
        store.add(f"{tag}/beat/{rank.rank}", 1)  # a rank that waits is alive too
        for r in list(waiting):
            done = f"{tag}/done/{r}"
            if store.check([done]):
                if store.get(done) != b"ok":
                    raise SentimentError(f"stopped: rank {r} failed in {what} (its own error says why)")
                del waiting[r]
                continue
            beat = int(store.add(f"{tag}/beat/{r}", 0))  # add 0: read the counter without waiting for it
            host, _, pid = (store.get(f"{tag}/pid/{r}").decode() if store.check([f"{tag}/pid/{r}"]) else "").rpartition(":")
            if host == here and pid.isdigit() and not process_alive(int(pid)):
                raise SentimentError(f"stopped: rank {r} died in {what}")
            seen, since = waiting[r]
            if beat != seen:
                waiting[r] = (beat, time.monotonic())
            elif time.monotonic() - since > TIMEOUT.total_seconds():
                raise SentimentError(f"stopped: rank {r} stopped responding in {what} "
                                     f"({TIMEOUT.total_seconds():.0f} s without a sign of life)")
        if waiting:
            time.sleep(0.2)


class _Heartbeat:
    """Bumps a counter in the store every HEARTBEAT seconds while a long step runs on this rank."""

    def __init__(self, store: Any, key: str):
        import threading

        self.store, self.key = store, key
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sentiment-heartbeat")

    def _run(self) -> None:
        while not self.stopped.wait(HEARTBEAT):
            try:
                self.store.add(self.key, 1)
            except Exception:  # noqa: BLE001 - the store went away: the waiters see no beat and say so
                return

    def __enter__(self) -> "_Heartbeat":
        self.store.add(self.key, 1)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


# ------------------------------------------------------------------ the launcher's life is the ranks' life


def watch_launcher(interval: float = 0.5) -> None:
    """Under `sentiment train --nproc N`, end this rank within a second of the launcher's death (kill -9
    included: nothing else would stop a rank that trains on, unsupervised, to the end)."""
    import threading
    import time

    pid = os.environ.get(LAUNCHER_ENV, "")
    if not pid.isdigit() or "RANK" not in os.environ:
        return
    parent = os.getppid()  # torchrun, which dies with the launcher (its parent-death signal)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent or not process_alive(int(pid)):
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="sentiment-launcher-watchdog").start()
