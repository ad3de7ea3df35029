"""LightningDataModule for IDX image sets: Fashion-MNIST by default, MNIST by config.

The whole set is held as uint8 tensors (on the CPU, or the GPU with ``device=cuda``) and each
batch is normalised as it is drawn; where the files are looked for: :mod:`myproject.sources`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lightspeed.data.base import ImageDataModule
from lightspeed.data.stats import in_chunks, pixel_stats
from lightspeed.errors import ConfigError, DataError
from myproject.idx import read_idx_pair
from myproject.sources import SOURCES, locate

log = logging.getLogger(__name__)


class IdxDataModule(ImageDataModule):
    """Fashion-MNIST or MNIST, held in memory as uint8 tensors, normalised batch by batch.

    Args:
        dataset: which IDX data set (its classes and image size are known without reading).
        data_dir: a folder holding your own copy of the four IDX files (raw or ``.gz``). When
            set, it is the only place used: a missing, partial or broken set there is an
            error, never replaced by another copy.
        cache_dir: with ``data_dir`` unset, searched first, then the system copy
            (``/usr/share/datasets/<name>``); a download is saved here, and the decoded
            arrays (``decoded/*.npy``, memory-mapped: 0.35 s less start-up).
        download: allow torchvision's download into ``cache_dir`` as the last resort.
        device: where the tensors live: ``cpu``, or ``cuda`` for a GPU-resident data set
            (shuffling and augmentation run there; no worker processes).
        **kwargs: loader knobs of :class:`~lightspeed.data.base.ImageDataModule`.
    """

    in_memory = True

    def __init__(
        self,
        dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist",
        data_dir: str | None = None,
        cache_dir: str = "data",
        download: bool = True,
        device: str = "cpu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dataset not in SOURCES:
            raise ConfigError(
                f"data.dataset={dataset} is not known; choose one of {sorted(SOURCES)}"
            )
        if not (device == "cpu" or device.startswith("cuda")):
            raise ConfigError(f"data.device={device} must be cpu or cuda (or cuda:<index>)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"data.device={device} but torch sees no CUDA GPU; use data.device=cpu"
            )
        self.source = SOURCES[dataset]
        self.data_dir, self.cache_dir, self.download = data_dir, cache_dir, download
        self.data_device = device  # before self.loader resolves: no pinning for GPU data
        workers = self.loader.num_workers  # resolved now, so contradictions surface here
        if device.startswith("cuda") and workers > 0:
            raise ConfigError(
                f"data.device={device} keeps the data on the GPU, where worker processes cannot "
                f"index it; set data.num_workers=0 (or auto), not {workers}"
            )
        self.num_classes = len(self.source.class_names)
        self.in_channels = 1
        self.image_size = list(self.source.image_size)
        self.class_names = list(self.source.class_names)
        self.mean: float | None = None
        self.std: float | None = None
        if data_dir is not None:  # a named folder is checked now, before any training starts
            locate(self.source, data_dir)

    def prepare_data(self) -> None:
        locate(self.source, self.data_dir, self.cache_dir, self.download)

    def load_splits(self) -> None:
        found = locate(self.source, self.data_dir, self.cache_dir, self.download)
        (images, labels), (test_images, test_labels) = (found.files[s] for s in ("train", "test"))
        # decoded arrays are kept in the template's own data folder, never in a named data_dir
        own = self.data_dir is None and self.cache_dir
        cache = Path(self.cache_dir) / "decoded" if own else None
        x, y = read_idx_pair(images, labels, cache)
        xt, yt = read_idx_pair(test_images, test_labels, cache)
        for path, array in ((images, x), (test_images, xt)):
            if list(array.shape[1:]) != self.image_size:
                raise DataError(
                    f"{path}: images of {array.shape[1]}x{array.shape[2]} pixels, but "
                    f"{self.source.name} images are {self.image_size[0]}x{self.image_size[1]}"
                )
        for path, array in ((labels, y), (test_labels, yt)):
            if len(array) and int(array.max()) >= self.num_classes:
                raise DataError(
                    f"{path}: label {int(array.max())} found, but {self.source.name} has "
                    f"{self.num_classes} classes (0..{self.num_classes - 1})"
                )
        # the labels stratify a cross-validation's folds (the plain split ignores them)
        train_rows, val_rows = self.split_rows(len(x), str(images), torch.from_numpy(np.array(y)))

        def rows(array: np.ndarray, picked: Tensor | None = None) -> Tensor:
            """A new tensor of the rows (the arrays may be read-only memory maps)."""
            part = np.array(array) if picked is None else array[picked.numpy()]
            return torch.from_numpy(part).to(self.data_device)

        train_u8 = rows(x, train_rows).unsqueeze(1)
        # statistics of the training part only (no peeking at val/test); the loaders normalise
        self.mean, self.std = pixel_stats(in_chunks(train_u8.cpu().numpy()))
        self.set_split("train", (train_u8, rows(y, train_rows).long()))
        self.set_split("val", (rows(x, val_rows).unsqueeze(1), rows(y, val_rows).long()))
        self.set_split("test", (rows(xt).unsqueeze(1), rows(yt).long()))
        self.record_source(found.folder, found.paths, found_in=found.how)
        what = "%s on %s as uint8, normalised per batch with the training mean %.4f, std %.4f"
        log.info(what, self.source.name, self.data_device, self.mean, self.std)
