"""The train/val carve and the checks on splits handed over as tensors (used by the base)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightspeed.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def val_count(n: int, val_size: int | float, where: str = "the training set") -> int:
    """How many of ``n`` training images ``val_size`` (a count, or a fraction < 1) holds out;
    refuses leaving no training image."""
    n_val = round(n * val_size) if isinstance(val_size, float) else val_size
    if not 0 <= n_val < n:
        raise ConfigError(
            f"data.val_size={val_size} leaves no training images of the {n} in {where}; "
            f"use a count below {n} or a fraction < 1"
        )
    return n_val


def split_rows(
    n: int, val_size: int | float, split_seed: int, where: str = "the training set"
) -> tuple[Tensor, Tensor]:
    """``(train_rows, val_rows)`` of ``n`` rows, drawn with ``split_seed``: the same ``n``,
    ``val_size`` and ``split_seed`` give the same rows in every module."""
    n_val = val_count(n, val_size, where)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return perm[n_val:], perm[:n_val]


def check_tensors(name: str, x: Tensor, y: Tensor, module: object) -> None:
    """``(images, labels)`` of split ``name`` fit each other and the data shape ``module``
    declares (``in_channels``, ``image_size``, ``num_classes``); DataError otherwise."""
    if x.ndim != 4 or len(x) != len(y):
        raise DataError(f"{name} split: images {tuple(x.shape)} and labels {len(y)} do not fit")
    want = (module.in_channels, *module.image_size)
    if tuple(x.shape[1:]) != want:
        raise DataError(
            f"{name} split holds images of {tuple(x.shape[1:])} but "
            f"{type(module).__name__} declares in_channels x image_size = {want}"
        )
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < module.num_classes:
        raise DataError(
            f"{name} split has labels {int(y.min())}..{int(y.max())} but "
            f"num_classes={module.num_classes}"
        )
