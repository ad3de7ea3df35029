"""Measures loader settings for the configured data; writes the best to configs/local/loader_<data>.yaml.

    make tune-loader                                  # data=fashion_mnist (the default)
    make tune-loader ARGS="data=hdf5 --workers 0,2,4"
    .venv/bin/python scripts/tune_loader.py data=image_folder data.data_dir=/my/images
    .venv/bin/lightspeed local=loader_hdf5            # train hdf5 with what it found

Two stages, both bounded in time:

1. the train loader alone: samples/s over at most ``--batches`` batches (or ``--seconds``) for
   every num_workers × prefetch_factor × pin_memory (only with CUDA) × batch_size in the grid,
   once each: it only shortlists;
2. the best ``--top`` settings, and the configured loader (what the data runs with without
   the file) at their batch sizes, inside real training: ``--steps`` steps of the configured
   model's ``training_step`` through Lightning, reading SpeedMonitor's samples/s and data-wait
   share (a loader fast alone can still steal cores from the step). ``--rounds`` interleaved
   rounds; each setting's median decides, and the fewest workers win unless more are
   ``--tolerance`` faster.

A setting other than the configured loader is written only when it beat it in every round
(its slowest round faster than the configured loader's fastest, at the same batch size). On a
busy machine the rounds can disagree beyond that: one round of ``num_workers=2`` once read
607 samples/s and the other 132, and keeping the best round wrote it over a faster default.
Then the script says it could not decide, writes nothing and exits 1: its one product is the
file, so ``make tune-loader && make train ARGS="local=..."`` must stop there rather than train
with an older file (or fail later on a missing one); 2 stays the status of a bad command.

The winner is written to ``configs/local/loader_<data>.yaml`` (git-ignored: it describes this
machine), one file per data config, so tuning ``data=hdf5`` leaves what the default data runs
with alone. The file is a ``# @package _global_`` config that also selects its data config
(``defaults: - override /data: <data>``): ``local=loader_hdf5`` means "data=hdf5, with the
loader settings measured for it", so the knobs travel with the data they were measured on
(a ``data=`` beside it on the command line would still win, as Hydra's command line always
does: give one or the other). Hydra cannot instead pick the file by the data choice from
inside ``local/``: defaults-list interpolation works only in the primary config. Anything else
on the command line is a Hydra override, as for ``lightspeed``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from measure import datamodule, quick_fit, samples_per_s

ROOT = Path(__file__).resolve().parents[1]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def measure_loader(dm, batch_size: int, settings, max_batches: int, seconds: float) -> float:
    """Samples/s of the train loader with these settings (at most ``max_batches``/``seconds``)."""
    dm.batch_size, dm.loader = batch_size, settings
    return samples_per_s(dm.train_dataloader(), max_batches, seconds)


def write_local(path: Path, data: str, best: dict, note: str) -> None:
    """The ``local=loader_<data>`` config: selects ``data`` with the ``best`` loader knobs."""
    lines = [
        "# @package _global_",
        f"# Written by `make tune-loader` ({note}).",
        f"# data={data} with the loader settings measured fastest for it on this machine;",
        f"# select both with `local={path.stem}`.",
        "defaults:",
        f"  - override /data: {data}",
        "data:",
        f"  num_workers: {best['num_workers']}",
    ]
    if best["num_workers"] > 0:
        lines.append(f"  prefetch_factor: {best['prefetch_factor']}")
        lines.append("  persistent_workers: true")
    lines += [
        f"  pin_memory: {str(best['pin_memory']).lower()}",
        "  # fastest batch size measured; it changes the optimisation too (scale the lr with it):",
        f"  # batch_size: {best['batch_size']}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=ints, default=[0, 1, 2])
    ap.add_argument("--prefetch", type=ints, default=[2, 4])
    ap.add_argument("--batch", type=ints, default=[256, 512])
    ap.add_argument("--batches", type=int, default=40, help="batches timed per setting")
    ap.add_argument("--seconds", type=float, default=3.0, help="time bound per setting")
    ap.add_argument("--top", type=int, default=3, help="settings checked inside training")
    ap.add_argument("--steps", type=int, default=15, help="training steps per check")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats of each check")
    ap.add_argument(
        "--tolerance", type=float, default=0.1, help="how much faster more workers must be"
    )
    ap.add_argument("--out", type=Path, help="default: configs/local/loader_<data>.yaml")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        ap.error(f"unknown option(s) {bad}")
    logging.basicConfig(level=logging.WARNING)  # Lightning's own INFO levels: measure.build_run
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`training_step` returned.*")

    import torch
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console
    from rich.table import Column, Table

    from lightspeed import hardware
    from lightspeed.data.base import ImageDataModule
    from lightspeed.data.loading import resolve_loader_settings
    from lightspeed.errors import UserError
    from lightspeed.plan import precheck

    console = Console()
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="tune_loader_")
    try:
        precheck(overrides)  # one line for a bad override, before any data loads
        dm = datamodule(overrides, tmp)
    except UserError as e:
        print(f"tune_loader: error: {e}", file=sys.stderr)
        return 2
    if not isinstance(dm, ImageDataModule):
        print(
            f"tune_loader: error: {type(dm).__name__} has no loader knobs to tune", file=sys.stderr
        )
        return 2
    data = HydraConfig.get().runtime.choices["data"]
    out = args.out or ROOT / f"configs/local/loader_{data}.yaml"
    cuda = torch.cuda.is_available()
    info = hardware.report()
    console.print(f"[bold]hardware:[/] {hardware.one_line(info)}")
    configured = {"batch_size": dm.batch_size, **knobs_of(dm.loader)}  # before any is measured
    if dm.in_memory and dm.data_device == "cpu":
        console.print(
            "[bold]data held in memory:[/] the in-memory loader (num_workers=0) is expected to "
            "win: a batch is one index_select on tensors already in RAM, while worker processes "
            "add inter-process copies of every batch and compete with the training step for "
            "cores. Measured anyway; workers are written only if they beat it in every round:"
        )

    # one untimed pass first: lazy initialisation would otherwise be charged to the first setting
    measure_loader(dm, args.batch[0], dm.loader, 5, 1.0)
    grid = []
    for b, w, pin in itertools.product(
        args.batch, args.workers, [False, True] if cuda else [False]
    ):
        for p in args.prefetch if w > 0 else [None]:
            grid.append(
                {"batch_size": b, "num_workers": w, "prefetch_factor": p, "pin_memory": pin}
            )
    for row in grid:
        settings = resolve_loader_settings(
            row["num_workers"],
            row["pin_memory"],
            row["num_workers"] > 0,
            row["prefetch_factor"] or "auto",
            in_memory=False,
            cuda=cuda,
        )
        row["loader_sps"] = measure_loader(
            dm, row["batch_size"], settings, args.batches, args.seconds
        )
        console.print(f"  loader {row_label(row)}: {row['loader_sps']:,.0f} samples/s")
    ranked = sorted(grid, key=lambda r: -r["loader_sps"])
    del dm

    checked = with_configured(ranked, args.top, configured)
    # Interleaved rounds, each setting's median: a round can be slowed, and also sped up, by
    # what else the machine runs at that moment (the best round once kept a 607 vs 132 outlier)
    for round_no in range(1, args.rounds + 1):
        for row in checked:
            knobs = {k: row[k] for k in ("batch_size", "num_workers", "pin_memory")}
            knobs["prefetch_factor"] = row["prefetch_factor"] or "auto"
            summary = quick_fit(
                [*overrides, *(f"data.{k}={v}" for k, v in knobs.items())], args.steps, tmp
            )
            sps = summary.get("samples_per_s") or 0.0
            console.print(f"  training {row_label(row)}: {sps:,.0f} samples/s (round {round_no})")
            row.setdefault("train_runs", []).append(sps)
            row.setdefault("wait_runs", []).append(summary.get("data_wait_share"))
    for row in checked:
        row["train_sps"] = statistics.median(row["train_runs"])
        waits = [w for w in row["wait_runs"] if w is not None]
        row["data_wait_share"] = statistics.median(waits) if waits else None
    best, why = decide(checked, args.tolerance)

    cols = ["batch", "workers", "prefetch", "pin", "loader samples/s", "train samples/s"]
    cols += ["rounds", "data wait"]
    table = Table(
        *(Column(c, justify="right") for c in cols),
        title="train loader settings",
        caption="* the configured loader: what the data runs with without the file",
    )
    for r in ranked:
        runs = r.get("train_runs")
        table.add_row(
            str(r["batch_size"]),
            str(r["num_workers"]) + ("*" if r.get("configured") else ""),
            str(r["prefetch_factor"] or "-"),
            str(r["pin_memory"]).lower(),
            f"{r['loader_sps']:,.0f}" if r.get("loader_sps") is not None else "-",
            f"{r['train_sps']:,.0f}" if runs else "-",
            f"{min(runs):,.0f}-{max(runs):,.0f}" if runs else "-",
            f"{r['data_wait_share']:.1%}" if r.get("data_wait_share") is not None else "-",
            style="bold green" if r is best else None,
        )
    console.print(table)
    if best is None:
        print(f"tune_loader: {why}; wrote nothing", file=sys.stderr)
        return 1
    note = f"{info['cpu']}, {info['cpu_usable_cores']} usable cores, {time.strftime('%Y-%m-%d')}"
    write_local(out, data, best, note)
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    console.print(
        f"best: {row_label(best)} ({why}) → wrote {shown}; {time.perf_counter() - t_start:.0f} s",
        soft_wrap=True,
    )
    print(use_it(out))
    return 0


def knobs_of(settings) -> dict:
    """The knobs a row has, of resolved :class:`LoaderSettings`."""
    prefetch = settings.prefetch_factor if settings.num_workers else None
    return {
        "num_workers": settings.num_workers,
        "prefetch_factor": prefetch,
        "pin_memory": settings.pin_memory,
    }


def same_knobs(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("num_workers", "prefetch_factor", "pin_memory"))


def with_configured(ranked: list[dict], top: int, configured: dict) -> list[dict]:
    """The ``top`` rows of ``ranked`` plus the configured loader at each of their batch sizes
    (added to ``ranked`` when the grid lacks it); rows of the configured knobs are marked."""
    checked = ranked[:top]
    for batch in dict.fromkeys(r["batch_size"] for r in checked):
        base = {**configured, "batch_size": batch}
        row = next((r for r in ranked if same_knobs(r, base) and r["batch_size"] == batch), None)
        if row is None:
            row = {**base, "loader_sps": None}
            ranked.append(row)
        if row not in checked:
            checked.append(row)
    for row in ranked:
        row["configured"] = same_knobs(row, configured)
    return checked


def decide(checked: list[dict], tolerance: float) -> tuple[dict | None, str]:
    """The setting to write and why; ``(None, why not)`` when the rounds cannot tell.

    :func:`choose` on the medians; a winner other than the configured loader must also have
    beaten it in every round: its slowest round faster than the configured loader's fastest at
    the same batch size. Otherwise their difference is within what the rounds scatter by.
    """
    best = choose(checked, tolerance)
    if best["configured"]:
        return best, "the configured loader: nothing measured clearly faster"
    base = next(r for r in checked if r["configured"] and r["batch_size"] == best["batch_size"])
    ours, theirs = best["train_runs"], base["train_runs"]
    if min(ours) > max(theirs):
        return best, (
            f"faster than the configured loader in every round: {min(ours):,.0f}-"
            f"{max(ours):,.0f} vs {min(theirs):,.0f}-{max(theirs):,.0f} samples/s"
        )
    return None, (
        f"could not decide: {row_label(best)} has the best median "
        f"({best['train_sps']:,.0f} samples/s), but its rounds ({min(ours):,.0f}-"
        f"{max(ours):,.0f}) overlap the configured loader's ({min(theirs):,.0f}-"
        f"{max(theirs):,.0f}): the machine's load scatters the rounds more than the settings "
        "differ; rerun when it is idle, or with more --rounds"
    )


def use_it(out: Path) -> str:
    """How to train with ``out``, as it pastes into a shell in the project root."""
    if out.parent.resolve() != (ROOT / "configs" / "local").resolve():
        copy = f"cp {shlex.quote(str(out))} configs/local/"
        return f"use it: {copy} && .venv/bin/lightspeed local={out.stem}"
    return (
        f'use it: .venv/bin/lightspeed local={out.stem}\n    or: make train ARGS="local={out.stem}"'
    )


def choose(checked: list[dict], tolerance: float) -> dict:
    """Fastest in training (``train_sps``); among those within ``tolerance`` of it, the fewest
    workers."""
    top = max(r.get("train_sps", 0.0) for r in checked)
    near = [r for r in checked if r.get("train_sps", 0.0) >= (1 - tolerance) * top]
    return min(near, key=lambda r: (r["num_workers"], -r.get("train_sps", 0.0)))


def row_label(r: dict) -> str:
    p = f" prefetch={r['prefetch_factor']}" if r["num_workers"] else ""
    return f"batch={r['batch_size']} workers={r['num_workers']}{p} pin={r['pin_memory']}"


if __name__ == "__main__":
    sys.exit(main())
