"""Throughput of the data paths on this machine → benchmarks/results/data_loading_<date>.{json,md}.

    make bench-data                  # about 1-3 minutes on 2 cores
    make bench-data ARGS=--record    # replace the committed data_loading.{json,md}

Fashion-MNIST train images, samples/s of the train loader alone (no model), each path timed
``--repeats`` times, interleaved so that other load on the machine hits every path alike:

a. torchvision ``datasets.FashionMNIST`` + ``ToTensor()`` + ``Normalize``: one ``__getitem__``,
   one PIL image and one collate per sample, ``DataLoader(num_workers=0, batch_size=256)``;
b. the same with 1 and 2 workers (the better one is reported);
c. the default ``data=fashion_mnist`` train loader: in-memory batches of normalised tensors,
   with batched flip augmentation;
d. ``data=hdf5`` (file written here), 2 workers reading whole batches.

Then the share of wall time a short default fit waits for data (SpeedMonitor's
``data_wait_share`` over ``--fit-batches`` training batches).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from measure import RESULTS, datamodule, quick_fit, samples_per_s, summarise, write_results

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
RAW_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument(
        "--record", action="store_true", help="replace the committed data_loading.{json,md}"
    )
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.basicConfig(level=logging.WARNING)

    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from lightspeed import hardware
    from lightspeed.data.hdf5 import write_hdf5
    from myproject.idx import read_idx_pair
    from myproject.sources import locate

    t_start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    info = hardware.report()
    print(f"hardware: {hardware.one_line(info)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    loader_knobs = [f"data.batch_size={BATCH}", "data.flip=true"]
    memory = datamodule(loader_knobs, tmp / "c")
    files = locate(memory.source, memory.data_dir, memory.cache_dir, download=False).files
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
    hdf5 = datamodule(
        ["data=hdf5", f"data.path={h5}", "data.num_workers=2", *loader_knobs], tmp / "d"
    )

    # persistent workers: start-up is paid once per path, as in training
    loaders = {
        "a": DataLoader(tv, batch_size=BATCH, shuffle=True, num_workers=0),
        "b1": DataLoader(
            tv, batch_size=BATCH, shuffle=True, num_workers=1, persistent_workers=True
        ),
        "b2": DataLoader(
            tv, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True
        ),
        "c": memory.train_dataloader(),
        "d": hdf5.train_dataloader(),
    }
    timed = {"a": args.batches, "b1": args.batches, "b2": args.batches, "c": 200, "d": 100}
    runs: dict[str, list[float]] = {k: [] for k in loaders}
    for rep in range(args.repeats):
        for key, loader in loaders.items():
            runs[key].append(samples_per_s(loader, timed[key]))
            print(f"  round {rep + 1} {key}: {runs[key][-1]:,.0f} samples/s")
    del loaders
    s = {k: summarise(v) for k, v in runs.items()}
    best_b = max(("b1", "b2"), key=lambda k: s[k]["median"])
    paths = {
        "a_torchvision_per_sample_w0": s["a"],
        "b_torchvision_per_sample_best_workers": {**s[best_b], "num_workers": int(best_b[1])},
        "b_torchvision_per_sample_w1": s["b1"],
        "b_torchvision_per_sample_w2": s["b2"],
        "c_in_memory_batches_flip": s["c"],
        "d_hdf5_batches_w2": s["d"],
    }
    labels = {
        "a_torchvision_per_sample_w0": "(a) torchvision FashionMNIST, ToTensor+Normalize, 0 workers",
        "b_torchvision_per_sample_w1": "(b) same, 1 worker",
        "b_torchvision_per_sample_w2": "(b) same, 2 workers",
        "c_in_memory_batches_flip": "(c) in-memory batches + batched flip (default data=fashion_mnist)",
        "d_hdf5_batches_w2": "(d) HDF5, 2 workers, whole-batch reads + flip",
    }
    print("short default fit ...")
    fit = quick_fit([], args.fit_batches, tmp / "fit")
    a, b, c = (s[k]["median"] for k in ("a", best_b, "c"))
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
    path = write_results(result, markdown(result), "data_loading", args.record, args.out)
    print(markdown(result))
    print(f"wrote {path}.{{json,md}} in {result['wall_s']} s")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
