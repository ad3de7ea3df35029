"""RunMetadata: stores the plain run config, git commit, seed and versions in each checkpoint.

Plain data only (dicts, strings, numbers), so checkpoints load with
``torch.load(weights_only=True)`` and say exactly how they were made.
"""

from __future__ import annotations

import contextlib
from typing import Any

import lightning as L

from lightspeed.run.checkpoint import CHECKPOINT_KEY, FORMAT_VERSION

__all__ = ["CHECKPOINT_KEY", "RunMetadata"]


class RunMetadata(L.Callback):
    """Adds ``checkpoint["lightspeed"]``: config, git commit, seed, versions, format version,
    and ``train_batches`` (the train loader's length, for the resume checks)."""

    def __init__(
        self, config: dict, git_commit: str | None, seed: int | None, versions: dict
    ) -> None:
        self.metadata = {
            "format_version": FORMAT_VERSION,
            "config": config,
            "git_commit": git_commit,
            "seed": seed,
            "versions": versions,
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule  # one process: counted as the entry's resume check counts it
        if stage == "fit" and dm is not None and trainer.world_size == 1:
            with contextlib.suppress(TypeError):  # a loader without a length
                self.metadata["train_batches"] = len(dm.train_dataloader())

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = self.metadata
