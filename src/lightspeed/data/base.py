"""What every DataModule here shares: four loaders from one ``_loader(split, train)``."""

from __future__ import annotations

from typing import Any

import lightning as L


class SplitDataModule(L.LightningDataModule):
    """Train/val/test/predict loaders built by the subclass's ``_loader``; predict reads test."""

    def _loader(self, split: str, train: bool) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", train=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> Any:
        return self._loader("test", train=False)
