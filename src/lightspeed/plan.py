"""One plan per run: the command line parsed, composed and checked once, before Hydra writes
anything; the job (:mod:`lightspeed.session`) carries it out.

:func:`make_plan` turns argv into a :class:`Plan`: the overrides as applied (what ``hydra.main``
gets), the composed and checked config, and the checkpoint the run starts from, read once. A
launch by torchrun/srun and a ``resume=`` add overrides of their own (the shared run dir; the
resumed run's own overrides); those are worked out from the command line and the run's files
before the one composition. This module is the only one that calls Hydra's compose API, and
the one place that reads Hydra's error text (:func:`explain`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightspeed.config import RunConfig, suggest
from lightspeed.errors import ConfigError
from lightspeed.run import distributed
from lightspeed.run.checkpoint import read_plain
from lightspeed.run.resume import (
    StartPoint,
    check_continuation,
    check_data_length,
    count_train_batches,
    override_key,
    override_value,
    resume_overrides,
    start_point,
)
from lightspeed.run.rundir import check_writable, is_launching_process

# the groups whose nodes are classes to build (``_target_``): every constructor parameter is a
# key there, listed in the YAML or not, so their overrides are applied as ``++key=value`` and
# checked against the signature afterwards (lightspeed.config.check_target)
TARGET_GROUPS = ("data", "model", "trainer", "callbacks", "logger", "hparams_search")


def config_dir() -> Path:
    """``configs/`` of the checkout (editable install), or ``$LIGHTSPEED_CONFIG_DIR``."""
    env = os.environ.get("LIGHTSPEED_CONFIG_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2] / "configs"


def _hydra_compose(overrides: list[str], return_hydra_config: bool = False) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lightspeed.config import register_schema

    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="lightspeed"):
        return hydra_compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def declare_keys(argv: list[str]) -> list[str]:
    """``group.key=value`` → ``++group.key=value`` in the groups of classes to build, so a
    constructor parameter that the YAML leaves out is a key as well (the YAMLs hold only what
    differs from the classes' defaults); a misspelt key is then caught by the signature check,
    which names the closest parameter."""
    out = []
    for a in argv:
        key = override_key(a)
        if "=" in a and "." in key and key.split(".")[0] in TARGET_GROUPS and a[0] not in "+~":
            a = "++" + a
        out.append(a)
    return out


def check_group_choices(argv: list[str]) -> None:
    """``group=option`` names a YAML of ``configs/<group>/``, else one line with the options."""
    root = config_dir()
    for a in argv:
        key, _, value = a.partition("=")
        group = root / key
        if a[0] in "+~" or "." in key or key.startswith("hydra") or not group.is_dir():
            continue
        if (
            value in ("null", "")
            or "," in value
            or "(" in value
            or (group / f"{value}.yaml").is_file()
        ):
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        hint = ""
        if (group / "net" / f"{value}.yaml").is_file():  # model=tiny where tiny is a net
            hint = f"; '{value}' is a net: choose it with {key}/net={value}"
        raise ConfigError(
            f"{key}={value} is not an option of '{key}': {suggest(value, options)}{hint}"
        )


def compose(overrides: list[str], return_hydra_config: bool = False) -> Any:
    """Composes ``train.yaml`` with overrides (given as the command line gives them)."""
    return _hydra_compose(declare_keys(overrides), return_hydra_config)


def compose_for_run(overrides: list[str], output_dir: str | Path) -> Any:
    """A config ready for ``lightspeed.session.run_task`` outside ``hydra.main`` (a sweep's
    trials, scripts, tests): Hydra's runtime config is set (``${hydra:...}`` resolves) and the
    run's output goes to ``output_dir``."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose(overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        del cfg.hydra  # a Hydra job sees its config without it
    return cfg


def explain(e: Exception) -> str:
    """One line for a composition error that the checks before it could not foresee (a value
    of the wrong type for a schema key, a broken interpolation): Hydra's and OmegaConf's text,
    read in this one place."""
    text = f"{e} {e.__cause__ or ''}"
    m = re.search(r"Value '(.*?)'(?: of type '\w+')? could not be converted to (\w+)", text)
    m = m or re.search(r"Value '(.*?)' is not a valid (\w+)", text)
    if m:
        key = getattr(e.__cause__, "full_key", None) or getattr(e, "full_key", None)
        found = re.search(r"full_key: (\S+)", text)
        name = key or (found.group(1) if found else "a key")
        return f"{name}={m.group(1)!r} has the wrong type: expected {m.group(2).lower()}"
    m = re.search(r"Key '([^']+)' not in '(\w+)'", text)
    if m:  # a misspelt key of a schema section (perf.*, extras.*, ...)
        full = getattr(e.__cause__, "full_key", None) or m.group(1)
        return f"unknown key '{full}': {suggest(m.group(1), schema_keys(full.rpartition('.')[0]))}"
    return " ".join(text.split())


def schema_keys(section: str) -> list[str]:
    """The keys the schema declares at ``section`` ("" for the top level, ``perf``, ...)."""
    node: Any = RunConfig
    for part in filter(None, section.split(".")):
        field = (
            node.__dataclass_fields__.get(part) if hasattr(node, "__dataclass_fields__") else None
        )
        factory = getattr(field, "default_factory", None)
        node = factory() if callable(factory) else None
    return list(getattr(node, "__dataclass_fields__", {}))


@dataclass
class Plan:
    """What a run will do, decided before anything is written.

    Attributes:
        cfg: the composed, checked config (``paths.output_dir`` is not known yet: Hydra makes
            the run dir).
        overrides: the overrides as applied, for ``hydra.main``.
        start: the checkpoint the run starts from (``ckpt_path=``, ``resume=``), read once.
        composed: the same composition with Hydra's own node (``hydra.*``), untouched by the
            checks: what Hydra's run of these overrides composes, so the entry hands it to
            Hydra instead of composing again.
    """

    cfg: Any
    overrides: list[str]
    start: StartPoint | None = None
    composed: Any = None


class _Early:
    """``task`` and ``paths.log_dir`` read from the command line and ``configs/paths/`` before
    the composition, for a resume or a launch of several processes, which name run dirs."""

    def __init__(self, overrides: list[str]) -> None:
        self.overrides = overrides
        self.task = _value(overrides, "task") or RunConfig.task
        self._log_dir: str | None = None

    @property
    def log_dir_was_read(self) -> bool:
        return self._log_dir is not None

    def log_dir(self) -> str:
        """``paths.log_dir`` as the command line and ``configs/paths/`` give it (read once)."""
        if self._log_dir is None:
            from omegaconf import OmegaConf

            choice = _value(self.overrides, "paths") or "default"
            paths = OmegaConf.load(config_dir() / "paths" / f"{choice}.yaml")
            given = [o.lstrip("+") for o in self.overrides if override_key(o).startswith("paths.")]
            cfg = OmegaConf.merge({"paths": paths}, OmegaConf.from_dotlist(given))
            self._log_dir = str(cfg.paths.log_dir)
        return self._log_dir


def _value(overrides: list[str], key: str) -> str | None:
    values = [o.split("=", 1)[1] for o in overrides if override_key(o) == key and "=" in o]
    return re.sub(r"^(['\"])(.*)\1$", r"\2", values[-1]) if values else None


def checked(overrides: list[str]) -> tuple[Any, Any]:
    """Composes ``overrides`` (as applied) once and checks the result; ConfigError (one line).

    Returns:
        ``(cfg, composed)``: the checked config, and the composition with Hydra's node as it
        came (:attr:`Plan.composed`).
    """
    import copy

    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from lightspeed.config import validate

    try:
        composed = _hydra_compose(overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(explain(e)) from None
    cfg = copy.deepcopy(composed)  # 0.02 s, a compose 0.25 s: Hydra's run takes the original
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        with open_dict(cfg):  # the run dir does not exist yet: Hydra makes it after this check
            cfg.paths.output_dir = "<run dir>"
        validate(cfg)
        check_writable(cfg.paths.log_dir, "paths.log_dir")  # runs go under it
    except OmegaConfBaseException as e:  # e.g. a broken ${interpolation}
        raise ConfigError(" ".join(str(e).split())) from None
    return cfg, composed


def make_plan(argv: list[str]) -> Plan:
    """The plan for ``lightspeed <argv>``; ConfigError (a UserError, one line) on any problem.

    The config is composed once. Only when a config file (not the command line) sets ``task``
    or ``paths.log_dir`` for a resume or a multi-process launch is it planned again with those.
    """
    overrides = declare_keys(argv)
    check_group_choices(overrides)
    if _value(overrides, "hparams_search") not in (None, "null"):  # the sweep plans its trials
        return Plan(checked(overrides)[0], overrides)
    early = _Early(overrides)
    started = bool(_value(overrides, "resume") or _value(overrides, "ckpt_path"))
    # torchrun/srun ranks share one run dir; a restarted launch continues it
    overrides = distributed.launch_overrides(overrides, early.task, early.log_dir, started)
    # resume: the run's own overrides, these on top, run in the run's own directory
    resume = _value(overrides, "resume")
    overrides = resume_overrides(overrides, resume, early.log_dir, early.task)
    cfg, composed = checked(overrides)
    task_used = overrides != declare_keys(argv)  # a resume or a launch named a run dir
    log_dir_used = early.log_dir_was_read  # resume=auto, or a torchrun/srun run dir
    if (task_used and cfg.task != early.task) or (
        log_dir_used and str(cfg.paths.log_dir) != early.log_dir()
    ):
        fixed = [f"task={cfg.task}", f"paths.log_dir={override_value(str(cfg.paths.log_dir))}"]
        return make_plan([*argv, *fixed])
    if cfg.get("weights_from"):
        read_plain(cfg.weights_from)  # a file that cannot be used is one line, now
    start = start_point(cfg.ckpt_path, cfg.get("resume"), cfg.paths.log_dir, cfg.task, None)
    if start is not None and cfg.task == "fit" and is_launching_process():
        check_continuation(start.data, cfg, Path(cfg.resume) if cfg.get("resume") else None)
        check_data_length(start.data, cfg, lambda: _train_batches(cfg))
    return Plan(cfg, overrides, start, composed)


def _train_batches(cfg: Any) -> int:
    """Train batches per epoch of the configured data. It loads the data (and torch): only a
    continued fit under a fixed-length LR schedule asks, so that a change of the data's size
    is refused before Hydra writes anything."""
    from lightspeed.build import instantiate  # the DataModule's own one-line errors

    return count_train_batches(instantiate(cfg.data))


def precheck(argv: list[str]) -> Any:
    """The checked config of ``lightspeed <argv>`` (scripts and tests); ConfigError on any
    problem, as the entry would print it."""
    return make_plan(argv).cfg
