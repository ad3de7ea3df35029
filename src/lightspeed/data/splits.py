"""The split names, and the checks on splits handed over as tensors (used by the base)."""

from __future__ import annotations

import torch
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


def fold_rows(
    n: int, fold: int, folds: int, seed: int, labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(train_rows, val_rows)`` of ``n`` rows for fold ``fold`` of ``folds``: the val rows of
    the folds are disjoint and cover all ``n``. With ``labels``, the rows are dealt round the
    folds class by class (stratified: a class's count differs by at most 1 between folds); without,
    the shuffled rows are cut into ``folds`` near-equal parts. The same ``seed`` gives the same
    folds in every run, so the K fits of one CV see K different validation sets."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    if labels is not None:
        # a stable sort of the shuffled rows by class makes each class a consecutive run;
        # dealing the runs round the folds in turn keeps every class, and every fold's size,
        # within one row of the others
        perm = perm[torch.sort(labels[perm].long(), stable=True).indices]
    slot = torch.arange(n) % folds
    return perm[slot != fold].sort().values, perm[slot == fold].sort().values
