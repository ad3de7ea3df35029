"""The one entry point: ``lightspeed [task=fit|validate|test|predict] [overrides]``.

1. Compose the config with Hydra's compose API and check it (lightspeed.config) — before
   torch is imported, and before Hydra makes a run directory, so a typo costs well under a
   second, prints one line, and leaves no empty run behind.
2. Hand over to ``hydra.main`` (run dir, logging, multirun, launchers, sweepers).
3. In the job: build and run the task (lightspeed.build).

User errors print ``lightspeed: error: <one line>`` and exit 2; ``HYDRA_FULL_ERROR=1`` shows
the full traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from lightspeed import distributed
from lightspeed.errors import ConfigError, RunInterrupted, UserError
from lightspeed.resume import override_key, resume_overrides

EXIT_USER_ERROR = 2


def config_dir() -> Path:
    """``configs/`` of the checkout (editable install), or ``$LIGHTSPEED_CONFIG_DIR``."""
    env = os.environ.get("LIGHTSPEED_CONFIG_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2] / "configs"


def _hydra_compose(overrides: list[str], return_hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lightspeed.config import register_schema

    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="lightspeed"):
        return hydra_compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def _target_params(node) -> dict:
    """Constructor parameters of ``node``'s ``_target_`` ({} without a readable one)."""
    from omegaconf import OmegaConf

    from lightspeed.signatures import read_signature

    target = node.get("_target_") if OmegaConf.is_dict(node) else None
    sig = read_signature(target) if isinstance(target, str) else None
    return sig.params if sig is not None else {}


def _declare_signature_keys(overrides: list[str]) -> list[str]:
    """``key=value`` → ``++key=value`` where the YAML leaves out a parameter of the target."""
    from omegaconf import OmegaConf

    choices = [o for o in overrides if "." not in override_key(o) and not o.startswith("~")]
    try:
        base = _hydra_compose(choices)
    except Exception:  # the choices themselves are broken: composing again reports that
        return overrides
    out = []
    for override in overrides:
        parent, _, name = override_key(override).rpartition(".")
        node = OmegaConf.select(base, parent) if parent and not override.startswith("+") else None
        left_out = OmegaConf.is_dict(node) and name not in node
        out.append("++" + override if left_out and name in _target_params(node) else override)
    return out


def compose_with(overrides: list[str], return_hydra_config: bool = False):
    """Composes ``train.yaml``; returns ``(cfg, overrides as applied)``.

    Every constructor parameter of a ``_target_`` class is a config key, whether its YAML
    lists it or not (the YAML sets only what differs from the class's default): an override
    of a parameter the YAML leaves out is applied as ``++key=value``.
    """
    from hydra.errors import ConfigCompositionException

    try:
        return _hydra_compose(overrides, return_hydra_config), list(overrides)
    except ConfigCompositionException as e:
        declared = _declare_signature_keys(list(overrides))
        if declared == list(overrides) or "Could not override" not in str(e):
            raise
    return _hydra_compose(declared, return_hydra_config), declared


def compose(overrides: list[str], return_hydra_config: bool = False):
    """Composes ``train.yaml`` with overrides, as the entry point and the tests do."""
    return compose_with(overrides, return_hydra_config)[0]


def compose_for_run(overrides: list[str], output_dir: str | Path):
    """A config ready for ``build``/``run_task`` outside ``hydra.main`` (scripts, tests).

    Sets Hydra's runtime config (so ``${hydra:...}`` resolves) and points the run's
    output at ``output_dir``.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose(overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        del cfg.hydra  # a Hydra job sees its config without it
    return cfg


def explain_hydra_error(e: Exception) -> str:
    """One line for an override Hydra rejected, with a suggestion for misspelt keys/options."""
    from omegaconf import OmegaConf

    from lightspeed.config import suggest

    text = f"{e} {e.__cause__ or ''}"
    m = re.search(r"Could not override '([^']+)'", text)
    if m and re.search(r"not in (struct|')", str(e.__cause__)):
        full_key = m.group(1)
        parent, _, name = full_key.rpartition(".")
        try:
            node = OmegaConf.select(compose([]), parent) if parent else compose([])
        except Exception:
            node = None
        siblings = list(node.keys()) if OmegaConf.is_dict(node) else []
        siblings += [k for k in _target_params(node) if k not in siblings]  # YAML leaves out
        return f"unknown key '{full_key}': {suggest(name, siblings)}"
    m = re.search(r"Could not find '([^']+)'\s+Available options in '([^']+)':\s*(.*)", text, re.S)
    if m:
        group = m.group(2)
        listing = m.group(3).split("Config search path")[0]
        options = [o.strip() for o in listing.splitlines() if o.strip()]
        value = m.group(1).removeprefix(f"{group}/")
        hint = ""
        nested = config_dir() / group / "net" / f"{value}.yaml"
        if nested.is_file():  # model=tiny where tiny is a net
            hint = f"; '{value}' is a net: choose it with {group}/net={value}"
        return f"{group}={value} is not an option of '{group}': {suggest(value, options)}{hint}"
    m = re.search(r"Value '(.*?)'(?: of type '\w+')? could not be converted to (\w+)", text)
    m = m or re.search(r"Value '(.*?)' is not a valid (\w+)", text)
    if m:
        key = re.search(r"full_key: (\S+)", text)
        name = key.group(1) if key else "a key"
        return f"{name}={m.group(1)!r} has the wrong type: expected {m.group(2).lower()}"
    return " ".join(text.split())


def precheck(overrides: list[str]):
    """Composes and validates; raises ConfigError (a UserError) with one line on any problem."""
    return checked_overrides(overrides)[0]


def checked_overrides(overrides: list[str]):
    """:func:`precheck` that also returns the overrides as applied (see :func:`compose_with`)."""
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from lightspeed.config import validate
    from lightspeed.rundir import check_writable

    try:
        cfg, overrides = compose_with(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(explain_hydra_error(e)) from None
    try:
        with open_dict(cfg):  # the run dir does not exist yet: Hydra makes it after this check
            cfg.paths.output_dir = "<run dir>"
        validate(cfg)
        # runs go under a writable paths.log_dir (resume= is resolved by resume_overrides)
        check_writable(cfg.paths.log_dir, "paths.log_dir")
    except OmegaConfBaseException as e:  # e.g. a broken ${interpolation}
        raise ConfigError(" ".join(str(e).split())) from None
    return cfg, overrides


def check_checkpoint(cfg) -> None:
    """The checkpoint a job starts from (ckpt_path=, resume=) is diagnosed without torch, and a
    fit from it is checked against its LR schedule, all before Hydra writes anything."""
    from lightspeed.checkpoint import read_plain
    from lightspeed.resume import LAST, check_continuation, count_train_batches
    from lightspeed.rundir import is_launching_process

    run_dir = Path(cfg.resume) if cfg.get("resume") else None
    path = cfg.get("ckpt_path") or (run_dir and run_dir / LAST)
    if not path or not is_launching_process():
        return
    checkpoint = read_plain(path)
    if cfg.task == "fit":

        def train_batches() -> int:  # loads the data: only for a schedule of fixed length
            from lightspeed.build import instantiate  # the DataModule's own one-line errors

            return count_train_batches(instantiate(cfg.data))

        check_continuation(checkpoint, cfg, train_batches, run_dir)


def _exit_user_error(e: UserError) -> NoReturn:
    """``lightspeed: error: <one line>`` and exit 2; ``HYDRA_FULL_ERROR=1``: the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    if distributed.is_rank_zero() or not e.every_rank:
        print(f"lightspeed: error: {e}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _job(cfg) -> float | None:
    """The Hydra job: validate again (multirun skips the precheck), build, run."""
    from lightspeed import console
    from lightspeed.config import validate

    try:
        validate(cfg)
        distributed.prepare_job(cfg)  # a multirun or requeued job on several processes
        from lightspeed.build import run_task

        console.quiet()  # after Lightning's import, which adds its own handlers

        summary = run_task(cfg)
    except UserError as e:
        _exit_user_error(e)
    except RunInterrupted as e:  # a signal: last.ckpt is saved, the message says how to go on
        from lightspeed.rundir import release_all

        release_all()  # the printed command may run at once, even beside an in-process caller
        if distributed.is_rank_zero():
            print(f"lightspeed: {e}", file=sys.stderr)
        requeued = distributed.requeue(e.exit_code - 128)  # SLURM's time-limit signal
        if requeued:
            print(f"lightspeed: {requeued}", file=sys.stderr)
        sys.exit(distributed.interrupted_exit_code(e.exit_code))
    if distributed.is_rank_zero():
        console.print_summary(summary)
    # the value a sweeper (hparams_search) optimises
    return summary.get("best_val_acc") or summary.get("val_acc")


def main(argv: list[str] | None = None) -> None:
    """Console script ``lightspeed`` and ``python -m lightspeed``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # flags (--multirun, --help, --cfg) go straight to Hydra; the job checks the config then
    plain = not any(a.startswith("-") for a in argv)
    if plain:
        try:
            cfg, argv = checked_overrides(argv)
            if cfg.get("hparams_search") is not None:
                from lightspeed.sweep import run_sweep

                sys.exit(run_sweep(cfg, argv))
            # torchrun/srun ranks share one run dir; a restarted launch continues it
            launched = distributed.launch_overrides(argv, cfg)
            if launched != argv:
                cfg, argv = checked_overrides(launched)
            # resume: the run's own overrides, these on top, run in the run's own directory
            resumed = resume_overrides(argv, cfg.get("resume"), cfg.paths.log_dir, cfg.task)
            if resumed != argv:
                cfg, argv = checked_overrides(resumed)
            check_checkpoint(cfg)
        except UserError as e:
            _exit_user_error(e)
    else:  # a constructor parameter the YAML leaves out is a key here too (++key=...)
        overrides = [a for a in argv if "=" in a and not a.startswith("-")]
        declared = dict(zip(overrides, _declare_signature_keys(overrides), strict=True))
        argv = [declared.get(a, a) for a in argv]
    import hydra

    from lightspeed.config import register_schema

    register_schema()  # also for -m/--cfg, which skip the precheck that registers it
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_job)()


if __name__ == "__main__":
    main()
