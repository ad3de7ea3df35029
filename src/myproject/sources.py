"""Where IDX data sets come from, and what they hold (classes, image size) before any is read.

Two ways to say where (:func:`locate`):

- ``data_dir`` named: that folder, and only it, must hold the four files (directly, or in
  torchvision's ``<Class>/raw/`` or a ``<dataset>/`` subfolder). A partial set or a folder
  without the files is refused; nothing else is searched, nothing is downloaded.
- ``data_dir`` unset: search ``cache_dir`` (same layouts) → the Debian package's copy under
  ``/usr/share/datasets/<name>/`` → torchvision's download into ``cache_dir``.

Either way the first folder that holds *any* of the four files decides: it must hold all four,
and a broken file in it is reported, never skipped for the next folder.
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
FILE_NAMES = [name for pair in SPLIT_FILES.values() for name in pair]


@dataclass(frozen=True)
class IdxSource:
    """An IDX data set: its shape, its folder names and how to get it.

    Attributes:
        name: key used in configs (``fashion_mnist``).
        torchvision_class: class in ``torchvision.datasets`` that can download it.
        system_dir: where a distribution package installs it, if one does.
        apt_package: that package's name, for the error message and ``make data``.
        class_names: one name per label value.
        image_size: ``(height, width)`` of every image.
    """

    name: str
    torchvision_class: str
    system_dir: str | None
    apt_package: str | None
    class_names: tuple[str, ...]
    image_size: tuple[int, int] = (28, 28)


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")  # fmt: skip
SOURCES = {
    "fashion_mnist": IdxSource(
        "fashion_mnist",
        "FashionMNIST",
        "/usr/share/datasets/fashion-mnist",
        "dataset-fashion-mnist",
        FASHION_CLASSES,
    ),
    "mnist": IdxSource(
        "mnist", "MNIST", "/usr/share/datasets/mnist", None, tuple(str(d) for d in range(10))
    ),
}


@dataclass(frozen=True)
class Located:
    """The four files found, the folder holding them, and how it was found."""

    folder: Path
    files: dict[str, tuple[Path, Path]]  # split -> (images, labels)
    how: str  # "data_dir", "cache_dir", "system copy" or "download"

    @property
    def paths(self) -> list[Path]:
        return [p for pair in self.files.values() for p in pair]


def _scan(folder: Path) -> dict[str, Path]:
    """The IDX files present in ``folder``, raw or .gz, by base name."""
    found = {}
    for name in FILE_NAMES:
        hit = next((folder / n for n in (name, name + ".gz") if (folder / n).is_file()), None)
        if hit is not None:
            found[name] = hit
    return found


def layouts(source: IdxSource, folder: str | Path) -> list[Path]:
    """The folder itself, torchvision's layout under it, and a ``<dataset>`` subfolder."""
    folder = Path(folder)
    return [folder, folder / source.torchvision_class / "raw", folder / source.name]


def _first_holding(source: IdxSource, folders: list[Path], key: str, how: str) -> Located | None:
    """The first folder holding any of the files, checked complete; None if none holds one."""
    for folder in folders:
        found = _scan(folder)
        if not found:
            continue
        missing = [n for n in FILE_NAMES if n not in found]
        if missing:
            raise DataError(
                f"{source.name}: incomplete IDX set in {folder} ({key}): missing "
                f"{', '.join(m + '[.gz]' for m in missing)}; add them, or remove the "
                f"{len(found)} file(s) there"
            )
        files = {s: (found[i], found[lb]) for s, (i, lb) in SPLIT_FILES.items()}
        return Located(folder, files, how)
    return None


def locate(
    source: IdxSource,
    data_dir: str | Path | None = None,
    cache_dir: str | Path = "data",
    download: bool = True,
) -> Located:
    """Finds the four IDX files of ``source`` by the rules in the module docstring.

    Raises:
        DataError: a named ``data_dir`` without a complete set, an incomplete set in a
            searched folder, or nothing found and no download; one line that names the folder
            and the missing files, or all three ways to get the data.
    """
    if data_dir is not None:
        hit = _first_holding(source, layouts(source, data_dir), "data.data_dir", "data_dir")
        if hit is None:
            state = "holds none of its" if Path(data_dir).is_dir() else "is not a folder with the"
            raise DataError(
                f"{source.name} not found: data.data_dir={data_dir} {state} 4 IDX files "
                f"({', '.join(n + '[.gz]' for n in FILE_NAMES)}); put them there, or leave "
                "data.data_dir unset to search data.cache_dir and the system copy"
            )
        return hit
    searched = layouts(source, cache_dir)
    hit = _first_holding(source, searched, "data.cache_dir", "cache_dir")
    if hit is None and source.system_dir:
        hit = _first_holding(source, [Path(source.system_dir)], "the system copy", "system copy")
    if hit is not None:
        return hit
    reason = "download disabled (data.download=false)"
    if download:
        reason = _download(source, Path(cache_dir))
        hit = _first_holding(source, searched, "downloaded", "download")
        if hit is not None:
            return hit
    system = (
        f"install the system copy (apt-get install {source.apt_package} → {source.system_dir})"
        if source.apt_package
        else "no system package exists for it"
    )
    raise DataError(
        f"{source.name} not found: put the 4 IDX files in data.cache_dir={cache_dir} (or name "
        f"a folder holding them with data.data_dir), or {system}, or allow torchvision's "
        f"download on a machine with internet ({reason})"
    )


def _download(source: IdxSource, cache_dir: Path) -> str:
    """Runs torchvision's download into ``cache_dir``; returns why it failed, if it did."""
    try:
        import torchvision.datasets as tvd

        for train in (True, False):
            getattr(tvd, source.torchvision_class)(str(cache_dir), train=train, download=True)
    except Exception as e:  # network errors come in many types; all mean the same here
        return f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return "download finished but the files are not where torchvision puts them"
