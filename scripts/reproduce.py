"""Re-runs a finished fit from its own overrides and checks that its metrics come out the same.

    .venv/bin/python scripts/reproduce.py RUN_DIR [--tolerance 1e-4] [--out NEW_RUN_DIR]
    make reproduce RUN=logs/fit/<run>

The rerun is ``python -m lightspeed <the run's overrides> hydra.run.dir=<new>``, a fresh process
with the caller's environment (PYTHONPATH included), started in the current directory. The
overrides are the run's ``.hydra/overrides.yaml`` (its newest session's, less ``resume=`` and
``ckpt_path=``); a run without them (made by a script) is rerun from its ``config.yaml``, with
its own paths moved to the new run dir. The new run goes to ``--out``, by default
``<the run's paths.log_dir>/reproduce/<date>_<time>``.

Checked: the objective's best and every metric of ``summary.json``'s ``metrics``, each within
``--tolerance`` (absolute, default 1e-4). On the same machine and software a seeded CPU rerun
is bit-identical (the difference is 0.0 in tests/engine/test_reproduce.py), so the tolerance
only leaves room for reduction-order noise (another thread count); a larger difference is a
change, and the lines about what differs say where to look. Across CPU kinds it is not a reproduction test: ``trainer.precision=auto`` means
bf16-mixed on a CPU with bf16 units (avx512_bf16, AMX) and fp32 on one without (AVX2), and
bf16 keeps 8 significant bits (2-3 decimal digits): another computation, to be judged with a
``--tolerance`` of your choosing.

One line each says when the commit (from the checkpoints), a package version or the CPU kind
(hardware.json), the precision, the data's checksum or the resolved config differ from the
saved run's. Exit status 0 when every metric reproduces; 1 with one line naming the first
metric that does not; 2 with one line when the run cannot be read or the rerun fails.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lightspeed.errors import UserError
from lightspeed.run.checkpoint import CHECKPOINT_KEY, CheckpointError, read_plain
from lightspeed.run.records import (
    SavedRun,
    differing_keys,
    find_runs,
    read_run,
    relative_paths,
)
from lightspeed.run.resume import override_key, override_value, run_overrides

TOLERANCE = 1e-4
SHOWN = 3  # differing config keys named before "(+N more)"


def saved_fit(path: Path) -> SavedRun:
    """The finished fit in ``path``; UserError (one line) for anything else."""
    done, _ = find_runs(path) if path.is_dir() else ([], [])
    if path not in done and done:
        raise UserError(
            f"{path} is not a run dir but holds {len(done)} below it; give one, e.g. {done[0]}"
        )
    run = read_run(path)
    if run.summary.get("task") != "fit":
        raise UserError(f"{path} is a task={run.summary.get('task')} run; give a fit's run dir")
    return run


def notes(path: Path) -> list[str]:
    """What a rerun in one go from scratch does not repeat of the saved run."""
    out = []
    sessions = sorted((path / ".hydra").glob("resume-*"))
    if sessions:
        out.append(
            f"note: the saved run was continued {len(sessions)} time(s) with resume=; the rerun "
            "trains in one go, which matches only if no continuation changed the run's length"
        )
    first = path / ".hydra" / "overrides.yaml"
    given = (yaml.safe_load(first.read_text()) or []) if first.is_file() else []
    started = [str(o) for o in given if override_key(str(o)) == "ckpt_path"]
    if started:
        out.append(f"note: the saved run started from {started[0]}; the rerun starts from scratch")
    return out


def config_dir_of(run: SavedRun, folder: Path) -> Path:
    """A config dir whose ``train.yaml`` is the run's resolved config (for a run that has no
    ``.hydra/overrides.yaml``): the checkout's configs for Hydra's own groups, and the run's
    paths below its own dir pointing at the new run dir (``${paths.output_dir}``)."""
    from lightspeed.plan import config_dir

    target = folder / "configs"
    shutil.copytree(config_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    old = str(config["paths"]["output_dir"]).rstrip("/")

    def moved(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: moved(v) for k, v in node.items()}
        if isinstance(node, list):
            return [moved(v) for v in node]
        if isinstance(node, str) and (node == old or node.startswith(old + "/")):
            return "${paths.output_dir}" + node[len(old) :]
        return node

    config = moved(config)
    config["paths"]["output_dir"] = "${hydra:runtime.output_dir}"
    defaults = {"defaults": ["run_schema", "_self_", {"hydra": "default"}]}
    (target / "train.yaml").write_text(yaml.safe_dump({**defaults, **config}, sort_keys=False))
    return target


def rerun(run: SavedRun, out: Path) -> None:
    """``python -m lightspeed`` of the run's overrides (or config) into ``out``; UserError when
    the process fails."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        if (run.path / ".hydra" / "overrides.yaml").is_file():
            overrides = run_overrides(run.path)
        else:
            env["LIGHTSPEED_CONFIG_DIR"] = str(config_dir_of(run, Path(tmp)))
            overrides = []
        command = [sys.executable, "-m", "lightspeed", *overrides]
        command.append(f"hydra.run.dir={override_value(str(out))}")
        print(f"reproduce: python {shlex.join(command[1:])}", flush=True)
        code = subprocess.run(command, env=env).returncode
    if code != 0:
        raise UserError(
            f"the rerun failed (exit status {code}; its error is above): fix that and run again"
        )


def commit(path: Path) -> str | None:
    """The git commit the run's checkpoints carry (None without a readable checkpoint)."""
    for ckpt in sorted((path / "checkpoints").glob("*.ckpt"), key=lambda p: p.name != "last.ckpt"):
        try:
            found = (read_plain(ckpt, lightning=False).get(CHECKPOINT_KEY) or {}).get("git_commit")
        except CheckpointError:
            continue
        if found:
            return found
    return None


def cpu_kind(hardware: dict) -> str:
    units = (
        "with bf16 units (avx512_bf16/AMX)"
        if hardware.get("cpu_bf16")
        else "without bf16 units (AVX2)"
    )
    return f"{hardware.get('cpu', '?')} {units}"


def differences(saved: SavedRun, new: SavedRun) -> list[str]:
    """One line for each thing the rerun ran on or with that the saved run did not."""
    gpus = [[g.get("name") for g in r.hardware.get("gpus") or []] or "none" for r in (saved, new)]
    facts = {
        "commit": [commit(r.path) or "not recorded" for r in (saved, new)],
        "CPU": [cpu_kind(r.hardware) for r in (saved, new)],
        "GPUs": gpus,
        "precision": [r.summary.get("precision") for r in (saved, new)],
        "data (sha256 of its files)": [
            (r.summary.get("data_source") or {}).get("sha256") for r in (saved, new)
        ],
    }
    lines = [f"{name} differs: saved {old}, rerun {again}" for name, (old, again) in facts.items()
             if old != again]  # fmt: skip
    old_v, new_v = saved.hardware.get("versions") or {}, new.hardware.get("versions") or {}
    names = dict.fromkeys([*old_v, *new_v])
    changed = [
        f"{k} {old_v.get(k)} → {new_v.get(k)}" for k in names if old_v.get(k) != new_v.get(k)
    ]
    if changed:
        lines.append(f"package versions differ: {', '.join(changed)}")
    keys = differing_keys([saved.config, new.config])
    if keys:
        old_c, new_c = relative_paths(saved.config), relative_paths(new.config)
        shown = [f"{k} {old_c.get(k)!r} → {new_c.get(k)!r}" for k in keys[:SHOWN]]
        more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
        lines.append(f"config differs: {', '.join(shown)}{more}")
    return lines


def checked_metrics(saved: SavedRun) -> dict[str, float]:
    """Name → saved value of what must reproduce: the objective's best, every test metric."""
    out = {}
    if saved.objective.get("best") is not None:
        out[f"best {saved.objective.get('metric')}"] = saved.objective["best"]
    out.update(saved.metrics)
    return out


def first_mismatch(saved: SavedRun, new: SavedRun, tolerance: float) -> str | None:
    """One line naming the first metric that does not reproduce within ``tolerance``."""
    found = {f"best {new.objective.get('metric')}": new.objective.get("best"), **new.metrics}
    for name, value in checked_metrics(saved).items():
        again = found.get(name)
        if again is None:
            return f"{name} does not reproduce: the rerun's summary.json has no value for it"
        if math.isnan(value) and math.isnan(again):
            continue
        if not abs(again - value) <= tolerance:
            return (
                f"{name} does not reproduce: saved {value!r}, rerun {again!r} "
                f"(|difference| {abs(again - value):.3g} > tolerance {tolerance:g})"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished fit's run dir")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE,
        help=f"largest absolute difference of a metric that counts as reproduced (default {TOLERANCE:g})",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        help="the new run dir (default: <paths.log_dir>/reproduce/<date>_<time>)",
    )
    parser.add_argument(
        "--rerun",
        type=Path,
        metavar="DIR",
        help="check against this finished rerun instead of running again",
    )
    args = parser.parse_args(argv)
    try:
        saved = saved_fit(args.run)
        for line in notes(args.run):
            print(f"reproduce: {line}")
        new_dir = args.rerun
        if new_dir is None:
            stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
            log_dir = Path(saved.config.get("paths.log_dir") or "logs")
            new_dir = args.out or log_dir / "reproduce" / stamp
            rerun(saved, new_dir.resolve())
        new = read_run(new_dir)
    except UserError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return 2
    for line in differences(saved, new):
        print(f"reproduce: {line}")
    mismatch = first_mismatch(saved, new, args.tolerance)
    if mismatch:
        print(f"reproduce: {mismatch}; rerun in {new_dir}", file=sys.stderr)
        return 1
    names = ", ".join(checked_metrics(saved))
    print(
        f"reproduce: every metric reproduces within {args.tolerance:g} ({names}); rerun in {new_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
