"""Hyper-parameter search: ``lightspeed hparams_search=<name> [overrides]`` runs an Optuna study.

Why not Hydra's Optuna sweeper: its last release (hydra-optuna-sweeper 1.3.0) pins
``optuna<3`` (2.10, 2021), which predates the ask-and-tell interface and today's samplers; so
the entry drives a current Optuna itself.

* The study is an SQLite file in ``<paths.log_dir>/sweeps/<study_name>/`` (``study.db``), next
  to one run dir per trial (``trial_000/``, ...) and ``results.csv``.
* Each trial is a fit with the search's values on top of the command's overrides, run in this
  process one after another (the torch import and start-up are paid once).
* Pruning: each validation's metric goes to the trial; the study's pruner stops a trial that
  is behind the others at the same epoch (:class:`~lightspeed.sweep.pruning.OptunaPruning`).
* The same command again continues the study: finished trials are kept and not run again; a
  trial cut short by a signal continues from its ``last.ckpt``, one without a checkpoint is
  run again from its start. A SLURM job requeued after its time-limit signal does this.
* At the end (and on an interrupt) a table of all trials, best first.

One process works on a study at a time (a lock on its folder), and each trial uses one device:
a multi-device fit cannot run several times in one process (Lightning keeps its process group).
For multi-device trials, use Hydra's multirun: ``lightspeed -m hydra/launcher=slurm ...``.
"""

from lightspeed.sweep.entry import run_sweep
from lightspeed.sweep.study import OptunaSearch

__all__ = ["OptunaSearch", "run_sweep"]
