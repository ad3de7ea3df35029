"""Loaders for data sets held in memory as tensors (on the CPU or on the GPU).

``InMemoryBatchLoader`` indexes whole batches out of two tensors with a fresh permutation each
epoch: no per-sample ``__getitem__``, no collate, no worker processes. For a data set that fits
in RAM (Fashion-MNIST is 55 MB as uint8) this is many times faster than a DataLoader; see
``benchmarks/results/`` for the measured ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lightspeed.data.augment import BatchAugment


class EpochPermutation:
    """The index order of one epoch: seeded, reproducible, and sharded across DDP ranks.

    Like ``DistributedSampler``: every rank draws the same permutation (same seed and epoch),
    pads it to a multiple of ``world_size`` (or drops the tail), and takes every
    ``world_size``-th index starting at ``rank``. Lightning calls :meth:`set_epoch` before
    each training epoch (it looks for a ``sampler`` attribute with that method).
    """

    def __init__(
        self,
        n: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        self.num_samples = per_rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, device: torch.device | str = "cpu") -> Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        total = self.num_samples * self.world_size
        if total > self.n:  # pad by wrapping around, as DistributedSampler does
            order = torch.cat([order, order[: total - self.n]])
        order = order[:total][self.rank :: self.world_size]
        return order.to(device, non_blocking=True)

    def __len__(self) -> int:
        return self.num_samples


class InMemoryBatchLoader:
    """Yields ``(x, y)`` batches by indexing tensors held in memory.

    Args:
        x: inputs, already normalised, ``[N, C, H, W]`` (any device).
        y: integer labels ``[N]`` on the same device.
        batch_size: samples per batch (per rank under DDP).
        shuffle: draw a new permutation each epoch (train) or keep the order (eval).
        drop_last: drop the last incomplete batch.
        augment: batched augmentation applied to each training batch, or None.
        seed: base seed; epoch ``e`` uses ``seed + e`` for order and augmentation.
        rank, world_size: DDP shard of this process.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: BatchAugment | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.augment = augment if augment is not None and augment.active else None
        self.sampler = EpochPermutation(len(x), shuffle, seed, rank, world_size, drop_last)
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes
        self._batches_done = 0  # position inside the current epoch, for mid-epoch resume
        self._resume_at = 0
        self._resume_epoch: int | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.sampler.indices(self.x.device)
        generator = None
        if self.augment is not None:
            generator = torch.Generator(device=self.x.device)
            generator.manual_seed(self.sampler.seed + 7919 * (self.sampler.epoch + 1))
        # a saved position applies only to the epoch it was saved in, and only if that epoch
        # was not finished (a checkpoint from an epoch end continues with the next epoch)
        start = self._resume_at if self.sampler.epoch == self._resume_epoch else 0
        start = start if start < len(self) else 0
        self._resume_at, self._resume_epoch = 0, None
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = self.x.index_select(0, idx)
            if generator is not None:
                # draw augmentation for skipped batches too, so a resumed epoch is identical
                xb = self.augment(xb, generator)
            if i < start:
                continue
            self._batches_done = i + 1
            yield xb, self.y.index_select(0, idx)

    # Lightning saves and restores these for iterables that have them ("stateful" loaders),
    # which makes a mid-epoch resume continue at the next unseen batch.
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self._resume_at = state["batches_done"]
        self._resume_epoch = state["epoch"]
