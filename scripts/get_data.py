"""Makes Fashion-MNIST available: `make data`.

Order: already in data/ (``--cache-dir``) or the system copy → done; else torchvision's
download into data/; else, as root with apt-get, install Debian's dataset-fashion-mnist; else
one line naming the three ways. Exit 0 when the data is there. The same search as
``data=fashion_mnist`` with ``data.data_dir`` unset (docs/data.md).

``--image-folder DIR`` also writes a sample of it as PNG class folders (``DIR/train/<class>/``,
``DIR/test/<class>/``), to try ``data=image_folder`` and the image converters on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lightspeed.errors import DataError
from myproject.idx import read_idx_pair
from myproject.sources import SOURCES, Located, locate


def write_image_folder(found: Located, class_names: tuple[str, ...], out: Path, per_class: int):
    """The first ``per_class`` training (and ``per_class // 5`` test) images of each class."""
    from PIL import Image

    for split, count in (("train", per_class), ("test", max(1, per_class // 5))):
        x, y = read_idx_pair(*found.files[split])
        for label, name in enumerate(class_names):
            folder = out / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i, row in enumerate((y == label).nonzero()[0][:count]):
                Image.fromarray(x[row]).save(folder / f"{i:05d}.png")
    print(f"get_data: wrote {per_class} train images per class as PNG under {out}/train")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=sorted(SOURCES))
    parser.add_argument("--cache-dir", default="data", help="searched first; downloads go here")
    parser.add_argument("--image-folder", type=Path, help="also write a PNG class-folder sample")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    args = parser.parse_args()
    source = SOURCES[args.dataset]
    try:
        found = locate(source, cache_dir=args.cache_dir, download=True)
    except DataError as first:
        can_apt = source.apt_package and os.geteuid() == 0 and shutil.which("apt-get")
        if not can_apt:
            print(f"make data: {first}", file=sys.stderr)
            return 1
        print(f"make data: installing {source.apt_package} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", source.apt_package],
            check=False,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            found = locate(source, cache_dir=args.cache_dir, download=False)
        except DataError as e:
            print(f"make data: {e}", file=sys.stderr)
            return 1
    print(f"make data: {source.name} ready in {found.folder} ({found.how})")
    if args.image_folder:
        write_image_folder(found, source.class_names, args.image_folder, args.per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
