"""The split names, and the checks on splits handed over as tensors (used by the base)."""

from __future__ import annotations

from torch import Tensor

from lightspeed.errors import DataError

SPLITS = ("train", "val", "test")


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
