"""Runs of several processes: one run dir for all ranks, files from rank zero, SLURM requeue.

Who starts the ranks:

* Lightning's launcher (``trainer=ddp``/``ddp_cpu`` on one machine): the command runs once,
  and Lightning re-runs it for ranks > 0 with ``hydra.run.dir`` set to rank zero's run dir.
* torchrun and srun: every rank runs the whole command. Hydra would give each rank its own
  timestamped run dir, so the entry pins one shared dir named after the launch
  (``<log_dir>/<task>/torchrun-<rdzv id>`` or ``slurm-<job id>``) unless the command names one.

In every case ranks > 0 write nothing: no ``.hydra/``, no log file (their log goes to the
console, warnings only); rank zero writes the config, checkpoints, logs and summary.

A restarted launch (a requeued SLURM job, a torchrun elastic restart) runs the same command
again: when its run dir holds ``checkpoints/last.ckpt`` the fit continues from it
(``resume=<run dir>``). A fit stopped by the SLURM time-limit signal (``USR1``, or submitit's
``USR2``) saves ``last.ckpt`` (GracefulInterrupt) and then asks SLURM to requeue the job.

Torch-free: the entry point calls this before torch or Hydra's run dir exist.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightspeed.errors import ConfigError
from lightspeed.run.resume import LAST, override_key, override_value
from lightspeed.run.rundir import is_launching_process as is_rank_zero

log = logging.getLogger(__name__)

# the signals a SLURM job gets before its time limit (sbatch --signal); SIGTERM is a cancel
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# job names of salloc/srun --pty shells, as Lightning reads them
INTERACTIVE_JOB_NAMES = ("bash", "interactive")
# what Lightning's launcher sets in rank zero's own environment, and leaves there after the fit
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_environ_before_jobs: dict[str, str | None] | None = None  # at the first job of this process


def started_by_lightning() -> bool:
    """A rank > 0 that Lightning's own launcher started: rank zero watches its exit code and
    kills every process (itself too) when one ends non-zero."""
    local = os.environ.get("LOCAL_RANK", "0")
    return local != "0" and "RANK" not in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ


def interrupted_exit_code(code: int) -> int:
    """The exit status after a signal stopped the run: 128 + signal, except in the ranks that
    rank zero watches (0: rank zero reports the interrupt and exits with it)."""
    return 0 if started_by_lightning() else code


def slurm_batch_job() -> bool:
    """This process belongs to a SLURM batch job (not an interactive allocation)."""
    return "SLURM_JOB_ID" in os.environ and (
        os.environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES
    )


def slurm_job_id() -> str:
    """The id that ``scontrol requeue`` takes: ``<array job>_<task>`` for array tasks."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def restart_count() -> int:
    """How often this launch was restarted: SLURM requeues, torchrun elastic restarts."""
    counts = (os.environ.get(v, "0") for v in ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"))
    return max((int(c) for c in counts if c.isdigit()), default=0)


def launch_name() -> str | None:
    """A name every rank of this launch shares, when an outside launcher started the ranks."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is not None:
        if run_id in ("", "none"):
            raise ConfigError(
                "torchrun started this run without a run id (--rdzv-id), so its ranks cannot "
                "agree on one run dir: add --rdzv-id=<unique id> (or --standalone on one "
                "machine), or name the run dir with hydra.run.dir=<path>"
            )
        return "torchrun-" + re.sub(r"[^\w.-]", "_", run_id)
    if slurm_batch_job():
        return "slurm-" + slurm_job_id()
    return None


def _value(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if override_key(a) == key and "=" in a]
    if not values:
        return None
    value = values[-1]
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def launch_overrides(
    argv: list[str], task: str, log_dir: Callable[[], str], started: bool
) -> list[str]:
    """``argv`` plus what this process of a multi-process launch needs.

    * under torchrun/srun, without ``hydra.run.dir`` in the command: the shared run dir
      (``log_dir()``, read only then);
    * a restarted launch whose run dir holds ``last.ckpt``: ``resume=<run dir>`` (a fit that
      the command does not already start from a checkpoint: ``started``);
    * ranks > 0: no ``.hydra/`` and no log file.
    """
    out = list(argv)
    run_dir = _value(out, "hydra.run.dir")
    name = launch_name()
    if run_dir is None and name is not None:
        run_dir = str(Path(log_dir()) / task / name)
        out.append(f"hydra.run.dir={override_value(run_dir)}")
    if (
        restart_count() > 0
        and task == "fit"
        and run_dir is not None
        and "${" not in run_dir
        and not started
        and (Path(run_dir) / LAST).is_file()
    ):
        log.info("restarted launch (%d): continuing %s", restart_count(), run_dir)
        out.append(f"resume={override_value(run_dir)}")
    if not is_rank_zero():
        out += [
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
            "hydra.job_logging.root.level=WARNING",
        ]
    return out


def fresh_rendezvous() -> None:
    """Before each job of a multirun that runs its jobs one after another in this process.

    Lightning's launcher starts ranks > 0 for one job: they exit with it. It leaves behind, in
    this process, the job's process group and the variables that made it (``LOCAL_RANK``
    above all, which tells the next job's Lightning that the ranks already exist, and
    ``MASTER_PORT``). The next job would reuse that group and fail on its exited peers
    ("Connection closed by peer"): here the group goes and the variables are as they were
    before the first job, so Lightning starts new ranks on a new free port.

    Ranks that an outside launcher started (torchrun, srun) run every job of the sweep
    themselves and keep their group: nothing changes for them.
    """
    global _environ_before_jobs
    if _environ_before_jobs is None:
        _environ_before_jobs = {k: os.environ.get(k) for k in LAUNCHER_VARIABLES}
        return
    if _environ_before_jobs["LOCAL_RANK"] is not None:  # the ranks came from outside
        return
    dist = sys.modules.get("torch.distributed")  # imported only when a job used it
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in _environ_before_jobs.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def prepare_job(cfg: Any) -> None:
    """In the Hydra job, before the build: what a multirun or requeued job needs.

    * A job of a multirun (``-m``, e.g. on SLURM through submitit) that Lightning's launcher
      runs on several devices: Lightning re-runs ``sys.argv`` with ``hydra.run.dir`` for
      ranks > 0; both are set to this job's own (not the sweep's command, not the run-mode
      dir), so ranks > 0 join this job instead of starting the sweep again. Each job after
      the first gets a fresh rendezvous (:func:`fresh_rendezvous`).
    * A requeued SLURM job of a multirun continues its run dir when it holds ``last.ckpt``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        fresh_rendezvous()
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = output_dir
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        if (
            restart_count() > 0
            and cfg.task == "fit"
            and not (cfg.get("resume") or cfg.get("ckpt_path"))
            and (Path(output_dir) / LAST).is_file()
        ):
            log.info("requeued job (%d): continuing %s", restart_count(), output_dir)
            with open_dict(cfg):
                cfg.resume = output_dir


def requeue(signum: int | None) -> str | None:
    """Asks SLURM to requeue this job after a time-limit signal; the line to print, or None.

    Only rank zero of a SLURM batch job asks, and only for ``USR1``/``USR2`` (``sbatch
    --signal``): SIGTERM and Ctrl-C mean the user (or the scheduler) wants the job gone.
    """
    if signum not in REQUEUE_SIGNALS or not slurm_batch_job() or not is_rank_zero():
        return None
    job = slurm_job_id()
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return f"cannot requeue SLURM job {job}: scontrol is not on PATH"
    done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return f"scontrol requeue {job} failed: {reason[0] if reason else done.returncode}"
    return f"requeued SLURM job {job}: it continues this run dir from last.ckpt"
