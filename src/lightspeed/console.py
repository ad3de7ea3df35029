"""What the console shows during a run: the config tree, lightspeed's lines, warnings, progress
and the summary table.

Lightning prints its INFO lines through its own handler *and* (under Hydra's logging) through
the root logger, so each appeared twice. Here its own handler goes, its INFO lines reach Hydra's
handlers but only the run's log file (``<run dir>/lightspeed.log``), and two notes that never
help here are dropped: the litlogger advertisement and a deprecation warning from Lightning's
own code (``LeafSpec``, Lightning 2.6 with torch ≥ 2.10).
"""

from __future__ import annotations

import logging
import warnings

NOISE = ("litlogger",)


def _console_only(record: logging.LogRecord) -> bool:
    """Console filter: Lightning's records below WARNING stay in the log file."""
    return not (record.name.startswith("lightning") and record.levelno < logging.WARNING)


def quiet() -> None:
    """Sets up the console for a Hydra job (call once, after Hydra has configured logging)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not any(word in record.getMessage() for word in NOISE)
    )
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not the run's log file
            handler.addFilter(_console_only)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")


def print_config(plain: dict) -> None:
    """The resolved config as a tree, one branch per group (rich)."""
    import yaml
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    scalars = {k: v for k, v in plain.items() if not isinstance(v, dict)}
    tree.add("run").add(Syntax(yaml.safe_dump(scalars, sort_keys=False), "yaml"))
    for key, value in plain.items():
        if isinstance(value, dict):
            text = yaml.safe_dump(value, sort_keys=False) if value else "{}"
            tree.add(key).add(Syntax(text, "yaml"))
    rprint(tree)


LABELS = {
    "samples_per_s": "train samples/s",
    "data_wait_share": "data-wait share",
    "time_to_first_step_s": "time to first step (s)",
    "train_time_s": "fit time (s)",
    "wall_time_s": "task wall time (s)",
    "process_time_s": "process time (s)",
    "gpu_peak_mem_mb": "peak GPU memory (MB)",
    "cpu_peak_rss_mb": "peak RSS (MB)",
    "precision": "precision",
    "best_checkpoint": "best checkpoint",
    "last_checkpoint": "last checkpoint",
    "curves": "curves",
    "predictions": "predictions",
    "onnx": "ONNX model",
    "onnx_max_abs_diff": "ONNX max |Δoutput|",
    "run_dir": "run dir",
    "data_source": "data source",
}


def _text(value: object) -> str:
    if isinstance(value, dict):  # data_source: where the data came from
        return f"{value.get('path')} (sha256 {str(value.get('sha256'))[:12]}…)"
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return f"{value:.2e}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The summary table's rows: the objective's best, the metrics the module logged (named as
    it logged them), then the run's figures and files."""
    rows = []
    objective = summary.get("objective") or {}
    if objective.get("best") is not None:
        label = f"best {objective['metric']} ({objective['mode']}, objective)"
        rows.append((label, _text(objective["best"])))
    for name, value in sorted((summary.get("metrics") or {}).items()):
        rows.append((name, _text(value)))
    rows += [
        (label, _text(summary[k])) for k, label in LABELS.items() if summary.get(k) is not None
    ]
    return rows


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lightspeed {summary['task']} summary", show_header=False)
    for label, text in summary_rows(summary):
        table.add_row(label, text)
    Console(width=160).print(table)
