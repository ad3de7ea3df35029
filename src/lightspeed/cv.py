"""K-fold cross-validation: ``lightspeed cv.folds=K [overrides]`` runs K fits in this process.

* Fold i validates on the i-th of K folds of the training set (the rows the fit's val split
  would otherwise be carved from) and trains on the others; the test split is untouched. The
  DataModule cuts the folds: the build calls its ``cross_validation_fold(fold, folds, seed)``
  before ``setup`` (:class:`~lightspeed.contracts.DataModuleContract`). Image data held in
  memory is stratified by class; other data gets plain shuffled folds.
* One run dir per fold, ``fold_0/``, ``fold_1/``, ..., under the CV dir
  ``<paths.log_dir>/cv/<name>/``. ``name`` is ``cv.name``, else ``<K>fold-<hash>``, the hash
  of the command's other overrides (``cv.fold`` and ``cv.name`` left out): the same command
  finds the same CV dir. ``cv.yaml`` there keeps the command; another command is refused.
* ``cv_summary.csv`` and ``cv_summary.md``: one row per finished fold (the objective's best,
  each test metric, the training time) plus ``mean`` and ``std`` (sample standard deviation)
  rows, rewritten whenever a fold finishes and printed at the end.
* The same command again continues: a fold with ``summary.json`` is not run again, one with a
  ``last.ckpt`` resumes from it, any other starts (again) from scratch.
* ``cv.fold=i`` runs fold i alone in its fold dir, so the folds can be separate jobs:
  ``lightspeed -m cv.folds=3 cv.fold=0,1,2 ...`` (Hydra's multirun, or its SLURM launcher with
  ``hydra/launcher=slurm``: each job runs its fold in the CV dir; Hydra's own job dir stays
  empty), or a SLURM array (``cv.fold=$SLURM_ARRAY_TASK_ID``). Each finishing fold rewrites
  the summary from the folds finished so far, so the last one to end leaves the whole table.

The folds run one after another in this process, each on one device, like a sweep's trials.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

from lightspeed.errors import ConfigError, RunInterrupted, UserError
from lightspeed.run import rundir
from lightspeed.run.resume import LAST, override_key
from lightspeed.sweep.entry import check_one_device

log = logging.getLogger("lightspeed.cv")
OWN_KEYS = ("cv.fold", "cv.name")  # not part of a fold's identity


def cv_name(cfg: Any, command: list[str]) -> str:
    """``cv.name``, else ``<K>fold-`` and a hash of the command's other overrides."""
    if cfg.cv.name:
        return str(cfg.cv.name)
    kept = sorted(a for a in command if override_key(a).lstrip("+") not in OWN_KEYS)
    return f"{cfg.cv.folds}fold-{hashlib.sha1(' '.join(kept).encode()).hexdigest()[:8]}"


def say(line: str) -> None:
    """A progress line on the console and in the log (the folds run outside Hydra's logging)."""
    print(f"lightspeed: {line}", flush=True)
    log.info(line)


def fold_state(fold_dir: Path) -> str:
    """``done`` (summary.json), ``resume`` (a last.ckpt to continue) or ``start``."""
    if (fold_dir / "summary.json").is_file():
        return "done"
    return "resume" if (fold_dir / LAST).is_file() else "start"


def run_cv(cfg: Any, command: list[str]) -> int:
    """The entry's cross-validation: ``cfg`` checked, ``command`` its overrides; the exit status."""
    try:
        given = [a for a in command if override_key(a).lstrip("+") in ("resume", "ckpt_path")
                 or override_key(a) == "hydra.run.dir" or override_key(a) == "hparams_search"]  # fmt: skip
        if given or cfg.get("hparams_search") is not None:
            what = given[0] if given else "hparams_search"
            raise ConfigError(
                f"cv.folds with {what}: each fold is a fit in the CV dir; drop it (the same "
                "command continues an interrupted cross-validation)"
            )
        folds, only = cfg.cv.folds, cfg.cv.fold
        if only is None:  # the folds run one after another in this process, one device each
            check_one_device(cfg, "cv.folds", "folds", "-m cv.fold=0,1,... (one job per fold)")
        cv_dir = Path(cfg.paths.log_dir) / "cv" / cv_name(cfg, command)
        rundir.check_writable(cv_dir, "cv.name")
        cv_dir.mkdir(parents=True, exist_ok=True)
        check_command(cv_dir, command)
        whole = only is None  # one job per fold may run side by side: each locks its own dir
        if whole:
            rundir.acquire(cv_dir)
        try:
            for fold in [only] if not whole else range(folds):
                run_fold(cv_dir, fold, command)
                write_summary(cv_dir, folds)
        finally:
            if whole:
                rundir.release(cv_dir)
    except UserError as e:
        print(f"lightspeed: error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:
        print(f"lightspeed: {e}".split("; continue with")[0], file=sys.stderr)
        print(
            f"lightspeed: cross-validation interrupted; finished folds are kept: run the same "
            f"command to continue it ({cv_dir})",
            file=sys.stderr,
        )
        return e.exit_code
    except KeyboardInterrupt:
        print("\nlightspeed: cross-validation interrupted; run the same command to continue it",
              file=sys.stderr)  # fmt: skip
        return 128 + signal.SIGINT
    print((cv_dir / "cv_summary.md").read_text())
    print(f"cross-validation: {cv_dir / 'cv_summary.csv'}")
    return 0


def check_command(cv_dir: Path, command: list[str]) -> None:
    """The CV dir keeps the command that started it (cv.fold aside); another one is refused."""
    kept = [a for a in command if override_key(a).lstrip("+") != "cv.fold"]
    path = cv_dir / "cv.yaml"
    if not path.is_file():
        path.write_text(json.dumps({"command": kept}, indent=2))
    elif json.loads(path.read_text())["command"] != kept:
        raise ConfigError(
            f"{cv_dir} holds a cross-validation of another command; run its own command "
            f"({path}) to continue it, or start a new one with cv.name=<new name>"
        )


def run_fold(cv_dir: Path, fold: int, command: list[str]) -> None:
    """Fold ``fold``'s fit in ``cv_dir/fold_<fold>``, unless it finished before."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from lightspeed import session
    from lightspeed.config import validate
    from lightspeed.plan import compose_for_run

    fold_dir = cv_dir / f"fold_{fold}"
    state = fold_state(fold_dir)
    if state == "done":
        say(f"fold {fold}: finished before ({fold_dir / 'summary.json'})")
        return
    overrides = [a for a in command if override_key(a).lstrip("+") != "cv.fold"]
    overrides.append(f"cv.fold={fold}")
    if state == "start" and fold_dir.exists():  # cut short before its first checkpoint
        rundir.check_free(fold_dir)
        shutil.rmtree(fold_dir)
    say(f"fold {fold}: {'continues' if state == 'resume' else 'starts'} in {fold_dir}")
    try:
        extra = [f"resume={fold_dir}"] if state == "resume" else []
        cfg = compose_for_run([*overrides, *extra], fold_dir)
        validate(cfg)
        if state == "start":  # the fold's own command, as a normal run keeps it (resume reads it)
            (fold_dir / ".hydra").mkdir(parents=True, exist_ok=True)
            (fold_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
        session.run_task(cfg)
    finally:
        rundir.release(fold_dir)
        HydraConfig.instance().cfg = None


def summary_rows(cv_dir: Path, folds: int) -> list[dict[str, Any]]:
    """One row per finished fold, then ``mean`` and ``std`` rows (with two folds or more)."""
    rows: list[dict[str, Any]] = []
    for fold in range(folds):
        path = cv_dir / f"fold_{fold}" / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        objective = summary.get("objective") or {}
        row: dict[str, Any] = {
            "fold": fold,
            f"best {objective.get('metric')}": objective.get("best"),
        }
        tests = summary.get("metrics") or {}
        row.update({k: v for k, v in sorted(tests.items()) if k.startswith("test/")})
        row["train_time_s"] = summary.get("train_time_s")
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "fold"))
    values = {c: [r[c] for r in rows if isinstance(r.get(c), (int, float))] for c in columns}
    if len(rows) >= 2:  # over the folds' rows only
        for name, stat in (("mean", statistics.mean), ("std", statistics.stdev)):
            rows.append({"fold": name, **{c: stat(v) if len(v) >= 2 else None
                                           for c, v in values.items()}})  # fmt: skip
    return rows


def write_summary(cv_dir: Path, folds: int) -> None:
    """``cv_summary.csv`` and ``cv_summary.md`` from the folds finished so far (each replaced
    in one step: folds run as separate jobs may finish together)."""
    rows = summary_rows(cv_dir, folds)
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tmp = cv_dir / f".cv_summary.csv.{os.getpid()}"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, cv_dir / "cv_summary.csv")

    def cell(value: Any) -> str:
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    done = sum(isinstance(r["fold"], int) for r in rows)
    lines = [f"cross-validation {cv_dir.name}: {done} of {folds} folds", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]  # fmt: skip
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    tmp = cv_dir / f".cv_summary.md.{os.getpid()}"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, cv_dir / "cv_summary.md")
