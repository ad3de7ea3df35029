"""The Lightning side of checkpoints: the Trainer's ``CheckpointIO`` plugin, ``last.ckpt`` kept
current, and a mid-epoch resume that continues at the next unseen batch.

File formats, atomic writes and the one-line diagnoses are in :mod:`lightspeed.run.checkpoint`.
"""

from __future__ import annotations

import copy
import errno
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from time import monotonic
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightspeed.compat import apply_pending_loader_state, is_local_path
from lightspeed.constraints import NonNegativeFloat, NonNegativeInt
from lightspeed.errors import UserError
from lightspeed.run.checkpoint import (
    CheckpointError,
    atomic_write,
    describe_mismatch,
    listing,
    made_with,
    read_checkpoint,
)
from lightspeed.run.rundir import check_writable

log = logging.getLogger(__name__)


class NonFiniteWeightsError(UserError):
    """Refused to save a checkpoint whose weights hold NaN or inf."""


def non_finite_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf (one host sync for all of them)."""
    names = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state_dict[k]).all().cpu() for k in names]).tolist()
    return [k for k, ok in zip(names, finite, strict=True) if not ok]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``CheckpointIO`` that saves atomically, refuses NaN weights, and loads with one-line errors.

    Lightning's ``_atomic_save`` stages in the system temp dir (a copy over the old file across
    file systems) and fsyncs nothing, so local saves use :func:`~lightspeed.run.checkpoint.atomic_write`.

    Args:
        check_finite: refuse to save weights that hold NaN or inf (one host sync per save).
    """

    def __init__(self, check_finite: bool = True) -> None:
        super().__init__()
        self.check_finite = check_finite
        self.expected_shapes: dict[str, tuple[int, ...]] | None = None
        self.model_name = "this model"

    def expect(self, module: torch.nn.Module) -> None:
        """Loaded checkpoints must match these parameter/buffer shapes (else one line)."""
        if getattr(module, "strict_loading", True) is False:
            self.expected_shapes = None
            return
        self.expected_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        self.model_name = type(getattr(module, "net", module)).__name__

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not is_local_path(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # fsspec's transaction
            return
        if self.check_finite:
            bad = non_finite_keys(checkpoint.get("state_dict", {}))
            if bad:
                raise NonFiniteWeightsError(
                    f"refused to save {path}: weights hold NaN/inf at step "
                    f"{checkpoint.get('global_step', '?')} ({listing(bad)}); the previous "
                    "checkpoint there is kept"
                )
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, "")
            raise CheckpointError(
                f"could not write {path}: {e.strerror or e}{f' ({name})' if name else ''}; "
                f"the previous {Path(path).name} is kept; free space or fix the path, then resume"
            ) from None

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not is_local_path(path):
            return super().load_checkpoint(path, map_location, weights_only)
        # not only Lightning checkpoints: ddp_spawn hands its weights back as a bare state dict
        checkpoint = read_checkpoint(path, map_location, weights_only is not False, False)
        if self.expected_shapes is not None and "state_dict" in checkpoint:
            problem = describe_mismatch(checkpoint["state_dict"], self.expected_shapes)
            if problem:
                raise CheckpointError(
                    f"checkpoint {path} does not fit {self.model_name}"
                    f"{made_with(checkpoint)}: {problem}"
                )
        return checkpoint


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` current: every N training steps (at most once per
    ``min_interval_s``) and at each epoch end.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` refreshes it at an epoch end only when a
    new best was saved; the best-k files stay with ``ModelCheckpoint``.

    Args:
        dirpath: folder of ``last.ckpt`` (the run's ``checkpoints/``).
        every_n_train_steps: save every N optimizer steps (0: only at epoch ends).
        min_interval_s: skip a step's save when the last save is more recent than this. A
            save (atomic, fsynced) took 5-70 ms on a 2-core VM's disk: every 100 steps of a
            fast GPU's 3.5 ms steps that is up to a fifth of the time, so the step count alone
            is no bound on the cost. A kill loses at most N steps or this long, whichever is
            more. Under DDP rank 0's clock decides for every rank.
        filename: file name without ``.ckpt``.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_train_steps: NonNegativeInt = 100,
        min_interval_s: NonNegativeFloat = 10.0,
        filename: str = "last",
    ) -> None:
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps
        self.min_interval_s = min_interval_s
        self.filename = filename
        self._saved_step: int | None = None
        self._saved_at = monotonic()

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.filename}.ckpt"

    @property
    def last_model_path(self) -> str:
        """The file, once this run has written it (mirrors ``ModelCheckpoint.last_model_path``)."""
        return str(self.path) if self._saved_step is not None or self.path.is_file() else ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        check_writable(self.dirpath, "callbacks.last_checkpoint.dirpath")  # not at the first save

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = monotonic()  # a resumed run's checkpoint is as good as a fresh save

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.path, weights_only=False)  # full state, for resume
            self._saved_step = trainer.global_step
            self._saved_at = monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        n = self.every_n_train_steps
        if not n or trainer.global_step % n or self._saved_step == trainer.global_step:
            return
        due = monotonic() - self._saved_at >= self.min_interval_s
        if trainer.world_size > 1:  # the save is collective: the ranks must agree
            due = trainer.strategy.broadcast(due, src=0)
        if due:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class RestoreLoaderPosition(L.Callback):
    """Makes a mid-epoch resume continue at the next unseen batch.

    Lightning 2.6 never applies a stateful train loader's saved position when the loader was
    built before the checkpoint's loop state was read (``trainer.estimated_stepping_batches``,
    for OneCycleLR's ``total_steps``, does that); this applies it before the first batch.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        apply_pending_loader_state(trainer.fit_loop)


class ResizeSchedule(L.Callback):
    """Lets a continued fit change its length (``trainer.max_epochs``, ``trainer.max_steps``).

    A schedule sized in steps (OneCycleLR's ``total_steps``, filled from the run's length by
    ``lightspeed.optim``) is made for this run's length by ``configure_optimizers``; Lightning
    then loads the checkpoint's schedule state over it, old size included, and OneCycleLR
    fails one step past that size. Here the new size is kept and the schedule continues from
    the checkpoint's step on the re-sized curve: a finished run trained further climbs back to
    the learning rate that point of the longer cycle has, then anneals again.
    """

    LENGTH = ("total_steps", "_schedule_phases")  # OneCycleLR's attributes sized by the length

    def __init__(self) -> None:
        self._sized: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after configure_optimizers, before Lightning restores the checkpoint's state
        self._sized = [
            {
                k: copy.deepcopy(getattr(c.scheduler, k))
                for k in self.LENGTH
                if hasattr(c.scheduler, k)
            }
            for c in trainer.lr_scheduler_configs
        ]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for config, sized in zip(trainer.lr_scheduler_configs, self._sized, strict=False):
            restored = getattr(config.scheduler, "total_steps", None)
            if sized and restored != sized.get("total_steps"):
                config.scheduler.__dict__.update(sized)
                log.info(
                    "LR schedule re-sized from %s to %s steps for this run's length; it goes on "
                    "from step %d",
                    restored,
                    sized["total_steps"],
                    trainer.global_step,
                )


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """The weights of checkpoint ``path`` into ``module`` (``weights_from=``: a new fit from
    them; optimizer, schedule and counters start afresh); one line when they do not fit."""
    checkpoint = read_checkpoint(path, map_location="cpu")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problem = describe_mismatch(checkpoint["state_dict"], expected)
    if problem:
        name = type(getattr(module, "net", module)).__name__
        raise CheckpointError(
            f"weights_from={path} does not fit {name}{made_with(checkpoint)}: {problem}"
        )
    module.load_state_dict(checkpoint["state_dict"])
    log.info("weights from %s: a new fit starts from them", path)
