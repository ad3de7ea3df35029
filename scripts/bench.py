"""`make bench`: the template's training step against a hand-written PyTorch loop.

Both run the same net, data tensors, batch size, optimiser, schedule, precision and memory
format, interleaved and repeated in one process, so machine noise hits both alike. Reports
steady-state samples/s of each and their ratio, time from build to the first step, and peak
memory; writes JSON + markdown with a hardware header to benchmarks/results/: a new dated
bench_<cpu|gpu>_<date>.{json,md}, or with --record the committed bench_<cpu|gpu>.{json,md}.

    python scripts/bench.py                          # CPU defaults, ~2.5 min on 2 cores
    python scripts/bench.py --record                 # replace the committed record
    python scripts/bench.py --steps 150 --repeats 5  # tighter numbers
    python scripts/bench.py --compare-dataloader     # also the naive per-sample DataLoader path
    python scripts/bench.py --proxy --hooks          # per-step overhead: batch 32, hook profile
    python scripts/bench.py -- model=mlp             # Hydra overrides after --

--proxy measures what a fast accelerator leaves of a step: the host's fixed cost. The default
net at batch 32 (``PROXY``) takes 2-5 ms a step on a 2-core CPU, about what the hand-written
loop takes per step of the default net at batch 256 on one H200 (3.5 ms, nearly all of it
host time), so the template's per-step cost weighs here about as much as it does there.
--hooks adds one more template run under Lightning's SimpleProfiler: host time per step of
each hook of each callback, of the module and of the loop (``hook_profile``).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from measure import (
    RESULTS,
    build_run,
    cpu_kind,
    result_header,
    run_cli,
    speed_monitor,
    summarise,
    write_results,
)

from lightspeed import PROCESS_START, hardware
from lightspeed.callbacks.speed import peak_memory_mb


def hand_loop(built, steps: int, warmup: int, loader=None) -> dict:
    """Best-practice plain PyTorch: in-memory batches, no per-step sync, same recipe as the module.

    ``loader`` replaces the in-memory batch loader (the naive DataLoader comparison).
    """
    module, dm = built.module, built.datamodule
    net = module.net
    device = built.trainer.strategy.root_device
    net.to(device).train()
    if fit_data := getattr(net, "fit_data", None):  # as Classifier.setup: data-dependent init
        fit_data(lambda: next(iter(dm.train_dataloader()))[0].to(device))
    optimizer = module.optimizer_factory(params=[p for p in net.parameters() if p.requires_grad])
    total = warmup + steps
    scheduler = None
    if module.scheduler_factory is not None:
        kw = getattr(module.scheduler_factory, "keywords", {})
        extra = {"total_steps": total} if kw.get("total_steps") in (None, "auto") else {}
        scheduler = module.scheduler_factory(optimizer=optimizer, **extra)
    autocast = built.precision in ("bf16-mixed", "16-mixed")
    dtype = torch.bfloat16 if built.precision.startswith("bf16") else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=built.precision == "16-mixed")
    loader = loader if loader is not None else dm.train_dataloader()
    smoothing = module.criterion.label_smoothing
    done, t_first, t_start = 0, None, time.perf_counter()
    t0 = t_start
    while done < total:
        for x, y in loader:
            if t_first is None:  # as the template's: when the first batch is in hand
                t_first = time.perf_counter() - t_start
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)  # perf.channels_last: the build hooked the net
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                loss = F.cross_entropy(net(x), y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            done += 1
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            if done == total:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    speed = {"samples_per_s": steps * dm.batch_size / elapsed, "first_step_s": t_first}
    return speed | peak_memory_mb(device)


# --proxy: the default net at a batch where the step is the host's fixed cost (see the docstring)
PROXY = ["data.batch_size=32"]


def hook_profile(overrides: list[str], steps: int, warmup: int, tmp: Path, top: int = 15) -> list:
    """One template run under Lightning's SimpleProfiler: (action, µs per step) of the ``top``
    costliest actions that run on every step, largest first. Actions nest (a callback's hook
    runs inside the loop's), so the figures overlap; each says where host time goes."""
    built = make([*overrides, "++trainer.profiler=simple"], steps, warmup, tmp)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    total = warmup + steps
    rows = [
        (name, round(1e6 * sum(times) / total, 1))
        for name, times in built.trainer.profiler.recorded_durations.items()
        if len(times) >= total
    ]
    return sorted(rows, key=lambda row: -row[1])[:top]


def python_calls_per_step(overrides: list[str], tmp: Path) -> dict[str, float]:
    """Python function calls per training step of each loop, counted by cProfile: a measure of
    host work that machine noise cannot move. Two run lengths each; their difference leaves
    out what a run does once (set-up, the first log's imports)."""
    import cProfile
    import pstats

    def calls(kind: str, steps: int) -> int:
        built = make(overrides, steps, 0, tmp)
        profile = cProfile.Profile()
        profile.enable()
        if kind == "hand":
            hand_loop(built, steps, 0)
        else:
            built.trainer.fit(built.module, datamodule=built.datamodule)
        profile.disable()
        return pstats.Stats(profile).total_calls

    short, long = 100, 300  # both cross the same share of log steps (every 50)
    return {
        kind: round((calls(kind, long) - calls(kind, short)) / (long - short), 1)
        for kind in ("hand", "template")
    }


def template_loop(built, steps: int, warmup: int) -> dict:
    """The same work through Lightning's Trainer, as `lightspeed task=fit` runs it."""
    speed = speed_monitor(built)
    speed.warmup_steps = warmup
    t_start = time.perf_counter()
    built.trainer.fit(built.module, datamodule=built.datamodule)
    first = speed.time_to_first_step
    return {
        "samples_per_s": speed.summary["samples_per_s"],
        "first_step_s": None if first is None else first - (t_start - PROCESS_START),
        **{k: v for k, v in speed.summary.items() if k.endswith("_mb")},
    }


class PerSampleImages(torch.utils.data.Dataset):
    """The tutorial path: one uint8 image at a time through per-sample transforms."""

    def __init__(
        self, images_u8: torch.Tensor, labels: torch.Tensor, mean: float, std: float
    ) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images_u8, labels
        self.transform = v2.Compose(
            [
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([mean], [std]),
                v2.RandomHorizontalFlip(),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def naive_dataloader(built, steps: int, warmup: int) -> dict:
    """The hand loop fed by a per-sample Dataset + DataLoader(num_workers=0)."""
    from torch.utils.data import DataLoader

    dm = built.datamodule
    images, y = dm.tensors("train", raw=True)  # the uint8 pixels
    loader = DataLoader(
        PerSampleImages(images, y, dm.mean, dm.std), batch_size=dm.batch_size, shuffle=True
    )
    return hand_loop(built, steps, warmup, loader=loader)


def make(overrides: list[str], steps: int, warmup: int, tmp: Path):
    built = build_run(
        [
            f"trainer.max_steps={warmup + steps}",
            "trainer.max_epochs=-1",
            "trainer.limit_val_batches=0",
            "callbacks.model_checkpoint=null",  # monitors val/acc; validation is off here
            "extras.print_config=false",
            "trainer.enable_model_summary=false",
            *overrides,
        ],
        tmp / f"run{time.perf_counter_ns()}",
    )
    built.datamodule.setup("fit")
    return built


# A default run cut short: every phase of the default (train, val, test, checkpoints, curves),
# so its peak RSS is the default run's. `++`: the keys are Trainer parameters the YAML leaves out.
SHORT_DEFAULT = [
    "++trainer.limit_train_batches=30",
    "++trainer.limit_val_batches=5",
    "++trainer.limit_test_batches=5",
    "trainer.max_epochs=1",
    "extras.print_config=false",
]


def startup_pairs(
    pairs: int, tmp: Path, baseline: Path | None = None, overrides: list[str] = ()
) -> dict:
    """Process start → first training step and peak RSS of a default `lightspeed` run (cut
    short), beside `import torch, lightning`; with ``baseline`` (another checkout of this
    project) its CLI too, in the same rounds.

    Each round runs all of them as fresh processes, back to back, so page-cache and machine
    noise hit them alike. Both figures count from the process's start (``lightspeed.
    PROCESS_START``, read from /proc) and neither counts its exit. (A checkout from before
    2026-11-26 counts from its package import: up to ~0.05 s less.)
    """
    roots = {"lightspeed": Path(__file__).resolve().parents[1]}
    if baseline is not None:
        roots["baseline"] = baseline.resolve()
    imports: list[float] = []
    runs: dict[str, dict[str, list[float]]] = {k: {"first": [], "rss": []} for k in roots}
    for i in range(pairs):
        code = (
            "import time, torch, lightning; from lightspeed import PROCESS_START;"
            "print(time.perf_counter() - PROCESS_START)"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        imports.append(float(out.stdout.split()[-1]))
        for name, root in roots.items():
            run_dir = tmp / f"startup_{name}{i}"
            _, summary = run_cli(root, [*SHORT_DEFAULT, *overrides], run_dir)
            runs[name]["first"].append(summary["time_to_first_step_s"])
            runs[name]["rss"].append(summary["cpu_peak_rss_mb"])
        print(
            f"startup {i + 1}/{pairs}: import {imports[-1]:.2f} s, "
            + ", ".join(
                f"{k} first step {v['first'][-1]:.2f} s, peak {v['rss'][-1]:.0f} MiB"
                for k, v in runs.items()
            ),
            flush=True,
        )
    result = {
        "import_torch_lightning_s": summarise(imports, 2),
        "overrides": [*SHORT_DEFAULT, *overrides],
    }
    for name, v in runs.items():
        gaps = [f - i for f, i in zip(v["first"], imports, strict=True)]
        result[name] = {
            "root": str(roots[name]),
            "first_step_s": summarise(v["first"], 2),
            "gap_s": summarise(gaps, 2),
            "peak_rss_mib": summarise(v["rss"], 0),
        }
    return result


def main() -> int:
    threads = torch.get_num_threads()
    try:
        return run()
    finally:
        torch.set_num_threads(threads)  # --proxy sets one thread; a caller's process keeps its own


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=8, help="interleaved hand/template pairs")
    parser.add_argument("--compare-dataloader", action="store_true")
    parser.add_argument(
        "--proxy",
        action="store_true",
        help=f"per-step overhead: {' '.join(PROXY)}, 300 steps; results bench_proxy_<kind>",
    )
    parser.add_argument("--hooks", action="store_true", help="add a per-hook host-time profile")
    parser.add_argument("--startup", type=int, default=5, help="rounds of start-up runs (0: skip)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/base <rev>`): its start-up and "
        "peak RSS are measured in the same rounds",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--record", action="store_true", help="replace the committed bench_<device>.{json,md}"
    )
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    if args.proxy:  # the user's overrides come after, so they can change the batch
        overrides = [*PROXY, *overrides]
        # one thread: a GPU host runs the step's Python on one core, and OpenMP workers
        # spinning beside it made 2-thread timings of a 4 ms step swing by half on 2 cores
        torch.set_num_threads(1)
        defaults = {"steps": 60, "warmup": 15}  # the parser's: raised unless given
        args.steps = 300 if args.steps == defaults["steps"] else args.steps
        args.warmup = 30 if args.warmup == defaults["warmup"] else args.warmup

    info = hardware.report()
    print("hardware:", hardware.one_line(info), flush=True)
    runs: dict[str, list[dict]] = {"hand": [], "template": []}
    if args.compare_dataloader:
        runs["naive_dataloader"] = []
    with tempfile.TemporaryDirectory() as tmp:
        # fresh processes first, while this one is small: a child's ru_maxrss starts at its
        # parent's (a baseline checkout may read its peak that way)
        startup = None
        if args.startup:
            startup = startup_pairs(args.startup, Path(tmp), args.baseline, overrides)
        for r in range(args.repeats):
            # alternate the order so neither side always runs on a warmer machine
            order = ["hand", "template"] if r % 2 == 0 else ["template", "hand"]
            for kind in order:
                built = make(overrides, args.steps, args.warmup, Path(tmp))
                fn = hand_loop if kind == "hand" else template_loop
                runs[kind].append(fn(built, args.steps, args.warmup))
                print(
                    f"repeat {r + 1}/{args.repeats} {kind:9s} {runs[kind][-1]['samples_per_s']:9.1f} samples/s",
                    flush=True,
                )
            if args.compare_dataloader:
                built = make(overrides, args.steps, args.warmup, Path(tmp))
                runs["naive_dataloader"].append(naive_dataloader(built, args.steps, args.warmup))
        precision = built.precision if args.repeats else None
        hooks = calls = None
        if args.hooks:
            hooks = hook_profile(overrides, args.steps, args.warmup, Path(tmp))
            calls = python_calls_per_step(overrides, Path(tmp))

    ratios = [  # --repeats 0: only the start-up rounds
        t["samples_per_s"] / h["samples_per_s"]
        for h, t in zip(runs["hand"], runs["template"], strict=True)
    ]
    result = {
        **result_header("template vs hand-written loop, steady-state training samples/s", info),
        "overrides": overrides,
        "precision": precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "samples_per_s": {k: summarise([x["samples_per_s"] for x in v]) for k, v in runs.items()},
        "ratio_template_over_hand": summarise(ratios, 3),
        "first_step_s": {
            k: summarise([x["first_step_s"] for x in v if x.get("first_step_s") is not None], 3)
            for k, v in runs.items()
            if k != "naive_dataloader"
        },
        "startup": startup,
        "cpu_kind": None if info["gpus"] else cpu_kind(info),
        "hook_profile": hooks,
        "python_calls_per_step": calls,
        "threads": torch.get_num_threads(),
        "peak_memory_mb": {
            k: max(
                (m for x in v if (m := x.get("gpu_peak_mem_mb", x.get("cpu_peak_rss_mb")))),
                default=None,
            )
            for k, v in runs.items()
        },
    }
    stem = "bench_cuda" if info["gpus"] else "bench_cpu"  # bench_gpu.*: scripts/bench_gpu.sh
    if args.proxy:
        stem = "bench_proxy_cuda" if info["gpus"] else f"bench_proxy_{result['cpu_kind']}"
    path = write_results(result, markdown(result), stem, args.record, args.out)
    print(markdown(result))
    print(f"wrote {path}.{{json,md}}")
    return 0


def markdown(r: dict) -> str:
    hw = r["hardware"]
    lines = [
        f"# {r['benchmark']}",
        "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- hardware: {hardware.one_line(hw)}"
        + (f" (CPU kind: {r['cpu_kind']})" if r.get("cpu_kind") else ""),
        f"- precision: {r['precision']}; overrides: {r['overrides'] or 'none (defaults)'}; "
        f"torch threads: {r.get('threads')}",
        f"- {r['repeats']} interleaved repeats of {r['steps']} timed steps after {r['warmup']} warm-up steps",
    ]
    if r["repeats"]:
        lines += throughput_lines(r)
    if r.get("python_calls_per_step"):
        calls = r["python_calls_per_step"]
        lines += [
            "",
            f"Python function calls per training step (cProfile, steps 100-300): hand-written "
            f"{calls['hand']:.0f}, template {calls['template']:.0f}.",
        ]
    if r.get("hook_profile"):
        lines += [
            "",
            "Host time per training step, by action (Lightning's SimpleProfiler, one template "
            "run; actions nest, so the rows overlap):",
            "",
            "| action | µs per step |",
            "|---|---|",
            *(f"| `{name}` | {us:.1f} |" for name, us in r["hook_profile"]),
        ]
    if r.get("startup"):
        st = r["startup"]
        imp = st["import_torch_lightning_s"]
        lines += [
            "",
            f"Fresh processes, {len(imp['runs'])} rounds back to back: a default `lightspeed` "
            f"run cut short ({' '.join(st['overrides'])}) beside "
            f'`python -c "import torch, lightning"` (median {imp["median"]:.2f} s), both from the '
            "process's start.",
            "",
            "| CLI | start → first step, s | gap over the import, s (per round) | peak RSS, MiB |",
            "|---|---|---|---|",
        ]
        for name in ("lightspeed", "baseline"):
            if name in st:
                v = st[name]
                lines.append(
                    f"| {name} (`{v['root']}`) | {v['first_step_s']['median']:.2f} | "
                    f"{v['gap_s']['median']:+.2f} ({v['gap_s']['runs']}) | "
                    f"{v['peak_rss_mib']['median']:.0f} ({v['peak_rss_mib']['runs']}) |"
                )
    return "\n".join(lines) + "\n"


def throughput_lines(r: dict) -> list[str]:
    """The hand vs template table and ratio of :func:`markdown`."""
    lines = [
        "",
        "| path | samples/s (median) | min | max | runs |",
        "|---|---|---|---|---|",
    ]
    for k, v in r["samples_per_s"].items():
        lines.append(f"| {k} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} | {v['runs']} |")
    ratio = r["ratio_template_over_hand"]
    lines += [
        "",
        f"**template / hand-written ratio: {ratio['median']:.3f}** (min {ratio['min']:.3f}, max {ratio['max']:.3f}, "
        f"per repeat {[round(x, 3) for x in ratio['runs']]})",
        "",
        "| path | build → first step, s (median) | peak memory, MB |",
        "|---|---|---|",
    ]
    for k, v in r["first_step_s"].items():
        med = v["median"] if v["median"] is not None else math.nan
        lines.append(f"| {k} | {med:.3f} | {r['peak_memory_mb'].get(k)} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
