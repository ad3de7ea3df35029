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
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(job)()


if __name__ == "__main__":
    main()
