"""Multi-process training through ``torchrun``: the process group, the data shard, the device.

No launcher of our own: ``torchrun --nproc_per_node=N -m energy_transformer.cli train ...`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed` picks it up (gloo on CPU, nccl
on GPU). A single process needs none of it.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU of this process (``LOCAL_RANK``) when CUDA is there, else the CPU.

    Anything else must name a device this machine has: a ValueError says what is wrong."""
    if str(device) != "auto":
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or auto"
            ) from err
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine")
        if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA device(s)")
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_world_size() -> int:
    """How many processes ``torchrun`` started (``WORLD_SIZE``), known before the process group
    is joined; 1 outside ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); it is left
    when the process exits."""
    if launched_world_size() <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    # Left before the interpreter tears its threads down: a group still open at exit can abort
    # a finished process ("terminate called without an active exception").
    atexit.register(_leave_process_group)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return True


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(Sampler[int]):
    """A permutation fixed by ``(seed, epoch)``, sharded across processes, resumable mid-epoch.

    Rank ``r`` of ``W`` takes positions ``r, r + W, ...`` of the epoch's permutation, so the
    ``s``-th local batches of all ranks together are exactly the ``s``-th global batch of a single
    process with the same seed: DDP on ``W`` processes with per-process batch ``B / W`` sees the
    same data per step as one process with batch ``B``. :meth:`skip` starts the epoch later, which
    is what makes a mid-epoch resume exact. The dataset length is padded (by wrapping) to a
    multiple of ``W``.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch = 0
        self.start = 0  # samples per rank already consumed this epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def skip(self, samples_per_rank: int) -> None:
        self.start = samples_per_rank

    @property
    def world_size(self) -> int:
        return world()[1]

    def _indices(self) -> list[int]:
        rank, world_size = world()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = math.ceil(self.n / world_size) * world_size
        order += order[: total - self.n]
        return order[rank::world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size) - self.start


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    collate_fn=None,
    drop_last: bool = False,
    num_workers: int = 0,
    device: str | torch.device = "auto",
) -> DataLoader:
    """A loader whose order the trainer can resume exactly and shard across processes.

    ``batch_size`` is the global batch: each of ``W`` processes gets ``batch_size / W``. Under
    ``torchrun`` this joins the process group, so call it before building the trainer or after.
    """
    init_distributed(resolve_device(device))
    _, world_size = world()
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size // world_size,
        sampler=sampler,
        collate_fn=collate_fn,
        drop_last=drop_last,
        num_workers=num_workers,
    )
