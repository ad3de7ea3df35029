"""Golden losses: the first training losses of the default config on the tiny data.

Any change that moves them (init, data order, augmentation, loss, optimiser, schedule) shows
up here. When the change is intended, regenerate the file and commit it with the change:

    LIGHTSPEED_REGEN_GOLDEN=1 .venv/bin/pytest tests/project/test_golden.py

The run is in float64 so that the file holds on every x86-64 CPU. In float32 the losses depend
on the CPU: ``normal_`` draws float32 weights with an AVX2-only kernel (AVX-512 CPUs and the
plain build take the scalar one), and oneDNN picks its convolution kernels by ISA. Measured
over the 20 steps (benchmarks/results/golden_portability.md), max |Δloss| between CPU kinds,
simulated with ATEN_CPU_CAPABILITY=default/avx2, ONEDNN_MAX_CPU_ISA, MKL_CBWR and 1-16 threads:

* float32: up to 3.1e-4 (an AVX-512 CPU showed 3.2e-4), more than a 1e-4 tolerance allows. precision=64 alone, on weights drawn in float32 and then cast: also 3.1e-4.
* float64, weights created in float64: up to 3.0e-14. oneDNN has no float64 convolution,
  so ATen's own kernels run, and float64 ``normal_`` is the same code for every ISA.
  ±1-ulp noise on every weight moves the losses by up to 1.2e-14.

TOLERANCE = 1e-10 is over 3,000× the largest of those. One real change much smaller than any
intended one still moves the losses far more: lr × (1 + 1e-7) by 6.6e-6, weight_decay × 1.001
by 1.0e-5, lr × 1.001 by 2.6e-2, label_smoothing 0.1 → 0.1001 by 5.6e-3, seed 43 by 6.9.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "default_tiny_losses.json"
STEPS = 20
TOLERANCE = 1e-10  # max |Δloss| allowed at any step (see the module docstring)
OVERRIDES = [
    "trainer=cpu",
    "trainer.deterministic=true",
    "trainer.precision=64",  # float64: no oneDNN kernels, ulp-level spread across CPUs
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


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def test_default_config_matches_golden_losses(cfg_factory) -> None:
    from lightspeed.build import build

    cfg = cfg_factory(OVERRIDES)
    # Weights drawn in float64 from the start: precision=64 alone would only cast weights
    # drawn in float32, whose values differ by an ulp between AVX2 and other CPUs.
    with default_dtype(torch.float64):
        built = build(cfg)
    dtypes = {p.dtype for p in built.module.parameters()}
    assert dtypes == {torch.float64}, f"build made {dtypes} weights: the run is not portable"
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
    diffs = [abs(a - b) for a, b in zip(recorder.losses, golden["losses"], strict=True)]
    step = max(range(STEPS), key=diffs.__getitem__)
    assert diffs[step] <= TOLERANCE, (
        f"loss at step {step + 1} is {recorder.losses[step]!r}, golden {golden['losses'][step]!r} "
        f"(|Δ| {diffs[step]:.3g} > {TOLERANCE:g}); intended? regenerate: "
        "LIGHTSPEED_REGEN_GOLDEN=1 .venv/bin/pytest tests/project/test_golden.py"
    )
