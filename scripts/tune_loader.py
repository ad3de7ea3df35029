"""Measures loader settings for the configured data; writes the best to configs/local/loader_<data>.yaml.

    make tune-loader                                  # data=fashion_mnist (the default)
    make tune-loader ARGS="data=hdf5 --workers 0,2,4"
    .venv/bin/python scripts/tune_loader.py data=image_folder data.data_dir=/my/images
    .venv/bin/lightspeed local=loader_hdf5            # train hdf5 with what it found

Two stages, both bounded in time (about 1.5 minutes on 2 cores with the default grid):

1. the train loader alone: samples/s over at most ``--batches`` batches (or ``--seconds``) for
   every num_workers × prefetch_factor × pin_memory (only with CUDA) × batch_size in the grid;
2. the best ``--top`` settings inside real training: ``--steps`` steps of the configured model's
   ``training_step`` through Lightning, reading SpeedMonitor's samples/s and data-wait share
   (a loader fast alone can still steal cores from the step). The checks run interleaved, best
   round kept, and the fewest workers win unless more are ``--tolerance`` faster.

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
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repeats of each check")
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
    if dm.in_memory and dm.data_device == "cpu":
        console.print(
            "[bold]data held in memory:[/] the in-memory loader (num_workers=0) is the answer: a "
            "batch is one index_select on tensors already in RAM, while worker processes add "
            "inter-process copies of every batch and compete with the training step for cores. "
            "Measured anyway:"
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

    # Interleaved rounds, best round kept: other load on the machine only ever slows a round.
    for _ in range(args.rounds):
        for row in ranked[: args.top]:
            knobs = {k: row[k] for k in ("batch_size", "num_workers", "pin_memory")}
            knobs["prefetch_factor"] = row["prefetch_factor"] or "auto"
            summary = quick_fit(
                [*overrides, *(f"data.{k}={v}" for k, v in knobs.items())], args.steps, tmp
            )
            sps = summary.get("samples_per_s") or 0.0
            console.print(f"  training {row_label(row)}: {sps:,.0f} samples/s")
            if sps > row.get("train_sps", 0.0):
                row["train_sps"], row["data_wait_share"] = sps, summary.get("data_wait_share")
    best = choose(ranked[: args.top], args.tolerance)

    cols = ["batch", "workers", "prefetch", "pin", "loader samples/s", "train samples/s"]
    cols.append("data wait")
    table = Table(*(Column(c, justify="right") for c in cols), title="train loader settings")
    for r in ranked:
        table.add_row(
            str(r["batch_size"]),
            str(r["num_workers"]),
            str(r["prefetch_factor"] or "-"),
            str(r["pin_memory"]).lower(),
            f"{r['loader_sps']:,.0f}",
            f"{r['train_sps']:,.0f}" if r.get("train_sps") else "-",
            f"{r['data_wait_share']:.1%}" if r.get("data_wait_share") is not None else "-",
            style="bold green" if r is best else None,
        )
    console.print(table)
    note = f"{info['cpu']}, {info['cpu_usable_cores']} usable cores, {time.strftime('%Y-%m-%d')}"
    write_local(out, data, best, note)
    console.print(
        f"best: {row_label(best)} → wrote {out} (use it: lightspeed local={out.stem}); "
        f"{time.perf_counter() - t_start:.0f} s"
    )
    return 0


def choose(checked: list[dict], tolerance: float) -> dict:
    """Fastest in training; among those within ``tolerance`` of it, the fewest workers."""
    top = max(r.get("train_sps", 0.0) for r in checked)
    near = [r for r in checked if r.get("train_sps", 0.0) >= (1 - tolerance) * top]
    return min(near, key=lambda r: (r["num_workers"], -r.get("train_sps", 0.0)))


def row_label(r: dict) -> str:
    p = f" prefetch={r['prefetch_factor']}" if r["num_workers"] else ""
    return f"batch={r['batch_size']} workers={r['num_workers']}{p} pin={r['pin_memory']}"


if __name__ == "__main__":
    sys.exit(main())
