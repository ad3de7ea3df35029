"""tune_loader: the choice rule, the per-data local config it writes, and a tiny run of it."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf
from test_bench import ROOT, load_script

tune_loader = load_script("tune_loader")


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


def test_written_file_selects_its_data_and_sets_the_knobs(tmp_path: Path) -> None:
    out = tmp_path / "loader_hdf5.yaml"
    tune_loader.write_local(out, "hdf5", row(2, 1.0, prefetch=4), "test machine")
    assert out.read_text().startswith("# @package _global_\n")
    written = OmegaConf.load(out)
    assert list(written.defaults) == [{"override /data": "hdf5"}]
    assert written.data == {
        "num_workers": 2,
        "prefetch_factor": 4,
        "persistent_workers": True,
        "pin_memory": False,
    }
    tune_loader.write_local(out, "hdf5", row(0, 1.0), "test machine")
    assert dict(OmegaConf.load(out).data) == {"num_workers": 0, "pin_memory": False}


def test_tuned_file_applies_only_to_its_data(tmp_path: Path, monkeypatch) -> None:
    """Tuning data=hdf5 leaves the default data's loader alone; local=loader_hdf5 selects hdf5."""
    from lightspeed.plan import compose, precheck

    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    tune_loader.write_local(configs / "local/loader_hdf5.yaml", "hdf5", row(1, 1.0), "test")
    monkeypatch.setenv("LIGHTSPEED_CONFIG_DIR", str(configs))
    default = compose([])
    tuned = compose(["local=loader_hdf5"])
    assert tuned.data._target_ == compose(["data=hdf5"]).data._target_ != default.data._target_
    assert tuned.data.num_workers == 1 and tuned.data.prefetch_factor == 2
    assert default.data.get("num_workers", "auto") == "auto"
    precheck(["local=loader_hdf5"])  # the written file passes the config checks


def test_tiny_run_writes_the_file_for_the_data_it_tuned(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "loader.yaml"
    code = tune_loader.main(
        [
            *("--workers", "0", "--batch", "32", "--batches", "3", "--seconds", "1"),
            *("--top", "1", "--steps", "3", "--rounds", "1", "--out", str(out)),
            "data=mnist",
            f"data.data_dir={tiny_data}",
            "data.download=false",
            "data.val_size=100",
            f"paths.root_dir={tmp_path}",
        ]
    )
    assert code == 0
    written = OmegaConf.load(out)
    assert list(written.defaults) == [{"override /data": "mnist"}]
    assert written.data.num_workers == 0
