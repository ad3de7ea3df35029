"""The one entry point: ``lightspeed [task=fit|validate|test|predict|export] [overrides]``.

1. Plan the run (:mod:`lightspeed.plan`): parse, compose and check the config once, and read
   the checkpoint it starts from — before torch is imported and before Hydra makes a run
   directory, so a typo costs well under a second, prints one line, and leaves nothing behind.
2. Hand over to ``hydra.main`` (run dir, logging, multirun, launchers), to the sweep, or to
   the cross-validation (``cv.folds=K``: :mod:`lightspeed.cv`).
3. In the job: carry the plan out (:mod:`lightspeed.session`).

User errors print ``lightspeed: error: <one line>`` and exit 2; ``HYDRA_FULL_ERROR=1`` shows
the full traceback instead.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, NoReturn

from lightspeed.errors import RunInterrupted, UserError
from lightspeed.plan import Plan, config_dir, declare_keys, make_plan
from lightspeed.run import distributed

EXIT_USER_ERROR = 2


def _exit_user_error(e: UserError) -> NoReturn:
    """``lightspeed: error: <one line>`` and exit 2; ``HYDRA_FULL_ERROR=1``: the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    if distributed.is_rank_zero() or not e.every_rank:
        print(f"lightspeed: error: {e}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _runtime() -> tuple[Any, Any]:
    """The session's ``objective_value`` and ``run_task``, imported with torch and Lightning.

    Those imports make objects that live as long as the process. The cyclic collector is off
    while they load and then leaves them out (``gc.freeze``): its full passes over them took
    about 1 s of every start on a 2-core CPU (``python scripts/bench.py --startup 5``: the
    first step came 0.9 s after a bare ``import torch, lightning``, now at the same time).
    """
    gc.disable()
    try:
        from lightspeed.session import objective_value, run_task
    finally:
        gc.freeze()
        gc.enable()
    return objective_value, run_task


def _job(cfg: Any, plan: Plan | None) -> float | None:
    """The Hydra job: carry out the plan; a job nothing planned (a multirun's) checks first."""
    from lightspeed import console

    try:
        if plan is None:
            from lightspeed.config import validate

            validate(cfg)
        # a multirun's job (-m cv.fold=0,1,2): its fold in the CV dir
        if (cfg.get("cv") or {}).get("folds"):
            return _cv_job(cfg)
        distributed.prepare_job(cfg)  # a multirun or requeued job on several processes
        objective_value, run_task = _runtime()
        console.quiet()  # after Lightning's import, which adds its own handlers
        start = plan.start if plan is not None else None
        summary = run_task(cfg, start, planned=plan is not None)
    except UserError as e:
        if not cfg.get("resume") and distributed.is_rank_zero():
            from lightspeed.run.rundir import discard_refused

            discard_refused(cfg.paths.output_dir)  # a refused run leaves no run dir behind
        _exit_user_error(e)
    except RunInterrupted as e:  # a signal: last.ckpt is saved, the message says how to go on
        from lightspeed.run.rundir import release_all

        release_all()  # the printed command may run at once, even beside an in-process caller
        if distributed.is_rank_zero():
            print(f"lightspeed: {e}", file=sys.stderr)
        requeued = distributed.requeue(e.exit_code - 128)  # SLURM's time-limit signal
        if requeued:
            print(f"lightspeed: {requeued}", file=sys.stderr)
        sys.exit(distributed.interrupted_exit_code(e.exit_code))
    if distributed.is_rank_zero():
        console.print_summary(summary)
    return objective_value(summary)  # the value a Hydra sweeper optimises


def _cv_job(cfg: Any) -> None:
    """A multirun job of ``cv.folds=K``: the cross-validation (one fold with ``cv.fold``) in
    ``<paths.log_dir>/cv/<name>/``, as the same command without ``-m`` runs it."""
    from hydra.core.hydra_config import HydraConfig

    from lightspeed.cv import run_cv

    code = run_cv(cfg, list(HydraConfig.get().overrides.task))
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console script ``lightspeed`` and ``python -m lightspeed``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    plan = None
    # flags (--multirun, --help, --cfg) go straight to Hydra; the job checks the config then
    if not any(a.startswith("-") for a in argv):
        try:
            plan = make_plan(argv)
        except UserError as e:
            _exit_user_error(e)
        # before the sweep: a sweep of cross-validations is refused there
        if (plan.cfg.get("cv") or {}).get("folds"):
            from lightspeed.cv import run_cv

            sys.exit(run_cv(plan.cfg, plan.overrides))
        if plan.cfg.get("hparams_search") is not None:
            from lightspeed.sweep import run_sweep

            sys.exit(run_sweep(plan.cfg, plan.overrides))
        argv = plan.overrides
    else:  # a constructor parameter the YAML leaves out is a key here too (++key=...)
        argv = declare_keys(argv)
    import hydra

    from lightspeed.config import register_schema

    register_schema()  # also for -m/--cfg, which skip the plan that registers it

    def job(cfg: Any) -> float | None:
        return _job(cfg, plan)

    sys.argv = [sys.argv[0], *argv]
    if plan is None or plan.composed is None or not _hydra_run(job, plan.composed):
        hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(job)()


def _hydra_run(job: Any, composed: Any) -> bool:
    """What ``hydra.main`` does for a plain run, with the plan's composition (``Plan.composed``);
    False when the config asks for a multirun (``hydra.mode: MULTIRUN``): ``hydra.main`` runs it.

    ``hydra.main`` composes the config twice before a run: first in multirun mode, only to read
    ``hydra.mode``, then for the run. The plan has composed the same overrides already, in run
    mode and with Hydra's node; each compose takes 0.25 s on a 2-core AVX2 CPU, together a third
    of the start-up this project added to ``import torch, lightning`` (docs/performance.md).
    The steps are Hydra's own (its ``Hydra.run`` with a composed config); where this Hydra
    lacks one of them, ``hydra.main`` runs the job as before.
    """
    try:
        from hydra import version
        from hydra._internal.callbacks import Callbacks
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import (
            create_automatic_config_search_path,
            detect_calling_file_or_module_from_task_function,
            detect_task_name,
            run_and_report,
        )
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.utils import configure_log, run_job
        from hydra.types import HydraContext, RunMode
    except ImportError:
        return False
    if composed.hydra.mode not in (None, RunMode.RUN):
        return False
    version.setbase("1.3")
    caller = detect_calling_file_or_module_from_task_function(job)
    search_path = create_automatic_config_search_path(*caller, str(config_dir()))
    app = run_and_report(
        lambda: Hydra.create_main_hydra2(
            task_name=detect_task_name(*caller), config_search_path=search_path
        )
    )
    try:
        cfg = composed
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)  # as Hydra's compose does
        if cfg.hydra.mode is None:  # as hydra.main records it
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name="train")
        context = HydraContext(config_loader=app.config_loader, callbacks=callbacks)
        ret = run_job(
            hydra_context=context,
            task_function=job,
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
            configure_logging=True,
        )
        callbacks.on_run_end(config=cfg, config_name="train", job_return=ret)
        run_and_report(lambda: ret.return_value)  # the job's exception, reported as Hydra does
    finally:
        GlobalHydra.instance().clear()
    return True


if __name__ == "__main__":
    main()
