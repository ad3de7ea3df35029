"""tune_loader: the choice rule and the local config it writes (composable with local=loader)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tune_loader", ROOT / "scripts/tune_loader.py")
tune_loader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tune_loader)


def row(workers: int, sps: float, prefetch: int | None = 2) -> dict:
    return {
        "num_workers": workers,
        "prefetch_factor": prefetch if workers else None,
        "pin_memory": False,
        "batch_size": 256,
        "train_sps": sps,
    }


def test_fewest_workers_win_within_tolerance() -> None:
    rows = [row(2, 1000.0), row(0, 950.0), row(1, 990.0)]
    assert tune_loader.choose(rows, tolerance=0.1)["num_workers"] == 0
    assert tune_loader.choose(rows, tolerance=0.02)["num_workers"] == 1
    assert tune_loader.choose(rows, tolerance=0.005)["num_workers"] == 2


def test_written_file_is_a_global_package_with_data_keys(tmp_path: Path) -> None:
    out = tmp_path / "loader.yaml"
    tune_loader.write_local(out, row(2, 1.0, prefetch=4), "test machine")
    text = out.read_text()
    assert text.startswith("# @package _global_\n")
    data = OmegaConf.load(out).data
    assert data == {
        "num_workers": 2,
        "prefetch_factor": 4,
        "persistent_workers": True,
        "pin_memory": False,
    }
    tune_loader.write_local(out, row(0, 1.0), "test machine")
    assert dict(OmegaConf.load(out).data) == {"num_workers": 0, "pin_memory": False}


def test_local_loader_composes(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from lightspeed.cli import compose
    from lightspeed.config import validate

    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    tune_loader.write_local(configs / "local/loader.yaml", row(1, 1.0), "test machine")
    monkeypatch.setenv("LIGHTSPEED_CONFIG_DIR", str(configs))
    cfg = compose(["local=loader", f"paths.output_dir={tmp_path}/run"])
    assert cfg.data.num_workers == 1 and cfg.data.prefetch_factor == 2
    validate(cfg)
