"""Checkpoint files: what a lightspeed checkpoint holds, atomic writes, and one-line diagnoses
of files that cannot be used.

No torch at import time: the entry point diagnoses a ``ckpt_path`` (:func:`read_plain`) before
torch is loaded. The Lightning side is in :mod:`lightspeed.safety.checkpointing`.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from lightspeed.errors import UserError

CHECKPOINT_KEY = "lightspeed"  # checkpoint[CHECKPOINT_KEY]: run config, commit, seed, versions
FORMAT_VERSION = 1
SHOWN = 3  # names listed per kind of mismatch before "(+N more)"

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickled value of torch's older (pickle) format
# what torch.load(weights_only=True) accepts, besides dtypes/storages/Size/device (module torch)
# and torch._utils._rebuild_* (torch._weights_only_unpickler._get_allowed_globals)
SAFE = {
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": collections.Counter,
    "builtins.set": set,
    "builtins.bytearray": bytearray,
    "builtins.complex": complex,
    "_codecs.encode": codecs.encode,
}
TORCH_SAFE = {"torch.nn.parameter.Parameter", "torch.serialization._get_layout",
              "torch._tensor._rebuild_from_type_v2"}  # fmt: skip


class CheckpointError(UserError):
    """A checkpoint file cannot be used: missing, broken, too new, or for another model."""


class _TorchObject:
    """Stands for a tensor, storage or dtype in a checkpoint read without torch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in SAFE:
            return SAFE[full]
        if module in ("torch", "torch._utils") or full in TORCH_SAFE:
            return _TorchObject
        raise _ForeignObject(full)

    def persistent_load(self, pid: Any) -> Any:
        return _TorchObject()


class _ForeignObject(Exception):
    pass


def read_plain(path: str | Path, lightning: bool = True) -> dict[str, Any]:
    """A checkpoint's plain data (config, counters, schedule state) read without torch.

    Tensors come back as opaque stand-ins. Every way the file can be unusable is one line.

    Raises:
        CheckpointError: missing or empty; not a torch checkpoint (neither torch's zip format
            nor its older pickle format); a truncated zip; Python objects inside (refused by
            ``weights_only`` loading); with ``lightning``, no ``state_dict`` or written by a
            newer lightspeed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); use an earlier checkpoint")
    try:
        with path.open("rb") as f:
            head = f.read(32)
        if head.startswith(ZIP_MAGIC):
            data = _read_zip(path, size)
        elif head.startswith(b"\x80") and LEGACY_MAGIC.to_bytes(10, "little") in head:
            with path.open("rb") as f:
                unpickler = _PlainUnpickler(f)
                unpickler.load(), unpickler.load(), unpickler.load()  # magic, version, sys info
                data = unpickler.load()
        else:
            raise CheckpointError(
                f"{path} is not a torch checkpoint (it starts with {head[:8]!r}, neither torch's "
                "zip format nor its pickle format); give a .ckpt written by lightspeed or Lightning"
            )
    except _ForeignObject as e:
        raise CheckpointError(
            f"checkpoint {path} holds Python objects ({e}), which weights_only loading refuses; "
            "save plain data (dicts, numbers, strings, tensors) instead"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt ({_first_line(e)})") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    if not lightning:
        return data
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'); "
            "give a .ckpt written by lightspeed or Lightning"
        )
    meta = data.get(CHECKPOINT_KEY)
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {version}, newer than this lightspeed "
            f"reads ({FORMAT_VERSION}); upgrade lightspeed to load it"
        )
    return data


def _read_zip(path: Path, size: int) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:  # reads the central directory at the end
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if not pickles:
                raise CheckpointError(
                    f"{path} is not a torch checkpoint (a zip archive without data.pkl)"
                )
            return _PlainUnpickler(archive.open(pickles[0])).load()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({size} bytes: {_first_line(e)}); "
            "use an earlier checkpoint"
        ) from None


def read_checkpoint(
    path: str | Path, map_location: Any = "cpu", weights_only: bool = True, lightning: bool = True
) -> dict[str, Any]:
    """Loads a checkpoint with torch; a file it cannot load is diagnosed by :func:`read_plain`."""
    import torch

    # read_plain only when torch fails: the entry already checked the file (read once), and a
    # failure here gets its one-line diagnosis
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        read_plain(path, lightning)
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded ({_first_line(e)}); use an earlier checkpoint"
        ) from None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Calls ``write(file)`` so that readers of ``path`` only ever see a complete file.

    Temporary file in the same directory → fsync → ``os.replace`` → fsync of the directory; an
    ``OSError`` (full disk, I/O error) leaves the previous file and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)  # its fsync makes the rename durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def describe_mismatch(
    saved: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]
) -> str | None:
    """One line naming missing/unexpected keys and shape mismatches, or None when they fit."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k} {list(saved[k].shape)} vs {list(expected[k])}"
        for k in expected
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != expected[k]
    ]
    kinds = {"missing keys": missing, "unexpected keys": unexpected}
    kinds["shape mismatches (checkpoint vs model)"] = shapes
    return "; ".join(f"{len(v)} {kind}: {listing(v)}" for kind, v in kinds.items() if v) or None


def made_with(checkpoint: Mapping[str, Any]) -> str:
    """' (it was made with X)' naming the net in the stored run config, when there is one."""
    try:
        target = checkpoint[CHECKPOINT_KEY]["config"]["model"]["net"]["_target_"]
    except (TypeError, KeyError):
        return ""
    return f" (it was made with {target.rsplit('.', 1)[-1]})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]
