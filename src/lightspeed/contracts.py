"""What the engine expects of a model, a DataModule and a callback: every method it calls.

The engine relies on nothing else, and :func:`missing_methods` is the check the build makes
(one line naming what is missing). A class of your own satisfies them by having these
attributes; it need not inherit from anything here. The example project's classifier, IDX data
module and table regression are implementations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class PredictionTable:
    """What ``task=predict`` writes: ``predictions.csv``'s columns and rows, and metrics over
    the split (e.g. ``{"predict/acc": 0.92}``) that go into the run's summary."""

    header: list[str]
    rows: Iterable[list[Any]]
    metrics: dict[str, float] = field(default_factory=dict)


class ModelContract(Protocol):
    """A ``LightningModule`` wrapping a plain ``nn.Module`` as ``net``.

    The build applies the speed knobs (``perf.channels_last``, ``perf.compile``) to ``net``,
    checks it on :meth:`example_input` before training, and hands the module to Lightning;
    ``task=export`` writes ``net`` as ONNX. The metrics it logs with ``self.log`` (``val/...``,
    ``test/...``) are what ``objective.metric`` names and what the summary reports.
    """

    net: Any

    def example_input(self, datamodule: Any) -> Any:
        """A batch of two inputs shaped like the data's (zeros do; nothing is read). The build
        runs the module on it in eval mode, and Lightning's model summary shows its shapes."""
        ...

    def check_output(self, output: Any, datamodule: Any) -> str | None:
        """What is wrong with the module's output on :meth:`example_input` for this data (one
        line naming the key to fix), or None when it fits."""
        ...

    def export_input(self, batch: Any) -> Any:
        """The net's input in a batch the DataModule yields: what export feeds the net."""
        ...

    def prediction_table(self, outputs: list[Any], datamodule: Any, split: str) -> PredictionTable:
        """``predictions.csv`` from the ``predict_step`` outputs of every batch of ``split``."""
        ...


class ExportMetadata(Protocol):
    """Optional on a model: ``export_metadata(datamodule)`` → strings that ``task=export`` stores
    in ``model.onnx``'s metadata (class names, the input's normalisation, units)."""

    def export_metadata(self, datamodule: Any) -> dict[str, str]: ...


class DataModuleContract(Protocol):
    """A ``LightningDataModule``. The model YAML reads its shape attributes by interpolation
    (``${data:num_classes}``, ``${data:num_features}``: any attribute set in ``__init__``), so a
    data set's shape is written in one place.

    Optional, used where present: ``plan_batches(world_size, accumulate)`` (one line on the
    batch split, checked), ``loader.reasons`` (lines on the loader settings), ``source_info``
    (where the data came from, for the summary), ``sample_ids(split)`` (one id per sample for
    ``predictions.csv``), ``cross_validation_fold(fold, folds, seed)`` (called before
    ``setup`` in a ``cv.folds=K`` run: validate on fold ``fold`` of ``folds`` of the training
    set, train on the rest, leave the test split as it is; a DataModule without it is refused).
    """

    def setup(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any: ...

    def val_dataloader(self) -> Any: ...

    def test_dataloader(self) -> Any: ...

    def eval_dataloader(self, split: str) -> Any:
        """An unshuffled loader over all of ``split`` (train, val or test) in every process:
        what ``task=predict`` and ``task=export`` read."""
        ...


class SummaryContributor(Protocol):
    """A callback with entries for the run's ``summary.json`` (e.g. samples/s, a plot's path)."""

    def run_summary(self) -> dict[str, Any]: ...


MODEL_METHODS = ("example_input", "check_output", "export_input", "prediction_table")
DATA_METHODS = ("setup", "train_dataloader", "val_dataloader", "test_dataloader",
                "eval_dataloader")  # fmt: skip


CV_METHOD = "cross_validation_fold"  # optional: what a cv.folds=K run calls


def missing_methods(obj: Any, names: Iterable[str]) -> list[str]:
    """The names in ``names`` that ``obj`` has no callable for."""
    return [n for n in names if not callable(getattr(obj, n, None))]
