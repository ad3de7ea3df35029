"""Optimiser and LR schedule from the config's factories: what a LightningModule's
``configure_optimizers`` returns, for any problem.

The model YAML gives ``optimizer`` and ``scheduler`` as ``_partial_: true`` nodes (factories);
a schedule that needs the run's length (OneCycleLR with ``total_steps`` and ``epochs`` left
null) gets ``total_steps`` from the trainer's estimate of the optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def configure_optimizers(
    module: Any,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None = None,
    interval: str = "step",
) -> Any:
    """The optimiser over ``module``'s trained parameters (a frozen layer's stay out) and, with
    ``scheduler``, its schedule stepped every ``interval`` (``step`` or ``epoch``)."""
    trained = [p for p in module.parameters() if p.requires_grad]
    opt = optimizer(params=trained)
    if scheduler is None:
        return opt
    kwargs = {}
    keywords = getattr(scheduler, "keywords", {})
    if keywords.get("total_steps", 0) is None and not keywords.get("epochs"):
        total = int(module.trainer.estimated_stepping_batches)
        # OneCycleLR divides by (pct_start * total_steps - 1): very short runs (a debug run of
        # 4 steps) would divide by zero. A longer schedule than the run is harmless.
        if pct := keywords.get("pct_start"):
            total = max(total, math.floor(2 / pct) + 1)
        kwargs["total_steps"] = total
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": scheduler(optimizer=opt, **kwargs), "interval": interval},
    }
