"""HDF5 path: same samples as the in-memory path, lazy per-process file handles, clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lightspeed.config import validate
from lightspeed.data.hdf5 import Hdf5DataModule, Hdf5Dataset, inspect_file, write_hdf5
from lightspeed.errors import ConfigError, DataError
from myproject.idx import write_idx
from myproject.idx_datamodule import IdxDataModule

h5py = pytest.importorskip("h5py")
ROOT = Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST, VAL = 300, 90, 60


@pytest.fixture(scope="module")
def arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return {
        "train": (
            rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, N_TRAIN),
        ),
        "test": (
            rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, N_TEST),
        ),
    }


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory, arrays) -> Path:
    folder = tmp_path_factory.mktemp("idx")
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    for split, (x, y) in arrays.items():
        write_idx(folder / names[split][0], x)
        write_idx(folder / names[split][1], y.astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory, arrays) -> Path:
    path = tmp_path_factory.mktemp("h5") / "tiny.h5"
    # small chunks and compression: reads cross chunk borders and go through the filter
    return write_hdf5(
        path, arrays, "test", [str(i) for i in range(10)], chunk=32, compression="gzip"
    )


def test_file_layout(h5_file: Path) -> None:
    with h5py.File(h5_file, "r") as f:
        assert f["train/images"].shape == (N_TRAIN, 1, 28, 28)
        assert f["train/images"].dtype == np.uint8 and f["train/labels"].dtype == np.int64
        assert f["train/images"].chunks == (32, 1, 28, 28)
        assert f["train/images"].compression == "gzip"
        assert f.attrs["source"] == "test"
        x = f["train/images"][:].astype(np.float64) / 255
    info = inspect_file(h5_file)
    assert info["attrs"]["mean"] == pytest.approx(x.mean())
    assert info["attrs"]["std"] == pytest.approx(x.std(ddof=1))


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_samples_as_in_memory_path(idx_dir: Path, h5_file: Path, workers: int) -> None:
    memory = IdxDataModule(data_dir=str(idx_dir), val_size=VAL, flip=False, eval_batch_size=50)
    memory.setup()
    dm = Hdf5DataModule(
        path=str(h5_file),
        val_size=VAL,
        flip=False,
        num_workers=workers,
        batch_size=40,
        eval_batch_size=50,
        mean=memory.mean,
        std=memory.std,
    )
    dm.setup()
    for split in ("val", "test"):
        x, y = collect(getattr(dm, f"{split}_dataloader")())
        xm, ym = collect(getattr(memory, f"{split}_dataloader")())
        assert torch.equal(y, ym) and torch.equal(x, xm), split
    # the training rows, in order (the train loader itself shuffles)
    ordered = torch.utils.data.DataLoader(
        dm.dataset("train"), batch_size=64, collate_fn=lambda b: b, num_workers=workers
    )
    x, y = collect(ordered)
    xm, ym = memory.tensors("train")
    assert torch.equal(x, xm) and torch.equal(y, ym)


def test_train_loader_epoch_covers_train_rows_with_augmentation(h5_file: Path) -> None:
    dm = Hdf5DataModule(
        path=str(h5_file), val_size=VAL, num_workers=0, batch_size=64, crop_padding=2
    )
    dm.setup()
    x, y = collect(dm.train_dataloader())
    assert x.shape == (N_TRAIN - VAL, 1, 28, 28) and x.dtype == torch.float32
    rows = dm.dataset("train").indices
    with h5py.File(h5_file, "r") as f:
        labels = f["train/labels"][:]
    assert sorted(y.tolist()) == sorted(labels[rows].tolist())
    assert dm.mean == pytest.approx(inspect_file(h5_file)["attrs"]["mean"])


def test_read_rows_any_order_and_repeats(h5_file: Path) -> None:
    ds = Hdf5Dataset(h5_file, "train", np.arange(N_TRAIN), 0.0, 1.0)
    with h5py.File(h5_file, "r") as f:
        full = f["train/images"][:]
    for rows in ([5, 3, 4, 3], [299, 0, 150], list(range(40, 80))):
        x, _ = ds.read_rows(np.array(rows))
        assert np.array_equal(x, full[rows])


def test_handle_opened_lazily_and_reopened_after_fork(h5_file: Path) -> None:
    ds = Hdf5Dataset(h5_file, "test", np.arange(N_TEST), 0.0, 1.0)
    assert ds._file is None  # nothing opened in __init__
    ds.__getitems__([0, 1])
    assert ds._file is not None and ds._pid == os.getpid()
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert clone._file is None
    ds._pid = -1  # as seen from a forked child: the pid no longer matches
    old = ds._file
    ds.__getitems__([2])
    assert ds._file is not old and ds._pid == os.getpid()


def test_stats_computed_when_file_has_none(tmp_path: Path, arrays) -> None:
    path = write_hdf5(tmp_path / "plain.h5", arrays, "test", [])
    with h5py.File(path, "a") as f:
        del f.attrs["mean"], f.attrs["std"]
    dm = Hdf5DataModule(path=str(path), val_size=VAL, num_workers=0)
    dm.setup()
    rows = dm.dataset("train").indices
    expected = arrays["train"][0][rows].astype(np.float64) / 255
    assert dm.mean == pytest.approx(expected.mean()) and dm.std == pytest.approx(
        expected.std(ddof=1)
    )


def test_missing_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found.*\.venv/bin/python scripts/to_hdf5\.py"):
        Hdf5DataModule(path=str(tmp_path / "nope.h5"), num_workers=0)


def test_missing_key_lists_present_keys(tmp_path: Path) -> None:
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        f["train/images"] = np.zeros((4, 1, 2, 2), np.uint8)
        f["train/labels"] = np.zeros(4, np.int64)
    with pytest.raises(DataError, match=r"no dataset 'test/images'.*train/images, train/labels"):
        inspect_file(path)


def test_splits_of_different_image_shapes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        for split, side in (("train", 4), ("test", 5)):
            f[f"{split}/images"] = np.zeros((3, 1, side, side), np.uint8)
            f[f"{split}/labels"] = np.zeros(3, np.int64)
    with pytest.raises(DataError, match=r"test/images are \(1, 5, 5\) but train/images"):
        inspect_file(path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    path.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(DataError, match="not an HDF5 file"):
        Hdf5DataModule(path=str(path), num_workers=0)


def test_val_size_too_large_refused_when_made(h5_file: Path) -> None:
    with pytest.raises(ConfigError, match=f"val_size={N_TRAIN} leaves no training images"):
        Hdf5DataModule(path=str(h5_file), val_size=N_TRAIN, num_workers=0)


def test_default_val_size_fits_a_small_file_and_shape_comes_from_the_header(h5_file: Path):
    dm = Hdf5DataModule(path=str(h5_file), num_workers=0)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, [28, 28])
    assert dm.class_names == [str(i) for i in range(10)]
    dm.setup()
    assert len(dm.dataset("val")) == round(0.1 * N_TRAIN)
    assert len(dm.dataset("train")) == N_TRAIN - round(0.1 * N_TRAIN)
    info = dm.source_info
    assert info["files"] == [h5_file.name] and len(info["sha256"]) == 64


def test_mean_without_std_refused(h5_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.mean and data\.std go together"):
        Hdf5DataModule(path=str(h5_file), mean=0.3)


def compose_data(tmp_path: Path, *overrides: str):
    from lightspeed.plan import compose

    return compose([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", *overrides])


def test_config_composes_and_checks(tmp_path: Path) -> None:
    cfg = compose_data(tmp_path, "data=hdf5", "data.num_workers=1", "data.prefetch_factor=4")
    assert cfg.data.path == f"{tmp_path}/data/fashion_mnist.h5"
    validate(cfg)
    with pytest.raises(ConfigError, match=r"data\.num_workers"):
        validate(compose_data(tmp_path, "data=hdf5", "data.num_workers=-1"))
    with pytest.raises(ConfigError, match=r"unknown key 'data\.pth'"):
        validate(compose_data(tmp_path, "data=hdf5", "+data.pth=x"))


def test_auto_workers_is_half_the_cores(h5_file: Path) -> None:
    from lightspeed.hardware import usable_cores

    dm = Hdf5DataModule(path=str(h5_file))
    assert dm.loader.num_workers == max(1, min(usable_cores() // 2, 8))
    assert dm.loader.persistent_workers and dm.loader.prefetch_factor == 2


def test_to_hdf5_script_converts_idx(tmp_path: Path, idx_dir: Path, arrays) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("to_hdf5", ROOT / "scripts/to_hdf5.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out.h5"
    argv = ["--source", "fashion_mnist", "--data-dir", str(idx_dir), "--out", str(out)]
    assert script.main([*argv, "--compression", "lzf"]) == 0
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["test/images"][:, 0], arrays["test"][0])
        assert f["train/images"].compression == "lzf"
        assert "Ankle boot" in f.attrs["class_names"]
    assert script.main(["--source", "folder", "--out", str(out)]) == 2  # no --folder given
