"""Several processes, one job: torch.distributed as ``torchrun`` (or ``--nproc N``) starts it.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each process; :func:`join` opens the
process group from them (``gloo`` on CPU, ``nccl`` on CUDA, each rank on its own GPU). Everything
else here is a thin, named use of torch.distributed that the loop, extraction and prediction share:
which rank this is, shards of a data set, gathering rows back, averaging gradients. Without a
launcher every function is the single-process identity, so no caller needs a second code path.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import ConfigError

__all__ = ["World", "current", "launched", "join", "barrier", "gather", "broadcast", "average_gradients",
           "shard_positions", "gather_rows", "ShardSampler", "micro_batch"]


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"The environment variable {name} must be an integer (torchrun sets it). "
                          f"Got {os.environ[name]!r}.") from None


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def current() -> World:
    """This process's rank and the job's size: from the process group once joined, else from the launcher's
    environment (so output can be silenced on other ranks before any work), else a job of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    if launched():
        return World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    return World()


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def join(device: torch.device) -> torch.device:
    """Open the job's process group once (no-op without a launcher) and return this rank's device:
    ``cuda:LOCAL_RANK`` on CUDA (``nccl``), the CPU as given (``gloo``)."""
    if not launched():
        return device
    local = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"Process {local} on this node has no GPU of its own: torch sees "
                              f"{torch.cuda.device_count()}. Start at most that many processes per node.")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
        atexit.register(_leave)
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a job of one)."""
    if _joined():
        dist.barrier()


def gather(value: object) -> list[object]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a job of one)."""
    if not _joined():
        return [value]
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not _joined():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients of weights that DistributedDataParallel does not hold (a callback's
    domain classifier), in one flat all-reduce."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or not _joined():
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def shard_positions(n: int, world: World | None = None) -> list[int]:
    """This rank's positions of ``n`` samples: every ``size``-th from ``rank``, so shards differ by one at most."""
    world = world or current()
    return list(range(world.rank, n, world.size))


def gather_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """Reassemble per-rank rows of :func:`shard_positions` into all ``n`` rows, in order, on every rank."""
    if not _joined():
        return rows
    parts = gather(rows)
    shaped = max(parts, key=len)  # a rank with no samples (n < ranks) sends an empty array of any shape
    out = np.empty((n, *shaped.shape[1:]), dtype=shaped.dtype)
    for rank, part in enumerate(parts):
        if len(part):
            out[rank::len(parts)] = part
    return out


class ShardSampler(Sampler[int]):
    """This rank's :func:`shard_positions`, in order, without padding: evaluation sees each sample once."""

    def __init__(self, n: int, world: World) -> None:
        self.positions = shard_positions(n, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def micro_batch(batch_size: int, accumulate: int, processes: int) -> int:
    """Samples per forward pass on each rank when a global batch of ``batch_size`` is split over
    ``processes`` and ``accumulate`` steps: the split must be exact, so that the run is the same
    however many processes train it."""
    parts = accumulate * processes
    if batch_size % parts:
        lower, upper = batch_size // parts * parts, (batch_size // parts + 1) * parts
        raise ConfigError(f"--train-batch {batch_size} cannot be split evenly over {processes} process(es) x "
                          f"--accumulate {accumulate}: use a multiple of {parts}, such as "
                          f"{lower or upper} or {upper}.")
    return batch_size // parts
