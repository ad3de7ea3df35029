"""Measures loader settings for the configured data and writes the best to configs/local/loader.yaml.

    make tune-loader                                  # data=fashion_mnist (the default)
    make tune-loader ARGS="data=hdf5 --workers 0,2,4"
    .venv/bin/python scripts/tune_loader.py data=image_folder data.data_dir=/my/images

Two stages, both bounded in time (about 1.5 minutes on 2 cores with the default grid):

1. the train loader alone: samples/s over at most ``--batches`` batches (or ``--seconds``) for
   every num_workers × prefetch_factor × pin_memory (only with CUDA) × batch_size in the grid;
2. the best ``--top`` settings inside real training: ``--steps`` steps of the configured model's
   ``training_step`` through Lightning, reading SpeedMonitor's samples/s and data-wait share
   (a loader fast alone can still steal cores from the step). The checks run interleaved, best
   round kept, and the fewest workers win unless more are ``--tolerance`` faster.

The winner is written as a ``# @package _global_`` file that ``local=loader`` selects; the file
is git-ignored because it describes this machine. Anything else on the command line is a Hydra
override, as for ``lightspeed``.
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

ROOT = Path(__file__).resolve().parents[1]
# only the speed monitor: checkpoints, logs and progress bars are not what is measured here
QUIET = ["debug=quiet"]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def measure_loader(dm, batch_size: int, settings, max_batches: int, seconds: float) -> float:
    """Samples/s of one pass over at most ``max_batches`` train batches (after 2 warm-up ones)."""
    dm.batch_size, dm.loader = batch_size, settings
    loader = dm.train_dataloader()
    it = iter(loader)
    samples, t0 = 0, None
    for i, batch in enumerate(it):
        if i == 2:  # worker start-up and first reads are not the steady state
            t0 = time.perf_counter()
        elif i > 2:
            samples += len(batch[1])
        if t0 is not None and (i >= max_batches + 2 or time.perf_counter() - t0 > seconds):
            break
    elapsed = time.perf_counter() - t0 if t0 else 0.0
    del it  # shuts the workers down before the next setting starts its own
    return samples / elapsed if elapsed > 0 and samples else 0.0


def measure_training(overrides: list[str], knobs: dict, steps: int, out_dir: str) -> dict:
    """SpeedMonitor summary of ``steps`` real training steps with the given ``data.*`` knobs."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightspeed.build import build
    from lightspeed.callbacks.speed import SpeedMonitor
    from lightspeed.cli import compose

    extra = [f"data.{k}={v}" for k, v in knobs.items()]
    extra += [
        f"trainer.limit_train_batches={steps}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.accelerator=cpu",
    ]
    cfg = compose(
        [*overrides, *QUIET, *extra, f"paths.output_dir={out_dir}"], return_hydra_config=True
    )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):  # Lightning sets its own INFO levels on import
            logging.getLogger(name).setLevel(logging.WARNING)
    built = build(cfg, out_dir)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    monitor = next(cb for cb in built.callbacks if isinstance(cb, SpeedMonitor))
    return monitor.summary


def write_local(path: Path, best: dict, note: str) -> None:
    lines = [
        "# @package _global_",
        f"# Written by `make tune-loader` ({note}).",
        "# Loader settings measured fastest on this machine; select with `local=loader`.",
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
        "--tolerance",
        type=float,
        default=0.1,
        help="prefer fewer workers unless more are faster by this fraction (timing noise)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "configs/local/loader.yaml")
    args, overrides = ap.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        ap.error(f"unknown option(s) {bad}")
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric", "lightspeed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`training_step` returned.*")

    import hydra
    import torch
    from rich.console import Console
    from rich.table import Table

    from lightspeed import hardware
    from lightspeed.cli import precheck
    from lightspeed.data.loading import resolve_loader_settings
    from lightspeed.errors import UserError

    console = Console()
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="tune_loader_")
    try:
        cfg = precheck([*overrides, f"paths.output_dir={tmp}"])
        dm = hydra.utils.instantiate(cfg.data)
        dm.setup("fit")
    except UserError as e:
        print(f"tune_loader: error: {e}", file=sys.stderr)
        return 2
    if not hasattr(dm, "loader"):
        print(
            "tune_loader: error: the data module has no `loader` settings to tune", file=sys.stderr
        )
        return 2
    cuda = torch.cuda.is_available()
    info = hardware.report()
    console.print(f"[bold]hardware:[/] {hardware.one_line(info)}")
    in_memory = getattr(dm, "device", "cpu") == "cpu" and hasattr(dm, "uses_memory_loader")
    if in_memory:
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
            summary = measure_training(overrides, knobs, args.steps, tmp)
            sps = summary.get("samples_per_s") or 0.0
            console.print(f"  training {row_label(row)}: {sps:,.0f} samples/s")
            if sps > row.get("train_sps", 0.0):
                row["train_sps"], row["data_wait_share"] = sps, summary.get("data_wait_share")
    best = choose(ranked[: args.top], args.tolerance)

    table = Table(title="train loader settings (best first)")
    for col in (
        "batch",
        "workers",
        "prefetch",
        "pin",
        "loader samples/s",
        "train samples/s",
        "data wait",
    ):
        table.add_column(col, justify="right")
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
    write_local(args.out, best, note)
    console.print(
        f"best: {row_label(best)} → wrote {args.out} (use it: lightspeed local=loader); "
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
