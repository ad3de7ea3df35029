"""Compares finished runs: objective, test metrics, time, throughput, the config keys that differ.

    .venv/bin/python scripts/compare.py RUN [RUN ...] [--group-by all-but-seed] [--plot runs.png]
    make compare RUNS="logs/fit/multiruns/<time>" ARGS="--group-by all-but-seed"

Each RUN is a run dir or a folder with run dirs below it (a multirun's ``<time>/``, a sweep's
``logs/sweeps/<study>/``). One row per run: the best value of its objective, each metric of
``summary.json``'s ``metrics`` (the model's own names), train time, samples/s, precision, and
every config key whose value differs between the runs. Those keys come from flattening each
``config.yaml`` (dotted keys); paths under a run's own dir or root compare relative to it, and
``paths.*`` and ``hydra.*`` are left out, so where the runs were written is not a difference.

``--group-by all-but-seed`` puts the runs that differ only in seeds (``seed``, ``data.seed``)
into one group; ``--group-by KEY[,KEY...]`` groups by those keys. Each group gets the mean, the
sample standard deviation (n - 1; blank for one run) and n of every numeric result column.

The table is printed one line per row and written to ``OUT/compare.csv`` (full precision) and
``OUT/compare.md``; with ``--group-by`` also ``OUT/compare_groups.csv``. ``OUT`` is ``--out``,
the current directory by default. ``--plot FILE`` overlays the runs' curves as
``scripts/plot_runs.py`` does. Exit status 2 with one line when a run cannot be read.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from plot_runs import labels, metrics_file

from lightspeed.errors import UserError
from lightspeed.run.records import (
    NOT_COMPARED,
    SavedRun,
    differing_keys,
    find_runs,
    is_seed,
    read_run,
)

ALL_BUT_SEED = "all-but-seed"
RESULTS = ("train_time_s", "samples_per_s")  # numeric summary keys, after the metrics
TEXT = ("precision",)


def collect(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """The finished run dirs that ``paths`` name or hold (each once, in order), and the
    unfinished ones."""
    finished: dict[Path, None] = {}
    unfinished: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UserError(f"{path}: no such directory; give run dirs or folders that hold them")
        done, not_done = find_runs(path)
        if not done and not not_done:
            raise UserError(
                f"{path} holds no run (a run dir has config.yaml and summary.json); give a run "
                "dir, or a multirun/sweep folder with run dirs below it"
            )
        finished.update(dict.fromkeys(p.resolve() for p in done))
        unfinished += not_done
    if not finished:
        raise UserError(f"no finished run (with summary.json) in {' '.join(map(str, paths))}")
    return list(finished), unfinished


def table(runs: list[SavedRun], keys: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and one row per run: results first, then the config ``keys``."""
    best = [f"best {m}" for m in dict.fromkeys(r.objective.get("metric") for r in runs) if m]
    metrics = list(dict.fromkeys(name for r in runs for name in r.metrics))
    columns = ["run", *best, *metrics, *RESULTS, *TEXT, *keys]
    rows = []
    for label, run in zip(labels([r.path for r in runs]), runs, strict=True):
        row: dict[str, Any] = {"run": label}
        if run.objective.get("metric"):
            row[f"best {run.objective['metric']}"] = run.objective.get("best")
        row.update(run.metrics)
        row.update({k: run.summary.get(k) for k in (*RESULTS, *TEXT)})
        row.update({k: run.config.get(k) for k in keys})
        rows.append(row)
    return columns, rows


def numeric_columns(columns: list[str], rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The result columns (not config keys) that hold numbers."""
    return [
        c
        for c in columns[1:]
        if c not in keys
        and any(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows)
    ]


def group_keys(spec: str, differing: list[str], runs: list[SavedRun]) -> list[str]:
    """The keys ``--group-by`` names: the differing keys but seeds, or the listed ones."""
    if spec == ALL_BUT_SEED:
        return [k for k in differing if not is_seed(k)]
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    for key in keys:
        if not any(key in r.config for r in runs):
            shown = ", ".join(differing) or "none"
            raise UserError(
                f"--group-by {key}: no run's config has this key; use {ALL_BUT_SEED} or keys "
                f"of config.yaml (those that differ here: {shown})"
            )
    return keys


def groups(
    rows: list[dict[str, Any]], runs: list[SavedRun], keys: list[str], numeric: list[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per distinct value of ``keys``: those values, n, and each numeric column's mean
    and sample standard deviation (``<column> mean``, ``<column> std``)."""
    members: dict[str, list[dict[str, Any]]] = {}
    values: dict[str, dict[str, Any]] = {}
    for row, run in zip(rows, runs, strict=True):
        key_values = {k: run.config.get(k) for k in keys}
        name = json.dumps(key_values, sort_keys=True, default=str)
        members.setdefault(name, []).append(row)
        values[name] = key_values
    columns = [*keys, "n", *(f"{c} {s}" for c in numeric for s in ("mean", "std"))]
    out = []
    for name, group in members.items():
        row = {**values[name], "n": len(group)}
        for c in numeric:
            numbers = [r[c] for r in group if isinstance(r.get(c), int | float)]
            row[f"{c} mean"] = statistics.fmean(numbers) if numbers else None
            row[f"{c} std"] = statistics.stdev(numbers) if len(numbers) > 1 else None
        out.append(row)
    return columns, out


def cell(value: Any) -> str:
    """A value as shown in the printed and Markdown tables (the CSV keeps full precision)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def shown_groups(columns: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], list[dict]]:
    """The group table with ``mean ± std`` in one column per result."""
    out_columns = [c for c in columns if not c.endswith((" mean", " std"))]
    results = [c[: -len(" mean")] for c in columns if c.endswith(" mean")]
    out = []
    for row in rows:
        shown = {c: row[c] for c in out_columns}
        for c in results:
            mean, std = row[f"{c} mean"], row[f"{c} std"]
            shown[c] = (
                "" if mean is None else cell(mean) + ("" if std is None else f" ± {cell(std)}")
            )
        out.append(shown)
    return out_columns + results, out


def text_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """Aligned plain text, one line per row, values never wrapped."""
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    return "\n".join(
        [
            line(columns),
            line(["---"] * len(columns)),
            *(line([cell(r.get(c)) for c in columns]) for r in rows),
        ]
    )


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {c: json.dumps(v) if isinstance(v, list | dict) else v for c, v in row.items()}
            )


def report(
    runs: list[SavedRun], keys: list[str], grouped: list[str] | None, out: Path
) -> list[Path]:
    """Prints the table (and the groups) and writes them to ``out``; returns the files written."""
    columns, rows = table(runs, keys)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "compare.csv", columns, rows)
    print(text_table(columns, rows))
    markdown = [
        f"{len(runs)} runs; config keys that differ: {', '.join(keys) or 'none'}",
        "",
        markdown_table(columns, rows),
    ]
    written = [out / "compare.csv", out / "compare.md"]
    if grouped is not None:
        group_columns, group_rows = groups(
            rows, runs, grouped, numeric_columns(columns, rows, keys)
        )
        write_csv(out / "compare_groups.csv", group_columns, group_rows)
        shown = shown_groups(group_columns, group_rows)
        print(f"\ngrouped by {', '.join(grouped) or '(nothing: one group)'}: mean ± std (n - 1)\n")
        print(text_table(*shown))
        markdown += [
            "",
            f"Grouped by {', '.join(grouped) or 'nothing'}: mean ± sample std.",
            "",
            markdown_table(*shown),
        ]
        written.append(out / "compare_groups.csv")
    (out / "compare.md").write_text("\n".join(markdown) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN", help="run dirs or folders holding them"
    )
    parser.add_argument(
        "--group-by", metavar="KEYS", help=f"{ALL_BUT_SEED}, or config keys joined by commas"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="folder of compare.csv and compare.md (default: .)",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="FILE", help="also overlay the runs' curves in this PNG"
    )
    parser.add_argument(
        "--ignore", action="append", default=[], metavar="PATTERN",
        help=f"config keys not compared (fnmatch, repeatable; always: {' '.join(NOT_COMPARED)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        paths, unfinished = collect(args.runs)
        runs = [read_run(p) for p in paths]
        keys = differing_keys([r.config for r in runs], (*NOT_COMPARED, *args.ignore))
        grouped = group_keys(args.group_by, keys, runs) if args.group_by else None
        csv_files = {r.path: metrics_file(r.path) for r in runs} if args.plot else {}
        missing = [str(p) for p, f in csv_files.items() if f is None]
        if missing:
            raise UserError(
                f"--plot: no metrics.csv in {', '.join(missing)} (runs with logger=none); drop --plot"
            )
    except UserError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    if unfinished:
        print(f"compare: skipped {len(unfinished)} unfinished run(s) (no summary.json): "
              f"{' '.join(map(str, unfinished))}", file=sys.stderr)  # fmt: skip
    written = report(runs, keys, grouped, args.out)
    if args.plot:
        from lightspeed.callbacks.plots import draw_curves  # loads Lightning: only when drawing

        curves = zip(labels([r.path for r in runs]), csv_files.values(), strict=True)
        draw_curves(dict(curves), args.plot)
        written.append(args.plot)
    print(f"\ncompare: {len(runs)} run(s) → {' '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
