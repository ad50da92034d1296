"""Data-parallel training across processes: what ``torchrun`` sets up, and how data is sharded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    """Who this process is: its global rank, its rank on this machine, and how many there are."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes checkpoints, files and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """This process's place: from the process group if there is one, else ``torchrun``'s env."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), local_rank, dist.get_world_size())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)


def init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes; True if this call created it.

    The backend is NCCL for CUDA devices and Gloo otherwise (CPU). Does nothing (returns
    False) in a single-process run or when a process group already exists.
    """
    info = dist_info()
    if not info.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes (a copy; unchanged when alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values.clone()
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` when alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class EpochSampler(Sampler[int]):
    """Indices of a map-style data set: seeded per epoch, sharded per process, resumable.

    The order of epoch ``e`` is ``torch.randperm(n)`` drawn from a generator seeded with
    ``seed + e`` (or ``0 .. n-1`` without ``shuffle``). With ``world_size > 1`` the order is
    padded by repeating its start to a multiple of ``world_size`` and process ``rank`` takes
    positions ``rank, rank + world_size, ...``, so every process gets the same number of
    samples. ``set_start(k)`` skips the first ``k`` indices of this process's share.
    """

    def __init__(
        self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if n < 0:
            raise ValueError(f"the data set size must be >= 0, got {n}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.start = start

    def shard_size(self) -> int:
        """Indices per process and epoch (before ``set_start``)."""
        return -(-self.n // self.world_size)  # ceil: the order is padded to a multiple

    def indices(self) -> list[int]:
        """This process's indices for the current epoch, from ``start`` on."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        padded = self.shard_size() * self.world_size
        if order and padded > len(order):
            order = (order * (padded // len(order) + 1))[:padded]
        return order[self.rank :: self.world_size][self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return max(self.shard_size() - self.start, 0)
