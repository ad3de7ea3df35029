"""RunMetadata: stores the plain run config, git commit, seed and versions in each checkpoint.

Plain data only (dicts, strings, numbers), so checkpoints load with
``torch.load(weights_only=True)`` and say exactly how they were made.
"""

from __future__ import annotations

from typing import Any

import lightning as L

CHECKPOINT_KEY = "lightspeed"
FORMAT_VERSION = 1


class RunMetadata(L.Callback):
    """Adds ``checkpoint["lightspeed"] = {config, git_commit, seed, versions, format_version}``."""

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

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = self.metadata
