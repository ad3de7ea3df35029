"""The DataModule base and the loader rules: what a new DataModule writes, and the one
torch-free check of the loader knobs (the config check calls the same function)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from lightspeed.data.base import ImageDataModule
from lightspeed.data.loading import check_loader_settings, resolve_loader_settings
from lightspeed.errors import ConfigError, DataError
from lightspeed.hardware import usable_cores


class ArrayDataModule(ImageDataModule):
    """The smallest DataModule: random tensors, its own settings + the base's knobs."""

    in_memory = True

    def __init__(self, n: int = 40, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.num_classes, self.in_channels, self.image_size = 3, 2, [6, 5]
        self.class_names = ["a", "b", "c"]

    def load_splits(self) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.n, 2, 6, 5, generator=g)
        y = torch.randint(0, 3, (self.n,), generator=g)
        train, val = self.split_rows(self.n)
        self.set_split("train", (x[train], y[train]))
        self.set_split("val", (x[val], y[val]))
        self.set_split("test", (x, y))


def test_a_new_data_module_writes_its_data_only() -> None:
    dm = ArrayDataModule(val_size=0.25, batch_size=8, flip=True)
    dm.setup()
    dm.setup("test")  # later stages reuse the splits
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and batches[0][0].shape == (8, 2, 6, 5)
    assert len(dm.dataset("val")) == 10
    assert [len(y) for _, y in dm.predict_dataloader()] == [40]  # predict reads test


def test_split_that_breaks_the_declared_shape() -> None:
    dm = ArrayDataModule()
    with pytest.raises(DataError, match=r"images of \(2, 6, 6\) but .* = \(2, 6, 5\)"):
        dm.set_split("train", (torch.zeros(4, 2, 6, 6), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(DataError, match=r"labels 0\.\.3 but num_classes=3"):
        dm.set_split("train", (torch.zeros(4, 2, 6, 5), torch.arange(4)))


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"num_workers": 0, "prefetch_factor": 4}, "data.prefetch_factor=4 needs worker"),
        ({"num_workers": 0, "persistent_workers": True}, "data.persistent_workers=true keeps"),
        ({"num_workers": 10_000}, "data.num_workers=10000 is more than 4x the"),
    ],
)
def test_loader_rules(settings: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_loader_settings(**settings)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"num_workers": "auto", "prefetch_factor": 4, "persistent_workers": True},
        {"num_workers": 2, "prefetch_factor": 4, "_target_": "x", "batch_size": 3},
        {"num_workers": 0, "prefetch_factor": "auto", "persistent_workers": "auto"},
    ],
)
def test_loader_rules_pass(settings: dict) -> None:
    check_loader_settings(**settings)


def test_auto_resolution() -> None:
    file_backed = resolve_loader_settings(
        "auto", "auto", "auto", "auto", in_memory=False, cuda=True
    )
    assert file_backed.num_workers == max(1, min(usable_cores() // 2, 8))
    assert file_backed.pin_memory and file_backed.persistent_workers
    assert file_backed.prefetch_factor == 2
    memory = resolve_loader_settings("auto", "auto", "auto", "auto", in_memory=True, cuda=True)
    assert memory.as_kwargs() == {
        "num_workers": 0,
        "pin_memory": False,
        "persistent_workers": False,
    }


def test_loader_rules_import_no_torch() -> None:
    """The config check calls check_loader_settings before torch is imported."""
    code = (
        "import sys; from lightspeed.data.loading import check_loader_settings; "
        "check_loader_settings(num_workers=1); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("threads", [1, 3])
def test_pixel_stats_are_exact_over_chunks_counted_side_by_side(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The histogram's mean/std equal numpy's over all the pixels, however many chunks are
    counted at once; no more chunks are read ahead than are counted."""
    from lightspeed.data.stats import pixel_stats

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    counted: list[int] = []
    bincount = torch.bincount

    def counting(*args, **kwargs):
        out = bincount(*args, **kwargs)
        counted.append(1)
        return out

    monkeypatch.setattr(torch, "bincount", counting)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1000, 7, 5), dtype=np.uint8)
    read: list[int] = []

    def chunks():
        for i in range(0, len(images), 97):  # uneven: the last chunk is short
            assert len(read) - len(counted) <= threads  # chunks held: at most one per thread
            read.append(i)
            yield images[i : i + 97]

    mean, std = pixel_stats(chunks())
    pixels = images.astype(np.float64) / 255
    assert mean == pytest.approx(pixels.mean(), abs=1e-12)
    assert std == pytest.approx(pixels.std(ddof=1), abs=1e-12)
    assert len(read) == len(counted) == 11
    with pytest.raises(DataError, match="no training images"):
        pixel_stats(iter([]))
