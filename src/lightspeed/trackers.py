"""Experiment trackers as optional loggers: ``logger=wandb`` and ``logger=mlflow``.

Lightning's own loggers, plus: a missing package is one line naming the ``pip install``; the
tracker's run id is kept in ``run_id_file`` (in the run dir), so a resumed fit, which runs in
its own run dir, logs to the same run. The file is read when the logger is built, before the
checkpoint is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger
from lightning.pytorch.loggers import WandbLogger as _WandbLogger

from lightspeed.errors import ConfigError

log = logging.getLogger(__name__)


def require(module: str, logger: str) -> None:
    """ConfigError naming the install command when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"logger={logger} needs the {module} package, which is not installed: "
            f"pip install '{module}' (or pip install -e '.[{logger}]' in this checkout)"
        )


def read_run_id(path: str | Path | None) -> str | None:
    """The run id kept in ``path``, or None when there is none."""
    if path is None or not Path(path).is_file():
        return None
    return Path(path).read_text().strip() or None


def _run_to_continue(given: str | None, run_id_file: str | None, tracker: str) -> str | None:
    """``given``, else the run id kept in ``run_id_file`` (logged: that run continues)."""
    resumed = given or read_run_id(run_id_file)
    if resumed and not given:
        log.info("%s: continuing run %s (%s)", tracker, resumed, run_id_file)
    return resumed


def keep_run_id(path: str | Path | None, run_id: str | None) -> None:
    """Writes ``run_id`` to ``path`` (no-op without either, or when it already holds it)."""
    if path is None or not run_id or read_run_id(path) == run_id:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"{run_id}\n")


class WandbLogger(_WandbLogger):
    """``lightning.pytorch.loggers.WandbLogger`` that continues its run on resume.

    Args:
        id: the W&B run to log to; None: the one in ``run_id_file``, else a new one.
        run_id_file: where the run id is kept; None keeps it nowhere.
        **kwargs: the other ``WandbLogger`` arguments (``save_dir``, ``offline``, ``project``,
            ...) and ``wandb.init``'s.
    """

    def __init__(self, id: str | None = None, run_id_file: str | None = None, **kwargs: Any):
        require("wandb", "wandb")
        self._run_id_file = run_id_file
        super().__init__(id=_run_to_continue(id, run_id_file, "wandb"), **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        run = super().experiment
        keep_run_id(self._run_id_file, getattr(run, "id", None))
        return run


class MLFlowLogger(_MLFlowLogger):
    """``lightning.pytorch.loggers.MLFlowLogger`` that continues its run on resume.

    Args:
        run_id: the MLflow run to log to; None: the one in ``run_id_file``, else a new one.
        run_id_file: where the run id is kept; None keeps it nowhere.
        **kwargs: the other ``MLFlowLogger`` arguments (``experiment_name``, ``tracking_uri``,
            ``save_dir``, ...).
    """

    def __init__(
        self, run_id: str | None = None, run_id_file: str | None = None, **kwargs: Any
    ) -> None:
        require("mlflow", "mlflow")
        uri = kwargs.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri or uri.startswith("file:"):
            # MLflow >= 3.7 refuses its file store unless told otherwise; a store inside the
            # run dir needs no database and no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._run_id_file = run_id_file
        resumed = _run_to_continue(run_id, run_id_file, "mlflow")
        self._continues = bool(resumed)
        super().__init__(run_id=resumed, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        starting = not self._initialized
        client = super().experiment
        if starting:
            if self._continues:  # the last session's end marked it FINISHED or FAILED
                client.update_run(self._run_id, status="RUNNING")
            keep_run_id(self._run_id_file, self._run_id)
        return client
