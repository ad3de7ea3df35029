"""Loaders for data sets held in memory as tensors (on the CPU or on the GPU).

``InMemoryBatchLoader`` indexes whole batches out of two tensors with a fresh permutation each
epoch: no per-sample ``__getitem__``, no collate, no worker processes. For a data set that fits
in RAM (Fashion-MNIST is 55 MB as uint8) this is many times faster than a DataLoader; see
``benchmarks/results/`` for the measured ratio.

Under DDP the batch size is the *global* batch: every rank draws the same epoch order (same
seed and epoch), cuts it into the same global batches, and takes every ``world_size``-th sample
of each, starting at its rank. So each optimizer step sees exactly the samples a single process
would see with the same batch size, and each sample is used once per epoch across the ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightspeed.data.augment import BatchAugment

# Offsets that keep the per-epoch and per-rank augmentation streams apart.
EPOCH_STRIDE, RANK_STRIDE = 7919, 104729


@dataclass(eq=False)
class EpochPermutation:
    """The sample order of one epoch, the same on every rank (seeded by ``seed + epoch``).

    Lightning calls :meth:`set_epoch` before each training epoch (it looks for a ``sampler``
    attribute with that method), as it does for a ``DistributedSampler``.
    """

    n: int
    shuffle: bool
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, device: torch.device | str = "cpu") -> Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return order.to(device, non_blocking=True)

    def __len__(self) -> int:
        return self.n


class InMemoryBatchLoader:
    """Yields ``(x, y)`` batches by indexing tensors held in memory.

    Args:
        x: inputs, already normalised, ``[N, C, H, W]`` (any device).
        y: integer labels ``[N]`` on the same device.
        batch_size: samples per step across all ranks (the global batch); each rank gets
            ``batch_size / world_size`` of them.
        shuffle: draw a new permutation each epoch (train) or keep the order (eval).
        drop_last: drop the last incomplete global batch.
        augment: batched augmentation applied to each training batch, or None. Each rank
            draws its own flips/crops (seeded by seed, epoch and rank).
        transform: applied to each batch of ``x`` first, e.g. :class:`~lightspeed.data.batches.
            ScalePixels` where ``x`` holds uint8 pixels (a quarter of a float copy's memory).
        seed: base seed; epoch ``e`` uses ``seed + e`` for the order.
        rank, world_size: DDP position of this process.
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
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.x, self.y, self.transform = x, y, transform
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.augment = augment if augment is not None and augment.active else None
        self.sampler = EpochPermutation(len(x), shuffle, seed)
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes
        self._batches_done = 0  # position inside the current epoch, for mid-epoch resume
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) of a loaded state

    def __len__(self) -> int:
        """Batches per epoch: the same on every rank (the number of global batches)."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.sampler.indices(self.x.device)
        generator = None
        if self.augment is not None:
            epoch = self.sampler.epoch + 1
            seed = self.sampler.seed + EPOCH_STRIDE * epoch + RANK_STRIDE * self.rank
            generator = torch.Generator(device=self.x.device).manual_seed(seed)
        # a saved position applies only to the epoch it was saved in, and only if that epoch
        # was not finished (a checkpoint from an epoch end continues with the next epoch)
        saved_epoch, start = self._resume or (None, 0)
        start = start if saved_epoch == self.sampler.epoch and start < len(self) else 0
        self._resume = None
        world = self.world_size
        for i in range(len(self)):
            batch = order[i * self.batch_size : (i + 1) * self.batch_size]
            # A last batch with fewer samples than ranks would leave some ranks nothing; in
            # training (shuffled), where every rank must take the step, those take the first
            # samples of the epoch's order again.
            if self.sampler.shuffle and len(batch) < world:
                batch = torch.cat([batch, order[: world - len(batch)]])
            idx = batch[self.rank :: world]  # this rank's share: every world-th sample
            if len(idx) == 0:  # an evaluation tail smaller than the number of ranks
                continue
            xb = self.x.index_select(0, idx)
            if self.transform is not None:
                xb = self.transform(xb)
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
        self._resume = state["epoch"], state["batches_done"]
