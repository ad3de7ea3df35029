"""scripts/compare.py on four tiny fits, two seeds by two learning rates, laid out as a multirun:
the table against each run's summary.json, the config keys that differ, the groups over seeds."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from conftest import quiet_tiny_run

from lightspeed.run.records import differing_keys, find_runs

REPO = Path(__file__).resolve().parents[2]
SEEDS = (1, 2)
LRS = (0.001, 0.003)
# what the seed and the LR set, and the keys that follow them: data.seed is ${seed},
# OneCycleLR's max_lr is ${..optimizer.lr}
DIFFERING = ["seed", "data.seed", "model.optimizer.lr", "model.scheduler.max_lr"]


def load_script(name: str):
    """``scripts/<name>.py`` under its own name (compare imports its sibling plot_runs)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


load_script("plot_runs")
compare = load_script("compare")


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """``<folder>/<job>/``: four finished fits of a few steps (seed × LR)."""
    from hydra.core.hydra_config import HydraConfig

    from lightspeed.plan import compose_for_run
    from lightspeed.session import run_task

    root = tmp_path_factory.mktemp("compare")
    folder = root / "logs" / "fit" / "multiruns" / "2026-01-01_00-00-00"
    for job, (lr, seed) in enumerate((lr, seed) for lr in LRS for seed in SEEDS):
        overrides = [
            *quiet_tiny_run(tiny_data, root),
            "model=mlp",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "extras.test_after_fit=true",
            "logger=csv",
            "callbacks.curves=null",
            "callbacks.speed.warmup_steps=1",  # a samples/s from 3 steps
            f"seed={seed}",
            f"model.optimizer.lr={lr}",
        ]
        try:
            run_task(compose_for_run(overrides, folder / str(job)))
        finally:
            HydraConfig.instance().cfg = None
    return folder


def summaries(folder: Path) -> dict[str, dict]:
    """Job name → its summary.json."""
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/summary.json")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_run_with_its_summary_and_the_keys_that_differ(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert compare.main([str(multirun), "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "compare.csv")
    saved = summaries(multirun)
    assert sorted(r["run"] for r in rows) == sorted(saved) == ["0", "1", "2", "3"]
    (metric,) = {s["objective"]["metric"] for s in saved.values()}
    metrics = list(saved["0"]["metrics"])
    assert metrics and all(name.startswith("test/") for name in metrics)
    results = [f"best {metric}", *metrics, "train_time_s", "samples_per_s", "precision"]
    assert list(rows[0]) == ["run", *results, *DIFFERING]
    for row in rows:
        summary = saved[row["run"]]
        assert float(row[f"best {metric}"]) == summary["objective"]["best"]
        for name in metrics:
            assert float(row[name]) == summary["metrics"][name]
        for name in ("train_time_s", "samples_per_s"):
            assert float(row[name]) == summary[name] > 0
        assert row["precision"] == summary["precision"]
        config = (multirun / row["run"] / "config.yaml").read_text()
        assert f"\nseed: {row['seed']}\n" in config and row["seed"] == row["data.seed"]
        assert f"lr: {row['model.optimizer.lr']}\n" in config
        assert row["model.optimizer.lr"] == row["model.scheduler.max_lr"]
    assert {(int(r["seed"]), float(r["model.optimizer.lr"])) for r in rows} == {
        (s, lr) for s in SEEDS for lr in LRS
    }
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["run", "best", metric, *(c for c in results[1:]), *DIFFERING]
    for job in saved:  # one line per run, all of its values on it
        (line,) = [line for line in printed if line.split()[:1] == [job]]
        row = next(r for r in rows if r["run"] == job)
        assert line.split()[-4:] == [row[k] for k in DIFFERING]
    markdown = (tmp_path / "compare.md").read_text()
    assert markdown.count("\n| ") == 1 + 1 + 4  # header, rule, four runs


def test_grouping_all_but_the_seed_gives_each_lr_its_mean_and_std(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert compare.main([str(multirun), "--group-by", "all-but-seed", "--out", str(tmp_path)]) == 0
    groups = read_csv(tmp_path / "compare_groups.csv")
    saved = list(summaries(multirun).values())
    metric = saved[0]["objective"]["metric"]
    assert len(groups) == 2
    for group in groups:
        assert group["n"] == "2"
        lr = float(group["model.optimizer.lr"])
        assert float(group["model.scheduler.max_lr"]) == lr
        members = [
            s for s in saved if f"lr: {lr}\n" in Path(s["run_dir"], "config.yaml").read_text()
        ]
        assert len(members) == 2
        columns = {f"best {metric}": lambda s: s["objective"]["best"]}
        columns.update({m: lambda s, m=m: s["metrics"][m] for m in saved[0]["metrics"]})
        columns.update({k: lambda s, k=k: s[k] for k in ("train_time_s", "samples_per_s")})
        for column, value in columns.items():
            a, b = (value(s) for s in members)
            assert float(group[f"{column} mean"]) == pytest.approx((a + b) / 2, abs=1e-12)
            # the sample standard deviation (n - 1) of two values
            assert float(group[f"{column} std"]) == pytest.approx(abs(a - b) / math.sqrt(2))
    assert sorted(float(g["model.optimizer.lr"]) for g in groups) == list(LRS)
    printed = capsys.readouterr().out
    assert "grouped by model.optimizer.lr, model.scheduler.max_lr" in printed
    # the same groups when the key is named
    assert (
        compare.main([str(multirun), "--group-by", "model.optimizer.lr", "--out", str(tmp_path)])
        == 0
    )
    again = read_csv(tmp_path / "compare_groups.csv")
    assert [g["n"] for g in again] == ["2", "2"]
    assert [g[f"best {metric} mean"] for g in again] == [g[f"best {metric} mean"] for g in groups]


def test_run_dirs_given_one_by_one_and_the_curves_overlaid(multirun: Path, tmp_path: Path) -> None:
    png = tmp_path / "runs.png"
    args = [str(multirun / "0"), str(multirun / "3"), "--out", str(tmp_path), "--plot", str(png)]
    assert compare.main(args) == 0
    rows = read_csv(tmp_path / "compare.csv")
    # two runs that differ in both seed and LR: the same four keys, the labels their dirs
    assert [r["run"] for r in rows] == ["0", "3"]
    assert list(rows[0])[-4:] == DIFFERING
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreadable_input_is_one_line_and_status_2(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for args, expected in (
        ([str(tmp_path / "missing")], "no such directory"),
        ([str(tmp_path)], "holds no run"),
        ([str(multirun), "--group-by", "model.optimizer.lrr"], "--group-by model.optimizer.lrr"),
    ):
        assert compare.main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("compare: ") and expected in err, err
    assert not (tmp_path / "out" / "compare.csv").exists()


def test_a_run_without_summary_is_skipped_and_said(tmp_path: Path, multirun: Path, capsys) -> None:
    import shutil

    folder = tmp_path / "runs"
    for job in ("0", "1"):
        shutil.copytree(multirun / job, folder / job)
    (folder / "1" / "summary.json").unlink()  # stopped before the end
    assert find_runs(folder) == ([folder / "0"], [folder / "1"])
    assert compare.main([str(folder), "--out", str(tmp_path)]) == 0
    assert "skipped 1 unfinished run(s)" in capsys.readouterr().err
    assert [r["run"] for r in read_csv(tmp_path / "compare.csv")] == ["0"]


def test_where_runs_were_written_is_not_a_difference() -> None:
    """Runs under other roots and run dirs: their own paths compare relative to those."""

    def config(root: str, run: str, data_dir: str) -> dict:
        return {
            "paths.root_dir": root,
            "paths.output_dir": f"{root}/logs/fit/{run}",
            "trainer.default_root_dir": f"{root}/logs/fit/{run}",
            "callbacks.model_checkpoint.dirpath": f"{root}/logs/fit/{run}/checkpoints",
            "logger.csv.save_dir": f"{root}/logs/fit/{run}",
            "data.cache_dir": f"{root}/data",
            "data.data_dir": data_dir,
            "hydra.run.dir": f"{root}/logs/fit/{run}",
        }

    same_data = [config("/a", "r1", "/data/x"), config("/b", "r2", "/data/x")]
    assert differing_keys(same_data) == []
    other_data = [config("/a", "r1", "/data/x"), config("/b", "r2", "/data/y")]
    assert differing_keys(other_data) == ["data.data_dir"]
    assert differing_keys(other_data, ("paths.*", "hydra.*", "data.*")) == []
