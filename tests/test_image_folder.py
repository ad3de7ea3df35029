"""Image-folder path: resize + normalise, the train/val split, and skipping an unreadable file."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightspeed.config import validate
from lightspeed.data.image_folder import ImageFolderDataModule
from lightspeed.errors import ConfigError, DataError

Image = pytest.importorskip("PIL.Image")
ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog")
PER_CLASS = 6


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """``train/{cat,dog}/*.png`` of mixed sizes, one of them corrupt; a 2-per-class ``test/``."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, n in (("train", PER_CLASS), ("test", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = 20 + 3 * i, 30 - 2 * i
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // 2 + 100 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_batches_resized_normalised_and_corrupt_file_skipped(image_root: Path, caplog) -> None:
    dm = ImageFolderDataModule(
        data_dir=str(image_root),
        image_size=[16, 12],
        channels=3,
        mean=[0.5],
        std=[0.25],
        val_size=3,
        batch_size=4,
        num_workers=0,
    )
    dm.setup()
    assert dm.classes == list(CLASSES) and dm.num_classes == 2
    with caplog.at_level(logging.WARNING):
        seen = 0
        for x, y in dm.train_dataloader():
            assert x.shape[1:] == (3, 16, 12) and x.dtype == torch.float32
            assert y.dtype == torch.int64
            seen += len(y)
        val = sum(len(y) for _, y in dm.val_dataloader())
    total = 2 * PER_CLASS + 1  # the corrupt file is listed by ImageFolder
    assert seen + val == total - 1 and dm.skipped_images == 1
    assert "broken.png" in caplog.text
    x, _ = next(iter(dm.test_dataloader()))
    # pixels in [0, 1] after (p - 0.5) / 0.25 land in [-2, 2]
    assert x.min() >= -2 - 1e-6 and x.max() <= 2 + 1e-6
    dm.teardown()
    assert "skipped 1 unreadable" in caplog.text


def test_corrupt_file_counted_once_with_workers(image_root: Path) -> None:
    dm = ImageFolderDataModule(
        data_dir=str(image_root),
        image_size=[8],
        channels=1,
        val_size=0,
        batch_size=5,
        num_workers=2,
        persistent_workers=True,
    )
    dm.setup()
    loader = dm.train_dataloader()
    for _ in range(2):  # two epochs, same workers: still one skipped file
        n = sum(len(y) for x, y in loader if x.shape[1:] == (1, 8, 8))
        assert n == 2 * PER_CLASS
    assert dm.skipped_images == 1


def test_all_unreadable_batch_fails_naming_the_problem(tmp_path: Path) -> None:
    folder = tmp_path / "bad" / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "x.png").write_bytes(b"nope")
    dm = ImageFolderDataModule(data_dir=str(tmp_path / "bad"), val_size=0, num_workers=0)
    dm.setup()
    with pytest.raises(DataError, match="unreadable"):
        next(iter(dm.train_dataloader()))


def test_missing_train_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train/<class>"):
        ImageFolderDataModule(data_dir=str(tmp_path), num_workers=0).setup()


def test_schema(tmp_path: Path) -> None:
    from lightspeed.cli import compose

    base = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", "data=image_folder"]
    validate(compose(base))
    with pytest.raises(ConfigError, match=r"data\.mean"):
        validate(compose([*base, "data.mean=[0.1,0.2]"]))
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        validate(compose([*base, "data.image_size=[0,4]"]))


def test_resize_images_script(image_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/resize_images.py"),
            str(image_root),
            str(out),
            "--size",
            "10",
            "14",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "broken.png" in proc.stderr and "1 unreadable" in proc.stdout
    files = sorted(out.rglob("*.png"))
    assert len(files) == 2 * PER_CLASS + 4
    with Image.open(files[0]) as im:
        assert im.size == (14, 10)
