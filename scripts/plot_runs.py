"""Overlays the curves of several runs (loss, accuracy, LR) in one PNG.

    .venv/bin/python scripts/plot_runs.py logs/fit/<run a> logs/fit/<run b> --out compare.png

Each RUN_DIR is a run directory holding ``csv/metrics.csv`` (or the CSV itself). The drawing is
the one each fit uses for its own ``curves.png`` (lightspeed.callbacks.plots.draw_curves).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def metrics_file(run: Path) -> Path | None:
    """The run's ``metrics.csv``: the path itself, ``csv/metrics.csv``, or the first below it."""
    if run.is_file():
        return run
    if (run / "csv" / "metrics.csv").is_file():
        return run / "csv" / "metrics.csv"
    return next(iter(sorted(run.glob("**/metrics.csv"))), None)


def labels(runs: list[Path]) -> list[str]:
    """Short legend labels: each run's folder name, with parent folders added where they tie."""
    depth = 1
    while True:
        names = ["/".join(r.resolve().parts[-depth:]) for r in runs]
        if len(set(names)) == len(names) or depth >= max(len(r.resolve().parts) for r in runs):
            return names
        depth += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", type=Path, default=Path("runs.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    found = {run: metrics_file(run) for run in args.runs}
    missing = [str(run) for run, path in found.items() if path is None]
    if missing:
        print(f"plot_runs: no metrics.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    from lightspeed.callbacks.plots import draw_curves  # loads Lightning: only when drawing

    runs = dict(zip(labels(args.runs), found.values(), strict=True))
    draw_curves(runs, args.out)
    print(f"plot_runs: {len(runs)} run(s) → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
