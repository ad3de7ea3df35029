"""The end of a sweep: a table of all trials, best first, on the console and in results.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightspeed.run.resume import command_line, override_value
from lightspeed.sweep.space import format_value


def report(search: Any, study: Any, sweep_dir: Path) -> None:
    """The table of all trials of ``study`` (an :class:`~lightspeed.sweep.study.OptunaSearch`'s),
    best first, printed and written to ``<sweep_dir>/results.csv``; then the best trial's
    commands."""
    from optuna.trial import TrialState
    from rich.console import Console
    from rich.table import Table

    trials = list(study.get_trials(deepcopy=False))
    sign = -1 if search.direction == "maximize" else 1

    def best_first(t: Any) -> tuple:
        values = list(t.intermediate_values.values())
        value = t.value if t.value is not None else (values[-1] if values else None)
        return (t.state != TrialState.COMPLETE, value is None, sign * (value or 0), t.number)

    trials.sort(key=best_first)
    keys = list(search.params)
    rows = []
    for t in trials:
        value = t.value if t.value is not None else None
        state = t.state.name.lower()
        if t.user_attrs.get("interrupted"):
            state = "interrupted"
        rows.append(
            {
                "trial": t.number,
                "state": state,
                search.metric: "" if value is None else f"{value:.4f}",
                "epochs": len(t.intermediate_values),
                **{k: format_value(t.params.get(k)) for k in keys},
                "seconds": t.user_attrs.get("seconds", ""),
                "run_dir": str(sweep_dir / f"trial_{t.number:03d}"),
            }
        )
    with (sweep_dir / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    table = Table(title=f"study {search.study_name}: {search.metric} ({search.direction})")
    for column in ("trial", "state", search.metric, "epochs", *keys, "seconds"):
        table.add_column(column, justify="right" if column != "state" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("trial", "state", search.metric, "epochs")),
                      *(row[k] for k in keys), str(row["seconds"]))  # fmt: skip
    console = Console(width=160)
    console.print(table)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = complete[0]
        args = search.trial_overrides(list(study.user_attrs["command"]), best.params)
        best_dir = sweep_dir / f"trial_{best.number:03d}"
        console.print(
            f"best: trial {best.number}, {search.metric} {best.value:.4f}; run dir {best_dir}"
        )
        # plain lines: rich would wrap a long command, which then no longer pastes
        print(f"reproduce: {command_line(*args)}")
        for ckpt in sorted((best_dir / "checkpoints").glob("best*.ckpt"))[:1]:
            print(
                f"test it: {command_line('task=test', *args, f'ckpt_path={override_value(str(ckpt))}')}"
            )
    console.print(f"results: {sweep_dir / 'results.csv'}")
