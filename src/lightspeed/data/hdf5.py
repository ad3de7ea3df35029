"""Image sets stored in one HDF5 file, read a whole batch at a time by DataLoader workers.

File layout (written by ``scripts/to_hdf5.py`` through :func:`write_hdf5`)::

    train/images  uint8 [N, C, H, W]   chunked by ``chunk`` images, optional gzip/lzf
    train/labels  int64 [N]
    test/images, test/labels
    attrs: source, class_names (JSON list), mean, std (of train/images, pixels scaled to [0, 1])

h5py file handles must not cross a ``fork``: a handle opened in the main process and used in a
worker reads garbage or deadlocks. :class:`Hdf5Dataset` therefore opens the file on first use in
each process (checked by pid) and never in ``__init__``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightspeed.data.augment import BatchAugment
from lightspeed.data.base import SplitDataModule
from lightspeed.data.loading import resolve_loader_settings
from lightspeed.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
# Per-worker HDF5 chunk cache. Shuffled batches touch chunks all over the file; a cache that
# holds them saves decompressing the same chunk again for the next batch.
CHUNK_CACHE_BYTES = 64 * 2**20
MAKE_HINT = "make it with `python scripts/to_hdf5.py --source fashion_mnist --out {path}`"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ConfigError(
            "data=hdf5 needs h5py: pip install 'lightspeed[hdf5]' (or pip install h5py)"
        ) from None
    return h5py


def write_hdf5(
    path: str | Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    source: str,
    class_names: list[str],
    chunk: int = 256,
    compression: str | None = None,
) -> Path:
    """Writes image/label arrays per split into one HDF5 file (see the module docstring).

    Args:
        path: file to write (replaced if present).
        splits: ``{"train": (images, labels), "test": (...)}``; images uint8 ``[N, H, W]`` or
            ``[N, C, H, W]``.
        source: where the data came from (stored as an attribute).
        class_names: one name per label value.
        chunk: images per HDF5 chunk; about one batch, so a contiguous batch read touches
            one or two chunks.
        compression: ``None``, ``"gzip"`` or ``"lzf"``.
    """
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for split, (x, y) in splits.items():
            x = np.asarray(x, dtype=np.uint8)
            if x.ndim == 3:
                x = x[:, None]
            if x.ndim != 4 or len(x) != len(y):
                raise DataError(f"{split}: images {x.shape} and labels {np.shape(y)} do not match")
            rows = max(1, min(chunk, len(x)))
            f.create_dataset(
                f"{split}/images", data=x, chunks=(rows, *x.shape[1:]), compression=compression
            )
            f.create_dataset(f"{split}/labels", data=np.asarray(y, dtype=np.int64), chunks=(rows,))
        train = np.asarray(splits["train"][0])
        # float64 sums over the whole training set, in slices to keep memory flat
        total = sq = 0.0
        for i in range(0, len(train), 8192):
            part = train[i : i + 8192].astype(np.float64) / 255.0
            total += part.sum()
            sq += np.square(part).sum()
        count = train.size
        mean = total / count
        f.attrs["mean"] = mean
        f.attrs["std"] = float(np.sqrt(max(sq / count - mean**2, 0.0) * count / max(count - 1, 1)))
        f.attrs["source"] = source
        f.attrs["class_names"] = json.dumps(list(class_names))
    return path


def _all_keys(f: Any) -> list[str]:
    keys: list[str] = []
    f.visit(lambda name: keys.append(name) if hasattr(f[name], "shape") else None)
    return keys


def inspect_file(path: str | Path) -> dict[str, Any]:
    """Opens ``path`` once in this process, checks its layout and returns sizes and attrs.

    Raises:
        DataError: the file is missing, not HDF5, or lacks one of the expected datasets.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"HDF5 file not found: {path}; " + MAKE_HINT.format(path=path))
    if not h5py.is_hdf5(path):
        raise DataError(
            f"{path} is not an HDF5 file (corrupt or another format); rebuild it: "
            + MAKE_HINT.format(path=path)
        )
    try:
        with h5py.File(path, "r") as f:
            present = _all_keys(f)
            info: dict[str, Any] = {"attrs": {k: f.attrs[k] for k in f.attrs}}
            for split in SPLITS:
                for part in ("images", "labels"):
                    key = f"{split}/{part}"
                    if key not in present:
                        raise DataError(
                            f"{path}: no dataset '{key}'; the file holds: "
                            f"{', '.join(present) or 'nothing'}"
                        )
                images, labels = f[f"{split}/images"], f[f"{split}/labels"]
                if images.ndim != 4 or images.shape[0] != labels.shape[0]:
                    raise DataError(
                        f"{path}: {split}/images has shape {images.shape} and {split}/labels "
                        f"{labels.shape}; expected [N, C, H, W] images and N labels"
                    )
                info[split] = images.shape
    except OSError as e:
        raise DataError(f"{path}: cannot read the HDF5 file ({e}); rebuild it") from None
    return info


class Hdf5Dataset(Dataset):
    """Rows ``indices`` of one split of an HDF5 file, normalised, fetched a batch at a time.

    Args:
        path: the HDF5 file.
        split: ``train`` or ``test``.
        indices: rows of the split that make up this data set (a train/val split picks rows).
        mean, std: normalisation of pixels scaled to [0, 1].
        augment: batched augmentation for training, or None.
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        indices: np.ndarray,
        mean: float,
        std: float,
        augment: BatchAugment | None = None,
    ) -> None:
        self.path, self.split = str(path), split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.mean, self.std = float(mean), float(std)
        self.augment = augment if augment is not None and augment.active else None
        self._file: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        # a worker gets the recipe, never an open handle
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def _datasets(self) -> tuple[Any, Any]:
        if self._file is None or self._pid != os.getpid():
            h5py = _h5py()
            self._file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            self._pid = os.getpid()
        return self._file[f"{self.split}/images"], self._file[f"{self.split}/labels"]

    def __len__(self) -> int:
        return len(self.indices)

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw uint8 images and labels of file rows ``rows`` (any order, repeats allowed)."""
        images, labels = self._datasets()
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted, as h5py requires
        lo, hi = int(unique[0]), int(unique[-1]) + 1
        if hi - lo <= 2 * len(unique):
            # nearly contiguous: one slice read beats a point selection
            x, y = images[lo:hi][unique - lo], labels[lo:hi][unique - lo]
        else:
            x, y = images[unique], labels[unique]
        return x[inverse], y[inverse]

    def __getitems__(self, positions: list[int]) -> tuple[Tensor, Tensor]:
        x, y = self.read_rows(self.indices[np.asarray(positions, dtype=np.int64)])
        xb = torch.from_numpy(x).float().div_(255).sub_(self.mean).div_(self.std)
        if self.augment is not None:
            xb = self.augment(xb)
        return xb, torch.from_numpy(y).long()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def pass_through(batch):
    """collate_fn for a data set whose ``__getitems__`` already returns the batch."""
    return batch


class Hdf5DataModule(SplitDataModule):
    """An HDF5 image set (train/test in the file, val carved from train) through DataLoaders.

    Args:
        path: the HDF5 file (``scripts/to_hdf5.py`` writes one).
        val_size: training rows held out for validation (fixed ``split_seed``; the same rows
            the in-memory IDX module holds out for the same size and seed).
        batch_size, eval_batch_size: training / evaluation batch sizes.
        num_workers, pin_memory, persistent_workers, prefetch_factor: DataLoader knobs or
            ``auto``; ``num_workers=auto`` is about half the usable cores (the data is read from
            a file, so workers overlap reading with the training step).
        drop_last: drop the last incomplete training batch.
        flip, crop_padding: batched training augmentation, applied in the workers.
        mean, std: normalisation; null takes the values stored in the file (whole training
            split), or computes them over the training rows when the file has none.
        split_seed: seed of the train/val split.
    """

    def __init__(
        self,
        path: str = "data/fashion_mnist.h5",
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
        mean: float | None = None,
        std: float | None = None,
        split_seed: int = 12345,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.drop_last, self.split_seed = drop_last, split_seed
        self.mean, self.std = mean, std
        self.augment = BatchAugment(flip=flip, crop_padding=crop_padding)
        self.loader = resolve_loader_settings(
            num_workers,
            pin_memory,
            persistent_workers,
            prefetch_factor,
            in_memory=False,
            cuda=torch.cuda.is_available(),
        )
        self.num_classes: int | None = None
        self.class_names: list[str] = []
        self._datasets: dict[str, Hdf5Dataset] = {}

    def prepare_data(self) -> None:
        inspect_file(self.path)

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        info = inspect_file(self.path)
        n_train = info["train"][0]
        if not 0 <= self.val_size < n_train:
            raise ConfigError(f"data.val_size={self.val_size} must be in [0, {n_train})")
        attrs = info["attrs"]
        self.class_names = json.loads(attrs.get("class_names", "[]"))
        self.num_classes = len(self.class_names) or None
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.split_seed))
        val_rows, train_rows = perm[: self.val_size].numpy(), perm[self.val_size :].numpy()
        if self.mean is None or self.std is None:
            self.mean, self.std = self._stats(attrs, train_rows)

        def make(split: str, rows: np.ndarray, augment: BatchAugment | None = None):
            return Hdf5Dataset(self.path, split, rows, self.mean, self.std, augment)

        self._datasets = {
            "train": make("train", train_rows, self.augment),
            "val": make("train", val_rows),
            "test": make("test", np.arange(info["test"][0])),
        }
        log.info(
            "%s: %d train / %d val / %d test images (mean %.4f, std %.4f)",
            self.path,
            len(train_rows),
            len(val_rows),
            info["test"][0],
            self.mean,
            self.std,
        )

    def _stats(self, attrs: dict, train_rows: np.ndarray) -> tuple[float, float]:
        if "mean" in attrs and "std" in attrs:
            return float(attrs["mean"]), float(attrs["std"])
        log.info("%s stores no mean/std: computing them over the training rows", self.path)
        reader = Hdf5Dataset(self.path, "train", np.sort(train_rows), 0.0, 1.0)
        total = sq = 0.0
        count = 0
        for i in range(0, len(reader), 8192):
            x, _ = reader.read_rows(reader.indices[i : i + 8192])
            part = x.astype(np.float64) / 255.0
            total, sq, count = total + part.sum(), sq + np.square(part).sum(), count + part.size
        reader._file.close()
        mean = total / count
        return mean, float(np.sqrt(max(sq / count - mean**2, 0.0) * count / max(count - 1, 1)))

    def dataset(self, split: str) -> Hdf5Dataset:
        """The ``train``/``val``/``test`` data set (after :meth:`setup`)."""
        return self._datasets[split]

    def _loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            collate_fn=pass_through,
            **self.loader.as_kwargs(),
        )
