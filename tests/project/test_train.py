"""Training end to end, in-process, on the tiny data: what the Hydra job does, minus Hydra.

Each test calls the functions the entry point calls (``validate`` then ``run_task``, or
``build`` and a Trainer method where the test needs the built objects).
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightspeed.build import build
from lightspeed.config import validate
from lightspeed.data.memory import InMemoryBatchLoader
from lightspeed.errors import DataError
from lightspeed.safety.metadata import CHECKPOINT_KEY
from lightspeed.session import run_task

# 500 training images in batches of 50: 10 steps an epoch, a few seconds of CPU.
SMALL = ["data.batch_size=50", "data.eval_batch_size=100"]


class BatchShapes(L.Callback):
    """Records the shapes of the training batches the model receives."""

    def __init__(self) -> None:
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.shapes.append((tuple(batch[0].shape), tuple(batch[1].shape)))


def run(cfg) -> dict:
    """validate + run_task, as the Hydra job does."""
    validate(cfg)
    return run_task(cfg)


@pytest.mark.parametrize(
    ("precision", "resolved"), [("32", "32"), ("bf16-mixed", "bf16-mixed"), ("auto", None)]
)
def test_fast_dev_run_precision(cfg_factory, precision: str, resolved: str | None) -> None:
    cfg = cfg_factory(["debug=fdr", "trainer=cpu", f"trainer.precision={precision}", *SMALL])
    validate(cfg)
    built = build(cfg)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    if resolved is None:  # auto: bf16 only where the CPU has bf16 units
        from lightspeed.hardware import cpu_has_bf16

        resolved = "bf16-mixed" if cpu_has_bf16() else "32-true"
    assert built.precision == resolved
    assert built.trainer.precision == ("32-true" if resolved == "32" else resolved)
    assert built.trainer.global_step == 1
    loss = built.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_accumulate_grad_batches(cfg_factory, accumulate: int) -> None:
    """Optimiser steps = batches / accumulate; the run still trains and tests."""
    cfg = cfg_factory(
        [
            "trainer=cpu",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=6",
            "trainer.limit_val_batches=1",
            f"trainer.accumulate_grad_batches={accumulate}",
            *SMALL,
        ]
    )
    validate(cfg)
    built = build(cfg)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert built.trainer.global_step == 6 // accumulate


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_choice_follows_num_workers(cfg_factory, workers: int) -> None:
    """num_workers=0: in-memory batches in-process; >0: a DataLoader with worker processes."""
    cfg = cfg_factory(["debug=fdr", "trainer=cpu", f"data.num_workers={workers}", *SMALL])
    validate(cfg)
    built = build(cfg)
    seen = BatchShapes()
    built.trainer.callbacks.append(seen)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    loader = built.trainer.train_dataloader
    if workers == 0:
        assert isinstance(loader, InMemoryBatchLoader)
    else:
        assert isinstance(loader, DataLoader)
        assert loader.num_workers == workers
        assert loader.persistent_workers  # auto: no re-fork every epoch
    assert built.trainer.global_step == 1
    # whole batches of normalised images, however they were loaded (batches are checked
    # during the run: a second pass over persistent workers would leave them to time out)
    assert seen.shapes == [((50, 1, 28, 28), (50,))]


def test_debug_fdr_task_summary(cfg_factory) -> None:
    """The whole fit task (fit + test) in one batch, through run_task."""
    cfg = cfg_factory(["debug=fdr", *SMALL])
    summary = run(cfg)
    assert summary["task"] == "fit"
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    saved = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert saved == summary


@pytest.mark.parametrize("logger", ["none", "csv"])
def test_fit_with_few_or_no_loggers(cfg_factory, logger: str) -> None:
    """Callbacks that log (learning rate, speed) must not stop a run without loggers."""
    cfg = cfg_factory(
        [
            f"logger={logger}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            *SMALL,
        ]
    )
    summary = run(cfg)
    assert Path(summary["last_checkpoint"]).is_file()
    assert (Path(cfg.paths.output_dir) / "csv").is_dir() == (logger == "csv")


def test_mlp_learns_the_tiny_data(cfg_factory) -> None:
    """A guard against silently broken training: one epoch must beat chance (0.1) by far."""
    cfg = cfg_factory(["model=mlp", "trainer.max_epochs=1", "logger=none", *SMALL])
    summary = run(cfg)
    assert summary["objective"]["best"] > 0.8
    assert summary["metrics"]["test/acc"] > 0.8


def last_logged(metrics_csv: Path, key: str) -> float:
    with metrics_csv.open() as f:
        values = [row[key] for row in csv.DictReader(f) if row.get(key)]
    assert values, f"{key} never logged in {metrics_csv}"
    return float(values[-1])


def test_fit_then_validate_reproduces_val_acc(cfg_factory) -> None:
    cfg = cfg_factory(
        [
            "trainer=cpu",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=5",
            "trainer.log_every_n_steps=1",
            *SMALL,
        ]
    )
    fit = run(cfg)
    run_dir = Path(cfg.paths.output_dir)

    # everything a run leaves behind
    for name in ("config.yaml", "hardware.json", "summary.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    metrics_csv = run_dir / "csv" / "metrics.csv"
    assert metrics_csv.is_file()
    assert json.loads((run_dir / "hardware.json").read_text())["precision"] == fit["precision"]

    last_val = last_logged(metrics_csv, "val/acc")
    assert fit["objective"]["best"] >= last_val
    assert fit["metrics"]["test/acc"] is not None
    assert Path(fit["best_checkpoint"]).is_file()
    assert Path(fit["last_checkpoint"]) == run_dir / "checkpoints" / "last.ckpt"

    # checkpoints are plain data: they load with weights_only=True and say how they were made
    ckpt = torch.load(fit["last_checkpoint"], weights_only=True, map_location="cpu")
    assert ckpt[CHECKPOINT_KEY]["config"]["trainer"]["max_epochs"] == 2
    assert ckpt[CHECKPOINT_KEY]["seed"] == cfg.seed

    # the weights of the last epoch give its validation accuracy again
    last = run(cfg_factory(["task=validate", f"ckpt_path={fit['last_checkpoint']}", *SMALL]))
    assert last["metrics"]["val/acc"] == pytest.approx(last_val, abs=1e-6)
    best = run(cfg_factory(["task=validate", f"ckpt_path={fit['best_checkpoint']}", *SMALL]))
    assert best["metrics"]["val/acc"] == pytest.approx(fit["objective"]["best"], abs=1e-6)


def test_truncated_idx_file_is_one_line_data_error(cfg_factory, tiny_data: Path, tmp_path: Path):
    broken = tmp_path / "broken_data"
    shutil.copytree(tiny_data, broken)
    labels = broken / "train-labels-idx1-ubyte.gz"
    payload = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(payload[:-10]))  # ten labels short of the header's count

    cfg = cfg_factory(["debug=fdr", f"data.data_dir={broken}"])
    with pytest.raises(DataError) as err:
        run(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(labels) in msg
    assert "truncated" in msg


def test_default_fit_whitens_the_first_conv_from_the_data_and_keeps_it(cfg_factory) -> None:
    """The default net's first conv is set from a training batch before the fit and gets no
    gradient and no optimiser slot; a resume keeps the checkpoint's weights (test_resume)."""
    cfg = cfg_factory(["trainer.max_epochs=1", "trainer.limit_train_batches=3", *SMALL])
    built = build(cfg)
    he_init = built.module.net.features[0][0].weight.detach().clone()
    built.trainer.fit(built.module, datamodule=built.datamodule)
    conv = built.module.net.features[0][0].weight
    assert not conv.requires_grad and conv.grad is None
    assert not torch.equal(conv.detach(), he_init)  # set from the data, not the He init
    optimised = {id(p) for g in built.trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(conv) not in optimised
    trained = [p for p in built.module.parameters() if p.requires_grad]
    assert {id(p) for p in trained} == optimised


class Hits(L.Callback):
    """Counts, before each training step, how many of the batch the model gets right."""

    def __init__(self) -> None:
        self.per_epoch: list[list[int]] = []
        self.logged: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.per_epoch:  # the module logged the last epoch's at its end (after validation)
            self.logged.append(float(trainer.callback_metrics["train/acc"]))
        self.per_epoch.append([0, 0])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        x, y = batch
        with torch.no_grad():
            hits = int((pl_module(x).argmax(dim=1) == y).sum())
        self.per_epoch[-1][0] += hits
        self.per_epoch[-1][1] += len(y)


def test_train_accuracy_counts_each_epochs_training_samples(cfg_factory) -> None:
    """train/acc is the share of the epoch's training samples the model got right as it
    trained on them: counted here before each step, compared exactly per epoch."""
    cfg = cfg_factory(
        [
            *SMALL,
            "model=mlp",
            "model.net.dropout=0",  # the forward here must be the training step's
            "trainer.precision=32",
            "trainer.max_epochs=2",
            "trainer.limit_val_batches=1",
        ]
    )
    built = build(cfg)
    hits = Hits()
    built.trainer.callbacks.append(hits)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    hits.logged.append(float(built.trainer.callback_metrics["train/acc"]))
    expected = [right / seen for right, seen in hits.per_epoch]
    assert len(expected) == 2 and expected[0] != expected[1]
    assert hits.logged == pytest.approx(expected, abs=1e-6)
