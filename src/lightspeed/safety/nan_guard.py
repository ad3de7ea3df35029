"""NanGuard: stop the run (or skip the step) when the training loss is NaN or inf.

Reading ``isfinite(loss)`` on the host costs a sync on a GPU, so there ``action=stop`` folds it
into a device-side flag read every ``check_every_n_steps`` and before each validation (the
checkpoint IO refuses non-finite weights meanwhile); on the CPU, and for ``action=skip``, the
loss is read every step before ``backward``. A skipped step drops its gradients and restores
the float buffers (BatchNorm statistics); the LR scheduler still advances. Under 16-mixed the
GradScaler skips non-finite steps itself.

Under DDP the ranks decide together (one all-reduce of the bad step each time the loss or the
flag is read): a NaN in one rank's shard stops or skips every rank at the same step, where a
rank stopping alone would leave the others waiting in the gradient all-reduce.

Not Lightning's ``SpikeDetection``: it reads the loss on the host every step (a GPU sync),
stops with an exception and no checkpoint, cannot skip a step, and each rank decides alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from lightspeed.constraints import PositiveInt
from lightspeed.errors import UserError

log = logging.getLogger(__name__)

GPU_CHECK_EVERY = 50  # host reads of the device flag on a GPU: one sync per 50 steps is noise


NONE = 2**62  # "no bad step" in the all-reduce that takes the earliest bad step of any rank


def rate_knob(trainer: L.Trainer) -> str:
    """The config key that sets the learning rate of this fit: a cyclic schedule's peak rate
    (OneCycleLR, CyclicLR) when there is one, else the optimizer's."""
    cyclic = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)
    if any(isinstance(c.scheduler, cyclic) for c in trainer.lr_scheduler_configs):
        return "the schedule's peak rate model.scheduler.max_lr"
    return "model.optimizer.lr"


class NonFiniteLossError(UserError):
    """The training loss became NaN or inf (every rank raises it: rank zero reports it)."""

    every_rank = True


def last_good_checkpoint(trainer: L.Trainer) -> str | None:
    """The ``last.ckpt`` (else the best checkpoint) this run's checkpoint callbacks wrote."""
    paths = [getattr(cb, "last_model_path", "") for cb in trainer.checkpoint_callbacks]
    paths += [getattr(cb, "best_model_path", "") for cb in trainer.checkpoint_callbacks]
    return next((p for p in paths if p and Path(p).is_file()), None)


class NanGuard(L.Callback):
    """Watches the training loss for NaN/inf.

    Args:
        action: ``stop`` (default): end the run with one line naming the step and the last good
            checkpoint. ``skip``: drop that optimizer step and go on.
        check_every_n_steps: how often the host reads the device-side flag with ``action=stop``
            on a GPU (``auto`` = every step on the CPU, every 50 on a GPU).
        max_consecutive_skips: with ``action=skip``, stop anyway after this many skipped steps
            in a row (the run is not recovering).
    """

    def __init__(
        self,
        action: Literal["stop", "skip"] = "stop",
        check_every_n_steps: PositiveInt | Literal["auto"] = "auto",
        max_consecutive_skips: PositiveInt = 20,
    ) -> None:
        self.action = action
        self.check_every_n_steps = check_every_n_steps
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped = 0
        self._consecutive = 0
        self._skip_step = False
        self._saved_buffers: list[Tensor] = []
        self._first_bad: Tensor | None = None  # device-side: global step of the first bad loss

    def _every(self, device: torch.device) -> int:
        if self.check_every_n_steps != "auto":
            return int(self.check_every_n_steps)
        return 1 if device.type == "cpu" else GPU_CHECK_EVERY

    def _stop(self, trainer: L.Trainer, step: int, value: str, when: str) -> None:
        last = last_good_checkpoint(trainer)
        raise NonFiniteLossError(
            f"training loss is {value} at global step {step} (epoch {trainer.current_epoch}); "
            f"{when}; last good checkpoint: {last or 'none saved yet'}; lower "
            f"{rate_knob(trainer)} or set callbacks.nan_guard.action=skip"
        )

    @staticmethod
    def _earliest(trainer: L.Trainer, step: int) -> int:
        """The earliest bad step of all ranks (-1: none); ``step`` is this rank's."""
        if trainer.world_size == 1:
            return step
        local = torch.tensor(step if step >= 0 else NONE, device=trainer.strategy.root_device)
        first = int(trainer.strategy.reduce(local, reduce_op="min"))
        return first if first < NONE else -1

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        step = trainer.global_step
        if self.action == "skip" or self._every(loss.device) == 1:
            finite = bool(torch.isfinite(loss))  # host read: free on the CPU
            if self._earliest(trainer, -1 if finite else step) >= 0:
                if self.action == "stop":
                    value = "NaN/inf on another rank" if finite else str(loss.item())
                    self._stop(trainer, step, value, "stopped before that update")
                self._skip_step = True
            return
        bad = ~torch.isfinite(loss.detach())
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        fresh = bad & (self._first_bad < 0)
        self._first_bad = torch.where(fresh, step, self._first_bad)
        # same phase as Lightning's logging ((step + 1) % log_every_n_steps): with equal
        # intervals the flag read lands on a step that syncs for the logger anyway
        if (step + 1) % self._every(loss.device) == 0:
            self._check_flag(trainer)

    def _check_flag(self, trainer: L.Trainer) -> None:
        if self._first_bad is None:
            return
        first = self._earliest(trainer, int(self._first_bad))  # the one host sync every N steps
        if first >= 0:
            when = f"seen at step {trainer.global_step}; not saved since"
            self._stop(trainer, first, "NaN/inf", when)

    @staticmethod
    def _float_buffers(pl_module: L.LightningModule) -> list[Tensor]:
        return [b for b in pl_module.buffers() if b.is_floating_point()]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.action == "skip":
            # device-side copies of the (small) float buffers, e.g. BatchNorm running stats
            self._saved_buffers = [b.detach().clone() for b in self._float_buffers(pl_module)]

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.action != "skip":
            return
        if not self._skip_step:
            self._consecutive = 0
            return
        self._skip_step = False
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # GradScaler skips this step itself (its gradients are not finite)
        self.skipped += 1
        self._consecutive += 1
        if self._consecutive > self.max_consecutive_skips:
            why = f"{self._consecutive} steps in a row skipped, the run is not recovering"
            self._stop(trainer, trainer.global_step, "NaN/inf", why)
        # SGD/Adam/... leave parameters without a gradient untouched (momentum included)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        # the bad forward already moved BatchNorm statistics: put them back
        with torch.no_grad():
            for buf, saved in zip(self._float_buffers(pl_module), self._saved_buffers, strict=True):
                buf.copy_(saved)
        log.warning(
            "non-finite loss at global step %d: optimizer step skipped (%d so far)",
            trainer.global_step,
            self.skipped,
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_flag(trainer)  # before the epoch-end checkpoint is written

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_flag(trainer)
