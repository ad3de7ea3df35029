"""Shared fixtures: tiny generated IDX data and composed run configs.

The two fixtures most tests need:

``tiny_data``
    A folder with the four Fashion-MNIST-named IDX files (600 train / 200 test images, 28x28
    uint8, 10 classes), generated once per session. Each class is a fixed random pattern plus
    noise, so a model can learn it in a short run. Because all four files are there, the data
    source search stops at this folder and never falls back to the system copy.

``cfg_factory``
    ``cfg_factory(overrides=None, output_dir=None)`` composes ``configs/train.yaml`` the way the
    entry point does and returns a config ready for ``lightspeed.session.run_task`` /
    ``build``: HydraConfig is set, ``paths.output_dir`` is a fresh folder under ``tmp_path``
    (or ``output_dir``), ``paths.root_dir`` is ``tmp_path``, an IDX data set is ``tiny_data``
    with ``val_size=100`` and no download, and progress bars, model summary and config
    printing are off. Overrides are applied on top, so a test can put any of these back.

The suite runs on the CPU wherever it runs, a GPU machine included: its golden losses, exact
resumes and sync counts are CPU facts. It hides CUDA from itself and every process it starts
(``CUDA_VISIBLE_DEVICES=""``) unless ``LIGHTSPEED_TEST_GPU=1``; ``make test-gpu`` sets that and
runs the GPU tests (``tests/engine/test_gpu.py``, marker ``gpu``) alone.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from myproject.idx import write_idx

if os.environ.get("LIGHTSPEED_TEST_GPU") != "1":  # before torch looks for a GPU
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

REPO = Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
TRAIN_SIZE = 600
TEST_SIZE = 200
VAL_SIZE = 100

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def make_images(
    n: int, rng: np.random.Generator, prototypes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images: the prototype of a random class plus noise, with their labels."""
    labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.uint8)
    noise = rng.normal(0.0, 40.0, size=(n, *IMAGE_SHAPE))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def write_tiny_idx(folder: Path, seed: int = 0, train_size: int = TRAIN_SIZE) -> Path:
    """Writes the four gzip IDX files of a small learnable data set into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # One pattern of 4x4-pixel blocks per class, far apart relative to the noise: an MLP
    # separates the classes in a few steps, the small CNN in a few dozen (per-pixel noise
    # patterns, without the blocks, take it hundreds).
    blocks = rng.uniform(0, 255, size=(NUM_CLASSES, IMAGE_SHAPE[0] // 4, IMAGE_SHAPE[1] // 4))
    prototypes = np.kron(blocks, np.ones((4, 4)))
    x, y = make_images(train_size, rng, prototypes)
    xt, yt = make_images(TEST_SIZE, rng, prototypes)
    for name, array in zip(IDX_FILES, (x, y, xt, yt), strict=True):
        write_idx(folder / name, array)
    return folder


def quiet_tiny_run(tiny_data: Path, root: Path) -> list[str]:
    """Overrides for a run (in-process or as a process) on the tiny IDX data under ``root``,
    without progress bar, model summary or config print."""
    return [
        f"data.data_dir={tiny_data}",
        f"data.val_size={VAL_SIZE}",
        "data.download=false",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "extras.print_config=false",
        f"paths.root_dir={root}",
    ]


def project_copy(tmp_path: Path, parts: tuple[str, ...] = ("src", "configs")) -> Path:
    """``parts`` of the checkout (folders or files) copied, its virtual environment linked.

    Files keep their times: ``make`` in the copy sees the linked ``.venv`` as installed."""
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in parts:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=ignore)
        else:
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / part)
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    return root


def copy_environment(root: Path) -> dict[str, str]:
    """The environment of a process in a :func:`project_copy`: its ``src/`` is the package."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LIGHTSPEED_ROOT")}
    env["PYTHONPATH"] = str(root / "src")
    return env


def rgb_class_folders(folder: Path, classes: int = 3, per_class: int = 12) -> None:
    """32x32 RGB PNGs, one colour pattern per class plus noise (learnable in a few steps)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        pattern = rng.integers(0, 255, size=(8, 8, 3))
        for i in range(per_class):
            pixels = np.kron(pattern, np.ones((4, 4, 1))) + rng.normal(0, 20, (32, 32, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            (folder / "train" / f"class_{c}").mkdir(parents=True, exist_ok=True)
            image.save(folder / "train" / f"class_{c}" / f"{i}.png")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the tiny IDX data set (shared by the session: tests must not modify it)."""
    return write_tiny_idx(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_hdf5(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """The tiny IDX data set as one HDF5 file (``data=hdf5``)."""
    from lightspeed.data.hdf5 import write_hdf5
    from myproject.idx import read_idx_pair

    splits = {
        split: read_idx_pair(tiny_data / images, tiny_data / labels)
        for split, images, labels in (("train", *IDX_FILES[:2]), ("test", *IDX_FILES[2:]))
    }
    path = tmp_path_factory.mktemp("tiny_hdf5") / "tiny.h5"
    return write_hdf5(path, splits, "tiny", [f"class {c}" for c in range(NUM_CLASSES)])


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of 16x16 RGB PNGs, 3 classes of 8 images (``data=image_folder``)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_images")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / "train" / f"class_{c}").mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / "train" / f"class_{c}" / f"{i}.png")
    return root


@pytest.fixture
def cfg_factory(
    tmp_path: Path, tiny_data: Path, tiny_hdf5: Path, tiny_images: Path
) -> Iterator[Callable[..., DictConfig]]:
    """Returns ``make(overrides=None, output_dir=None)`` → a composed, run-ready DictConfig.

    Each call gets its own output folder (``tmp_path/run<N>`` unless ``output_dir`` is given),
    so one test can make a fit run and then a validate run without them sharing files.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightspeed.plan import compose_for_run

    counter = iter(range(1_000_000))
    # Each data module's keys that point at data: set to the tiny data unless the test sets them.
    tiny = {
        "IdxDataModule": {"data_dir": str(tiny_data), "val_size": VAL_SIZE},
        "Hdf5DataModule": {"path": str(tiny_hdf5)},
        "ImageFolderDataModule": {"data_dir": str(tiny_images)},
    }

    def make(overrides: list[str] | None = None, output_dir: str | Path | None = None):
        overrides = list(overrides or [])
        base = [
            "++callbacks.progress_bar=null",  # ++: also when a callbacks option lacks it
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "extras.print_config=false",
            f"paths.root_dir={tmp_path}",
        ]
        out = Path(output_dir) if output_dir else tmp_path / f"run{next(counter)}"
        cfg = compose_for_run([*base, *overrides], out)
        with open_dict(cfg):
            for key, value in tiny.get(cfg.data._target_.rsplit(".", 1)[-1], {}).items():
                if not any(o.lstrip("+").startswith(f"data.{key}=") for o in overrides):
                    cfg.data[key] = value
        return cfg

    yield make
    # HydraConfig is a process-wide singleton: leave it empty for the next test.
    HydraConfig.instance().cfg = None


@pytest.fixture(autouse=True)
def _root_logging_as_it_was() -> Iterator[None]:
    """Handlers that a test's in-process run added to the root logger (Hydra's job logging, a
    sweep's console) go after it: left there, they write to that test's closed capture stream
    and every later log line prints a "Logging error" to the next test's stderr."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
