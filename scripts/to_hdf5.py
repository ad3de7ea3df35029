"""Converts Fashion-MNIST, MNIST or an image folder into one HDF5 file for ``data=hdf5``.

    .venv/bin/python scripts/to_hdf5.py --source fashion_mnist --out data/fashion_mnist.h5
    .venv/bin/python scripts/to_hdf5.py --source mnist --out data/mnist.h5 --compression lzf
    .venv/bin/python scripts/to_hdf5.py --source folder --folder path/to/images --size 64 \\
        --channels 3 --out data/images.h5

The IDX files are found as ``data=fashion_mnist`` finds them: only in ``--data-dir`` when it
is given, else in ``--cache-dir`` (default ``data/``) and then the system copy.

An image folder holds one subfolder per class (``cat/``, ``dog/``...), either directly or under
``train/`` and ``test/``; without ``test/`` a ``--test-fraction`` of each class is held out
(fixed ``--seed``). Every image is resized to ``--size`` once here, so training never resizes.
Unreadable images are skipped and counted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from lightspeed.data.hdf5 import write_hdf5
from lightspeed.data.image_folder import list_images, open_image
from lightspeed.errors import UserError
from myproject.idx import read_idx_pair
from myproject.sources import SOURCES, locate

log = logging.getLogger("to_hdf5")


def from_idx(name: str, data_dir: str | None, cache_dir: str) -> tuple[dict, list[str]]:
    """The train/test arrays of an IDX data set found by :func:`myproject.sources.locate`."""
    found = locate(SOURCES[name], data_dir, cache_dir, download=False)
    splits = {split: read_idx_pair(*found.files[split]) for split in ("train", "test")}
    return splits, list(SOURCES[name].class_names)


def load_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray | None:
    """``[C, H, W]`` uint8 of one image resized to ``size`` (H, W), or None if unreadable."""
    from PIL import Image

    try:
        im = open_image(path, mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
        log.warning("skipping unreadable image %s (%s)", path, e)
        return None
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def read_classes(root: Path, classes: list[str], size, mode) -> tuple[list, list, int]:
    images, labels, skipped = [], [], 0
    for label, name in enumerate(classes):
        folder = root / name
        for p in list_images(folder) if folder.is_dir() else []:
            a = load_image(p, size, mode)
            if a is None:
                skipped += 1
                continue
            images.append(a)
            labels.append(label)
    return images, labels, skipped


def from_folder(
    folder: str, size: tuple[int, int], channels: int, test_fraction: float, seed: int
) -> tuple[dict, list[str]]:
    """Train/test arrays of a class-subfolder image tree (see the module docstring)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--folder {root}: no such folder")
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = sorted(d.name for d in train_root.iterdir() if d.is_dir() and d.name != "test")
    if not classes:
        raise UserError(f"{train_root}: no class subfolders (expected e.g. {train_root}/cat/*.png)")
    mode = "L" if channels == 1 else "RGB"
    x, y, skipped = read_classes(train_root, classes, size, mode)
    if (root / "test").is_dir():
        xt, yt, more = read_classes(root / "test", classes, size, mode)
        skipped += more
        splits = {"train": (np.stack(x), np.array(y)), "test": (np.stack(xt), np.array(yt))}
    else:
        x, y = np.stack(x), np.array(y)
        rng = np.random.default_rng(seed)
        test_mask = np.zeros(len(y), dtype=bool)
        for c in range(len(classes)):  # per class, so every class appears in both splits
            rows = np.flatnonzero(y == c)
            n = round(len(rows) * test_fraction)
            test_mask[rng.choice(rows, size=n, replace=False)] = True
        splits = {"train": (x[~test_mask], y[~test_mask]), "test": (x[test_mask], y[test_mask])}
    if skipped:
        log.warning("skipped %d unreadable image(s)", skipped)
    return splits, classes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--source", choices=["fashion_mnist", "mnist", "folder"], default="fashion_mnist"
    )
    ap.add_argument("--out", required=True, help="HDF5 file to write")
    ap.add_argument("--data-dir", help="a folder holding the IDX files (then only it is used)")
    ap.add_argument("--cache-dir", default="data", help="searched before the system copy")
    ap.add_argument("--folder", help="image folder (with --source folder)")
    ap.add_argument("--size", type=int, nargs="+", default=[28], help="H [W] for folder images")
    ap.add_argument("--channels", type=int, choices=[1, 3], default=3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=256, help="images per HDF5 chunk (about a batch)")
    ap.add_argument("--compression", choices=["none", "gzip", "lzf"], default="none")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.source == "folder":
            if not args.folder:
                raise UserError("--source folder needs --folder PATH")
            size = (args.size[0], args.size[-1])
            splits, classes = from_folder(
                args.folder, size, args.channels, args.test_fraction, args.seed
            )
            source = f"folder:{Path(args.folder).resolve()}"
        else:
            splits, classes = from_idx(args.source, args.data_dir, args.cache_dir)
            source = args.source
        compression = None if args.compression == "none" else args.compression
        out = write_hdf5(args.out, splits, source, classes, args.chunk, compression)
    except UserError as e:
        print(f"to_hdf5: error: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k} {v[0].shape}" for k, v in splits.items())
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
