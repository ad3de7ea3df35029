"""k-fold cross-validation (``cv.folds=K``): the folds the DataModules cut."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import NUM_CLASSES, TRAIN_SIZE

from lightspeed.data.splits import fold_rows
from myproject.idx import read_idx_pair


def tiny_labels(tiny_data: Path) -> torch.Tensor:
    _, y = read_idx_pair(
        tiny_data / "train-images-idx3-ubyte.gz", tiny_data / "train-labels-idx1-ubyte.gz"
    )
    return torch.from_numpy(y.copy()).long()


def test_folds_are_disjoint_cover_the_rows_and_are_stratified(tiny_data: Path) -> None:
    labels = tiny_labels(tiny_data)
    vals = []
    for fold in range(3):
        train, val = fold_rows(TRAIN_SIZE, fold, 3, seed=0, labels=labels)
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert len(train) + len(val) == TRAIN_SIZE
        vals.append(val)
    every = torch.cat(vals)
    assert sorted(every.tolist()) == list(range(TRAIN_SIZE))  # disjoint and covering
    counts = torch.stack([torch.bincount(labels[v], minlength=NUM_CLASSES) for v in vals])
    assert (counts.max(0).values - counts.min(0).values).max() <= 1, counts
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 1
    plain = [fold_rows(10, f, 3, seed=1)[1].tolist() for f in range(3)]
    assert sorted(r for rows in plain for r in rows) == list(range(10)) and sorted(
        map(len, plain)
    ) == [3, 3, 4]
    assert fold_rows(10, 0, 3, seed=2)[1].tolist() != plain[0]  # the seed picks the folds


def test_the_datamodule_validates_on_its_fold(tiny_data: Path) -> None:
    from myproject.idx_datamodule import IdxDataModule

    labels = tiny_labels(tiny_data)
    dm = IdxDataModule(data_dir=str(tiny_data), download=False, val_size=100)
    dm.cross_validation_fold(1, 3, 0)
    dm.setup("fit")
    _, val_y = dm.tensors("val")
    _, train_y = dm.tensors("train")
    want = labels[fold_rows(TRAIN_SIZE, 1, 3, 0, labels)[1]]
    assert torch.equal(val_y.cpu(), want) and len(train_y) == TRAIN_SIZE - len(want)
    assert len(dm.tensors("test")[1]) == 200  # untouched


def test_table_data_folds_leave_the_test_rows(tmp_path: Path) -> None:
    from myproject.table import TableDataModule

    plain = TableDataModule()
    plain.setup("fit")
    seen = []
    for fold in range(3):
        dm = TableDataModule()
        dm.cross_validation_fold(fold, 3, 0)
        dm.setup("fit")
        assert torch.equal(dm._splits["test"][2], plain._splits["test"][2])
        seen += dm._splits["val"][2].tolist()
    rest = plain._splits["train"][2].tolist() + plain._splits["val"][2].tolist()
    assert sorted(seen) == sorted(rest)
