"""Images in class subfolders, decoded and resized per sample by DataLoader workers.

Layout: ``<data_dir>/train/<class>/*.png`` with optional ``val/`` and ``test/`` beside it.
Classes are the subfolder names; ``image_size``/``channels`` default to the first image's.
Unreadable images are skipped and logged (one bad file should not end a long run); a batch with
none readable is a :class:`~lightspeed.errors.DataError`. Details and speed: docs/data.md.
"""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, Subset
from torch.utils.data._utils.collate import default_collate

from lightspeed.data.base import ImageDataModule
from lightspeed.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (any depth), sorted, by suffix."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def open_image(path: str | Path, mode: str):
    """PIL image of ``path`` in ``mode`` (``L`` or ``RGB``), fully decoded here."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert(mode)


class SkippingImageFolder(Dataset):
    """``(path, label)`` samples decoded and transformed on access; unreadable ones are ``None``.

    Args:
        samples: image paths with their labels.
        transform: applied to each decoded PIL image.
        mode: PIL mode the images are converted to.

    Unreadable files are marked in :attr:`unreadable`, one shared byte per image
    (``multiprocessing.Array``), so the main process sees what the workers met and a file
    counts once however many workers and epochs meet it.
    """

    def __init__(self, samples: list[tuple[Path, int]], transform: Any, mode: str) -> None:
        self.samples, self.transform, self.mode = samples, transform, mode
        self.unreadable = multiprocessing.Array("b", len(samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            image = open_image(path, self.mode)
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


class ImageFolderDataModule(ImageDataModule):
    """Class-subfolder images through DataLoaders with workers (see the module docstring).

    Args:
        data_dir: folder holding ``train/<class>/`` (and optionally ``val/``, ``test/``).
        image_size: ``[height, width]`` (or ``[side]``) every image is resized to, or
            ``auto``: the size of the first training image.
        channels: 1 (grayscale) or 3 (RGB), or ``auto``: 1 when the first training image is
            grayscale (PIL mode ``L``), else 3.
        mean: normalisation mean of pixels scaled to [0, 1]: one value for all channels, or
            one per channel.
        std: normalisation std, as ``mean``.
        **kwargs: loader knobs of :class:`~lightspeed.data.base.ImageDataModule`
            (``num_workers=auto`` is about half the usable cores: decoding is CPU work).
    """

    # unreadable images come back as None and are left out of their batch
    collate_samples = staticmethod(collate_skipping)

    def __init__(
        self,
        data_dir: str = "data/images",
        image_size: list[int] | Literal["auto"] = "auto",
        channels: Literal[1, 3, "auto"] = "auto",
        mean: float | list[float] = 0.5,
        std: float | list[float] = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3, "auto"):
            raise ConfigError(f"data.channels={channels} must be 1, 3 or auto")
        if image_size != "auto" and not (
            len(image_size) in (1, 2) and all(isinstance(s, int) and s > 0 for s in image_size)
        ):
            raise ConfigError(
                f"data.image_size={image_size} must be [height, width] (or [side]) of ints > 0, "
                "or auto"
            )
        self.data_dir = Path(data_dir)
        train = self.data_dir / "train"
        if not train.is_dir():
            raise DataError(
                f"no training images: expected {train}/<class>/<image files> "
                "(set data.data_dir to the folder holding train/)"
            )
        self.class_names = sorted(d.name for d in train.iterdir() if d.is_dir())
        if not self.class_names:
            raise DataError(f"{train}: no class folders; expected {train}/<class>/<image files>")
        self.num_classes = len(self.class_names)
        splits = [s for s in ("train", "val", "test") if (self.data_dir / s).is_dir()]
        self._samples = {split: self._list(split) for split in splits}
        if "val" not in self._samples:
            self.val_count(len(self._samples["train"]), str(train))
        self.in_channels = 0 if channels == "auto" else channels
        self.image_size = [0, 0] if image_size == "auto" else [image_size[0], image_size[-1]]
        if "auto" in (image_size, channels):
            first, (width, height), mode = self._first_image()
            self.in_channels = self.in_channels or (1 if mode in GRAYSCALE_MODES else 3)
            self.image_size = [height, width] if image_size == "auto" else self.image_size
            what = "%s: image_size %dx%d, %d channel(s) (auto: from %s, %dx%d, PIL mode %s)"
            found = (first.relative_to(self.data_dir), height, width, mode)
            log.info(what, self.data_dir, *self.image_size, self.in_channels, *found)
        self.mean = self._per_channel("mean", mean)
        self.std = self._per_channel("std", std)
        if min(self.std) <= 0:
            raise ConfigError(f"data.std={std} must be > 0")

    def _per_channel(self, key: str, value: float | list[float]) -> list[float]:
        values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
        if len(values) == 1:
            return values * self.in_channels
        if len(values) != self.in_channels:
            raise ConfigError(
                f"data.{key}={list(value)} needs 1 or {self.in_channels} values "
                f"(one per channel; the images have {self.in_channels})"
            )
        return values

    def _list(self, split: str) -> list[tuple[Path, int]]:
        """``(path, label)`` of every image under ``<data_dir>/<split>/<class>/``."""
        root = self.data_dir / split
        label = {name: i for i, name in enumerate(self.class_names)}
        samples: list[tuple[Path, int]] = []
        for folder in sorted(d for d in root.iterdir() if d.is_dir()):
            if folder.name not in label:
                raise DataError(
                    f"{folder}: class '{folder.name}' has no folder in {self.data_dir}/train "
                    f"(classes there: {', '.join(self.class_names)})"
                )
            files = list_images(folder)
            if not files and split == "train":
                raise DataError(
                    f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                    "add some or remove the folder"
                )
            samples += [(path, label[folder.name]) for path in files]
        if not samples:
            raise DataError(f"{root}: no images in its class folders; add some or remove {root}")
        return samples

    def _first_image(self) -> tuple[Path, tuple[int, int], str]:
        """Path, ``(width, height)`` and PIL mode of the first readable training image."""
        from PIL import Image

        for path, _ in self._samples["train"]:
            try:
                with Image.open(path) as im:  # reads the header only
                    return path, im.size, im.mode
            except (OSError, ValueError, SyntaxError):
                continue
        raise DataError(f"{self.data_dir}/train: none of the images can be read")

    @property
    def skipped_images(self) -> int:
        """Unreadable images met so far (by this process and its workers)."""
        folders = {id(f): f for f in (getattr(d, "dataset", d) for d in self._splits.values())}
        return sum(
            sum(f.unreadable) for f in folders.values() if isinstance(f, SkippingImageFolder)
        )

    def _folder(self, split: str) -> SkippingImageFolder:
        from torchvision.transforms import v2

        transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(self.image_size, antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )
        mode = "L" if self.in_channels == 1 else "RGB"
        return SkippingImageFolder(self._samples[split], transform, mode)

    def load_splits(self) -> None:
        train = self._folder("train")
        if "val" in self._samples and self._fold is not None:
            raise ConfigError(
                f"cv.folds: {self.data_dir} has a val/ folder of its own; cross-validation "
                "carves its folds from train/ only: move val/ into train/ to cross-validate"
            )
        if "val" in self._samples:
            val: Dataset = self._folder("val")
        else:
            train_rows, val_rows = self.split_rows(len(train), f"{self.data_dir}/train")
            train, val = Subset(train, train_rows.tolist()), Subset(train, val_rows.tolist())
        self.set_split("train", train)
        self.set_split("val", val)
        self.set_split("test", self._folder("test") if "test" in self._samples else val)
        files = [path for samples in self._samples.values() for path, _ in samples]
        self.record_source(self.data_dir, files, by_listing=True)

    def teardown(self, stage: str | None = None) -> None:
        if self.skipped_images:
            log.warning("%s: skipped %d unreadable image(s)", self.data_dir, self.skipped_images)
