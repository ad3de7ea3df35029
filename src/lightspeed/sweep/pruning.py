"""OptunaPruning: report each validation's metric to an Optuna trial; stop a trial gone bad.

The sweep (:mod:`lightspeed.sweep.study`) hands one to each trial's fit. ``optuna-integration``
has the same callback; this one is a few lines and keeps that package out.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

PRUNED_AT = "pruned_at_epoch"  # user attribute of a pruned trial


class OptunaPruning(L.Callback):
    """Reports ``monitor`` to an Optuna trial and stops the fit when the trial is pruned.

    Args:
        trial: the Optuna trial that this fit is.
        monitor: the metric reported, as logged (the run's ``objective.metric``).
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        trial = self.trial
        if value is None:
            return
        epoch = trainer.current_epoch
        trial.report(float(value), step=epoch)
        if trial.should_prune():
            trial.set_user_attr(PRUNED_AT, epoch)
            self.pruned_at = epoch
            trainer.should_stop = True
            what = "trial %d pruned after epoch %d: %s=%.4f is behind the other trials"
            log.info(what, trial.number, epoch, self.monitor, float(value))
