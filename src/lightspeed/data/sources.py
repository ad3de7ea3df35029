"""Where IDX data sets come from: the configured folder, the system copy, or a download.

Order (first that works wins): ``data_dir`` → the Debian package's copy under
``/usr/share/datasets/<name>/`` → torchvision's download into ``data_dir``. Nothing is
downloaded when a local copy exists, so tests and offline machines never touch the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lightspeed.errors import DataError

log = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    """An IDX data set: its folder names and how to get it.

    Attributes:
        name: key used in configs (``fashion_mnist``).
        torchvision_class: class in ``torchvision.datasets`` that can download it.
        system_dir: where a distribution package installs it, if one does.
        apt_package: that package's name, for the error message and ``make data``.
    """

    name: str
    torchvision_class: str
    system_dir: str | None
    apt_package: str | None
    num_classes: int = 10


SOURCES = {
    "fashion_mnist": IdxSource(
        "fashion_mnist",
        "FashionMNIST",
        "/usr/share/datasets/fashion-mnist",
        "dataset-fashion-mnist",
    ),
    "mnist": IdxSource("mnist", "MNIST", "/usr/share/datasets/mnist", None),
}

SplitFiles = dict[str, tuple[Path, Path]]


def _find_in(folder: Path) -> SplitFiles | None:
    """Returns the four files if all are in ``folder`` (raw or .gz), else None."""
    found: SplitFiles = {}
    for split, names in SPLIT_FILES.items():
        paths = []
        for name in names:
            hit = next((folder / n for n in (name, name + ".gz") if (folder / n).is_file()), None)
            if hit is None:
                return None
            paths.append(hit)
        found[split] = (paths[0], paths[1])
    return found


def candidate_dirs(source: IdxSource, data_dir: str | Path) -> list[Path]:
    """Folders searched, in order: data_dir itself, its torchvision layout, the system copy."""
    data_dir = Path(data_dir)
    dirs = [data_dir, data_dir / source.torchvision_class / "raw", data_dir / source.name]
    if source.system_dir:
        dirs.append(Path(source.system_dir))
    return dirs


def locate(source: IdxSource, data_dir: str | Path, download: bool = True) -> SplitFiles:
    """Finds the train/test IDX files of ``source``, downloading them only as a last resort.

    Raises:
        DataError: no local copy and the download failed (or was not allowed); the message
            names all three ways to get the data.
    """
    for folder in candidate_dirs(source, data_dir):
        files = _find_in(folder)
        if files:
            log.debug("using %s from %s", source.name, folder)
            return files
    reason = "download disabled (data.download=false)"
    if download:
        try:
            import torchvision.datasets as tvd

            getattr(tvd, source.torchvision_class)(str(data_dir), train=True, download=True)
            getattr(tvd, source.torchvision_class)(str(data_dir), train=False, download=True)
            files = _find_in(Path(data_dir) / source.torchvision_class / "raw")
            if files:
                return files
            reason = "download finished but the files are not where torchvision puts them"
        except Exception as e:  # network errors come in many types; all mean the same here
            reason = f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    system = (
        f"install the system copy (apt-get install {source.apt_package} → {source.system_dir})"
        if source.apt_package
        else "no system package exists for it"
    )
    raise DataError(
        f"{source.name} not found: put the 4 IDX files in data.data_dir={data_dir}, or {system}, "
        f"or allow torchvision's download on a machine with internet ({reason})"
    )
