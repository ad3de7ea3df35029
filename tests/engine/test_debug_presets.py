"""debug=limit / anomaly / overfit presets, and callbacks/early_stopping=on, on the tiny data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightspeed.build import build
from lightspeed.plan import precheck
from lightspeed.session import run_task

# per-epoch checkpoint writes are most of a tiny epoch's time; these tests need none
NO_CHECKPOINTS = [
    "callbacks.model_checkpoint=null",
    "callbacks.last_checkpoint=null",
    "trainer.enable_checkpointing=false",
]


def last_values(run_dir: Path, *keys: str) -> dict[str, float]:
    """The last logged value of each metric in the run's metrics.csv."""
    out: dict[str, float] = {}
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            out.update({k: float(row[k]) for k in keys if row.get(k)})
    return out


def rows(run_dir: Path, key: str) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get(key)]


def test_limit_runs_a_whole_short_fit(cfg_factory) -> None:
    cfg = cfg_factory(["debug=limit", "data.batch_size=32", "data.eval_batch_size=32"])
    summary = run_task(cfg)
    run = Path(cfg.paths.output_dir)
    assert summary["metrics"]["test/acc"] is not None
    assert summary["last_checkpoint"] and (run / "curves.png").is_file()  # unlike debug=fdr
    (val,) = rows(run, "val/acc")
    assert val["step"] == "9"  # one epoch of 10 batches (of 15), then validation


class AnomalyProbe(Callback):
    """Records whether autograd anomaly detection is on as each training batch starts."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_start(self, *args) -> None:
        self.seen.append(torch.is_anomaly_enabled())


def test_anomaly_detection_is_on_in_training(cfg_factory) -> None:
    cfg = cfg_factory(["debug=anomaly", "extras.test_after_fit=false"])
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 10
    built = build(cfg)
    probe = AnomalyProbe()
    built.trainer.callbacks.append(probe)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert probe.seen and all(probe.seen)
    assert not torch.is_anomaly_enabled()  # only inside the fit


def test_overfit_drives_train_loss_to_zero(cfg_factory) -> None:
    # 4 batches of 32 of the 500 training images; 20 epochs are plenty on the tiny data
    overrides = ["debug=overfit", "data.batch_size=32", "trainer.log_every_n_steps=1"]
    cfg = cfg_factory(
        [*overrides, "trainer.max_epochs=20", *NO_CHECKPOINTS, "extras.test_after_fit=false"]
    )
    assert cfg.model.label_smoothing == 0
    run_task(cfg)
    last = last_values(Path(cfg.paths.output_dir), "train/loss", "train/acc")
    assert last["train/acc"] == 1.0
    assert last["train/loss"] < 0.05


def test_early_stopping_is_off_by_default_and_a_choice() -> None:
    assert "early_stopping" not in precheck([]).callbacks
    cfg = precheck(["callbacks/early_stopping=on", "callbacks.early_stopping.patience=5"])
    node = cfg.callbacks.early_stopping
    assert (node.monitor, node.mode, node.patience) == ("val/acc", "max", 5)
    on_loss = ["callbacks.early_stopping.monitor=val/loss", "callbacks.early_stopping.mode=min"]
    node = precheck(["callbacks/early_stopping=on", *on_loss]).callbacks.early_stopping
    assert (node.monitor, node.mode) == ("val/loss", "min")


def test_early_stopping_stops_on_a_plateau(cfg_factory) -> None:
    # min_delta=1: no accuracy gain counts as one, a plateau from the first epoch
    stopping = ["callbacks.early_stopping.patience=2", "callbacks.early_stopping.min_delta=1.0"]
    run = ["trainer.max_epochs=20", "model.scheduler=null", "extras.test_after_fit=false"]
    cfg = cfg_factory(["callbacks/early_stopping=on", *stopping, *run, *NO_CHECKPOINTS])
    run_task(cfg)
    epochs = [int(r["epoch"]) for r in rows(Path(cfg.paths.output_dir), "val/acc")]
    assert epochs == [0, 1, 2]  # the first sets the best, two more without gain, then stop


@pytest.mark.parametrize("preset", ["limit", "anomaly", "overfit", "fdr", "profiler"])
def test_presets_pass_the_config_check(preset: str) -> None:
    precheck([f"debug={preset}"])


def test_overfit_serves_the_same_batches_every_epoch(cfg_factory) -> None:
    dm = build(cfg_factory(["debug=overfit", "data.batch_size=32"])).datamodule
    dm.setup("fit")
    loader, firsts = dm.train_dataloader(), []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        firsts.append(next(iter(loader))[1].clone())
    assert torch.equal(*firsts)
