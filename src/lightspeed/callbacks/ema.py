"""EMA: an exponential moving average of the weights, validated, checkpointed and resumed.

After every ``every_n_steps``-th optimizer step past ``warmup_steps``::

    ema = decay * ema + (1 - decay) * weights

over every floating-point entry of the module's ``state_dict`` (parameters and buffers such as
BatchNorm's running statistics; integer buffers stay the live ones). During warmup the average
is a copy of the weights, so it does not remember the random initialisation. ``decay`` is per
update: the average spans about ``every_n_steps / (1 - decay)`` steps.

What a checkpoint holds. Its ``state_dict`` is the **EMA weights**: they are what the fit
validated, so ``best.ckpt`` holds the weights its score belongs to, and everything that reads
weights alone (``task=test|predict|export``, ``weights_from=``, ``load_from_checkpoint``)
uses them without knowing of this callback. The live training weights go into the callback's
state (``checkpoint["callbacks"]["EMA"]["live"]``, plain tensors like the rest: the file
loads with ``weights_only=True``), and a resumed fit with this callback puts them back, so
training and the average continue exactly. A fit from such a checkpoint without this callback
would train on from the average: the resume check refuses it in one line. With
``ModelCheckpoint(save_weights_only=True)`` Lightning skips callback hooks, so those files
hold the live weights (a warning says so).

After the fit the module keeps the EMA weights (the checkpoints' weights), so a test or
predict in the same process evaluates them, as one from a checkpoint does; no swap is needed
there. Inside the fit, validation swaps the average in at its start and the live weights back
at its end (before ``ModelCheckpoint``, which Lightning runs last, saves).

Not ``torch.optim.swa_utils.AveragedModel``: it keeps a deep copy of the whole module and
tests ``n_averaged == 0`` on a device tensor at every update, a host sync per step. Its
``get_ema_multi_avg_fn`` is used for the update (one fused ``foreach`` lerp, no host sync).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from lightspeed.constraints import NonNegativeInt, PositiveInt, UnitInterval
from lightspeed.errors import UserError
from lightspeed.run.resume import EMA_STATE

log = logging.getLogger(__name__)


class EMA(L.Callback):
    """Exponential moving average of the module's weights (``callbacks/ema=on``).

    Args:
        decay: weight of the old average at each update, in [0, 1); 0 makes the average the
            weights themselves.
        every_n_steps: update after every N-th optimizer step (fewer updates, less work; the
            average then spans N times as many steps for the same decay).
        warmup_steps: for the first N optimizer steps the average is a copy of the weights.
    """

    def __init__(
        self,
        decay: UnitInterval = 0.99,
        every_n_steps: PositiveInt = 1,
        warmup_steps: NonNegativeInt = 0,
    ) -> None:
        self.decay = decay
        self.every_n_steps = every_n_steps
        self.warmup_steps = warmup_steps
        self.updates = 0  # averaging updates so far (warmup copies not counted)
        self._average = get_ema_multi_avg_fn(decay)
        self._names: list[str] = []
        self._live: list[Tensor] = []  # the module's own tensors (references)
        self._ema: list[Tensor] | None = None  # None outside a fit
        self._backup: list[Tensor] | None = None  # the live weights while the EMA is swapped in
        self._swapped = False
        self._last_step: int | None = None
        self._loaded: Mapping[str, Tensor] | None = None  # EMA weights of a resumed checkpoint

    @property
    def state_key(self) -> str:
        return EMA_STATE  # read by the resume check (lightspeed.run.resume)

    def averaged_weights(self) -> dict[str, Tensor]:
        """The EMA weights by ``state_dict`` name (empty outside a fit)."""
        return dict(zip(self._names, self._ema or [], strict=False))

    def run_summary(self) -> dict[str, Any]:
        return {"ema": {"decay": self.decay, "updates": self.updates}}

    # --- the fit --------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # here, not in setup: the strategy has moved the module to its device
        state = pl_module.state_dict(keep_vars=True)
        self._names = [k for k, v in state.items() if torch.is_floating_point(v)]
        self._live = [state[k].detach() for k in self._names]
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            self.updates = 0
            self._ema = [t.clone() for t in self._live]
        else:
            missing = [k for k in self._names if k not in loaded]
            if missing:
                raise UserError(
                    f"EMA: the checkpoint holds no average of {missing[0]!r}; resume with the "
                    "model that made it, or start a new fit from its weights: weights_from=<it>"
                )
            self._ema = [torch.empty_like(t).copy_(loaded[k]) for k, t in self._named_live()]
        self._backup, self._swapped, self._last_step = None, False, None
        low = sorted({str(t.dtype) for t in self._live} - {"torch.float32", "torch.float64"})
        if low:  # bf16 keeps 8 significant bits: (1 - decay) * (w - ema) mostly rounds away
            log.warning(
                "EMA of %s weights: updates below their precision are lost; keep the weights "
                "in float32 (trainer.precision=bf16-mixed, not bf16-true)",
                ", ".join(low),
            )
        if any(isinstance(c, ModelCheckpoint) and c.save_weights_only for c in trainer.callbacks):
            log.warning("EMA: save_weights_only checkpoints hold the live weights, not the EMA")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # a resumed fit's step is known from here on

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._update(trainer.global_step)

    @torch.no_grad()
    def _update(self, step: int) -> None:
        """The update of optimizer step ``step``, once: accumulation's micro-batches and a
        checkpoint saved by a callback that ran before this one find it done."""
        if self._ema is None or self._last_step in (None, step) or step % self.every_n_steps:
            return
        self._last_step = step
        if step <= self.warmup_steps:
            _copy(self._ema, self._live)
        else:
            self._average(self._ema, self._live, None)
            self.updates += 1

    @torch.no_grad()
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ema is None or self._swapped:
            return
        if self._backup is None:
            self._backup = [t.clone() for t in self._live]
        else:
            _copy(self._backup, self._live)
        _copy(self._live, self._ema)
        self._swapped = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_back()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: Any) -> None:
        self._swap_back()

    @torch.no_grad()
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ema is None:
            return
        self._swap_back()
        _copy(self._live, self._ema)  # the module leaves the fit with the weights it validated
        self._ema = self._backup = self._last_step = None
        self._live = []

    @torch.no_grad()
    def _swap_back(self) -> None:
        if self._swapped and self._backup is not None:
            _copy(self._live, self._backup)
        self._swapped = False

    def _named_live(self) -> list[tuple[str, Tensor]]:
        return list(zip(self._names, self._live, strict=True))

    # --- checkpoints ----------------------------------------------------------------------

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._ema is None:
            return
        # a callback that saves before this one's on_train_batch_end (GracefulInterrupt) would
        # otherwise store this step's weights with the previous step's average
        self._update(trainer.global_step)
        weights = checkpoint["state_dict"]
        live = self._backup if self._swapped else self._live  # the training weights
        checkpoint.setdefault("callbacks", {})[self.state_key] = {
            "live": {k: v for k, v in zip(self._names, live, strict=True) if k in weights},
            "updates": self.updates,
            "decay": self.decay,
        }
        weights.update((k, v) for k, v in zip(self._names, self._ema, strict=True) if k in weights)

    @torch.no_grad()
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # test/validate/predict: the checkpoint's state_dict already is the average
        if trainer.state.fn != "fit":
            return
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if not state:
            log.info("EMA: the checkpoint has no average; it starts from the checkpoint's weights")
            return
        module_state = pl_module.state_dict(keep_vars=True)
        missing = [k for k in state["live"] if k not in module_state]
        if missing:
            raise UserError(
                f"EMA: the checkpoint's training weights name {missing[0]!r}, which "
                f"{type(pl_module).__name__} lacks; resume with the model that made it"
            )
        for name, value in state["live"].items():  # Lightning loaded the average: undo that
            module_state[name].copy_(value)
        self._loaded = {k: checkpoint["state_dict"][k] for k in state["live"]}
        self.updates = int(state.get("updates", 0))


def _copy(targets: list[Tensor], sources: list[Tensor]) -> None:
    for target, source in zip(targets, sources, strict=True):
        target.copy_(source)
