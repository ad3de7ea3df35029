"""What the console shows during a run: lightspeed's lines, warnings, progress and the summary.

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
