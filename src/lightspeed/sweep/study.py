"""The Optuna study behind ``hparams_search``: trials, their run dirs, restarts."""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal

from lightspeed.constraints import NonNegativeInt, PositiveInt
from lightspeed.errors import ConfigError, RunInterrupted, UserError
from lightspeed.run import distributed, rundir
from lightspeed.run.resume import LAST, override_key
from lightspeed.sweep.report import report
from lightspeed.sweep.space import distribution, format_value

log = logging.getLogger("lightspeed.sweep")


def in_trials(override: str) -> bool:
    """Whether an override of the sweep's command applies to its trials."""
    key = override_key(override)
    return not (
        key.split(".")[0] in ("hparams_search", "resume", "ckpt_path", "task")
        or key.startswith("hydra.")
    )


class OptunaSearch:
    """An Optuna study over config keys; each trial is one fit.

    Args:
        study_name: the study, and its folder ``<paths.log_dir>/sweeps/<study_name>``; the same
            name continues the same study.
        params: ``{config key: search space}`` in Hydra's sweep syntax, e.g.
            ``model.optimizer.lr: tag(log, interval(0.01, 0.5))``,
            ``data.batch_size: choice(128, 256, 512)``; a config group works too
            (``model: choice(mlp, cnn_small)``).
        n_trials: trials the study runs in all (finished ones count; pruned and failed too).
        metric: the validation metric each trial reports after every epoch; a trial's value is
            its best epoch's. None: the run's ``objective.metric``.
        direction: ``maximize`` or ``minimize`` the metric. None: from ``objective.mode``.
        sampler: ``tpe`` (Bayesian, Optuna's default) or ``random``.
        seed: the sampler's seed (a continued study's sampler draws from ``seed`` and the
            number of trials it holds: see :func:`sampler_seed`).
        pruner: ``median``: stop a trial whose metric is worse than the median of the earlier
            trials at the same epoch; ``none``.
        startup_trials: trials that always run to the end, before pruning starts.
        warmup_epochs: epochs of each trial that are never pruned.
        overrides: overrides applied to every trial (e.g. ``extras.test_after_fit=false``).
    """

    def __init__(
        self,
        study_name: str,
        params: dict[str, str],
        n_trials: PositiveInt = 20,
        metric: str | None = None,
        direction: Literal["maximize", "minimize"] | None = None,
        sampler: Literal["tpe", "random"] = "tpe",
        seed: int | None = 42,
        pruner: Literal["median", "none"] = "median",
        startup_trials: NonNegativeInt = 3,
        warmup_epochs: NonNegativeInt = 1,
        overrides: list[str] | None = None,
    ) -> None:
        if not params:
            raise ConfigError("hparams_search.params is empty: name the keys to search over")
        self.study_name, self.params = study_name, dict(params)
        self.distributions = {k: distribution(k, str(v)) for k, v in self.params.items()}
        self.n_trials, self.metric, self.direction = n_trials, metric, direction
        self.sampler, self.seed, self.pruner = sampler, seed, pruner
        self.startup_trials, self.warmup_epochs = startup_trials, warmup_epochs
        self.overrides = list(overrides or [])

    # --- the study ---------------------------------------------------------------------------

    def open_study(self, sweep_dir: Path, command: list[str]) -> Any:
        """The study in ``sweep_dir`` (created, or loaded when it is there)."""
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()  # Optuna's lines go to this run's log
        samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
        pruner = (
            optuna.pruners.MedianPruner(self.startup_trials, self.warmup_epochs)
            if self.pruner == "median"
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=f"sqlite:///{sweep_dir / 'study.db'}",
            direction=self.direction,
            sampler=samplers[self.sampler](seed=self.seed),
            pruner=pruner,
            load_if_exists=True,
        )
        held = len(study.get_trials(deepcopy=False))
        if held:  # a continued study: not the draws its first run made
            study.sampler = samplers[self.sampler](seed=sampler_seed(self.seed, held))
        setup = {"command": command, "params": self.params, "metric": self.metric}
        if not study.user_attrs:
            for key, value in setup.items():
                study.set_user_attr(key, value)
        elif {k: study.user_attrs.get(k) for k in setup} != setup:
            raise ConfigError(
                f"study {self.study_name} in {sweep_dir} was started with other settings "
                f"({_difference(study.user_attrs, setup)}); run its own command to continue it, "
                "or start a new study with hparams_search.study_name=<new name>"
            )
        return study

    def trial_overrides(self, command: list[str], params: dict[str, Any]) -> list[str]:
        return [*command, *self.overrides, *(f"{k}={format_value(v)}" for k, v in params.items())]

    @staticmethod
    def ended(trial: Any) -> bool:
        """Counts against n_trials: finished, pruned, or failed (not cut short by a signal)."""
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            return not trial.user_attrs.get("interrupted")
        return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)

    def run(self, cfg: Any, command: list[str]) -> int:
        """Runs the study to ``n_trials``; the exit status (0, or 128 + signal)."""
        import optuna
        from optuna.trial import TrialState

        self.metric = self.metric or cfg.objective.metric
        self.direction = self.direction or (
            "maximize" if cfg.objective.mode == "max" else "minimize"
        )
        sweep_dir = Path(cfg.paths.log_dir) / "sweeps" / self.study_name
        rundir.check_writable(sweep_dir, "hparams_search.study_name")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        rundir.acquire(sweep_dir)  # one process per study
        handler = _log_to(sweep_dir / "sweep.log")
        try:
            study = self.open_study(sweep_dir, command)
            done = sum(self.ended(t) for t in study.trials)
            log.info(
                "study %s: %d of %d trials done; in %s",
                self.study_name,
                done,
                self.n_trials,
                sweep_dir,
            )
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                # left by an interrupted run of this command (the lock says none runs now)
                trial_dir = sweep_dir / f"trial_{frozen.number:03d}"
                # Optuna has no public accessor for the id that Trial() takes
                trial = optuna.trial.Trial(study, frozen._trial_id)
                if (trial_dir / LAST).is_file():
                    log.info("trial %d continues from %s", frozen.number, trial_dir / LAST)
                    self.run_trial(study, trial, command, sweep_dir, resume=True)
                else:
                    trial.set_user_attr("interrupted", True)
                    study.tell(trial, state=TrialState.FAIL)
                    study.enqueue_trial(frozen.params, skip_if_exists=False)
                    log.info("trial %d had no checkpoint: it runs again", frozen.number)
            while sum(self.ended(t) for t in study.trials) < self.n_trials:
                trial = study.ask(self.distributions)
                self.run_trial(study, trial, command, sweep_dir, resume=False)
        except RunInterrupted as e:
            report(self, study, sweep_dir)
            print(f"lightspeed: {e}".split("; continue with")[0], file=sys.stderr)
            print(
                f"lightspeed: sweep interrupted; finished trials are kept: run the same "
                f"command to continue it ({sweep_dir})",
                file=sys.stderr,
            )
            requeued = distributed.requeue(e.exit_code - 128)
            if requeued:
                print(f"lightspeed: {requeued}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print(
                "\nlightspeed: sweep interrupted; run the same command to continue it",
                file=sys.stderr,
            )
            return 128 + signal.SIGINT
        finally:
            logging.getLogger().removeHandler(handler)
            rundir.release(sweep_dir)
        report(self, study, sweep_dir)
        return 0

    # --- one trial ---------------------------------------------------------------------------

    def run_trial(
        self, study: Any, trial: Any, command: list[str], sweep_dir: Path, resume: bool
    ) -> None:
        """One fit; tells the study how it ended (a signal leaves the trial running)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf
        from optuna.trial import TrialState

        from lightspeed.config import validate
        from lightspeed.plan import compose_for_run
        from lightspeed.session import run_task
        from lightspeed.sweep.pruning import OptunaPruning

        number = trial.number
        trial_dir = sweep_dir / f"trial_{number:03d}"
        overrides = self.trial_overrides(command, trial.params)
        shown = " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
        log.info("trial %d/%d: %s", number, self.n_trials, shown)
        started = time.perf_counter()
        handler = _log_to(trial_dir / "trial.log")
        try:
            extra = [f"resume={trial_dir}"] if resume else []
            try:
                cfg = compose_for_run([*overrides, *extra], trial_dir)
            except Exception as e:  # a value Hydra refuses: this trial fails, the study goes on
                raise ConfigError(" ".join(str(e).split())) from None
            validate(cfg)
            if not resume:  # the trial's own command, as a normal run keeps it (resume reads it)
                (trial_dir / ".hydra").mkdir(parents=True, exist_ok=True)
                (trial_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
            run_task(cfg, extra_callbacks=[OptunaPruning(trial, self.metric)])
        except UserError as e:
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", number, e)
            return
        finally:
            logging.getLogger().removeHandler(handler)
            rundir.release(trial_dir)
            HydraConfig.instance().cfg = None
        seconds = round(time.perf_counter() - started, 1)
        trial.set_user_attr("seconds", seconds)
        frozen = study.get_trials(deepcopy=False)[number]
        values = list(frozen.intermediate_values.values())
        if frozen.user_attrs.get("pruned_at_epoch") is not None:
            study.tell(trial, state=TrialState.PRUNED)
        elif not values:
            trial.set_user_attr("error", f"no {self.metric} was logged (no validation ran)")
            study.tell(trial, state=TrialState.FAIL)
        else:
            best = max(values) if self.direction == "maximize" else min(values)
            study.tell(trial, best)
            log.info("trial %d: %s %.4f in %.0f s", number, self.metric, best, seconds)


def sampler_seed(seed: int | None, held: int) -> int | None:
    """The seed of the sampler of a study that holds ``held`` trials.

    Each run of the command makes the sampler again. With ``seed`` alone, a continued study
    drew again what its first run drew: trials 3, 4, 5 had the parameters of trials 0, 1, 2
    (TPE samples its first trials at random, from the seed's generator). Mixing in ``held``
    gives each continuation its own draws, and a fresh study (``held=0``) those of ``seed``.
    """
    if seed is None or held == 0:
        return seed
    return random.Random(f"{seed}/{held}").getrandbits(32)  # a str seed is hashed: stable


def _difference(saved: dict, now: dict) -> str:
    changed = [k for k in now if saved.get(k) != now[k]]
    return "; ".join(f"{k}: {saved.get(k)} → {now[k]}" for k in changed)


def _log_to(path: Path) -> logging.Handler:
    """Adds a file handler for ``path`` to the root logger (INFO, the runs' format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    return handler
