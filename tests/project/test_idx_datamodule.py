"""IdxDataModule and where its files come from: a named data_dir is used alone or refused, the
source used is recorded with a checksum, and settings that contradict the data are one line."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lightspeed.contracts import DATA_METHODS, missing_methods
from lightspeed.data.memory import InMemoryBatchLoader
from lightspeed.errors import ConfigError, DataError
from myproject.idx import write_idx
from myproject.idx_datamodule import IdxDataModule
from myproject.sources import SOURCES, IdxSource, locate

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def test_shape_known_before_any_file_is_read(tmp_path: Path) -> None:
    dm = IdxDataModule(cache_dir=str(tmp_path), download=False)  # nothing there: not read yet
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, [28, 28])
    assert dm.class_names[-1] == "Ankle boot"
    assert missing_methods(dm, DATA_METHODS) == []  # what the engine calls
    assert IdxDataModule(dataset="mnist", cache_dir=str(tmp_path)).class_names[3] == "3"


def test_named_data_dir_is_used_and_recorded(tiny_data: Path) -> None:
    dm = IdxDataModule(data_dir=str(tiny_data), val_size=100)
    dm.setup()
    info = dm.source_info
    assert info["path"] == str(tiny_data) and info["found_in"] == "data_dir"
    assert sorted(info["files"]) == sorted(p.name for p in tiny_data.iterdir())
    assert len(info["sha256"]) == 64 and info["covers"] == "contents"
    x, y = dm.tensors("train")
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3  # normalised once


def test_checksum_changes_with_the_files(tiny_data: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_data, tmp_path / "copy")
    digest = locate_checksum(copy)
    assert digest == locate_checksum(tiny_data)
    labels = np.zeros(600, np.uint8)
    write_idx(copy / "train-labels-idx1-ubyte.gz", labels)
    assert locate_checksum(copy) != digest


def locate_checksum(folder: Path) -> str:
    dm = IdxDataModule(data_dir=str(folder), val_size=100)
    dm.setup()
    return dm.source_info["sha256"]


def test_partial_set_in_named_dir_is_refused_at_once(tiny_data: Path, tmp_path: Path) -> None:
    """Never a silent fall back to the system copy: the missing files are named."""
    partial = tmp_path / "mine"
    partial.mkdir()
    for name in (TRAIN_IMAGES, "train-labels-idx1-ubyte.gz"):
        shutil.copy(tiny_data / name, partial)
    with pytest.raises(DataError) as err:
        IdxDataModule(data_dir=str(partial))
    one_line(err, "incomplete IDX set", str(partial), "t10k-images-idx3-ubyte[.gz]")


@pytest.mark.parametrize("exists", [True, False])
def test_named_dir_without_files_is_refused(tmp_path: Path, exists: bool) -> None:
    folder = tmp_path / "empty"
    if exists:
        folder.mkdir()
    with pytest.raises(DataError) as err:
        IdxDataModule(data_dir=str(folder))
    state = "holds none of its" if exists else "is not a folder with the"
    one_line(err, "fashion_mnist not found", f"data.data_dir={folder} {state} 4 IDX files")


def test_corrupt_file_in_named_dir_names_the_file(tiny_data: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_data, tmp_path / "broken")
    raw = gzip.decompress((broken / TRAIN_IMAGES).read_bytes())
    (broken / TRAIN_IMAGES).write_bytes(gzip.compress(raw[:-50]))
    dm = IdxDataModule(data_dir=str(broken))
    with pytest.raises(DataError) as err:
        dm.setup()
    one_line(err, str(broken / TRAIN_IMAGES), "truncated")


def test_torchvision_layout_under_named_dir(tiny_data: Path, tmp_path: Path) -> None:
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    shutil.copytree(tiny_data, raw)
    assert locate(SOURCES["fashion_mnist"], tmp_path / "tv").folder == raw


def fake_source(system_dir: Path) -> IdxSource:
    return IdxSource("fake", "FakeData", str(system_dir), None, tuple("abcdefghij"))


def test_search_order_and_partial_cache_refused(tiny_data: Path, tmp_path: Path) -> None:
    source = fake_source(tiny_data)
    cache = tmp_path / "cache"
    cache.mkdir()
    found = locate(source, cache_dir=cache, download=False)
    assert found.folder == tiny_data and found.how == "system copy"
    shutil.copy(tiny_data / TRAIN_IMAGES, cache)  # a half-finished copy in the searched folder
    with pytest.raises(DataError) as err:
        locate(source, cache_dir=cache, download=False)
    one_line(err, "incomplete IDX set", str(cache), "train-labels-idx1-ubyte[.gz]")


def test_nothing_found_names_all_ways(tmp_path: Path) -> None:
    source = fake_source(tmp_path / "not-installed")
    with pytest.raises(DataError) as err:
        locate(source, cache_dir=tmp_path, download=False)
    one_line(err, "fake not found", "data.cache_dir=", "data.data_dir", "download disabled")


def write_set(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def test_files_that_contradict_the_data_set(tmp_path: Path) -> None:
    labels = np.arange(20, dtype=np.uint8) % 10
    wide = write_set(tmp_path / "wide", np.zeros((20, 32, 32), np.uint8), labels)
    with pytest.raises(DataError) as err:
        IdxDataModule(data_dir=str(wide), val_size=2).setup()
    one_line(err, "train-images-idx3-ubyte: images of 32x32 pixels", "are 28x28")
    many = write_set(tmp_path / "many", np.zeros((20, 28, 28), np.uint8), labels + 3)
    with pytest.raises(DataError) as err:
        IdxDataModule(data_dir=str(many), val_size=2).setup()
    one_line(err, "label 12 found", "has 10 classes")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"val_size": 600}, "data.val_size=600 leaves no training images of the 600"),
        ({"crop_padding": 28}, "data.crop_padding=28 must be smaller than the images (28x28)"),
        ({"batch_size": 541, "drop_last": True}, "leaves no training batch (540 training images"),
    ],
)
def test_settings_that_contradict_the_data(tiny_data: Path, settings: dict, fragment: str):
    dm = IdxDataModule(data_dir=str(tiny_data), **settings)
    with pytest.raises(ConfigError) as err:
        dm.setup()
    one_line(err, fragment)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"device": "tpu"}, "data.device=tpu must be cpu or cuda"),
        ({"val_size": -1}, "data.val_size=-1 must be a count >= 0"),
        ({"persistent_workers": True}, "data.num_workers=auto is 0 for in-memory data"),
        ({"num_workers": 0, "prefetch_factor": 2}, "data.prefetch_factor=2 needs worker"),
    ],
)
def test_settings_refused_when_made(tiny_data: Path, settings: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        IdxDataModule(data_dir=str(tiny_data), **settings)
    one_line(err, fragment)


def test_fraction_and_count_hold_out_the_same_rows(tiny_data: Path) -> None:
    by_count = IdxDataModule(data_dir=str(tiny_data), val_size=60)
    by_fraction = IdxDataModule(data_dir=str(tiny_data), val_size=0.1)
    for a, b in zip(by_count.split_rows(600), by_fraction.split_rows(600), strict=True):
        assert torch.equal(a, b)


def test_in_memory_loader_or_workers(tiny_data: Path) -> None:
    memory = IdxDataModule(data_dir=str(tiny_data), val_size=100, batch_size=64, crop_padding=2)
    memory.setup()
    assert memory.uses_memory_loader
    assert isinstance(memory.train_dataloader(), InMemoryBatchLoader)
    workers = IdxDataModule(data_dir=str(tiny_data), val_size=100, batch_size=64, num_workers=1)
    workers.setup()
    assert not workers.uses_memory_loader and workers.loader.persistent_workers
    for dm in (memory, workers):
        x, y = next(iter(dm.train_dataloader()))
        assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
        x, y = next(iter(dm.test_dataloader()))  # in file order: the same batch from both
        assert torch.equal(y, memory.tensors("test")[1][:1024])
    assert len(workers.dataset("val")) == 100


def test_accessors_before_setup_say_so(tiny_data: Path) -> None:
    dm = IdxDataModule(data_dir=str(tiny_data))
    with pytest.raises(RuntimeError, match="call setup"):
        dm.tensors("train")
