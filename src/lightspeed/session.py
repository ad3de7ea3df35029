"""One job, carried out: the run dir and its files, the built objects, the task, the summary.

The entry (``cli``) hands over a checked config and, when it planned the run, the checkpoint it
already read (:class:`~lightspeed.run.resume.StartPoint`); a sweep hands over its trial's
callback. Callbacks add to ``summary.json`` through ``run_summary()``
(:class:`~lightspeed.contracts.SummaryContributor`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lightspeed import PROCESS_START, console, hardware
from lightspeed.build import build
from lightspeed.run.resume import (
    StartPoint,
    check_continuation,
    check_data_length,
    count_train_batches,
    start_point,
    start_resumed_fit,
)
from lightspeed.run.rundir import prepare_run_dir, session_file
from lightspeed.safety.checkpointing import load_weights
from lightspeed.tasks import TASKS

log = logging.getLogger(__name__)


def job_start(cfg: DictConfig, run_dir: Path) -> StartPoint | None:
    """The checkpoint of a job that nothing planned (a multirun's, a sweep's trial): read and
    checked against the config here (against the data once it is built)."""
    start = start_point(cfg.ckpt_path, cfg.get("resume"), cfg.paths.log_dir, cfg.task, run_dir)
    if start is not None and cfg.task == "fit":
        check_continuation(start.data, cfg)
    return start


def run_task(
    cfg: DictConfig,
    start: StartPoint | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    planned: bool = False,
) -> dict:
    """Runs ``cfg.task`` and returns the summary (also written to ``summary.json``).

    Args:
        cfg: the job's config, checked.
        start: the checkpoint the job starts from, as the entry read it.
        extra_callbacks: added to the config's callbacks (a sweep's pruning callback).
        planned: the entry already read and checked the checkpoint (``start``); otherwise this
            job reads it.
    """
    t0 = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    resuming = bool(cfg.get("resume"))
    prepare_run_dir(run_dir, resuming)
    if not planned:
        start = job_start(cfg, run_dir)
    info = hardware.report()
    log.info("hardware: %s", hardware.one_line(info))
    built = build(cfg, extra_callbacks)  # binds ${data:...}: the config resolves with the data
    trainer, dm = built.trainer, built.datamodule
    info.update(precision=built.precision, devices=trainer.num_devices,
                accelerator=type(trainer.accelerator).__name__)  # fmt: skip
    if trainer.is_global_zero:  # ranks > 0 of a DDP run print and write nothing
        if cfg.get("extras", {}).get("print_config", True):
            console.print_config(OmegaConf.to_container(cfg, resolve=True))
        config = OmegaConf.to_yaml(cfg, resolve=True)
        session_file(run_dir, "config.yaml", resuming).write_text(config)
        session_file(run_dir, "hardware.json", resuming).write_text(json.dumps(info, indent=2))
    for reason in getattr(getattr(dm, "loader", None), "reasons", []):
        log.info("data loader: %s", reason)

    summary: dict[str, Any] = {
        "task": cfg.task,
        "run_dir": str(run_dir),
        "precision": built.precision,
        "objective": {"metric": cfg.objective.metric, "mode": cfg.objective.mode},
    }
    if cfg.get("weights_from"):
        load_weights(built.module, cfg.weights_from)
    if cfg.task == "fit" and start is not None:
        if not planned:
            check_data_length(start.data, cfg, lambda: count_train_batches(dm))
        start_resumed_fit(trainer, start)
    summary.update(TASKS[cfg.task](built, cfg, start.path if start else None))
    for callback in trainer.callbacks:
        contribute = getattr(callback, "run_summary", None)
        if callable(contribute):
            summary.update(contribute())
    summary["data_source"] = getattr(dm, "source_info", None)  # path + checksum of the files
    summary["wall_time_s"] = round(time.perf_counter() - t0, 2)
    summary["process_time_s"] = round(time.perf_counter() - PROCESS_START, 2)
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def objective_value(summary: dict) -> float | None:
    """The number the run is judged by: its best objective (fit), else that metric's value."""
    objective = summary.get("objective") or {}
    best = objective.get("best")
    return best if best is not None else (summary.get("metrics") or {}).get(objective.get("metric"))
