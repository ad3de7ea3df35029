"""Lightning's CSV and TensorBoard loggers, made to continue a resumed run's logs.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, and a resumed
``TensorBoardLogger`` shows the steps logged after the checkpoint twice; on
:meth:`resume_from_step` these keep one continuous log per run.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lightspeed.run.checkpoint import atomic_write


def csv_number(text: str | None) -> float:
    """A ``metrics.csv`` cell's value; NaN for an empty or non-numeric cell."""
    try:
        return float(text or "nan")
    except ValueError:
        return math.nan


class AppendingExperimentWriter(ExperimentWriter):
    """CSV writer that keeps an existing ``metrics.csv`` (rows up to ``keep_until_step``)."""

    def __init__(self, log_dir: str, keep_until_step: int | None = None) -> None:
        self.keep_until_step = keep_until_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            keys = list(reader.fieldnames or [])
        self.metrics_keys = sorted(keys)  # the header the appended rows must follow
        if self.keep_until_step is None:
            return
        kept = [r for r in rows if not csv_number(r.get("step")) > self.keep_until_step]
        if len(kept) == len(rows):
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(path, lambda f: f.write(text.getvalue().encode()))


class CSVLogger(_CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to the run's CSV on resume."""

    _keep_until_step: int | None = None

    def resume_from_step(self, step: int) -> None:
        """Keep logged rows up to ``step`` (the checkpoint's) and append after them."""
        self._keep_until_step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(self.log_dir, self._keep_until_step)
        return self._experiment


class TensorBoardLogger(_TensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` that hides stale steps on resume."""

    def resume_from_step(self, step: int) -> None:
        """Events the interrupted run wrote after ``step`` are hidden (SummaryWriter purge_step)."""
        self._kwargs["purge_step"] = step + 1
