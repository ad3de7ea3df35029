"""Resuming a run in its own directory, and the checks a run directory passes before use.

``resume=auto`` picks the run of the same task under ``paths.log_dir`` whose
``checkpoints/last.ckpt`` was written most recently; ``resume=<run dir>`` (or the path of a
``.ckpt`` inside it) picks one. The entry point (:func:`resume_overrides`) turns either into
Hydra overrides, before ``hydra.main``, so the job runs *in that directory*: same checkpoints,
same TensorBoard folder, same ``metrics.csv``; Hydra's own files for the new session go to
``.hydra/resume-<time>/`` and leave the first session's ``.hydra/`` alone.

This module imports neither torch nor Lightning: the entry point calls it before either.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from pathlib import Path

from lightspeed.errors import ConfigError

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"
FINISHED_MARKERS = ("checkpoints", "summary.json")


def find_latest_run(log_dir: str | Path, task: str = "fit") -> Path | None:
    """The run dir under ``log_dir/task`` (multiruns included) with the newest last.ckpt."""
    root = Path(log_dir) / task
    if not root.is_dir():
        return None
    found = [p for p in root.glob(f"**/{LAST.as_posix()}") if p.is_file()]
    if not found:
        return None
    return max(found, key=lambda p: p.stat().st_mtime).parent.parent


def resolve_resume(resume: str, log_dir: str | Path, task: str = "fit") -> Path:
    """The run directory that ``resume=<value>`` names; ConfigError when there is none."""
    if resume == "auto":
        run = find_latest_run(log_dir, task)
        if run is None:
            raise ConfigError(
                f"resume=auto: no run under {Path(log_dir) / task} has {LAST.as_posix()}; "
                "nothing to resume (drop resume=auto to start a new run)"
            )
        return run.resolve()
    path = Path(resume).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not (path / LAST).is_file():
        raise ConfigError(
            f"resume={resume}: {path / LAST} does not exist; give a run directory that has "
            "checkpoints/last.ckpt, or resume=auto"
        )
    return path.resolve()


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / LAST


def _quote(value: str) -> str:
    """A path as a Hydra override value (quoted when it holds characters the grammar parses)."""
    if re.fullmatch(r"[\w/.\-+]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_resume_override(arg: str) -> bool:
    return re.match(r"^[+~]{0,2}resume(=|$)", arg) is not None


def resume_overrides(argv: list[str], resume: str | None, log_dir: str, task: str) -> list[str]:
    """``argv`` with ``resume=`` resolved to a run dir, plus the Hydra overrides to run in it.

    A fit continues in the run's directory (``hydra.run.dir``); other tasks take that run's
    last.ckpt as their weights and get a directory of their own.
    """
    if not resume:
        return argv
    run_dir = resolve_resume(resume, log_dir, "fit")
    out = [a for a in argv if not _is_resume_override(a)]
    out.append(f"resume={_quote(str(run_dir))}")
    if task == "fit":
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        out += [
            f"hydra.run.dir={_quote(str(run_dir))}",
            f"hydra.output_subdir={_quote(f'.hydra/resume-{stamp}')}",
        ]
    return out


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | Path, key: str) -> None:
    """ConfigError unless ``path`` is (or can be made as) a writable directory."""
    path = Path(path)
    base = nearest_existing(path.absolute())
    if not base.is_dir():
        raise ConfigError(f"{key}={path}: {base} is a file, not a directory; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {base} is not writable; choose a writable directory")


def prepare_run_dir(run_dir: str | Path, resuming: bool) -> Path:
    """Checks and creates the run directory at job start.

    A fresh run never reuses a directory that already holds a run's checkpoints or summary
    (two runs started in the same microsecond, or a hand-set ``hydra.run.dir``): that would
    overwrite the earlier run's files.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir, "paths.output_dir")
    if not resuming:
        taken = [m for m in FINISHED_MARKERS if (run_dir / m).exists()]
        if taken:
            raise ConfigError(
                f"run dir {run_dir} already holds a run ({', '.join(taken)}); refusing to "
                f"overwrite it: continue it with resume={run_dir}, or start a new run dir"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"paths.output_dir={run_dir}: cannot create it ({e.strerror})") from None
    return run_dir


def session_file(run_dir: str | Path, name: str, resuming: bool) -> Path:
    """Where this session writes ``name`` (config.yaml, hardware.json).

    A resumed session keeps the first session's file and writes ``<stem>.resume<k><suffix>``.
    """
    path = Path(run_dir) / name
    if not resuming or not path.exists():
        return path
    stem, suffix = path.stem, path.suffix
    k = 1
    while (path.parent / f"{stem}.resume{k}{suffix}").exists():
        k += 1
    return path.parent / f"{stem}.resume{k}{suffix}"


def describe_resume(checkpoint: dict, path: str | Path) -> str:
    """One line saying where a resumed fit continues and what is restored exactly."""
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = loops.get("epoch_loop.batch_progress", {})
    batch = progress.get("current", {}).get("processed", 0)
    epoch, step = checkpoint.get("epoch", 0), checkpoint.get("global_step", 0)
    where = f"epoch {epoch}, step {step}"
    if batch and not progress.get("is_last_batch", False):
        where += f", mid-epoch after batch {batch}"
    return (
        f"resuming from {path} at {where}: weights, optimizer, LR schedule, loop counters, "
        "best-k tracking and the in-memory loader's position are exact; global RNG streams "
        "(dropout) restart from the seed, and a DataLoader with workers restarts its epoch"
    )


def logged_step(checkpoint: dict) -> int:
    """The logger step at the checkpoint (Lightning logs against batches that stepped)."""
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    state = loops.get("epoch_loop.state_dict", {})
    return int(state.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


def job_checkpoint(
    ckpt_path: str | None, resume: str | None, log_dir: str, task: str, run_dir: str | Path
) -> str | None:
    """The checkpoint a job starts from: ``ckpt_path``, or the resumed run's last.ckpt.

    A resumed fit must run in the resumed run's own directory (the entry point arranges it);
    anything else would split one run over two directories.
    """
    if ckpt_path or not resume:
        return ckpt_path
    resumed = resolve_resume(resume, log_dir, "fit")
    if task == "fit" and resumed != Path(run_dir).resolve():
        raise ConfigError(
            f"resume={resume} continues {resumed}, but this job writes to {run_dir}; "
            "start it with the lightspeed command (which runs it in that directory)"
        )
    return str(last_checkpoint(resumed))


def start_resumed_fit(trainer, ckpt_path: str) -> None:
    """Logs where a resumed fit continues and points the loggers at the checkpoint's step."""
    from lightspeed.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(ckpt_path, map_location="cpu")
    check_schedule_length(checkpoint, trainer.max_epochs, trainer.max_steps)
    log.info(describe_resume(checkpoint, ckpt_path))
    step = logged_step(checkpoint)
    for logger in trainer.loggers:
        if hasattr(logger, "resume_from_step"):
            logger.resume_from_step(step)


def check_schedule_length(checkpoint: dict, max_epochs: int | None, max_steps: int) -> None:
    """ConfigError when a resumed run's length differs from a schedule sized for the first.

    A schedule with a fixed ``total_steps`` (OneCycleLR, ``total_steps: auto``) is restored
    with the length of the first run; training past it fails inside the scheduler.
    """
    schedulers = checkpoint.get("lr_schedulers") or []
    total = next((s.get("total_steps") for s in schedulers if s.get("total_steps")), None)
    saved = ((checkpoint.get("lightspeed") or {}).get("config") or {}).get("trainer") or {}
    if total is None or not saved:
        return
    changes = [
        f"trainer.{k}={saved.get(k)}→{v}"
        for k, v in (("max_epochs", max_epochs), ("max_steps", max_steps))
        if k in saved and saved.get(k) != v
    ]
    if changes:
        raise ConfigError(
            f"resume changes the run length ({', '.join(changes)}) but the checkpoint's LR "
            f"schedule was sized for {total} steps; resume with the original length, or "
            "train with model.scheduler=null (or a schedule without total_steps)"
        )
