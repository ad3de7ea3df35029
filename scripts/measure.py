"""What the measuring scripts share: runs composed and built as ``lightspeed`` builds them, the
short quiet fit they time, loader timing, and results files that keep the committed record.

Imported as a sibling module: ``python scripts/<name>.py`` puts ``scripts/`` on the path.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def build_run(overrides: list[str], out_dir: str | Path):
    """``lightspeed.build.build`` of the config that ``overrides`` compose to, output in ``out_dir``."""
    from lightspeed.build import build
    from lightspeed.plan import compose_for_run

    cfg = compose_for_run(overrides, out_dir)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):  # Lightning sets its own INFO levels on import
            logging.getLogger(name).setLevel(logging.WARNING)
    return build(cfg)


def datamodule(overrides: list[str], out_dir: str | Path):
    """The configured run's DataModule, set up for fitting."""
    dm = build_run(["debug=quiet", *overrides], out_dir).datamodule
    dm.setup("fit")
    return dm


def speed_monitor(built):
    """The run's SpeedMonitor (every callbacks config the scripts use has one)."""
    from lightspeed.callbacks.speed import SpeedMonitor

    return next(cb for cb in built.trainer.callbacks if isinstance(cb, SpeedMonitor))


def quick_fit(overrides: list[str], batches: int, out_dir: str | Path) -> dict:
    """SpeedMonitor summary of a quiet fit (``debug=quiet``) cut to ``batches`` training batches.

    No validation, checkpoints, loggers or progress bar: only the training step is timed.
    ``overrides`` come last, so they can change anything here.
    """
    built = build_run(
        [
            "debug=quiet",
            f"trainer.limit_train_batches={batches}",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
            *overrides,
        ],
        out_dir,
    )
    t0 = time.perf_counter()
    built.trainer.fit(built.module, datamodule=built.datamodule)
    fit_wall_s = round(time.perf_counter() - t0, 2)
    return {**speed_monitor(built).summary, "fit_wall_s": fit_wall_s, "batches": batches}


def samples_per_s(loader, batches: int, seconds: float = math.inf, warmup: int = 2) -> float:
    """Samples/s of ``loader`` over ``batches`` batches or ``seconds``, after ``warmup`` untimed
    ones (worker start-up and first reads are not the steady state)."""
    it = iter(loader)
    for _ in itertools.islice(it, warmup):
        pass
    samples, t0 = 0, time.perf_counter()
    for _, y in itertools.islice(it, batches):
        samples += len(y)
        if time.perf_counter() - t0 > seconds:
            break
    elapsed = time.perf_counter() - t0
    del it  # shuts the workers down before the next loader starts its own
    return samples / elapsed if samples else 0.0


def summarise(values: list[float], ndigits: int = 1) -> dict:
    """Median, min, max, spread ((max - min) / median, in %) and the runs, rounded."""
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    median, low, high = statistics.median(values), min(values), max(values)
    return {
        "median": round(median, ndigits),
        "min": round(low, ndigits),
        "max": round(high, ndigits),
        "spread_pct": round(100 * (high - low) / median, 1) if median else None,
        "runs": [round(v, ndigits) for v in values],
    }


def result_header(benchmark: str, info: dict) -> dict:
    """What every results file starts with: what was measured, when, by which command, where."""
    import sys

    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python", *sys.argv]),
        "hardware": info,
    }


def run_cli(root: Path, overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """``python -m lightspeed`` of the checkout at ``root`` as a fresh process; returns its wall
    time (interpreter start to exit, measured from outside) and its ``summary.json``."""
    import os
    import subprocess
    import sys

    # the checkout's src/ first, the caller's PYTHONPATH after it (where hydra-core may live)
    path = os.pathsep.join(p for p in (str(root / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "LIGHTSPEED_CONFIG_DIR": str(root / "configs")}
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "lightspeed", *overrides, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if done.returncode != 0:  # the child's own error, not only CalledProcessError
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{tail}")
    return wall, json.loads((run_dir / "summary.json").read_text())


def write_results(result: dict, markdown: str, stem: str, record: bool, out_dir: Path) -> Path:
    """Writes ``<stem>.json`` and ``<stem>.md``; returns the path without suffix.

    Without ``record`` the name gets the date and time (``<stem>_2026-11-26_073215``), so a run
    never replaces the committed record in ``benchmarks/results/``; ``record`` replaces it.
    """
    name = stem if record else f"{stem}_{time.strftime('%Y-%m-%d_%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    return out_dir / name


def cpu_kind(info: dict) -> str:
    """avx512_bf16 or avx2, and the oneDNN ISA cap when ONEDNN_MAX_CPU_ISA sets one."""
    import os

    kind = "avx512_bf16" if info.get("cpu_bf16") else "avx2"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{kind}_isa_{isa.lower()}" if isa else kind
