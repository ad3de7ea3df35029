"""Training curves: ``curves.png`` in the run dir at the end of a fit, drawn from the CSV metrics.

:func:`draw_curves` serves the callback (one run) and ``scripts/plot_runs.py`` (runs overlaid).
Matplotlib is imported only when drawing, and only its object API is used: no pyplot, so no
global backend is switched and no window can open.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from lightspeed.loggers import csv_number

log = logging.getLogger(__name__)

# A panel per metric name, whatever the module logs: train/<name>, val/<name> and test/<name>
# share the panel <name> (loss first); the learning rate has its own (LearningRateMonitor names
# its columns lr-<optimizer>[/pg<i>]).
SPLITS = ("train", "val", "test")
LR_PANEL = "learning rate"
# split → (line style, marker); colour tells runs apart
STYLES = {"train": ("-", None), "val": ("--", None), "test": ("none", "o")}

Series = dict[str, tuple[list[float], list[float]]]  # column → (steps, values)


def read_metrics(path: str | Path) -> Series:
    """The columns of a ``metrics.csv`` as ``(steps, values)``, skipping empty cells."""
    series: Series = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            step = csv_number(row.get("step"))
            for key, text in row.items():
                value = csv_number(text)
                if key not in ("step", "epoch") and math.isfinite(step) and math.isfinite(value):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(value)
    return series


def panels_of(runs: list[Series]) -> dict[str, list[str]]:
    """Panel title → the metric columns drawn in it, over all ``runs``: one panel per metric
    name logged for a split (``loss`` first), then the learning rate."""
    names: dict[str, set[str]] = {}
    lr: set[str] = set()
    for series in runs:
        for column in series:
            split, _, name = column.partition("/")
            if split in SPLITS and name:
                names.setdefault(name, set()).add(column)
            elif column.startswith("lr-") and "momentum" not in column:  # lr-SGD, lr-AdamW/pg1
                lr.add(column)
    order = sorted(names, key=lambda n: (n != "loss", n))
    rank = {s: i for i, s in enumerate(SPLITS)}
    panels = {n: sorted(names[n], key=lambda c: rank[c.split("/")[0]]) for n in order}
    panels[LR_PANEL] = sorted(lr)
    return panels


def draw_curves(runs: Mapping[str, str | Path], out: str | Path) -> dict[str, list[str]]:
    """Draws the runs' metrics side by side (loss, each other metric, LR) into the PNG ``out``.

    Args:
        runs: legend label → that run's ``metrics.csv``; with one run the label is left out of
            the legend. Colour tells runs apart, line style the split (train solid, val dashed,
            test a point).
        out: the PNG to write (its folder is made if needed).

    Returns:
        Each panel's title (in order) → the legend labels of the curves drawn in it.
    """
    from matplotlib.figure import Figure  # imported here: a fit that draws nothing never pays

    data = {label: read_metrics(path) for label, path in runs.items()}
    layout = panels_of(list(data.values()))
    fig = Figure(figsize=(5 * len(layout), 4), layout="constrained")
    axes = fig.subplots(1, len(layout), squeeze=False)[0]
    colours = [f"C{i % 10}" for i in range(len(data))]
    panels: dict[str, list[str]] = {}
    for ax, (title, wanted) in zip(axes, layout.items(), strict=True):
        drawn = panels.setdefault(title, [])
        for colour, (label, series) in zip(colours, data.items(), strict=True):
            for column in (c for c in wanted if c in series):
                steps, values = series[column]
                split = column.split("/", 1)[0]
                name = column.removeprefix("lr-") if title == LR_PANEL else split
                name = name if len(data) == 1 else f"{label} {name}"
                linestyle, marker = STYLES.get(split, ("-", None))
                marker = marker or ("o" if len(steps) == 1 else None)  # a lone point shows
                ax.plot(steps, values, color=colour, linestyle=linestyle, marker=marker, label=name)
                drawn.append(name)
        if drawn:
            values = [v for s in data.values() for c in wanted if c in s for v in s[c][1]]
            if title == "loss" and min(values) > 0 and max(values) > 20 * min(values):
                ax.set_yscale("log")  # from the first steps to near 0 in one view
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return panels


class CurvePlotter(L.Callback):
    """Writes ``filename`` (train/val/test metrics, LR) at the end of a fit.

    Drawn by the global-zero process from the run's CSV logger; without one (``logger=none``,
    or a logger group that leaves out ``csv``) it says so in one line and draws nothing.

    Args:
        filename: the PNG's name, in ``dirpath``.
        dirpath: where it goes; None: the trainer's ``default_root_dir`` (the run dir).
    """

    def __init__(self, filename: str = "curves.png", dirpath: str | None = None) -> None:
        self.filename = filename
        self.dirpath = dirpath
        self.path: Path | None = None  # the PNG, once drawn
        self.panels: dict[str, list[str]] = {}  # its panels → their curves (draw_curves)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.path is not None:  # a fit's test of its best checkpoint: add the test point
            self._draw(trainer)

    def _draw(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is None:
            log.info("curves: no CSV logger in this run, so no %s", self.filename)
            return
        logger.save()  # the loggers flush after on_fit_end/on_test_end: write the rows now
        metrics = Path(logger.experiment.metrics_file_path)
        if not metrics.is_file():
            log.info("curves: %s holds no metrics yet, so no %s", metrics, self.filename)
            return
        out = Path(self.dirpath or trainer.default_root_dir) / self.filename
        try:
            self.panels = draw_curves({"run": metrics}, out)
        except ImportError as e:  # a finished fit is not failed for its picture
            log.warning("curves: %s; pip install matplotlib to get %s", e, self.filename)
            return
        self.path = out
        log.info("curves: %s", out)

    def run_summary(self) -> dict[str, Any]:
        return {"curves": str(self.path)} if self.path is not None else {}
