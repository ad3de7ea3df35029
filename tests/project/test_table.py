"""The table regression (myproject.table) through fit, predict and export, in-process, on a
generated CSV: a problem that is not image classification runs through the same engine."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lightspeed.errors import ConfigError
from lightspeed.session import run_task


def write_table(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """``y = 3a - 2b + 0.5 c² + noise``, a text column, and a row with an empty cell."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, rows))
    y = 3 * a - 2 * b + 0.5 * c**2 + rng.normal(0, 0.05, rows) + 100
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        f.write("# generated for the tests\n")
        writer.writerow(["id", "a", "b", "c", "y"])
        for i in range(rows):
            writer.writerow([f"r{i}", a[i], b[i], c[i], y[i]])
        writer.writerow(["broken", "", 1, 2, 3])  # left out: an empty cell
    return path


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return write_table(tmp_path / "table.csv")


def table_run(cfg_factory, table: Path, *extra: str):
    return cfg_factory(
        [
            "experiment=table_regression",
            f"data.path={table}",
            "data.target=y",
            "trainer.max_epochs=15",
            *extra,
        ]
    )


def test_fit_predict_export_on_a_table(cfg_factory, table: Path) -> None:
    fit = run_task(table_run(cfg_factory, table))
    objective = fit["objective"]
    assert (objective["metric"], objective["mode"]) == ("val/rmse", "min")
    # y's spread is ~3.7: predicting the mean would give an RMSE near that
    assert objective["best"] < 1.0, objective
    assert fit["metrics"]["test/rmse"] < 1.0 and "test/mae" in fit["metrics"]
    assert "-" in Path(fit["best_checkpoint"]).name  # best-epochNN-<val/rmse>.ckpt

    ckpt = fit["last_checkpoint"]
    predicted = run_task(table_run(cfg_factory, table, "task=predict", f"ckpt_path={ckpt}"))
    with open(predicted["predictions"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sample", "y", "predicted_y"]
    assert len(rows) == predicted["predict_rows"] == 45  # 15% of the 300 complete rows
    assert rows[0]["sample"].startswith("line ")
    values = np.array([[float(r["y"]), float(r["predicted_y"])] for r in rows])
    rmse = float(np.sqrt(np.mean(np.square(values[:, 1] - values[:, 0]))))
    # the file holds 6 significant digits (each value within 5e-6 of its size): an RMSE from
    # it is within 1e-5 of the largest value of the one computed before the rounding
    bound = 1e-5 * float(np.abs(values).max()) + 1e-6
    assert abs(predicted["metrics"]["predict/rmse"] - rmse) <= bound


def test_export_feeds_the_net_rows(cfg_factory, table: Path) -> None:
    pytest.importorskip("onnxscript", reason="the export extra: pip install -e '.[export]'")
    fit = run_task(table_run(cfg_factory, table, "trainer.max_epochs=1"))
    exported = run_task(
        table_run(cfg_factory, table, "task=export", f"ckpt_path={fit['last_checkpoint']}")
    )
    assert Path(exported["onnx"]).is_file()
    if "onnx_max_abs_diff" in exported:  # onnxruntime installed: the parity check ran
        assert exported["onnx_max_abs_diff"] <= 1e-4


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.target=z", "data.target=z is not a column of"),
        ("data.features=[a,q]", "data.features=['a', 'q']: ['q'] of"),
        ("data.path=/nonexistent.csv", "data.path=/nonexistent.csv: no such file"),
        ("model.net.hidden_channels=[8,2]", "a regression net ends in one output"),
    ],
)
def test_table_mistakes_are_one_line(cfg_factory, table: Path, override: str, fragment: str):
    from lightspeed.build import build

    with pytest.raises(ConfigError) as info:
        build(table_run(cfg_factory, table, override))
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)
