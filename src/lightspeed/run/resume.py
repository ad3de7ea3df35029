"""Resuming a run in its own directory, as it was configured, after checks that write nothing.

Torch-free and Hydra-free: the entry point calls it before either (docs/reliability.md).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightspeed.errors import ConfigError
from lightspeed.run import rundir
from lightspeed.run.checkpoint import CHECKPOINT_KEY, read_plain

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"
# the run's length: a continued fit may change it; a schedule sized for the run is re-sized
# (lightspeed.safety.checkpointing.ResizeSchedule) → Lightning's value when left out
RUN_LENGTH = {"trainer.max_epochs": None, "trainer.max_steps": -1}
# how a step is made: a continued fit keeps them under a schedule sized in steps, whose
# position (and the loader's, mid-epoch) would mean other samples → Lightning's default
STEP_KEYS = {
    "trainer.limit_train_batches": 1.0,
    "trainer.accumulate_grad_batches": 1,
    "trainer.devices": "auto",
    "trainer.num_nodes": 1,
    "data.batch_size": None,
}
# lightspeed.callbacks.ema.EMA: its entry in checkpoint["callbacks"] means the file's weights
# are the average and its training weights are in that entry, which only the callback restores
EMA_TARGET = "lightspeed.callbacks.ema.EMA"
EMA_STATE = "EMA"
NOT_INHERITED = ("resume", "ckpt_path")  # a resume continues last.ckpt, whatever started it


def find_latest_run(log_dir: str | Path, task: str = "fit") -> Path | None:
    """The run dir under ``log_dir/task`` (multiruns included) with the newest last.ckpt."""
    root = Path(log_dir) / task
    found = [p for p in root.glob(f"**/{LAST.as_posix()}") if p.is_file()] if root.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime).parent.parent if found else None


def resolve_resume(resume: str, log_dir: str | Path | Callable[[], str], task: str = "fit") -> Path:
    """The run directory that ``resume=<value>`` names; ConfigError when there is none.
    ``log_dir`` (or a function giving it) is read for ``resume=auto`` only."""
    if resume == "auto":
        log_dir = log_dir() if callable(log_dir) else log_dir
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
            f"{LAST.as_posix()}, or resume=auto"
        )
    return path.resolve()


def override_value(value: str) -> str:
    """A path as a Hydra override value (quoted when it holds characters the grammar parses)."""
    if re.fullmatch(r"[\w/.\-+]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_key(override: str) -> str:
    """``a.b`` of ``+a.b=1``, ``~a.b`` or ``a.b=1``."""
    return override.lstrip("+~").split("=", 1)[0]


def _explicit_run_dir(argv: list[str]) -> Path | None:
    """``hydra.run.dir`` when the command sets it to a plain path."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not values or "${" in values[-1]:
        return None
    return Path(re.sub(r"^(['\"])(.*)\1$", r"\2", values[-1])).expanduser()


def run_overrides(run_dir: Path) -> list[str]:
    """The overrides of the run's newest session (``.hydra/resume-*/`` or ``.hydra/``)."""
    sessions = sorted((run_dir / ".hydra").glob("resume-*/overrides.yaml"))
    path = sessions[-1] if sessions else run_dir / ".hydra" / "overrides.yaml"
    try:
        saved = yaml.safe_load(path.read_text()) if path.is_file() else []
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"resume: cannot read the run's overrides {path} ({e})") from None
    return [str(o) for o in saved or [] if override_key(str(o)) not in NOT_INHERITED]


def merge_overrides(inherited: list[str], given: list[str]) -> list[str]:
    """``inherited`` with each key that ``given`` sets replaced by the given value."""
    old = {override_key(o): o for o in inherited}
    new_keys = {override_key(o) for o in given}
    merged = [o for o in inherited if override_key(o) not in new_keys]
    for o in given:
        if old.get(override_key(o), "").startswith("+") and not o.startswith(("+", "~")):
            o = f"++{o}"  # the key exists only because the run added it
        merged.append(o)
    return merged


def resume_overrides(
    argv: list[str], resume: str | None, log_dir: str | Callable[[], str], task: str
) -> list[str]:
    """The overrides for ``hydra.main``: a resume continues its run as configured, in its dir.

    Refuses, before Hydra writes anything, a ``hydra.run.dir`` that holds another run or is in
    use, and a ``resume`` of a run other than the ``hydra.run.dir`` given with it.
    """
    if not rundir.is_launching_process():
        return argv  # the other ranks rerun the launching process's (complete) command
    explicit = _explicit_run_dir(argv)
    if explicit is not None and not (resume and task == "fit"):
        rundir.check_fresh_run_dir(explicit)
    if not resume:
        return argv
    if explicit is not None and task == "fit":
        if resume == "auto" and not (explicit / LAST).is_file():
            raise ConfigError(
                f"resume=auto with hydra.run.dir={explicit}: {explicit / LAST} does not exist; "
                "name a run that has one, or drop resume=auto to start a new run there"
            )
        run_dir = resolve_resume(str(explicit) if resume == "auto" else resume, log_dir)
        if run_dir != explicit.resolve():
            raise ConfigError(
                f"resume={resume} continues {run_dir} but hydra.run.dir={explicit} is another "
                "directory; a resumed run stays in its own directory: give only one of them"
            )
    elif explicit is not None and resume == "auto":
        raise ConfigError(
            f"resume=auto with hydra.run.dir and task={task}: name the run whose weights to use "
            "(resume=<run dir>)"
        )
    else:
        run_dir = resolve_resume(resume, log_dir)
    own = ("resume",) + (("hydra.run.dir", "hydra.output_subdir") if task == "fit" else ())
    given = [a for a in argv if override_key(a) not in own]
    run = override_value(str(run_dir))
    out = [*merge_overrides(run_overrides(run_dir), given), f"resume={run}"]
    if task == "fit":
        rundir.check_free(run_dir)
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")  # needs no quotes
        out += [f"hydra.run.dir={run}", f"hydra.output_subdir=.hydra/resume-{stamp}"]
    return out


def count_train_batches(datamodule: Any) -> int:
    """Train batches per epoch as the DataModule serves them to one process."""
    datamodule.setup("fit")
    return len(datamodule.train_dataloader())


def setting(config: Any, key: str) -> Any:
    """``config[a][b]`` for ``key="a.b"`` (None when absent); a dict or a DictConfig."""
    for part in key.split("."):
        config = config.get(part) if hasattr(config, "get") else None
    return config


def check_continuation(checkpoint: dict, config: Any, run_dir: Path | None = None) -> None:
    """ConfigError when a fit from ``checkpoint`` (its plain data) cannot go on with ``config``:
    a change of how a step is made (``STEP_KEYS``) under a schedule sized in steps, or a
    resume (``run_dir``) of a finished run that asks for no longer run. Reads no data: the
    entry calls it before Hydra writes anything (:func:`check_data_length` follows)."""
    meta = checkpoint.get(CHECKPOINT_KEY) or {}
    saved = meta.get("config") or {}
    changed = {key for key in {**RUN_LENGTH, **STEP_KEYS} if _changed(saved, config, key)}
    steps = [f"{k}={_value(saved, k)}→{_value(config, k)}" for k in STEP_KEYS if k in changed]
    if _schedule_steps(checkpoint) and steps:
        _refuse_new_steps(checkpoint, steps, run_dir)
    if EMA_STATE in (checkpoint.get("callbacks") or {}) and not _averages(config):
        source = override_value(str(Path(run_dir) / LAST)) if run_dir else "<its checkpoint>"
        raise ConfigError(
            "this checkpoint's weights are an EMA of its training weights (callbacks/ema=on "
            "made it), and a fit without the EMA callback would train on from the average; "
            f"add callbacks/ema=on, or start a new fit from the average: weights_from={source}"
        )
    if run_dir and not changed & set(RUN_LENGTH) and _ended(run_dir):
        epochs = _value(saved, "trainer.max_epochs")
        more = 2 * epochs if isinstance(epochs, int) and epochs > 0 else "<more>"
        raise ConfigError(
            f"resume={run_dir}: that run already finished (summary.json); to train it further, "
            f"give it a longer run: {resume_command(run_dir, f'trainer.max_epochs={more}')}"
        )


def _averages(config: Any) -> bool:
    """The config has the EMA callback among its callbacks."""
    callbacks = setting(config, "callbacks") or {}
    return any(setting(c, "_target_") == EMA_TARGET for c in callbacks.values() if c is not None)


def _value(config: Any, key: str) -> Any:
    value = setting(config, key)
    return {**RUN_LENGTH, **STEP_KEYS}[key] if value is None else value


def _changed(saved: Any, config: Any, key: str) -> bool:
    return bool(saved) and _value(saved, key) != _value(config, key)


def check_data_length(checkpoint: dict, config: Any, train_batches: Callable[[], int]) -> None:
    """ConfigError when the train batches per epoch (``train_batches()``, from the data) differ
    from the checkpoint's under a schedule sized in steps."""
    meta = checkpoint.get(CHECKPOINT_KEY) or {}
    devices = (setting(config, "trainer.devices") or 1, setting(config, "trainer.num_nodes") or 1)
    if not (_schedule_steps(checkpoint) and meta.get("train_batches") and devices == (1, 1)):
        return
    limit = setting(config, "trainer.limit_train_batches") or 1.0
    old, new = (_per_epoch(n, limit) for n in (meta["train_batches"], train_batches()))
    if old != new:
        _refuse_new_steps(checkpoint, [f"train batches per epoch={old}→{new} (data size)"], None)


def _schedule_steps(checkpoint: dict) -> int | None:
    """``total_steps`` of the checkpoint's LR schedule, when it has a fixed length."""
    schedules = checkpoint.get("lr_schedulers") or []
    return next((s.get("total_steps") for s in schedules if isinstance(s, dict)), None)


def _refuse_new_steps(checkpoint: dict, changes: list[str], run_dir: Path | None) -> None:
    fine_tune = "weights_from=<its checkpoint>"
    if run_dir is not None:
        fine_tune = f"weights_from={override_value(str(Path(run_dir) / LAST))}"
    raise ConfigError(
        f"this fit changes how its steps are made ({', '.join(changes)}), but a continued fit "
        f"keeps its batches (its LR schedule and loader position count them); continue with "
        f"the run's own, or start a new run from its weights: {fine_tune} with your overrides"
    )


def _ended(run_dir: Path) -> bool:
    """The fit wrote its summary after its last save: nothing is left to continue."""
    summary = run_dir / "summary.json"
    return summary.is_file() and summary.stat().st_mtime >= (run_dir / LAST).stat().st_mtime


def _per_epoch(batches: int, limit: float | int) -> int:
    """Batches an epoch trains (Lightning's reading of ``limit_train_batches``)."""
    return int(batches * limit) if isinstance(limit, float) else min(batches, limit)


@dataclass
class StartPoint:
    """The checkpoint a job starts from: its path and its plain data, read once."""

    path: str
    data: dict


def start_point(
    ckpt_path: str | None, resume: str | None, log_dir: str, task: str, run_dir: str | Path | None
) -> StartPoint | None:
    """The checkpoint a job starts from (``ckpt_path``, or the resumed run's last.ckpt), read
    once; an unusable file is one line, before Lightning opens it. ``run_dir``: the job's own
    directory, which a resumed fit must be (None: not known yet, before Hydra makes it)."""
    if ckpt_path or not resume:
        path = ckpt_path
    else:
        resumed = resolve_resume(resume, log_dir, "fit")
        if task == "fit" and run_dir is not None and resumed != Path(run_dir).resolve():
            raise ConfigError(
                f"resume={resume} continues {resumed}, but this job writes to {run_dir}; "
                "start it with the lightspeed command (which runs it in that directory)"
            )
        path = str(resumed / LAST)
    return StartPoint(str(path), read_plain(path)) if path else None


def start_resumed_fit(trainer: Any, start: StartPoint) -> None:
    """Logs where the fit continues and aligns the loggers' steps."""
    checkpoint = start.data
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = loops.get("epoch_loop.batch_progress", {})
    batch = progress.get("current", {}).get("processed", 0)
    where = f"epoch {checkpoint.get('epoch', 0)}, step {checkpoint.get('global_step', 0)}"
    if batch and not progress.get("is_last_batch", False):
        where += f", mid-epoch after batch {batch}"
    log.info(
        f"resuming from {start.path} at {where}: weights, optimizer, LR schedule, loop counters, "
        "best-k tracking and the in-memory loader's position are exact; global RNG streams "
        "(dropout) restart from the seed, and a DataLoader with workers restarts its epoch"
    )
    # the loggers' step: Lightning logs against the batches that stepped
    state = loops.get("epoch_loop.state_dict", {})
    step = int(state.get("_batches_that_stepped", checkpoint.get("global_step", 0)))
    for logger in trainer.loggers:
        if hasattr(logger, "resume_from_step"):
            logger.resume_from_step(step)


def resume_command(run_dir: str | Path, *extra: str) -> str:
    """The command that continues ``run_dir`` (with ``extra`` overrides): see
    :func:`command_line`."""
    path = Path(run_dir).absolute()
    shown = os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    return command_line(f"resume={override_value(shown)}", *extra)


def command_line(*args: str) -> str:
    """``lightspeed <args>`` in the form this process was started with (``LIGHTSPEED_LAUNCHER``,
    set by ``make train``, else as ``sys.argv[0]`` shows), ready to paste in a fresh shell in
    this directory: never a bare ``lightspeed``, which is not on a fresh shell's PATH."""
    launcher = os.environ.get("LIGHTSPEED_LAUNCHER")
    if launcher:
        if launcher.split()[0] == "make":
            return f"{launcher} ARGS={shlex.quote(' '.join(args))}"
        return " ".join([launcher, *map(shlex.quote, args)])
    env = [f"{v}={shlex.quote(os.environ[v])}" for v in ("LIGHTSPEED_ROOT", "LIGHTSPEED_CONFIG_DIR")
           if v in os.environ]  # fmt: skip
    argv0 = Path(sys.argv[0])
    if argv0.name == "lightspeed":
        command = [_program(argv0)]
    else:  # python -m lightspeed, or a caller of cli.main (a script, a notebook, a test)
        command = [_program(Path(sys.executable)), "-m", "lightspeed"]
    return " ".join([*env, *command, *map(shlex.quote, args)])


def _program(path: Path) -> str:
    """How to call ``path`` from this shell: its name when on PATH, else its (relative) path."""
    found = shutil.which(path.name)
    if found and Path(found).absolute() == path.absolute():
        return path.name
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    text = str(path)
    return shlex.quote(text if "/" in text else f"./{text}")
