"""Throughput of the data paths on this machine → benchmarks/results/data_loading.{json,md}.

    make bench-data          # about 1-3 minutes on 2 cores

Fashion-MNIST train images, samples/s of the train loader alone (no model), each path timed
``--repeats`` times, interleaved so that other load on the machine hits every path alike:

a. torchvision ``datasets.FashionMNIST`` + ``ToTensor()`` + ``Normalize``: one ``__getitem__``,
   one PIL image and one collate per sample, ``DataLoader(num_workers=0, batch_size=256)``;
b. the same with 1 and 2 workers (the better one is reported);
c. ``InMemoryBatchLoader`` over normalised tensors, with batched flip augmentation;
d. ``Hdf5DataModule`` (file written here), 2 workers reading whole batches.

Then the share of wall time a short default fit waits for data (SpeedMonitor's
``data_wait_share`` over ``--fit-batches`` training batches).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
RAW_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def samples_per_s(loader, batches: int, warmup: int = 2) -> float:
    """Samples/s over ``batches`` batches after ``warmup`` untimed ones (worker start-up)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            break
        n += len(x)
    elapsed = time.perf_counter() - t0
    del it
    return n / elapsed


def torchvision_root(tmp: Path, files: dict) -> Path:
    """A FashionMNIST/raw/ folder torchvision reads without downloading (it wants raw files)."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    sources = [*files["train"], *files["test"]]
    for name, src in zip(RAW_NAMES, sources, strict=True):
        opener = gzip.open if src.read_bytes()[:2] == b"\x1f\x8b" else open
        with opener(src, "rb") as f_in, open(raw / name, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
    return tmp


def short_fit(batches: int, out_dir: str) -> dict:
    """SpeedMonitor summary of a default fit cut to ``batches`` training batches."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightspeed.build import build
    from lightspeed.callbacks.speed import SpeedMonitor
    from lightspeed.cli import compose

    overrides = [
        "debug=quiet",
        f"trainer.limit_train_batches={batches}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        f"paths.output_dir={out_dir}",
    ]
    cfg = compose(overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    built = build(cfg, out_dir)
    t0 = time.perf_counter()
    built.trainer.fit(built.module, datamodule=built.datamodule)
    summary = next(cb for cb in built.callbacks if isinstance(cb, SpeedMonitor)).summary
    return {**summary, "fit_wall_s": round(time.perf_counter() - t0, 2), "batches": batches}


def stats(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "spread_pct": round(100 * (max(values) - min(values)) / statistics.median(values), 1),
        "runs": [round(v, 1) for v in values],
    }


def markdown(result: dict) -> str:
    r = result["paths"]
    lines = [
        "# Data loading throughput (Fashion-MNIST train loader, no model)",
        "",
        f"Hardware: {result['hardware_line']}",
        "",
        f"Load average (1 min) at start/end: {result['load_average_1m_start_end']} on "
        f"{result['hardware']['cpu_usable_cores']} usable cores.",
        "",
        f"Made by `make bench-data` (`scripts/bench_data.py`) on {result['date']}; batch "
        f"{BATCH}, {result['repeats']} interleaved repeats per path, samples/s median "
        "(min–max, spread = (max−min)/median).",
        "",
        "| path | samples/s (median) | min–max | spread |",
        "|---|---:|---:|---:|",
    ]
    for key, label in result["labels"].items():
        s = r[key]
        lines.append(
            f"| {label} | {s['median']:,.0f} | {s['min']:,.0f}–{s['max']:,.0f} | {s['spread_pct']}% |"
        )
    fit = result["short_fit"]
    lines += [
        "",
        f"**In-memory batches vs torchvision per-sample (c)/(a): {result['ratio_c_over_a']:.1f}×** "
        f"(vs the best worker count (c)/(b): {result['ratio_c_over_b']:.1f}×).",
        "",
        f"Short default fit ({fit['batches']} training batches, default config): data-wait share "
        f"{fit.get('data_wait_share', float('nan')):.1%}, {fit.get('samples_per_s', 0):,.0f} "
        f"samples/s, step {fit.get('step_ms', 0):.1f} ms.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, default=30, help="timed batches per per-sample run")
    ap.add_argument("--fit-batches", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.basicConfig(level=logging.WARNING)

    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from lightspeed import hardware
    from lightspeed.data.fashion_mnist import IdxDataModule
    from lightspeed.data.hdf5 import Hdf5DataModule, write_hdf5
    from lightspeed.data.idx import read_idx_pair
    from lightspeed.data.memory import InMemoryBatchLoader
    from lightspeed.data.sources import SOURCES, locate

    t_start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    info = hardware.report()
    print(f"hardware: {hardware.one_line(info)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    files = locate(SOURCES["fashion_mnist"], ROOT / "data", download=False)

    memory = IdxDataModule(data_dir=str(ROOT / "data"), download=False, flip=True)
    memory.setup()
    x, y = memory._splits["train"]
    tv = datasets.FashionMNIST(
        str(torchvision_root(tmp, files)),
        train=True,
        download=False,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((memory.mean,), (memory.std,))]
        ),
    )
    splits = {s: read_idx_pair(*files[s]) for s in ("train", "test")}
    h5 = write_hdf5(tmp / "fashion_mnist.h5", splits, "fashion_mnist", [str(i) for i in range(10)])
    hdf5 = Hdf5DataModule(path=str(h5), num_workers=2, batch_size=BATCH, flip=True)
    hdf5.setup()

    # persistent workers: start-up is paid once per path, as in training
    loaders = {
        "a": DataLoader(tv, batch_size=BATCH, shuffle=True, num_workers=0),
        "b1": DataLoader(
            tv, batch_size=BATCH, shuffle=True, num_workers=1, persistent_workers=True
        ),
        "b2": DataLoader(
            tv, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True
        ),
        "c": InMemoryBatchLoader(x, y, BATCH, shuffle=True, augment=memory.augment, seed=0),
        "d": hdf5.train_dataloader(),
    }
    timed = {"a": args.batches, "b1": args.batches, "b2": args.batches, "c": 200, "d": 100}
    runs: dict[str, list[float]] = {k: [] for k in loaders}
    for rep in range(args.repeats):
        for key, loader in loaders.items():
            runs[key].append(samples_per_s(loader, timed[key]))
            print(f"  round {rep + 1} {key}: {runs[key][-1]:,.0f} samples/s")
    best_b = max(("b1", "b2"), key=lambda k: statistics.median(runs[k]))
    del loaders
    paths = {
        "a_torchvision_per_sample_w0": stats(runs["a"]),
        "b_torchvision_per_sample_best_workers": {
            **stats(runs[best_b]),
            "num_workers": int(best_b[1]),
        },
        "b_torchvision_per_sample_w1": stats(runs["b1"]),
        "b_torchvision_per_sample_w2": stats(runs["b2"]),
        "c_in_memory_batches_flip": stats(runs["c"]),
        "d_hdf5_batches_w2": stats(runs["d"]),
    }
    labels = {
        "a_torchvision_per_sample_w0": "(a) torchvision FashionMNIST, ToTensor+Normalize, 0 workers",
        "b_torchvision_per_sample_w1": "(b) same, 1 worker",
        "b_torchvision_per_sample_w2": "(b) same, 2 workers",
        "c_in_memory_batches_flip": "(c) InMemoryBatchLoader + batched flip (default path)",
        "d_hdf5_batches_w2": "(d) HDF5, 2 workers, whole-batch reads + flip",
    }
    print("short default fit ...")
    fit = short_fit(args.fit_batches, str(tmp / "fit"))
    a, b, c = (statistics.median(runs[k]) for k in ("a", best_b, "c"))
    result = {
        "benchmark": "data_loading",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": info,
        "hardware_line": hardware.one_line(info),
        # other processes on the machine slow every path; recorded so runs can be compared
        "load_average_1m_start_end": [load_start, round(os.getloadavg()[0], 2)],
        "batch_size": BATCH,
        "repeats": args.repeats,
        "timed_batches": timed,
        "paths": paths,
        "labels": labels,
        "ratio_c_over_a": round(c / a, 2),
        "ratio_c_over_b": round(c / b, 2),
        "short_fit": fit,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data_loading.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "data_loading.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out}/data_loading.{{json,md}} in {result['wall_s']} s")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
