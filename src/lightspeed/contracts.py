"""What the entry point expects of a DataModule and of a model: two short Protocols.

The build (``lightspeed.build``) relies on nothing else. A class of your own satisfies them by
having these attributes; it need not inherit from anything here (``ImageDataModule`` and
``Classifier`` are the ready-made ones).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DataModuleContract(Protocol):
    """A ``LightningDataModule`` whose data shape the model config reads.

    The net and model YAML take these by interpolation (``${data:num_classes}``), so a data
    set's shape is written in one place. All four must be available right after
    ``__init__`` (read from metadata, a folder listing or a file header; no full load).
    """

    @property
    def num_classes(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def image_size(self) -> list[int]:
        """``[height, width]`` of the tensors the loaders yield."""
        ...

    @property
    def class_names(self) -> list[str]: ...

    def setup(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any: ...


@runtime_checkable
class ModelContract(Protocol):
    """A ``LightningModule`` wrapping a plain ``nn.Module`` as ``net``.

    The build applies the speed knobs (``perf.channels_last``, ``perf.compile``) to ``net``,
    checks that ``net`` maps a batch shaped like the data to ``num_classes`` logits, and hands
    the module to Lightning; ``forward(images)`` returns logits.
    """

    net: Any

    def forward(self, x: Any) -> Any: ...
