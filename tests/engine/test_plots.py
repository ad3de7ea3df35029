"""curves.png at the end of a fit, and scripts/plot_runs.py overlaying runs with the same drawing."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
from conftest import quiet_tiny_run

from lightspeed.callbacks.plots import draw_curves, read_metrics
from lightspeed.session import run_task

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the file signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def load_plot_runs():
    spec = importlib.util.spec_from_file_location("plot_runs", REPO / "scripts" / "plot_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A run dir of a default-config fit on the tiny data (2 epochs, every step logged)."""
    from hydra.core.hydra_config import HydraConfig

    from lightspeed.plan import compose_for_run

    root = tmp_path_factory.mktemp("curves")
    cfg = compose_for_run(
        [
            *quiet_tiny_run(tiny_data, root),
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
        ],
        root / "run",
    )
    try:
        run_task(cfg)
    finally:
        HydraConfig.instance().cfg = None
    return root / "run"


def test_default_fit_leaves_curves_png_with_its_panels(fitted: Path, tmp_path: Path) -> None:
    png = fitted / "curves.png"
    width, height = png_size(png)
    assert width > 2 * height > 0  # three panels side by side
    # the picture is drawn from the run's CSV: the same drawing gives these panels and curves
    panels = draw_curves({"run": fitted / "csv" / "metrics.csv"}, tmp_path / "again.png")
    assert list(panels) == ["loss", "acc", "learning rate"]
    assert panels["loss"] == ["train", "val", "test"]  # the test point: drawn after the fit
    assert panels["acc"][:2] == ["train", "val"]  # + the test point: drawn after the fit
    assert panels["learning rate"] == ["SGD"]


def test_plot_runs_overlays_runs(fitted: Path, tmp_path: Path, capsys) -> None:
    plot_runs = load_plot_runs()
    other = tmp_path / "other" / "run"
    (other / "csv").mkdir(parents=True)
    (other / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/acc\n0,1,2.0,\n0,1,,0.5\n1,3,1.0,\n1,3,,0.7\n"
    )
    out = tmp_path / "both.png"
    assert plot_runs.main([str(fitted), str(other), "--out", str(out)]) == 0
    png_size(out)
    assert "2 run(s)" in capsys.readouterr().out
    # labels are the run folders, with parents added where the names tie
    assert plot_runs.labels([fitted, other]) == [
        f"{fitted.parent.name}/run",
        "other/run",
    ]
    assert plot_runs.main([str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_read_metrics_skips_empty_cells(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,lr-SGD,step,train/loss\n,0.1,0,\n0,,1,2.5\n0,,2,nan\n")
    series = read_metrics(csv)
    assert series == {"lr-SGD": ([0.0], [0.1]), "train/loss": ([1.0], [2.5])}
    panels = draw_curves({"a": csv}, tmp_path / "one.png")
    assert panels == {"loss": ["train"], "learning rate": ["SGD"]}


def test_panels_follow_the_metrics_the_module_logs(tmp_path: Path) -> None:
    """A regression's metrics get panels of their own: nothing in the plot names a metric."""
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train/loss,val/loss,val/rmse,val/mae,test/rmse,speed/step_ms\n"
        "0,9,0.5,0.4,12.0,9.0,,3.0\n1,19,0.3,0.2,8.0,6.0,7.5,\n"
    )
    panels = draw_curves({"a": csv}, tmp_path / "reg.png")
    assert panels == {
        "loss": ["train", "val"],
        "mae": ["val"],
        "rmse": ["val", "test"],
        "learning rate": [],
    }


def test_no_csv_logger_no_curves(cfg_factory) -> None:
    cfg = cfg_factory(["logger=none", "trainer.max_epochs=1", "extras.test_after_fit=false"])
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "summary.json").is_file()
    assert not (out / "curves.png").exists()
