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


def run_measured(
    tiny_data: Path, tmp_path: Path, monkeypatch, rounds: dict[int, list[float]]
) -> tuple[int, Path]:
    """main() on the tiny data, grid workers {0, 2}, with the timings stood in for: the loader
    alone ranks 2 workers first, and training reads ``rounds[num_workers]``, round by round.
    The file goes to its default place, ``configs/local/`` of a project at ``tmp_path``."""
    monkeypatch.setattr(tune_loader, "ROOT", tmp_path)
    monkeypatch.setattr(
        tune_loader, "measure_loader", lambda dm, b, s, *_: 1000.0 * (1 + s.num_workers)
    )
    left = {w: iter(sps) for w, sps in rounds.items()}

    def quick_fit(overrides: list[str], steps: int, out_dir: str) -> dict:
        workers = int(
            next(o for o in reversed(overrides) if o.startswith("data.num_workers=")).split("=")[1]
        )
        return {"samples_per_s": next(left[workers]), "data_wait_share": 0.1}

    monkeypatch.setattr(tune_loader, "quick_fit", quick_fit)
    code = tune_loader.main(
        [
            *("--workers", "0,2", "--prefetch", "4", "--batch", "32", "--top", "2"),
            *("--rounds", str(len(rounds[0])), "data=mnist", f"data.data_dir={tiny_data}"),
            *("data.download=false", "data.val_size=100", f"paths.root_dir={tmp_path}"),
        ]
    )
    assert all(next(it, None) is None for it in left.values())  # every round was measured
    return code, tmp_path / "configs" / "local" / "loader_mnist.yaml"


def test_rounds_that_disagree_write_nothing(
    tiny_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The busy machine of the report: 2 workers read 607 in one round and 132 in another. Their
    median beats the in-memory loader, but not in every round: no decision, no file, status 1."""
    rounds = {0: [300.0, 310.0, 290.0], 2: [607.0, 132.0, 600.0]}
    code, out = run_measured(tiny_data, tmp_path, monkeypatch, rounds)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists()
    assert len(err) == 1 and err[0].startswith("tune_loader: could not decide: "), err
    assert "workers=2 prefetch=4" in err[0] and err[0].endswith("; wrote nothing")


def test_a_best_round_alone_does_not_beat_the_configured_loader(
    tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """2 workers' best round (900) is the fastest of all, their median (260) is not: the
    in-memory loader (num_workers=0) is written."""
    rounds = {0: [300.0, 310.0, 290.0], 2: [250.0, 900.0, 260.0]}
    code, out = run_measured(tiny_data, tmp_path, monkeypatch, rounds)
    assert code == 0
    assert OmegaConf.load(out).data.num_workers == 0


def test_faster_in_every_round_is_written(
    tiny_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    rounds = {0: [300.0, 310.0, 290.0], 2: [600.0, 610.0, 590.0]}
    code, out = run_measured(tiny_data, tmp_path, monkeypatch, rounds)
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    written = OmegaConf.load(out)
    assert written.data.num_workers == 2 and written.data.prefetch_factor == 4
    # commands that paste into a fresh shell in the project root (no bare `lightspeed`)
    assert "use it: .venv/bin/lightspeed local=loader_mnist" in printed
    assert '    or: make train ARGS="local=loader_mnist"' in printed
