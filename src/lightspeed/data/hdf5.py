"""Image sets stored in one HDF5 file, read a whole batch at a time by DataLoader workers.

File layout (written by ``scripts/to_hdf5.py`` through :func:`write_hdf5`)::

    train/images  uint8 [N, C, H, W]   chunked by ``chunk`` images, optional gzip/lzf
    train/labels  int64 [N]
    test/images, test/labels
    attrs: source, class_names (JSON list), mean, std (of train/images, pixels scaled to [0, 1])

The data shape is read from this header when the DataModule is made; images only by loaders.
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

from lightspeed.constraints import PositiveFloat
from lightspeed.data.base import ImageDataModule
from lightspeed.data.batches import BatchDataset, ScalePixels
from lightspeed.data.stats import in_chunks, pixel_stats
from lightspeed.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
# Per-worker HDF5 chunk cache. Shuffled batches touch chunks all over the file; a cache that
# holds them saves decompressing the same chunk again for the next batch.
CHUNK_CACHE_BYTES = 64 * 2**20
MAKE_HINT = "make it with `.venv/bin/python scripts/to_hdf5.py --source fashion_mnist --out {path}`"


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
        mean, std = pixel_stats(in_chunks(np.asarray(splits["train"][0])))
        f.attrs["mean"], f.attrs["std"] = mean, std
        f.attrs["source"] = source
        f.attrs["class_names"] = json.dumps(list(class_names))
    return path


def inspect_file(path: str | Path) -> dict[str, Any]:
    """Opens ``path`` once in this process, checks its layout and returns its header.

    Returns:
        ``{"attrs": {...}, "train": images shape, "test": images shape, "max_label": int}``.

    Raises:
        DataError: the file is missing, not HDF5, lacks one of the expected datasets, or holds
            shapes that do not fit together.
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
            present: list[str] = []  # the datasets' names, for the error message
            f.visititems(lambda k, v: present.append(k) if isinstance(v, h5py.Dataset) else None)
            info: dict[str, Any] = {"attrs": dict(f.attrs), "max_label": -1}
            for split in SPLITS:
                for key in (f"{split}/images", f"{split}/labels"):
                    if key not in present:
                        raise DataError(
                            f"{path}: no dataset '{key}'; the file holds: "
                            f"{', '.join(present) or 'nothing'}"
                        )
                images, labels = f[f"{split}/images"], f[f"{split}/labels"]
                if images.ndim != 4 or images.shape[0] != labels.shape[0] or 0 in images.shape:
                    raise DataError(
                        f"{path}: {split}/images has shape {images.shape} and {split}/labels "
                        f"{labels.shape}; expected [N, C, H, W] images (N > 0) and N labels"
                    )
                if split == "test" and images.shape[1:] != info["train"][1:]:
                    raise DataError(
                        f"{path}: test/images are {images.shape[1:]} but train/images "
                        f"{info['train'][1:]}; both splits need one image shape"
                    )
                info[split] = images.shape
                values = labels[:]
                if values.min() < 0:
                    raise DataError(f"{path}: {split}/labels holds {values.min()}; labels are >= 0")
                info["max_label"] = max(info["max_label"], int(values.max()))
    except OSError as e:
        raise DataError(f"{path}: cannot read the HDF5 file ({e}); rebuild it") from None
    return info


class Hdf5Dataset(BatchDataset):
    """Rows ``indices`` of one split of an HDF5 file, normalised, fetched a batch at a time.

    Args:
        path: the HDF5 file.
        split: ``train`` or ``test``.
        indices: rows of the split that make up this data set (a train/val split picks rows).
        mean, std: normalisation of pixels scaled to [0, 1].
    """

    def __init__(
        self, path: str | Path, split: str, indices: np.ndarray, mean: float, std: float
    ) -> None:
        self.path, self.split = str(path), split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.mean, self.std = float(mean), float(std)
        # an h5py handle must not cross a fork (garbage or a deadlock): opened on first use in
        # each process, never here
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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

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
        return ScalePixels(self.mean, self.std)(torch.from_numpy(x)), torch.from_numpy(y).long()


class Hdf5DataModule(ImageDataModule):
    """An HDF5 image set (train/test in the file, val carved from train) through DataLoaders.

    Workers read whole batches (``num_workers=auto`` is about half the usable cores: reads
    overlap the training step); batched flip/crop run in the workers.

    Args:
        path: the HDF5 file (``scripts/to_hdf5.py`` writes one).
        mean: normalisation mean of pixels scaled to [0, 1]; null takes the file's stored
            value (whole training split), or computes it over the training rows when the file
            has none. Set together with ``std``.
        std: normalisation std, as ``mean``.
        **kwargs: loader knobs of :class:`~lightspeed.data.base.ImageDataModule`; ``val_size``
            rows are the same ones the in-memory IDX module holds out for the same count.
    """

    def __init__(
        self,
        path: str = "data/fashion_mnist.h5",
        mean: float | None = None,
        std: PositiveFloat | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (mean is None) != (std is None):
            raise ConfigError("data.mean and data.std go together: set both or neither")
        self.path = Path(path)
        self.mean, self.std = mean, std
        self._info = inspect_file(self.path)
        _, self.in_channels, height, width = self._info["train"]
        self.image_size = [height, width]
        names = json.loads(self._info["attrs"].get("class_names", "[]"))
        self.class_names = names or [str(i) for i in range(self._info["max_label"] + 1)]
        self.num_classes = len(self.class_names)
        self.val_count(self._info["train"][0], str(self.path))
        if self._info["max_label"] >= self.num_classes:
            raise DataError(
                f"{self.path}: labels go up to {self._info['max_label']} but the file names "
                f"{self.num_classes} classes in its class_names attribute"
            )

    def load_splits(self) -> None:
        train_rows, val_rows = (
            r.numpy() for r in self.split_rows(self._info["train"][0], str(self.path))
        )
        if self.mean is None or self.std is None:
            self.mean, self.std = self._stats(train_rows)

        def rows(split: str, indices: np.ndarray) -> Hdf5Dataset:
            return Hdf5Dataset(self.path, split, indices, self.mean, self.std)

        self.set_split("train", rows("train", train_rows))
        self.set_split("val", rows("train", val_rows))
        self.set_split("test", rows("test", np.arange(self._info["test"][0])))
        self.record_source(self.path, [self.path])
        log.info("%s: normalised with mean %.4f, std %.4f", self.path, self.mean, self.std)

    def _stats(self, train_rows: np.ndarray) -> tuple[float, float]:
        attrs = self._info["attrs"]
        if "mean" in attrs and "std" in attrs:
            return float(attrs["mean"]), float(attrs["std"])
        log.info("%s stores no mean/std: computing them over the training rows", self.path)
        reader = Hdf5Dataset(self.path, "train", np.sort(train_rows), 0.0, 1.0)
        stats = pixel_stats(reader.read_rows(part)[0] for part in in_chunks(reader.indices))
        reader.close()
        return stats
