"""Your project's default config still trains: ``lightspeed`` as configured (train.yaml's data,
model and objective, on the real data), cut to a few batches. Keep this test when you replace
the example: it names nothing of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lightspeed import cli
from lightspeed.plan import precheck

SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
    "extras.print_config=false",
]


def test_the_default_config_trains(tmp_path: Path, capsys) -> None:
    argv = [*SHORT, f"paths.log_dir={tmp_path / 'logs'}"]
    cfg = precheck(argv)
    try:
        cli.main(argv)
    except SystemExit as e:
        err = capsys.readouterr().err
        if e.code == 2 and "not found" in err:  # no copy of the data on this machine
            pytest.skip(f"the default data is not on this machine: {err.strip()}")
        assert not e.code, err
    (summary_path,) = (tmp_path / "logs" / "fit").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    best = summary["objective"]["best"]
    assert summary["objective"]["metric"] == cfg.objective.metric
    assert best is not None and math.isfinite(best)
    test_metric = cfg.objective.metric.replace("val/", "test/", 1)
    assert math.isfinite(summary["metrics"][test_metric])
    assert (summary_path.parent / "checkpoints" / "last.ckpt").is_file()
