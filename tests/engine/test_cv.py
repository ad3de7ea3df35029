"""k-fold cross-validation (``cv.folds=K``, lightspeed.cv): the folds, the loop, its summary,
continuing an interrupted run, and the one-line refusals."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NUM_CLASSES, TRAIN_SIZE, quiet_tiny_run

from lightspeed import cli, session
from lightspeed.cv import fold_state
from lightspeed.data.splits import fold_rows
from lightspeed.errors import RunInterrupted
from myproject.idx import read_idx_pair

FAST = ["model=mlp", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "logger=csv"]


def cv_command(tiny_data: Path, root: Path, *extra: str) -> list[str]:
    return ["cv.folds=3", "cv.name=tiny", *FAST, *quiet_tiny_run(tiny_data, root), *extra]


def tiny_labels(tiny_data: Path) -> torch.Tensor:
    _, y = read_idx_pair(
        tiny_data / "train-images-idx3-ubyte.gz", tiny_data / "train-labels-idx1-ubyte.gz"
    )
    return torch.from_numpy(y.copy()).long()


def test_folds_are_disjoint_cover_the_rows_and_are_stratified(tiny_data: Path) -> None:
    labels = tiny_labels(tiny_data)
    vals = []
    for fold in range(3):
        train, val = fold_rows(TRAIN_SIZE, fold, 3, seed=0, labels=labels)
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert len(train) + len(val) == TRAIN_SIZE
        vals.append(val)
    every = torch.cat(vals)
    assert sorted(every.tolist()) == list(range(TRAIN_SIZE))  # disjoint and covering
    counts = torch.stack([torch.bincount(labels[v], minlength=NUM_CLASSES) for v in vals])
    assert (counts.max(0).values - counts.min(0).values).max() <= 1, counts
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 1
    plain = [fold_rows(10, f, 3, seed=1)[1].tolist() for f in range(3)]
    assert sorted(r for rows in plain for r in rows) == list(range(10)) and sorted(
        map(len, plain)
    ) == [3, 3, 4]
    assert fold_rows(10, 0, 3, seed=2)[1].tolist() != plain[0]  # the seed picks the folds


def test_the_datamodule_validates_on_its_fold(tiny_data: Path) -> None:
    from myproject.idx_datamodule import IdxDataModule

    labels = tiny_labels(tiny_data)
    dm = IdxDataModule(data_dir=str(tiny_data), download=False, val_size=100)
    dm.cross_validation_fold(1, 3, 0)
    dm.setup("fit")
    _, val_y = dm.tensors("val")
    _, train_y = dm.tensors("train")
    want = labels[fold_rows(TRAIN_SIZE, 1, 3, 0, labels)[1]]
    assert torch.equal(val_y.cpu(), want) and len(train_y) == TRAIN_SIZE - len(want)
    assert len(dm.tensors("test")[1]) == 200  # untouched


def test_table_data_folds_leave_the_test_rows(tmp_path: Path) -> None:
    from myproject.table import TableDataModule

    plain = TableDataModule()
    plain.setup("fit")
    seen = []
    for fold in range(3):
        dm = TableDataModule()
        dm.cross_validation_fold(fold, 3, 0)
        dm.setup("fit")
        assert torch.equal(dm._splits["test"][2], plain._splits["test"][2])
        seen += dm._splits["val"][2].tolist()
    rest = plain._splits["train"][2].tolist() + plain._splits["val"][2].tolist()
    assert sorted(seen) == sorted(rest)


def rows(cv_dir: Path) -> list[dict]:
    with (cv_dir / "cv_summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_cv_runs_every_fold_and_continues_after_an_interrupt(
    tiny_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    cv_dir = tmp_path / "logs" / "cv" / "tiny"
    run_task = session.run_task
    ran: list[str] = []

    def stopped_at_fold_1(cfg, *args, **kwargs):
        ran.append(Path(cfg.paths.output_dir).name)
        if ran[-1] == "fold_1":  # what a SIGTERM before the fold's first checkpoint leaves
            raise RunInterrupted("run stopped by SIGTERM", exit_code=143)
        return run_task(cfg, *args, **kwargs)

    monkeypatch.setattr(session, "run_task", stopped_at_fold_1)
    with pytest.raises(SystemExit) as stop:
        cli.main(cv_command(tiny_data, tmp_path))
    assert stop.value.code == 143
    assert "cross-validation interrupted; finished folds are kept" in capsys.readouterr().err
    assert ran == ["fold_0", "fold_1"] and fold_state(cv_dir / "fold_0") == "done"
    fold_0 = (cv_dir / "fold_0" / "summary.json").stat().st_mtime_ns

    ran.clear()
    monkeypatch.setattr(session, "run_task", lambda cfg, *a, **k: ran.append(
        Path(cfg.paths.output_dir).name) or run_task(cfg, *a, **k))  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        cli.main(cv_command(tiny_data, tmp_path))
    assert stop.value.code == 0, capsys.readouterr().err
    assert ran == ["fold_1", "fold_2"]  # fold 0 is not run again
    assert (cv_dir / "fold_0" / "summary.json").stat().st_mtime_ns == fold_0
    out = capsys.readouterr().out
    assert "cross-validation tiny: 3 of 3 folds" in out and "cv_summary.csv" in out
    assert "fold 0: finished before" in out and "fold 1: starts in" in out

    table = rows(cv_dir)
    assert [r["fold"] for r in table] == ["0", "1", "2", "mean", "std"]
    summaries = [json.loads((cv_dir / f"fold_{i}" / "summary.json").read_text()) for i in range(3)]
    metric = summaries[0]["objective"]["metric"]
    columns = {
        f"best {metric}": [s["objective"]["best"] for s in summaries],
        "train_time_s": [s["train_time_s"] for s in summaries],
        **{k: [s["metrics"][k] for s in summaries] for k in summaries[0]["metrics"]
           if k.startswith("test/")},
    }  # fmt: skip
    assert len(columns) >= 3  # the objective, a test metric, the time
    for column, values in columns.items():
        assert [float(r[column]) for r in table[:3]] == pytest.approx(values)
        assert float(table[3][column]) == pytest.approx(statistics.mean(values))
        assert float(table[4][column]) == pytest.approx(statistics.stdev(values))
    assert "| mean |" in (cv_dir / "cv_summary.md").read_text()


def test_one_fold_alone_then_resumed_from_its_last_checkpoint(
    tiny_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    cv_dir = tmp_path / "logs" / "cv" / "tiny"
    with pytest.raises(SystemExit) as stop:
        cli.main(cv_command(tiny_data, tmp_path, "cv.fold=2"))
    assert stop.value.code == 0, capsys.readouterr().err
    assert sorted(p.name for p in cv_dir.glob("fold_*")) == ["fold_2"]
    assert [r["fold"] for r in rows(cv_dir)] == ["2"]  # the folds finished so far
    assert [fold_state(cv_dir / f"fold_{i}") for i in range(3)] == ["start", "start", "done"]

    (cv_dir / "fold_2" / "summary.json").unlink()  # as if stopped after its last.ckpt
    assert fold_state(cv_dir / "fold_2") == "resume"
    run_task = session.run_task
    resumed: list[str | None] = []
    monkeypatch.setattr(session, "run_task", lambda cfg, *a, **k: resumed.append(
        cfg.resume) or run_task(cfg, *a, **k))  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        cli.main(cv_command(tiny_data, tmp_path, "cv.fold=2"))
    assert stop.value.code == 0, capsys.readouterr().err
    assert resumed == [str(cv_dir / "fold_2")] and fold_state(cv_dir / "fold_2") == "done"


def test_multirun_runs_one_job_per_fold_into_the_cv_dir(tiny_data: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "lightspeed", "-m", "cv.fold=0,2",
            *cv_command(tiny_data, tmp_path)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cv_dir = tmp_path / "logs" / "cv" / "tiny"
    assert [fold_state(cv_dir / f"fold_{i}") for i in range(3)] == ["done", "start", "done"]
    assert [r["fold"] for r in rows(cv_dir)] == ["0", "2", "mean", "std"]
    assert "cross-validation tiny: 2 of 3 folds" in done.stdout


class NoFolds:
    """A DataModule without cross_validation_fold."""

    def __init__(self, **kwargs) -> None:
        pass


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["cv.folds=1"], "cv.folds=1 must be >= 2"),
        (["cv.fold=3", "cv.folds=3"], "cv.fold=3 is not a fold of cv.folds=3: use 0..2"),
        (["cv.fold=0"], "cv.fold=0 needs cv.folds=K"),
        (["cv.folds=3", "hparams_search=lr_wd"], "cv.folds with hparams_search"),
        (["cv.folds=2", "trainer=ddp_cpu"], "cv.folds runs its folds in this process, one device"),
        (
            ["cv.folds=3", "data._target_=test_cv.NoFolds"],
            "NoFolds has no cross_validation_fold(fold, folds, seed) method",
        ),
    ],
)
def test_cv_refusals_are_one_line(extra, expected, tiny_data: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([*FAST, *quiet_tiny_run(tiny_data, tmp_path), *extra])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert expected in err
