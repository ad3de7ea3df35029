"""logger=wandb / logger=mlflow: offline or local by default, one line without the package, and a
resumed fit continues the same tracker run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightspeed import cli
from lightspeed.errors import ConfigError
from lightspeed.session import run_task
from lightspeed.trackers import keep_run_id, read_run_id, require

# a run short enough to resume: no fixed-length LR schedule, every step logged
SHORT = ["model.scheduler=null", "trainer.log_every_n_steps=1", "extras.test_after_fit=false"]


@pytest.fixture
def quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline and silent; the env it sets (WANDB_MODE) is undone after the test."""
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_missing_package_is_one_line_and_exit_2(
    logger: str, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, logger, None)  # importlib finds no such package
    argv = [
        f"logger={logger}",
        "debug=fdr",
        f"paths.root_dir={tmp_path}",
        f"data.data_dir={tiny_data}",
        "data.val_size=100",
        "data.download=false",
        "callbacks.progress_bar=null",
        "extras.print_config=false",
    ]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"logger={logger} needs the {logger} package" in err
    assert f"pip install -e '.[{logger}]'" in err


def test_require_names_the_install() -> None:
    require("json", "json")  # present: nothing happens
    with pytest.raises(ConfigError, match=r"pip install 'no_such_pkg_x'"):
        require("no_such_pkg_x", "x")


def test_run_id_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run_id"
    assert read_run_id(path) is None and read_run_id(None) is None
    keep_run_id(path, "abc123")
    keep_run_id(None, "ignored")
    assert read_run_id(path) == "abc123"
    assert path.read_text() == "abc123\n"


def test_mlflow_fdr_fit(cfg_factory) -> None:
    pytest.importorskip("mlflow")
    summary = run_task(cfg_factory(["logger=mlflow", "debug=fdr"]))
    assert summary["metrics"]["test/acc"] is not None


def test_wandb_fdr_fit(cfg_factory, quiet_wandb) -> None:
    wandb = pytest.importorskip("wandb")
    try:
        summary = run_task(cfg_factory(["logger=wandb", "debug=fdr"]))
    finally:
        wandb.finish()
    assert summary["metrics"]["test/acc"] is not None


def test_mlflow_resumed_fit_continues_its_run(cfg_factory, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = tmp_path / "mlrun"
    run_task(cfg_factory(["logger=mlflow", "trainer.max_epochs=1", *SHORT], output_dir=run))
    run_id = read_run_id(run / "mlflow_run_id")
    assert run_id
    resumed = cfg_factory(
        ["logger=mlflow", "trainer.max_epochs=2", *SHORT, f"resume={run}"], output_dir=run
    )
    run_task(resumed)
    assert read_run_id(run / "mlflow_run_id") == run_id
    client = MlflowClient(f"file:{run / 'mlruns'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "lightspeed"]
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # one MLflow run for both sessions
    epochs = [m.step for m in client.get_metric_history(run_id, "val/acc")]
    assert len(epochs) == 2 and epochs[0] < epochs[1]
    assert runs[0].info.status == "FINISHED"


@pytest.mark.slow  # ~20 s: two W&B sessions start and finish
def test_wandb_resumed_fit_continues_its_run(cfg_factory, tmp_path: Path, quiet_wandb) -> None:
    wandb = pytest.importorskip("wandb")
    run = tmp_path / "wbrun"
    try:
        run_task(cfg_factory(["logger=wandb", "trainer.max_epochs=1", *SHORT], output_dir=run))
        wandb.finish()
        run_id = read_run_id(run / "wandb_run_id")
        assert run_id
        resumed = cfg_factory(
            ["logger=wandb", "trainer.max_epochs=2", *SHORT, f"resume={run}"], output_dir=run
        )
        run_task(resumed)
        assert wandb.run is not None and wandb.run.id == run_id
    finally:
        wandb.finish()
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2
    assert all(s.name.endswith(f"-{run_id}") for s in sessions)
