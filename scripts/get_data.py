"""Makes Fashion-MNIST available: `make data`.

Order: already in data/ or the system copy → done; else torchvision's download into data/;
else, as root with apt-get, install Debian's dataset-fashion-mnist; else one line naming the
three ways. Exit 0 when the data is there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from lightspeed.data.sources import SOURCES, locate
from lightspeed.errors import DataError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=sorted(SOURCES))
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    source = SOURCES[args.dataset]
    try:
        files = locate(source, args.data_dir, download=True)
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
            files = locate(source, args.data_dir, download=False)
        except DataError as e:
            print(f"make data: {e}", file=sys.stderr)
            return 1
    print(f"make data: {source.name} ready in {files['train'][0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
