"""Checkpoint files: written atomically, refused when the weights are not finite, and read back
with ``weights_only=True`` and checks that turn every broken file into one line.

:class:`AtomicCheckpointIO` is the Trainer's ``CheckpointIO`` plugin (see ``build.py``).

Writing: the checkpoint goes to a temporary file in the same directory, is flushed and
fsynced, then ``os.replace``\\ d over the target, and the directory is fsynced. ``os.replace`` is
atomic on POSIX file systems, so a process killed at any moment (``kill -9``, power loss after
the directory fsync) leaves either the previous complete file or the new complete file, never a
half-written one. A leftover ``.<name>.*.tmp`` from a kill is removed at the next save.

Reading: a missing, truncated or foreign file, a checkpoint from a newer lightspeed, and a
checkpoint of another model each raise :class:`~lightspeed.errors.UserError` with one line,
instead of a pickle or ``load_state_dict`` traceback.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightspeed.callbacks.metadata import CHECKPOINT_KEY, FORMAT_VERSION
from lightspeed.errors import UserError

log = logging.getLogger(__name__)

SHOWN = 3  # names listed per kind of mismatch before "(+N more)"


class CheckpointError(UserError):
    """A checkpoint file cannot be used: missing, broken, too new, or for another model."""


class NonFiniteWeightsError(UserError):
    """Refused to save a checkpoint whose weights hold NaN or inf."""


def fsync_dir(path: str | Path) -> None:
    """Makes a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (e.g. certain network mounts) refuse fsync on dirs
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that readers only ever see a complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def non_finite_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf (one host sync for all of them)."""
    names = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state_dict[k]).all().cpu() for k in names]).tolist()
    return [k for k, ok in zip(names, finite, strict=True) if not ok]


def _listing(names: list[str]) -> str:
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
        if k in saved and torch.is_tensor(saved[k]) and tuple(saved[k].shape) != expected[k]
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (checkpoint vs model): {_listing(shapes)}")
    return "; ".join(parts) or None


def _made_with(checkpoint: Mapping[str, Any]) -> str:
    """' (made with model.net=X)' from the stored run config, when there is one."""
    meta = checkpoint.get(CHECKPOINT_KEY)
    try:
        target = meta["config"]["model"]["net"]["_target_"]
    except (TypeError, KeyError):
        return ""
    return f" (it was made with {target.rsplit('.', 1)[-1]})"


def read_checkpoint(
    path: str | Path, map_location: Any = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """Loads a checkpoint, turning every way it can be unusable into one CheckpointError line.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a torch checkpoint, holds
            Python objects (with ``weights_only``), has no ``state_dict``, or was written by a
            newer lightspeed (``format_version``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); use an earlier checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"checkpoint {path} holds Python objects, which weights_only loading refuses; "
                "save plain data (dicts, numbers, strings, tensors) instead"
            ) from None
        raise CheckpointError(f"{path} is not a torch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError) as e:
        # torch's legacy (non-zip) reader fails on arbitrary bytes with whatever it hits first
        if zipfile.is_zipfile(path) or "zip archive" in str(e) or isinstance(e, EOFError):
            raise CheckpointError(
                f"checkpoint {path} is truncated or corrupt ({size} bytes: {_first_line(e)}); "
                "use an earlier checkpoint"
            ) from None
        raise CheckpointError(f"{path} is not a torch checkpoint ({_first_line(e)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'); "
            "give a .ckpt written by lightspeed or Lightning"
        )
    meta = checkpoint.get(CHECKPOINT_KEY)
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {version}, newer than this lightspeed "
            f"reads ({FORMAT_VERSION}); upgrade lightspeed to load it"
        )
    return checkpoint


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that saves atomically and loads with one-line errors.

    Args:
        expected_shapes: ``{state_dict key: shape}`` of the model a loaded checkpoint must fit;
            set with :meth:`expect`. When set, a checkpoint of another model is refused with
            the missing/unexpected keys and shape mismatches, before Lightning loads it.
        check_finite: refuse to save weights that hold NaN or inf (one host sync per save,
            not per step).
    """

    def __init__(
        self,
        expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.expected_shapes = dict(expected_shapes) if expected_shapes else None
        self.check_finite = check_finite
        self.model_name = "this model"

    def expect(self, module: torch.nn.Module) -> None:
        """Records the parameter/buffer shapes that loaded checkpoints must match."""
        if getattr(module, "strict_loading", True) is False:
            self.expected_shapes = None
            return
        self.expected_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        net = getattr(module, "net", module)
        self.model_name = type(net).__name__

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            # remote storage: fsspec's own transaction is the best available
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if self.check_finite:
            bad = non_finite_keys(checkpoint.get("state_dict", {}))
            if bad:
                step = checkpoint.get("global_step", "?")
                raise NonFiniteWeightsError(
                    f"refused to save {path}: weights hold NaN/inf at step {step} "
                    f"({_listing(bad)}); the previous checkpoint there is kept"
                )
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not _is_local_file_protocol(str(path)):
            return super().load_checkpoint(path, map_location, weights_only)
        checkpoint = read_checkpoint(
            path, map_location, weights_only=True if weights_only is None else weights_only
        )
        if self.expected_shapes is not None:
            problem = describe_mismatch(checkpoint["state_dict"], self.expected_shapes)
            if problem:
                raise CheckpointError(
                    f"checkpoint {path} does not fit {self.model_name}"
                    f"{_made_with(checkpoint)}: {problem}"
                )
        return checkpoint


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` current: every N training steps and at each epoch end.

    Lightning's ``ModelCheckpoint(save_last=True)`` (2.6) refreshes ``last.ckpt`` at an epoch
    end only when a new best was saved there, so after an epoch without improvement the "last"
    checkpoint is older than the run. This callback saves it unconditionally; the best-k files
    stay with ``ModelCheckpoint``.

    Args:
        dirpath: folder of ``last.ckpt`` (the run's ``checkpoints/``).
        every_n_train_steps: save every N optimizer steps (0: only at epoch ends). Saves are
            atomic and cheap next to N steps; a kill loses at most N steps.
        filename: file name without ``.ckpt``.
    """

    def __init__(
        self, dirpath: str, every_n_train_steps: int = 100, filename: str = "last"
    ) -> None:
        if every_n_train_steps < 0:
            raise UserError(
                f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps} must be >= 0"
            )
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps
        self.filename = filename
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.filename}.ckpt"

    @property
    def last_model_path(self) -> str:
        """The file, once this run has written it (mirrors ``ModelCheckpoint.last_model_path``)."""
        return str(self.path) if self._saved_step is not None or self.path.is_file() else ""

    def _save(self, trainer: L.Trainer) -> None:
        if (
            trainer.fast_dev_run
            or trainer.sanity_checking
            or self._saved_step == trainer.global_step
        ):
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # full state, for resume
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class RestoreLoaderPosition(L.Callback):
    """Makes a mid-epoch resume continue at the next unseen batch.

    Lightning restores a stateful train loader (``state_dict``/``load_state_dict``, as
    :class:`~lightspeed.data.memory.InMemoryBatchLoader` has) when it builds the loader during
    the fit. But a schedule sized from ``trainer.estimated_stepping_batches`` (OneCycleLR with
    ``total_steps: auto``) makes it build the loader earlier, before the checkpoint's loop state
    is read, and the saved position is then never applied (Lightning 2.6): the resumed epoch
    would start again from its first batch. This callback applies the pending position at
    ``on_train_start``, before the first batch is drawn. A no-op when nothing is pending.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
        loader = getattr(fit_loop, "_combined_loader", None)
        if pending and loader is not None:
            loader._load_state_dicts(pending)
            fit_loop._combined_loader_states_to_load = []
