"""Golden losses: the first training losses of the default config on the tiny data.

Any change that moves them (init, data order, augmentation, loss, optimiser, schedule) shows
up here. When the change is intended, regenerate the file and commit it with the change:

    LIGHTSPEED_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest

GOLDEN = Path(__file__).parent / "golden" / "default_tiny_losses.json"
STEPS = 20
OVERRIDES = [
    "trainer=cpu",
    "trainer.deterministic=true",
    "trainer.precision=32",
    "trainer.max_epochs=-1",
    f"trainer.max_steps={STEPS}",
    "data.batch_size=50",  # 10 steps per epoch: the 20 steps cross an epoch boundary
    "trainer.limit_val_batches=1",
]


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))  # a test: one host read per step is fine


def test_default_config_matches_golden_losses(cfg_factory) -> None:
    from lightspeed.build import build

    cfg = cfg_factory(OVERRIDES)
    built = build(cfg)
    recorder = RecordLosses()
    built.trainer.callbacks.append(recorder)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert len(recorder.losses) == STEPS
    if os.environ.get("LIGHTSPEED_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(
            json.dumps({"overrides": OVERRIDES, "losses": recorder.losses}, indent=2) + "\n"
        )
        pytest.skip(f"regenerated {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    assert golden["overrides"] == OVERRIDES, "the golden file was made with other overrides"
    assert recorder.losses == pytest.approx(golden["losses"], abs=1e-4)
