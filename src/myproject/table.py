"""Regression on a table: a CSV of numeric columns, one of them the target.

The second example problem, next to image classification, and the model for a problem of your
own (docs/own_problem.md): a DataModule (:class:`TableDataModule`) and a LightningModule
(:class:`Regressor`) keeping the engine's contracts (``lightspeed.contracts``), with the net
from torchvision (``torchvision.ops.MLP``, configured in ``configs/model/regressor.yaml``).

The default table is matplotlib's sample ``Stocks.csv`` (monthly closing prices, 1990-2022;
it ships with matplotlib, so it is offline): the NASDAQ Composite (``^IXIC``) from the S&P 500
and five stocks, 391 complete rows. ``data.path=<your.csv> data.target=<column>`` trains on
your own table.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from lightspeed.constraints import PositiveInt, UnitInterval
from lightspeed.contracts import PredictionTable
from lightspeed.data.loading import plan_batches
from lightspeed.data.memory import InMemoryBatchLoader
from lightspeed.data.splits import fold_rows
from lightspeed.errors import ConfigError, DataError
from lightspeed.optim import OptimizerFactory, SchedulerFactory, configure_optimizers

SPLITS = ("train", "val", "test")


def sample_table() -> Path:
    """matplotlib's ``Stocks.csv``."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "Stocks.csv"


class TableDataModule(L.LightningDataModule):
    """A CSV table held in memory: ``features`` → ``target``, standardised with the training
    rows' mean and standard deviation. Rows with an empty or non-numeric cell in a used column
    are left out (and counted in the log).

    Args:
        path: the CSV (a header row, then one row per sample; lines starting with ``#`` are
            comments). None: matplotlib's sample ``Stocks.csv``.
        target: the column to predict.
        features: the input columns; None: every other column that holds numbers.
        batch_size: training rows per optimizer step across all devices (the global batch).
        eval_batch_size: rows per validation/test/predict batch.
        val_size: fraction of the rows held out for validation.
        test_size: fraction of the rows held out for the test.
        split_seed: seed of the split into train/val/test.
        seed: seed of the per-epoch order of the training rows.
    """

    def __init__(
        self,
        path: str | None = None,
        target: str = "^IXIC",
        features: list[str] | None = None,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt = 1024,
        val_size: UnitInterval = 0.15,
        test_size: UnitInterval = 0.15,
        split_seed: int = 12345,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.path = Path(path) if path else sample_table()
        if not self.path.is_file():
            raise ConfigError(f"data.path={self.path}: no such file; give the path of a CSV file")
        if val_size + test_size >= 1:
            raise ConfigError(
                f"data.val_size={val_size} + data.test_size={test_size} leave no training rows"
            )
        self.header, self.lines = self._read()
        if target not in self.header:
            raise ConfigError(
                f"data.target={target} is not a column of {self.path}: {', '.join(self.header)}"
            )
        if features is None:
            features = [c for c in self.header if c != target and self._numeric(c)]
        unknown = [c for c in features if c not in self.header]
        if unknown or not features:
            raise ConfigError(
                f"data.features={features}: {unknown or 'none'} of {self.path}'s columns: "
                f"{', '.join(self.header)}"
            )
        self.target, self.features = target, list(features)
        self.num_features = len(self.features)  # the net's input width: ${data:num_features}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.test_size = val_size, test_size
        self.split_seed, self.seed = split_seed, seed
        self.source_info = {"path": str(self.path), "rows": len(self.lines)}
        self._splits: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._fold: tuple[int, int, int] | None = None

    def cross_validation_fold(self, fold: int, folds: int, seed: int) -> None:
        """Validate on fold ``fold`` of ``folds`` of the rows outside the test split and train
        on the rest (``val_size`` is not used; plain shuffled folds: the target is a number,
        not a class). Called by the engine before :meth:`setup`."""
        self._fold = (fold, folds, seed)

    def _read(self) -> tuple[list[str], list[list[str]]]:
        with self.path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
        if len(rows) < 2:
            raise DataError(f"{self.path}: no data rows under a header")
        return [c.strip() for c in rows[0]], rows[1:]

    def _numeric(self, column: str) -> bool:
        i = self.header.index(column)
        return any(_number(r[i]) is not None for r in self.lines if i < len(r))

    def setup(self, stage: str | None = None) -> None:
        """Parses the used columns, splits the rows and standardises them (once)."""
        if self._splits:
            return
        columns = [self.header.index(c) for c in (*self.features, self.target)]
        rows, ids = [], []
        for line, cells in enumerate(self.lines, start=2):  # line 1 is the header
            values = [_number(cells[i]) if i < len(cells) else None for i in columns]
            if None not in values:
                rows.append(values)
                ids.append(line)
        n = len(rows)
        n_val, n_test = round(n * self.val_size), round(n * self.test_size)
        if n - n_val - n_test < 2:
            raise DataError(f"{self.path}: {n} complete rows are too few to train on")
        table = torch.tensor(rows, dtype=torch.float64)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        parts = dict(zip(SPLITS, order.split([n - n_val - n_test, n_val, n_test]), strict=True))
        if self._fold is not None:  # the test rows stay; the folds are cut from all the others
            pool = order[: n - n_test]
            train_at, val_at = fold_rows(len(pool), *self._fold)
            parts.update(train=pool[train_at], val=pool[val_at])
        train = table[parts["train"]]
        self.mean, self.std = train.mean(0), train.std(0).clamp_min(1e-12)
        scaled = ((table - self.mean) / self.std).float()
        line_ids = torch.tensor(ids)
        for split, rows_of in parts.items():
            self._splits[split] = (scaled[rows_of, :-1], scaled[rows_of, -1], line_ids[rows_of])

    def to_target_units(self, y: Tensor) -> Tensor:
        """Standardised target values → the CSV's units."""
        return y * self.std[-1].item() + self.mean[-1].item()

    def _loader(self, split: str, train: bool, shard: bool = True) -> InMemoryBatchLoader:
        x, y, _ = self._splits[split]
        trainer = self.trainer if shard else None
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batch = self.batch_size if train else self.eval_batch_size
        return InMemoryBatchLoader(
            x, y, batch, shuffle=train, seed=self.seed, rank=rank, world_size=world
        )

    def train_dataloader(self) -> InMemoryBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> InMemoryBatchLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> InMemoryBatchLoader:
        return self._loader("test", train=False)

    def eval_dataloader(self, split: str) -> InMemoryBatchLoader:
        return self._loader(split, train=False, shard=False)

    def sample_ids(self, split: str) -> list[str]:
        """The CSV line of each row of ``split``, in loader order."""
        return [f"line {i}" for i in self._splits[split][2].tolist()]

    def plan_batches(self, world_size: int = 1, accumulate: int = 1) -> str:
        return plan_batches(self.batch_size, world_size, accumulate)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Regressor(L.LightningModule):
    """A net's one output per row, trained with mean squared error on standardised targets.

    Logs ``*/loss`` (standardised MSE) and ``*/rmse``, ``*/mae`` in the target's own units
    (``val/rmse`` is the objective in ``experiment=table_regression``).

    Args:
        net: the plain ``nn.Module`` mapping ``[N, num_features]`` rows to ``[N, 1]``.
        optimizer: factory taking the parameters (``functools.partial`` of an optimiser).
        scheduler: factory taking the optimiser, or None (see ``lightspeed.optim``).
        scheduler_interval: ``step`` or ``epoch``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": metric
                for split in ("val", "test")
                for name, metric in (
                    ("rmse", MeanSquaredError(squared=False)),
                    ("mae", MeanAbsoluteError()),
                )
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)  # a tensor: read on the logger's interval, no sync
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], split: str) -> None:
        x, y = batch
        prediction = self(x)
        self.log(f"{split}/loss", nn.functional.mse_loss(prediction, y), sync_dist=True)
        units = self.trainer.datamodule.to_target_units
        for name in ("rmse", "mae"):
            metric = self.metrics[f"{split}_{name}"]
            metric(units(prediction), units(y))
            self.log(f"{split}/{name}", metric, prog_bar=name == "rmse")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> tuple[Tensor, Tensor]:
        x, y = batch
        return self(x).float(), y

    def configure_optimizers(self) -> Any:
        return configure_optimizers(
            self, self.optimizer_factory, self.scheduler_factory, self.scheduler_interval
        )

    # --- what the engine calls (lightspeed.contracts.ModelContract) ---------------------------

    def example_input(self, datamodule: Any) -> Tensor:
        return torch.zeros(2, datamodule.num_features)

    def check_output(self, output: Tensor, datamodule: Any) -> str | None:
        if tuple(output.shape) == (2,):
            return None
        return (
            f"outputs {list(output.shape[1:])} values per row; a regression net ends in one "
            "output (model.net.hidden_channels=[..., 1])"
        )

    def export_input(self, batch: Any) -> Tensor:
        return batch[0]

    def export_metadata(self, datamodule: Any) -> dict[str, str]:
        """Input columns and the standardisation of inputs and output."""
        mean, std = datamodule.mean.tolist(), datamodule.std.tolist()
        return {
            "features": ",".join(datamodule.features),
            "target": datamodule.target,
            "input": f"float32 [N, {datamodule.num_features}]: (x - mean) / std per column, "
            f"mean={mean[:-1]}, std={std[:-1]}",
            "output": f"standardised target: value = output * {std[-1]} + {mean[-1]}",
        }

    def prediction_table(self, outputs: list, datamodule: Any, split: str) -> PredictionTable:
        """Columns: ``sample`` (the CSV line), the target's true and predicted values."""
        units = datamodule.to_target_units
        predicted = units(torch.cat([p for p, _ in outputs]))
        true = units(torch.cat([y for _, y in outputs]))
        ids = datamodule.sample_ids(split)
        rows = (
            [i, f"{t:.6g}", f"{p:.6g}"]
            for i, t, p in zip(ids, true.tolist(), predicted.tolist(), strict=True)
        )
        error = predicted - true
        metrics = {
            "predict/rmse": error.square().mean().sqrt().item(),
            "predict/mae": error.abs().mean().item(),
        }
        target = datamodule.target
        return PredictionTable(["sample", target, f"predicted_{target}"], rows, metrics)
