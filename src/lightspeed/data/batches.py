"""Data sets read a whole batch at a time, and the collate function of the DataLoader path.

A DataLoader normally calls ``dataset[i]`` once per sample and stacks the results. A
:class:`BatchDataset` instead answers ``__getitems__(indices)`` with the finished batch (one
``index_select`` or one HDF5 read), and :class:`BatchCollate` passes it through. Either way the
training batch is then augmented as a whole, inside the worker that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightspeed.data.augment import BatchAugment


class BatchDataset(Dataset):
    """A data set whose ``__getitems__(indices)`` returns a whole ``(images, labels)`` batch."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


class TensorBatchDataset(BatchDataset):
    """Tensors behind a DataLoader (``num_workers > 0`` on in-memory data): the sampler and the
    workers stay in charge, but each worker indexes a whole batch at once."""

    def __init__(
        self, x: Tensor, y: Tensor, transform: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, device=self.x.device)
        xb = self.x.index_select(0, idx)
        return xb if self.transform is None else self.transform(xb), self.y.index_select(0, idx)


class ScalePixels:
    """uint8 pixels → float32 ``(x / 255 - mean) / std``, one batch at a time.

    Data held as uint8 takes a quarter of the memory of a normalised float copy; turning a
    batch of 256 Fashion-MNIST images into floats takes well under a millisecond. The same
    operations in the same order as a whole-set normalisation, so the values are identical.

    Args:
        mean, std: of the training pixels scaled to [0, 1]: one number, or one per channel.
    """

    def __init__(self, mean: float | list[float], std: float | list[float]) -> None:
        def per_channel(v: float | list[float]) -> float | Tensor:
            return float(v) if isinstance(v, int | float) else torch.tensor(v).view(-1, 1, 1)

        self.mean, self.std = per_channel(mean), per_channel(std)

    def __call__(self, x: Tensor) -> Tensor:
        mean, std = self.mean, self.std
        if isinstance(mean, Tensor):
            mean, std = mean.to(x.device), std.to(x.device)
        return x.float().div_(255).sub_(mean).div_(std)


class BatchCollate:
    """``collate_fn``: builds the batch with ``collate``, then applies ``augment`` (if any).

    Args:
        collate: a function that stacks a list of samples (``default_collate`` or the
            DataModule's own), or None for a :class:`BatchDataset`, whose ``__getitems__``
            already made the batch.
        augment: batched augmentation of training batches, or None.
    """

    def __init__(
        self, collate: Callable[[Any], Any] | None, augment: BatchAugment | None = None
    ) -> None:
        self.collate = collate
        self.augment = augment if augment is not None and augment.active else None

    def __call__(self, batch: Any) -> tuple[Tensor, Tensor]:
        x, y = batch if self.collate is None else self.collate(batch)
        if self.augment is not None:
            x = self.augment(x)
        return x, y
