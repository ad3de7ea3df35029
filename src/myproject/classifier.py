"""The LightningModule: a net, its loss and metrics, and the optimiser/scheduler it trains with.

It receives built objects (the net, optimiser/scheduler partials), so it knows nothing of Hydra.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightspeed.constraints import PositiveInt, UnitInterval
from lightspeed.contracts import PredictionTable
from lightspeed.optim import OptimizerFactory, SchedulerFactory, configure_optimizers
from myproject.init import initialize


class Classifier(L.LightningModule):
    """Image classifier trained with cross-entropy.

    Args:
        net: the plain ``nn.Module`` mapping images to logits.
        optimizer: factory taking the parameters (``functools.partial`` of an optimiser).
        scheduler: factory taking the optimiser, or None. A schedule that needs the run length
            (OneCycleLR with ``total_steps`` and ``epochs`` left null) gets ``total_steps`` from
            the trainer's estimate.
        scheduler_interval: ``step`` or ``epoch``.
        num_classes: number of classes (the config reads it from the data: ``${data:num_classes}``).
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        init: weight initialisation of the net's layers (:mod:`myproject.init`);
            ``default`` keeps the net's own.
        top_k: classes (and probabilities) per row of ``predictions.csv``, best first.
        tta: test-time augmentation of validation, test and predict: ``flip`` averages the
            logits of each image and its left-right mirror (worth it for a net trained with
            ``data.flip=true``: see docs/performance.md). ``model.onnx`` is the net alone,
            without it.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        num_classes: PositiveInt = 10,
        label_smoothing: UnitInterval = 0.0,
        init: Literal["default", "kaiming", "xavier", "orthogonal"] = "default",
        top_k: PositiveInt = 3,
        tta: Literal["none", "flip"] = "none",
    ) -> None:
        super().__init__()
        self.net = initialize(net, init)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.num_classes = num_classes
        self.top_k = top_k
        self.tta = tta
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # validate_args=False: the checks (torch.unique, value-range tests) are host syncs on
        # every call; inputs come from this module, so they cannot be malformed.
        # train/acc counts its hits on the device, summed over ranks at the epoch's end:
        # argmax, compare and sum are what micro accuracy needs, and MulticlassAccuracy.update
        # costs ~60 µs of Python a step on the CPU (scripts/bench.py --hooks) for the same count
        self._train_hits = torch.zeros((), dtype=torch.long)
        self._train_seen = 0
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def eval_logits(self, x: Tensor) -> Tensor:
        """The logits validation, test and predict use: the forward pass, or with
        ``tta="flip"`` the mean of the image's and its mirror's logits."""
        if self.tta == "none":
            return self(x)
        # one pass over both (half the kernel launches of two): in eval mode an image's
        # logits do not depend on the rest of its batch
        original, mirrored = self(torch.cat([x, x.flip(-1)])).chunk(2)
        return (original + mirrored) / 2

    def setup(self, stage: str) -> None:
        """A net with ``fit_data`` (data-dependent init, e.g. ``SmallCNN(whiten=True)``) may
        draw one training batch before a fit. Lightning loads a resumed run's weights after
        this hook, so a resume keeps its own; under DDP rank 0's weights are broadcast."""
        fit_data = getattr(self.net, "fit_data", None)
        datamodule = self.trainer.datamodule
        if stage != "fit" or fit_data is None or datamodule is None:
            return

        def training_batch() -> Tensor:
            return next(iter(datamodule.train_dataloader()))[0].to(self.device)

        fit_data(training_batch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self._train_hits += (logits.detach().argmax(dim=1) == y).sum()
        self._train_seen += y.numel()
        # Values stay tensors until the logger's interval (no host sync per step), and the
        # step loss is only handed to self.log on the steps the logger writes: each call
        # costs Python time, which showed in the template-vs-hand-loop profile.
        # prog_bar=False on step: the progress bar would turn it into a float every step.
        if self._logs_this_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_hits = torch.zeros((), dtype=torch.long, device=self.device)
        self._train_seen = 0

    def on_train_epoch_end(self) -> None:
        # logged once per epoch rather than handing a metric to self.log every step
        # (1.7 ms a call in the profile, for a value only read at the epoch's end)
        seen = torch.tensor(self._train_seen, device=self._train_hits.device)
        hits, seen = self.trainer.strategy.reduce(
            torch.stack([self._train_hits, seen]), reduce_op="sum"
        )
        self.log("train/acc", hits / seen.clamp_min(1), sync_dist=False)

    def _logs_this_step(self) -> bool:
        """True on the steps where Lightning writes step metrics to the loggers.

        So ``trainer.callback_metrics["train/loss"]`` is refreshed on those steps only (and on
        every step of a ``fast_dev_run``); monitor ``val/*`` metrics, or lower
        ``trainer.log_every_n_steps``, for a callback that needs the loss more often.
        """
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and ((self.global_step + 1) % every == 0 or trainer.should_stop)

    def _eval_step(
        self, batch: tuple[Tensor, Tensor], split: str, metric: MulticlassAccuracy
    ) -> None:
        x, y = batch
        logits = self.eval_logits(x)
        metric(logits, y)
        # Under DDP each rank evaluates its part: the loss is averaged over all of them at the
        # epoch end (sync_dist), the accuracy metric sums its counts over the ranks itself.
        loss = self.criterion(logits, y)
        self.log(f"{split}/loss", loss, on_epoch=True, prog_bar=False, sync_dist=True)
        self.log(f"{split}/acc", metric, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def predict_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int
    ) -> tuple[Tensor, Tensor | None]:
        """Class probabilities of the batch, with its labels where it has them."""
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        return self.eval_logits(x).float().softmax(dim=1), y

    # --- what the engine calls (lightspeed.contracts.ModelContract) ---------------------------

    def example_input(self, datamodule: Any) -> Tensor:
        h, w = datamodule.image_size
        return torch.zeros(2, datamodule.in_channels, h, w)

    def check_output(self, output: Tensor, datamodule: Any) -> str | None:
        if tuple(output.shape) == (2, datamodule.num_classes):
            return None
        return (
            f"outputs {list(output.shape[1:])} logits per image but the data has "
            f"{datamodule.num_classes} classes; set its num_classes from the data: "
            "num_classes: ${data:num_classes}"
        )

    def export_input(self, batch: Any) -> Tensor:
        return batch[0]

    def export_metadata(self, datamodule: Any) -> dict[str, str]:
        """Class names, and how an input is made: what a consumer of model.onnx needs."""
        meta = {"class_names": json.dumps(list(datamodule.class_names)), "output": "logits"}
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is not None and std is not None:
            meta["input"] = (
                f"float32 [N, C, H, W]: (pixel / 255 - mean) / std, mean={mean}, std={std}"
            )
        return meta

    def prediction_table(self, outputs: list, datamodule: Any, split: str) -> PredictionTable:
        """Columns: ``sample`` (row index, or file path for an image folder), ``label`` (the
        true class, where the data has labels), ``predicted`` and ``probability``, then the
        next ``top_k - 1`` classes and their probabilities."""
        probs = torch.cat([p for p, _ in outputs]).float()
        labels = (
            torch.cat([y for _, y in outputs]) if outputs and outputs[0][1] is not None else None
        )
        names = list(datamodule.class_names) or [str(c) for c in range(probs.shape[1])]
        ids = datamodule.sample_ids(split) if hasattr(datamodule, "sample_ids") else None
        k = min(self.top_k, probs.shape[1])
        top_p, top_c = probs.topk(k, dim=1)
        header = ["sample", "label", "predicted", "probability"]
        header += [f"{col}_{i}" for i in range(2, k + 1) for col in ("predicted", "probability")]

        def rows() -> Any:
            for row, sample in enumerate(ids if ids is not None else range(len(probs))):
                label = names[int(labels[row])] if labels is not None else ""
                ranked = zip(top_c[row].tolist(), top_p[row].tolist(), strict=True)
                yield [sample, label, *(v for c, p in ranked for v in (names[c], f"{p:.6f}"))]

        metrics = {}
        if labels is not None:
            metrics["predict/acc"] = (top_c[:, 0] == labels.to(top_c.device)).float().mean().item()
        return PredictionTable(header, rows(), metrics)

    def configure_optimizers(self) -> Any:
        return configure_optimizers(
            self, self.optimizer_factory, self.scheduler_factory, self.scheduler_interval
        )
