"""The base of every DataModule here: loader knobs, their ``auto`` values, and the loaders.

A subclass of :class:`ImageDataModule` writes its settings and data shape in ``__init__`` (then
``super().__init__(**kwargs)``) and ``load_splits()``, which hands each split to
:meth:`~ImageDataModule.set_split` as ``(images, labels)`` tensors (batched in-process) or as a
``Dataset`` (read by DataLoader workers). The base does the train/val carve, batched
augmentation and the choice of :class:`~lightspeed.data.memory.InMemoryBatchLoader` or a
``DataLoader``. Recipe: docs/own_data.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data._utils.collate import default_collate

from lightspeed.constraints import NonNegativeInt, PositiveInt, UnitInterval
from lightspeed.data import loading
from lightspeed.data.augment import BatchAugment
from lightspeed.data.batches import BatchCollate, BatchDataset, ScalePixels, TensorBatchDataset
from lightspeed.data.loading import LoaderSettings, check_loader_settings, resolve_loader_settings
from lightspeed.data.memory import InMemoryBatchLoader
from lightspeed.data.splits import SPLITS, check_tensors, fold_rows
from lightspeed.data.stats import describe_source
from lightspeed.errors import ConfigError

log = logging.getLogger(__name__)


class ImageDataModule(L.LightningDataModule):
    """Loader knobs and loaders shared by every image classification DataModule here.

    Args:
        batch_size: training samples per optimizer step across all devices (the global
            batch); each of the ``devices × num_nodes`` processes takes ``batch_size /
            (devices × num_nodes)`` of them, so a run's results do not depend on how many
            devices it uses. Gradient accumulation multiplies it: see :meth:`plan_batches`.
        eval_batch_size: batch size of validation, test and predict across all devices. On a
            CPU 256 evaluates the small CNN faster than 1024 (0.70 s vs 1.58 s for 10,000
            images, 2 EPYC cores) and holds a quarter of the activations; a GPU wants more.
        num_workers: DataLoader worker processes, or ``auto``: 0 for data held in memory, about
            half the usable cores for data read from files. ``> 0`` on in-memory data switches
            from the in-memory batch loader to a DataLoader over the same tensors.
        pin_memory: page-locked batches for faster host→GPU copies, or ``auto``: only when a
            CUDA device trains from a DataLoader.
        persistent_workers: keep the workers between epochs, or ``auto``: whenever there are
            workers.
        prefetch_factor: batches each worker loads ahead, or ``auto``: 2 with workers.
        drop_last: drop the last incomplete training batch.
        shuffle: a new training order each epoch; false keeps one order (``debug=overfit``
            then sees the same batches every epoch).
        val_size: training images held out for validation (when the data has no validation
            split of its own): a count, or a fraction < 1 of the training images.
        flip: random left-right flips of training batches.
        crop_padding: random crops of training batches after this many pixels of reflect
            padding; 0 turns cropping off.
        seed: base seed of the in-memory loader's per-epoch order and augmentation.
        split_seed: seed of the train/val split, kept apart from ``seed`` so that the split is
            the same whatever the run seed.

    Attributes:
        num_classes, in_channels, image_size, class_names: the data shape (set by the
            subclass; see :class:`lightspeed.contracts.DataModuleContract`).
        source_info: where the data came from, set by :meth:`setup`: ``path``, ``files``,
            ``sha256`` and what the checksum ``covers``.
        in_memory: class attribute; True when ``load_splits`` hands over tensors, which makes
            ``num_workers=auto`` mean 0.
    """

    in_memory: bool = False

    def __init__(
        self,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt = 256,
        num_workers: NonNegativeInt | Literal["auto"] = "auto",
        pin_memory: bool | Literal["auto"] = "auto",
        persistent_workers: bool | Literal["auto"] = "auto",
        prefetch_factor: PositiveInt | Literal["auto"] = "auto",
        drop_last: bool = False,
        shuffle: bool = True,
        val_size: NonNegativeInt | UnitInterval = 0.1,
        flip: bool = False,
        crop_padding: NonNegativeInt = 0,
        seed: int = 0,
        split_seed: int = 12345,
    ) -> None:
        super().__init__()
        self._knobs = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers,
            "prefetch_factor": prefetch_factor,
        }
        check_loader_settings(**self._knobs)
        if val_size < 0 or (isinstance(val_size, float) and val_size >= 1):
            raise ConfigError(f"data.val_size={val_size} must be a count >= 0 or a fraction < 1")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.drop_last, self.shuffle, self.val_size = drop_last, shuffle, val_size
        self.augment = BatchAugment(flip=flip, crop_padding=crop_padding)
        self.seed, self.split_seed = seed, split_seed
        self.data_device = "cpu"  # where tensor splits live; a GPU-resident subclass sets cuda
        self.num_classes: int = 0
        self.in_channels: int = 0
        self.image_size: list[int] = []
        self.class_names: list[str] = []
        self.source_info: dict[str, Any] | None = None
        self._splits: dict[str, tuple[Tensor, Tensor] | Dataset] = {}
        self._fold: tuple[int, int, int] | None = None  # (fold, folds, seed) of a CV fit

    # --- what a subclass writes -------------------------------------------------------------

    def load_splits(self) -> None:
        """Reads the data and calls :meth:`set_split` for train, val and test (once per run)."""
        raise NotImplementedError(f"{type(self).__name__} must define load_splits()")

    def set_split(self, name: str, data: tuple[Tensor, Tensor] | Dataset) -> None:
        """Hands over split ``name`` (train, val or test).

        Args:
            name: ``train``, ``val`` or ``test`` (predict reads test).
            data: ``(images [N, C, H, W], labels [N] int64)`` held in memory, or a
                ``Dataset`` of ``(image, label)`` samples (or a :class:`BatchDataset`). Images
                are float32 ready for the net, or uint8 pixels, which every batch turns into
                float32 ``(x / 255 - mean) / std`` with the module's ``mean`` and ``std``
                attributes (one uint8 copy in memory instead of a four times larger float one).
        """
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is not one of {SPLITS}")
        if isinstance(data, tuple):
            check_tensors(name, *data, self)
        self._splits[name] = data

    def record_source(
        self, path: str | Path, files: Sequence[Path], by_listing: bool = False, **extra: Any
    ) -> None:
        """Sets :attr:`source_info` and logs it in one line; the arguments are those of
        :func:`lightspeed.data.stats.describe_source`."""
        self.source_info, line = describe_source(path, files, by_listing, **extra)
        log.info(line)

    # --- helpers for load_splits -------------------------------------------------------------

    def val_count(self, n: int, where: str = "the training set") -> int:
        """How many of ``n`` training images ``val_size`` holds out; refuses leaving none."""
        n_val = round(n * self.val_size) if isinstance(self.val_size, float) else self.val_size
        if not 0 <= n_val < n:
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training images of the {n} in {where}; "
                f"use a count below {n} or a fraction < 1"
            )
        return n_val

    def split_rows(
        self, n: int, where: str = "the training set", labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(train_rows, val_rows)`` of ``n`` rows, drawn with ``split_seed``: the same ``n``,
        ``val_size`` and ``split_seed`` give the same rows in every module. In a
        cross-validation fit (:meth:`cross_validation_fold`) the val rows are the fold's
        instead, stratified by ``labels`` (the ``n`` rows' classes) when given."""
        if self._fold is not None:
            return fold_rows(n, *self._fold, labels=labels)
        n_val = self.val_count(n, where)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        return perm[n_val:], perm[:n_val]

    # --- what the trainer and scripts use ----------------------------------------------------

    def cross_validation_fold(self, fold: int, folds: int, seed: int) -> None:
        """Validate on fold ``fold`` of ``folds`` of the training set and train on the rest
        (``val_size`` is not used); called by the engine before :meth:`setup`. Subclasses that
        carve val with :meth:`split_rows` get this for free."""
        if self._splits:
            raise RuntimeError("cross_validation_fold() must be called before setup()")
        self._fold = (fold, folds, seed)

    def setup(self, stage: str | None = None) -> None:
        """Loads the splits once (later stages reuse them)."""
        if self._splits:
            return
        self.augment.check(self.image_size)
        loading.check_batch_memory(
            self.batch_size, self.eval_batch_size, self.in_channels, self.image_size
        )
        self.load_splits()
        missing = [s for s in SPLITS if s not in self._splits]
        if missing:
            raise NotImplementedError(f"{type(self).__name__}.load_splits set no {missing} split")
        n_train = len(self.dataset("train"))
        if self.drop_last and n_train < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} with data.drop_last=true leaves no training "
                f"batch ({n_train} training images); use a batch size <= {n_train}"
            )
        sizes = " / ".join(f"{len(self.dataset(s))} {s}" for s in SPLITS)
        shape = "x".join(str(d) for d in (self.in_channels, *self.image_size))
        log.info(f"{type(self).__name__}: {sizes} images of {shape}, {self.num_classes} classes")

    def tensors(self, split: str, raw: bool = False) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of a split held in memory (after :meth:`setup`), as the loaders
        yield them: a float copy where uint8 pixels are held, unless ``raw``."""
        data = self._split(split)
        if not isinstance(data, tuple):
            raise TypeError(f"{type(self).__name__} reads {split} from files; use dataset()")
        scale = self._pixel_transform(data)
        return data if raw or scale is None else (scale(data[0]), data[1])

    def dataset(self, split: str) -> Dataset:
        """Split ``train``/``val``/``test`` as a ``Dataset`` (after :meth:`setup`)."""
        data = self._split(split)
        if isinstance(data, tuple):
            return TensorBatchDataset(*data, transform=self._pixel_transform(data))
        return data

    def eval_dataloader(self, split: str) -> Any:
        """An unshuffled loader over all of any split, in every process (``task=predict``
        reads one; under DDP, ``val_dataloader``/``test_dataloader`` give each rank its part)."""
        return self._loader(split, train=False, shard=False)

    def sample_ids(self, split: str) -> list[str]:
        """One id per sample of ``split``, in loader order: its file path, else its row."""
        data = self.dataset(split)
        rows = range(len(data))
        if isinstance(data, Subset):
            data, rows = data.dataset, data.indices
        samples = getattr(data, "samples", None)  # [(path, label), ...] of file-backed sets
        return [str(samples[r][0]) if samples is not None else str(r) for r in rows]

    def plan_batches(self, world_size: int = 1, accumulate: int = 1) -> str:
        """One line saying the per-device and effective (per optimizer step) batch; ConfigError
        when the global batch does not divide over ``world_size`` processes."""
        return loading.plan_batches(self.batch_size, world_size, accumulate)

    @functools.cached_property
    def loader(self) -> LoaderSettings:
        """The loader knobs with ``auto`` resolved for this machine (and the reasons)."""
        cuda = torch.cuda.is_available() and not self.data_device.startswith("cuda")
        return resolve_loader_settings(**self._knobs, in_memory=self.in_memory, cuda=cuda)

    @property
    def uses_memory_loader(self) -> bool:
        """True when training batches come from :class:`InMemoryBatchLoader`."""
        return self.in_memory and self.loader.num_workers == 0

    # Stacks a list of samples into a batch, for data sets that are not batch-at-a-time. A plain
    # function (not a method), so that a worker process is not sent the whole DataModule.
    collate_samples = staticmethod(default_collate)

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", train=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> Any:
        return self._loader("test", train=False)

    # --- internals ---------------------------------------------------------------------------

    def _split(self, split: str) -> tuple[Tensor, Tensor] | Dataset:
        if split not in self._splits:
            raise RuntimeError(f"no {split!r} split: call setup() first (splits: {SPLITS})")
        return self._splits[split]

    def _pixel_transform(self, data: tuple[Tensor, Tensor]) -> ScalePixels | None:
        if data[0].dtype != torch.uint8:
            return None
        mean, std = getattr(self, "mean", None), getattr(self, "std", None)
        if mean is None or std is None:
            raise RuntimeError(f"{type(self).__name__} holds uint8 images but sets no mean/std")
        return ScalePixels(mean, std)

    def _loader(self, split: str, train: bool, shard: bool = True) -> Any:
        data = self._split(split)
        trainer = self.trainer if shard else None
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batch_size = self.batch_size if train else self.eval_batch_size
        augment = self.augment if train else None
        memory_loader = isinstance(data, tuple) and self.uses_memory_loader
        # The global training batch must divide over the processes. A DataLoader's batch is per
        # device: under DDP, Lightning adds a DistributedSampler (whose padding may repeat up to
        # world_size - 1 evaluation samples).
        per_device = (
            loading.per_device_batch(batch_size, world) if train else -(-batch_size // world)
        )
        if memory_loader:
            return InMemoryBatchLoader(
                *data,
                batch_size,
                shuffle=train and self.shuffle,
                drop_last=self.drop_last and train,
                augment=augment,
                seed=self.seed,
                rank=rank,
                world_size=world,
                transform=self._pixel_transform(data),
            )
        dataset = self.dataset(split)
        collate = None if isinstance(dataset, BatchDataset) else self.collate_samples
        return DataLoader(
            dataset,
            batch_size=per_device,
            shuffle=train and self.shuffle,
            drop_last=self.drop_last and train,
            collate_fn=BatchCollate(collate, augment),
            **self.loader.as_kwargs(),
        )
