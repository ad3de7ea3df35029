"""`make bench-fit`: time to accuracy of the default run, whole process, as a user runs it.

Runs `lightspeed` (the default config: `make train` without the setup) as fresh processes
and reports, per run, the wall time from interpreter start to exit, the test accuracy, the
best validation accuracy and the peak RSS; with ``--baseline`` another checkout (e.g. an
earlier revision: `git worktree add /tmp/base <rev>`) runs in the same rounds, alternating,
so machine noise hits both alike. Writes JSON + markdown with a hardware header to
benchmarks/results/: bench_fit_<cpu kind>_<date>.{json,md}, or with --record the committed
bench_fit_<cpu kind>.{json,md} (cpu kind: avx512_bf16 or avx2, with `_isa_<cap>` under ONEDNN_MAX_CPU_ISA).

    python scripts/bench_fit.py                          # 3 default runs, ~3 min on 2 cores
    python scripts/bench_fit.py --runs 5 --baseline /tmp/base
    python scripts/bench_fit.py -- trainer.max_epochs=4  # Hydra overrides after --
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from measure import RESULTS, cpu_kind, result_header, run_cli, summarise, write_results

from lightspeed import hardware

KEYS = {  # summary.json key -> column
    "test_acc": "test acc",
    "best_val_acc": "best val acc",
    "cpu_peak_rss_mb": "peak RSS, MiB",
    "time_to_first_step_s": "first step, s",
    "train_time_s": "fit, s",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each checkout")
    parser.add_argument("--baseline", type=Path, help="another checkout, run in the same rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--record", action="store_true", help="replace the committed file")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]

    info = hardware.report()
    print("hardware:", hardware.one_line(info), flush=True)
    roots = {"lightspeed": Path(__file__).resolve().parents[1]}
    if args.baseline is not None:
        roots["baseline"] = args.baseline.resolve()
    runs: dict[str, list[dict]] = {k: [] for k in roots}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            names = list(roots) if i % 2 == 0 else list(reversed(roots))
            for name in names:
                wall, summary = run_cli(roots[name], overrides, Path(tmp) / f"{name}{i}")
                if "metrics" in summary:  # this checkout's summary: metrics under their names
                    summary["test_acc"] = summary["metrics"].get("test/acc")
                    summary["best_val_acc"] = summary["objective"].get("best")
                runs[name].append({"process_s": wall, **{k: summary.get(k) for k in KEYS}})
                print(
                    f"run {i + 1}/{args.runs} {name}: {wall:.1f} s, "
                    f"test acc {summary.get('test_acc', float('nan')):.4f}, "
                    f"peak {summary.get('cpu_peak_rss_mb', 0):.0f} MiB",
                    flush=True,
                )
    kind = cpu_kind(info)
    result = {
        **result_header("time to accuracy of the default run, whole process", info),
        "cpu_kind": kind,
        "overrides": overrides,
        "roots": {k: str(v) for k, v in roots.items()},
        "runs": runs,
        "median": {
            name: {
                key: summarise([r[key] for r in rs if r[key] is not None], 4)["median"]
                for key in ("process_s", *KEYS)
            }
            for name, rs in runs.items()
        },
    }
    stem = "bench_fit_gpu" if info["gpus"] else f"bench_fit_{kind}"
    path = write_results(result, markdown(result), stem, args.record, args.out)
    print(markdown(result))
    print(f"wrote {path}.{{json,md}}")
    return 0


def markdown(r: dict) -> str:
    cols = ["process, s", *KEYS.values()]
    lines = [
        f"# {r['benchmark']}",
        "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- hardware: {hardware.one_line(r['hardware'])} (CPU kind: {r['cpu_kind']})",
        f"- overrides: {r['overrides'] or 'none (the default run)'}",
        "",
        f"| checkout | run | {' | '.join(cols)} |",
        "|---|---|" + "---|" * len(cols),
    ]
    for name, rs in r["runs"].items():
        label = f"{name} (`{r['roots'][name]}`)"
        for i, run in enumerate([*rs, r["median"][name]]):
            which = "median" if i == len(rs) else str(i + 1)
            cells = [run["process_s"], *(run[k] for k in KEYS)]
            text = ["-" if c is None else f"{c:.4f}" if c < 1 else f"{c:.1f}" for c in cells]
            lines.append(f"| {label} | {which} | {' | '.join(text)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
