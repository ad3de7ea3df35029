"""Images in class subfolders, decoded and resized per sample by DataLoader workers.

Layout: ``<data_dir>/train/<class>/*.png`` with optional ``val/`` and ``test/`` beside it (same
class names). Without ``val/``, ``val_size`` of the training images are held out (fixed
``split_seed``); without ``test/``, testing uses the validation images.

Unreadable images (truncated, corrupt, not an image) are **skipped**: each one is logged with
its path when a worker first meets it, the batch it was in comes out smaller, and the total is
logged at teardown and kept in :attr:`ImageFolderDataModule.skipped_images`. One bad file in a
large folder should not end a long run; a batch in which *every* image is unreadable stops it
with a :class:`~lightspeed.errors.DataError` naming one of them, since that points to a broken
folder rather than a stray file.

Decoding and resizing every image every epoch is the slow part; resize once offline
(``scripts/resize_images.py``) or convert to HDF5 (``scripts/to_hdf5.py --source folder``).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data._utils.collate import default_collate

from lightspeed.data.base import SplitDataModule
from lightspeed.data.loading import resolve_loader_settings
from lightspeed.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def open_image(path: str, mode: str):
    """PIL image of ``path`` in ``mode`` (``L`` or ``RGB``), fully decoded here."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert(mode)


class SkippingImageFolder(Dataset):
    """A torchvision ``ImageFolder`` whose unreadable images come back as ``None``.

    Args:
        root: folder of class subfolders.
        transform: transform applied to each decoded PIL image.
        mode: PIL mode the images are converted to.
    Unreadable files are marked in :attr:`unreadable`, one shared byte per image
    (``multiprocessing.Array``), so the main process sees what the workers met and a file
    counts once however many workers and epochs meet it.
    """

    def __init__(self, root: str | Path, transform: Any, mode: str) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(root), loader=functools.partial(open_image, mode=mode))
        self.transform = transform
        self.unreadable = multiprocessing.Array("b", len(self.folder.samples))

    @property
    def classes(self) -> list[str]:
        return self.folder.classes

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        try:
            image = self.folder.loader(path)
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
            if not self.unreadable[i]:  # warn once per file, not once per epoch
                self.unreadable[i] = 1
                log.warning("skipping unreadable image %s (%s)", path, e)
            return None
        return self.transform(image), label


def collate_skipping(batch: list):
    """Default collate of the readable samples; fails only when none is readable."""
    kept = [b for b in batch if b is not None]
    if not kept:
        raise DataError(
            f"all {len(batch)} images of a batch are unreadable (see the warnings above); "
            "check the image folder"
        )
    return default_collate(kept)


class ImageFolderDataModule(SplitDataModule):
    """Class-subfolder images through DataLoaders with workers (see the module docstring).

    Args:
        data_dir: folder holding ``train/`` (and optionally ``val/``, ``test/``).
        image_size: ``[height, width]`` (or ``[side]``) every image is resized to.
        channels: 1 (grayscale) or 3 (RGB).
        mean, std: per-channel normalisation of pixels scaled to [0, 1] (one value = all).
        val_size: without ``val/``: a fraction (< 1) or a count of training images.
        batch_size, eval_batch_size: training / evaluation batch sizes.
        num_workers, pin_memory, persistent_workers, prefetch_factor: DataLoader knobs or
            ``auto``; ``num_workers=auto`` is about half the usable cores.
        drop_last: drop the last incomplete training batch.
        flip: random horizontal flips of training images.
        split_seed: seed of the train/val split.
    """

    def __init__(
        self,
        data_dir: str = "data/images",
        image_size: list[int] | tuple[int, ...] = (64, 64),
        channels: int = 3,
        mean: list[float] | tuple[float, ...] = (0.5,),
        std: list[float] | tuple[float, ...] = (0.5,),
        val_size: float = 0.1,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool | str = "auto",
        prefetch_factor: int | str | None = "auto",
        drop_last: bool = False,
        flip: bool = True,
        split_seed: int = 12345,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} must be 1 or 3")
        self.data_dir = Path(data_dir)
        self.image_size = [int(image_size[0]), int(image_size[-1])]
        self.channels = channels
        self.mean = list(mean) * channels if len(mean) == 1 else list(mean)
        self.std = list(std) * channels if len(std) == 1 else list(std)
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.drop_last, self.flip, self.split_seed = drop_last, flip, split_seed
        self.loader = resolve_loader_settings(
            num_workers,
            pin_memory,
            persistent_workers,
            prefetch_factor,
            in_memory=False,
            cuda=torch.cuda.is_available(),
        )
        self.classes: list[str] = []
        self.num_classes: int | None = None
        self._datasets: dict[str, Dataset] = {}

    @property
    def skipped_images(self) -> int:
        """Unreadable images met so far (by this process and its workers)."""
        folders = {id(f): f for ds in self._datasets.values() for f in [getattr(ds, "dataset", ds)]}
        return sum(
            sum(f.unreadable) for f in folders.values() if isinstance(f, SkippingImageFolder)
        )

    def transform(self, train: bool):
        from torchvision.transforms import v2

        steps = [v2.ToImage(), v2.Resize(self.image_size, antialias=True)]
        if train and self.flip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(steps)

    def _folder(self, name: str, train: bool) -> SkippingImageFolder:
        mode = "L" if self.channels == 1 else "RGB"
        return SkippingImageFolder(self.data_dir / name, self.transform(train), mode)

    def prepare_data(self) -> None:
        if not (self.data_dir / "train").is_dir():
            raise DataError(
                f"no training images: expected {self.data_dir}/train/<class>/<image files> "
                "(set data.data_dir to the folder holding train/)"
            )

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        self.prepare_data()
        try:
            train = self._folder("train", train=True)
        except (FileNotFoundError, RuntimeError) as e:  # ImageFolder: no classes / no images
            raise DataError(f"{self.data_dir}/train: {e}") from None
        self.classes, self.num_classes = train.classes, len(train.classes)
        if (self.data_dir / "val").is_dir():
            val: Dataset = self._folder("val", train=False)
        else:
            n = len(train)
            n_val = round(n * self.val_size) if self.val_size < 1 else int(self.val_size)
            if not 0 <= n_val < n:
                raise ConfigError(f"data.val_size={self.val_size} leaves no training images of {n}")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
            plain = self._folder("train", train=False)  # same files, no augmentation
            val = Subset(plain, perm[:n_val].tolist())
            train = Subset(train, perm[n_val:].tolist())
        test = self._folder("test", train=False) if (self.data_dir / "test").is_dir() else val
        self._datasets = {"train": train, "val": val, "test": test}
        log.info(
            "%s: %d classes, %d train / %d val / %d test images, resized to %s",
            self.data_dir,
            self.num_classes,
            len(train),
            len(val),
            len(test),
            self.image_size,
        )

    def teardown(self, stage: str | None = None) -> None:
        if self.skipped_images:
            log.warning("%s: skipped %d unreadable image(s)", self.data_dir, self.skipped_images)

    def _loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            collate_fn=collate_skipping,
            **self.loader.as_kwargs(),
        )
