"""Image-folder path: shape from the folder, resize + normalise, the train/val split, skipping an
unreadable file, and one-line errors for folders that contradict the settings."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightspeed.data.image_folder import ImageFolderDataModule
from lightspeed.errors import ConfigError, DataError

Image = pytest.importorskip("PIL.Image")
ROOT = Path(__file__).resolve().parents[2]
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
    assert dm.class_names == list(CLASSES) and dm.num_classes == 2
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
    with pytest.raises(DataError, match="none of the images can be read"):
        ImageFolderDataModule(data_dir=str(tmp_path / "bad"), val_size=0)  # size auto
    dm = ImageFolderDataModule(
        data_dir=str(tmp_path / "bad"), image_size=[4, 4], channels=1, val_size=0, num_workers=0
    )
    dm.setup()
    with pytest.raises(DataError, match="unreadable"):
        next(iter(dm.train_dataloader()))


def write_images(root: Path, shape: tuple[int, ...], per_class: int = 3, classes=CLASSES) -> Path:
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(("shape", "channels"), [((32, 32, 3), 3), ((20, 24), 1)])
def test_shape_comes_from_the_first_image(tmp_path: Path, shape, channels: int) -> None:
    """RGB 32x32 (or grayscale, any size) class folders need no shape settings."""
    write_images(tmp_path / "train", shape, per_class=5)
    dm = ImageFolderDataModule(data_dir=str(tmp_path), val_size=0.2, batch_size=4, num_workers=0)
    assert dm.in_channels == channels and dm.image_size == list(shape[:2])
    assert dm.num_classes == 2 and dm.class_names == list(CLASSES)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, channels, *shape[:2])
    assert len(dm.dataset("val")) == 2 and len(dm.dataset("test")) == 2  # test falls back to val
    info = dm.source_info
    assert info["files"] == ["train"] and info["num_files"] == 10 and len(info["sha256"]) == 64


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    write_images(tmp_path / "train", (8, 8, 3))
    (tmp_path / "train" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"train/zebra: class folder holds no images") as err:
        ImageFolderDataModule(data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


def test_val_class_missing_from_train_is_named(tmp_path: Path) -> None:
    write_images(tmp_path / "train", (8, 8, 3))
    write_images(tmp_path / "val", (8, 8, 3), classes=("cat", "cow"))
    with pytest.raises(DataError, match=r"val/cow: class 'cow' has no folder in .*train"):
        ImageFolderDataModule(data_dir=str(tmp_path))


def test_val_labels_follow_train_classes(tmp_path: Path) -> None:
    write_images(tmp_path / "train", (8, 8, 3))
    write_images(tmp_path / "val", (8, 8, 3), per_class=2, classes=("dog",))
    dm = ImageFolderDataModule(data_dir=str(tmp_path), num_workers=0)
    dm.setup()
    labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert labels.tolist() == [CLASSES.index("dog")] * 2


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"image_size": [0, 4]}, "data.image_size=[0, 4] must be [height, width]"),
        ({"mean": [0.1, 0.2]}, "data.mean=[0.1, 0.2] needs 1 or 3 values"),
        ({"std": 0.0}, "data.std=0.0 must be > 0"),
        ({"val_size": 6}, "data.val_size=6 leaves no training images of the 6"),
        ({"val_size": 1.5}, "data.val_size=1.5 must be a count >= 0 or a fraction < 1"),
        ({"num_workers": 0, "prefetch_factor": 4}, "data.prefetch_factor=4 needs worker"),
    ],
)
def test_settings_that_contradict_the_folder(tmp_path: Path, settings: dict, fragment: str):
    write_images(tmp_path / "train", (8, 8, 3))
    with pytest.raises(ConfigError) as err:
        ImageFolderDataModule(data_dir=str(tmp_path), **settings)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_batches_that_would_exhaust_memory(tmp_path: Path) -> None:
    write_images(tmp_path / "train", (8, 8, 3))
    dm = ImageFolderDataModule(data_dir=str(tmp_path), image_size=[20000, 20000])
    with pytest.raises(ConfigError, match=r"one batch of 256 images of 3x20000x20000 takes"):
        dm.setup()


def test_missing_train_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train/<class>"):
        ImageFolderDataModule(data_dir=str(tmp_path))


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
    assert proc.stdout.startswith(f"{len(files)} images resized to 10x14 in {out}; ")
    with Image.open(files[0]) as im:
        assert im.size == (14, 10)

    # a rerun finds every output newer than its source: it says it resized none (not all again)
    rerun = subprocess.run(proc.args, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == (
        f"0 images resized to 10x14 in {out}; {len(files)} already up to date; 1 unreadable"
    )


def test_rgb_folders_train_with_no_shape_overrides(tmp_path: Path, cfg_factory) -> None:
    """`lightspeed data=image_folder data.data_dir=...` on RGB 32x32 class folders, as printed."""
    from lightspeed.session import run_task

    root = tmp_path / "mine"
    write_images(root / "train", (32, 32, 3), per_class=8, classes=("ant", "bee", "cow"))
    cfg = cfg_factory(["data=image_folder", f"data.data_dir={root}", "debug=fdr"])
    summary = run_task(cfg)
    assert summary["data_source"]["path"] == str(root)
    assert summary["data_source"]["num_files"] == 24
