"""LightningDataModule for IDX image sets (Fashion-MNIST by default, MNIST by config).

The whole set is read once, normalised once and held as tensors; training batches come from
:class:`InMemoryBatchLoader` (on the CPU, or on the GPU with ``device=cuda``), or from a
``DataLoader`` with workers when ``num_workers > 0`` is asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightspeed.data.augment import BatchAugment
from lightspeed.data.base import SplitDataModule
from lightspeed.data.idx import read_idx_pair
from lightspeed.data.loading import resolve_loader_settings
from lightspeed.data.memory import InMemoryBatchLoader
from lightspeed.data.sources import SOURCES, locate
from lightspeed.errors import ConfigError

log = logging.getLogger(__name__)


def pass_through(batch):
    """collate_fn for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch


class TensorBatchDataset(Dataset):
    """Tensors behind a DataLoader, fetched a batch at a time through ``__getitems__``.

    Used when workers are asked for: the DataLoader's sampler and workers stay in charge, but
    each worker indexes a whole batch at once instead of one sample per call.
    """

    def __init__(self, x: Tensor, y: Tensor, augment: BatchAugment | None = None) -> None:
        self.x, self.y, self.augment = x, y, augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        xb = self.x.index_select(0, idx)
        if self.augment is not None:
            xb = self.augment(xb)
        return xb, self.y.index_select(0, idx)


class IdxDataModule(SplitDataModule):
    """Fashion-MNIST or MNIST, held in memory.

    Args:
        dataset: ``fashion_mnist`` or ``mnist``.
        data_dir: folder searched first (then the system copy, then a download into it).
        download: allow the torchvision download as a last resort.
        val_size: training images held out for validation (fixed ``split_seed``).
        batch_size: training batch size per device.
        eval_batch_size: batch size for validation/test/predict (no gradients: can be larger).
        num_workers, pin_memory, persistent_workers, prefetch_factor: DataLoader knobs or
            ``auto`` (see :mod:`lightspeed.data.loading`). ``num_workers > 0`` switches from the
            in-memory batch loader to a DataLoader with that many worker processes.
        drop_last: drop the last incomplete training batch.
        flip, crop_padding: batched training augmentation.
        device: where the tensors live: ``cpu``, or ``cuda`` for a GPU-resident data set.
        seed: base seed of the per-epoch shuffling and augmentation.
        split_seed: seed of the train/val split (kept apart from ``seed`` so the split is
            the same whatever the run seed).
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        data_dir: str = "data",
        download: bool = True,
        val_size: int = 5000,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool | str = "auto",
        prefetch_factor: int | str | None = "auto",
        drop_last: bool = False,
        flip: bool = False,
        crop_padding: int = 0,
        device: str = "cpu",
        seed: int = 0,
        split_seed: int = 12345,
    ) -> None:
        super().__init__()
        if dataset not in SOURCES:
            raise ConfigError(
                f"data.dataset={dataset} is not known; choose one of {sorted(SOURCES)}"
            )
        self.source = SOURCES[dataset]
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.drop_last, self.device, self.seed, self.split_seed = (
            drop_last,
            device,
            seed,
            split_seed,
        )
        self.augment = BatchAugment(flip=flip, crop_padding=crop_padding)
        in_memory = num_workers in ("auto", 0)
        self.loader = resolve_loader_settings(
            num_workers,
            pin_memory,
            persistent_workers,
            prefetch_factor,
            # pinning helps only host→GPU copies of batches that live on the host
            in_memory=in_memory,
            cuda=torch.cuda.is_available() and not device.startswith("cuda"),
        )
        if device.startswith("cuda") and self.loader.num_workers > 0:
            raise ConfigError(
                f"data.device={device} keeps the data on the GPU, where worker processes cannot "
                f"index it; set data.num_workers=0 (or auto), not {self.loader.num_workers}"
            )
        self.num_classes = self.source.num_classes
        self.mean = self.std = None
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def uses_memory_loader(self) -> bool:
        return self.loader.num_workers == 0

    def prepare_data(self) -> None:
        locate(self.source, self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        files = locate(self.source, self.data_dir, self.download)
        x, y = read_idx_pair(*files["train"])
        xt, yt = read_idx_pair(*files["test"])
        if not 0 <= self.val_size < len(x):
            raise ConfigError(f"data.val_size={self.val_size} must be in [0, {len(x)})")
        x = torch.from_numpy(x).unsqueeze(1)
        xt = torch.from_numpy(xt).unsqueeze(1)
        y = torch.from_numpy(y).long()
        yt = torch.from_numpy(yt).long()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        # Normalise once with statistics of the training part only (no peeking at val/test).
        train_u8 = x[train_idx]
        xf = train_u8.float().div_(255)
        self.mean, self.std = xf.mean().item(), xf.std().item()

        def norm(u8: Tensor) -> Tensor:
            return u8.float().div_(255).sub_(self.mean).div_(self.std).to(self.device)

        self._splits = {
            "train": (norm(train_u8), y[train_idx].to(self.device)),
            "val": (norm(x[val_idx]), y[val_idx].to(self.device)),
            "test": (norm(xt), yt.to(self.device)),
        }
        log.info(
            "%s: %d train / %d val / %d test images on %s (mean %.4f, std %.4f)",
            self.source.name,
            len(train_idx),
            len(val_idx),
            len(xt),
            self.device,
            self.mean,
            self.std,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, train: bool):
        x, y = self._splits[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        rank, world = self._rank() if train else (0, 1)
        augment = self.augment if train else None
        if self.uses_memory_loader:
            return InMemoryBatchLoader(
                x,
                y,
                batch_size,
                shuffle=train,
                drop_last=self.drop_last and train,
                augment=augment,
                seed=self.seed,
                rank=rank,
                world_size=world,
            )
        return DataLoader(
            TensorBatchDataset(x, y, augment if augment and augment.active else None),
            batch_size=batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            collate_fn=pass_through,
            **self.loader.as_kwargs(),
        )
