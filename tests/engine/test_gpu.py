"""The GPU roads, where a CUDA GPU is: ``make test-gpu`` on a GPU machine.

Skipped where torch sees no GPU: on CI, and in ``make test``, which hides the GPU (conftest).
Each test runs the functions the entry point runs, on the tiny generated data, with
``trainer=gpu``: automatic precision, GPU-resident data, 16-bit and compiled steps, host syncs
per step, NaN handling with the device-side flag, device counts.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from test_perf import SyncCounter

from lightspeed.build import build
from lightspeed.config import validate
from lightspeed.errors import UserError
from lightspeed.session import run_task

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: make test-gpu"),
]
GPU = ["trainer=gpu", "data.batch_size=50", "data.eval_batch_size=100"]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1"]


def run(cfg) -> dict:
    """validate + run_task, as the Hydra job does."""
    validate(cfg)
    return run_task(cfg)


def finite_weights(path: Path) -> bool:
    weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_auto_precision_on_gpu_and_its_checkpoint_tests_on_the_cpu(cfg_factory) -> None:
    fit = run(cfg_factory([*GPU, *SHORT]))
    assert fit["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert fit["gpu_peak_mem_mb"] > 0
    hardware = json.loads((Path(fit["run_dir"]) / "hardware.json").read_text())
    assert hardware["gpus"] and hardware["cuda_available"]
    # a checkpoint written on the GPU loads where there is none (map_location in the task)
    test = run(cfg_factory(["task=test", "trainer=cpu", f"ckpt_path={fit['last_checkpoint']}"]))
    assert 0.0 <= test["metrics"]["test/acc"] <= 1.0


def first_epoch(cfg) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dm = build(cfg).datamodule
    dm.setup("fit")
    return list(dm.train_dataloader())


def test_gpu_resident_batches_equal_the_host_batches(cfg_factory) -> None:
    """data=fashion_mnist_gpu draws the same order and pixels as the host copy, on the GPU."""
    same = ["data.batch_size=64", "data.flip=false", "data.crop_padding=0"]
    host = first_epoch(cfg_factory(["trainer=cpu", *same]))
    gpu = first_epoch(cfg_factory(["trainer=gpu", "data=fashion_mnist_gpu", *same]))
    assert len(host) == len(gpu) > 1
    for (xh, yh), (xg, yg) in zip(host, gpu, strict=True):
        assert xg.device.type == yg.device.type == "cuda"
        assert torch.equal(yg.cpu(), yh)
        torch.testing.assert_close(xg.cpu(), xh)  # the same uint8 pixels, scaled on each device


def test_gpu_augmentation_repeats_for_a_seed(cfg_factory) -> None:
    """Flips and crops drawn on the GPU repeat exactly for the same seed (resume relies on it)."""
    aug = ["trainer=gpu", "data=fashion_mnist_gpu", "data.flip=true", "data.crop_padding=2"]
    a, b = (first_epoch(cfg_factory([*aug, "seed=3"])) for _ in range(2))
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b, strict=True))
    plain = first_epoch(cfg_factory([*aug, "seed=3", "data.flip=false", "data.crop_padding=0"]))
    assert not all(torch.equal(xa, xp) for (xa, _), (xp, _) in zip(a, plain, strict=True))


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.precision=16-mixed"],
        ["trainer.precision=32"],
        ["data=fashion_mnist_gpu", "perf.compile=true"],
    ],
    ids=["16-mixed", "32", "gpu-data-compiled"],
)
def test_gpu_fit_variants_train_and_save_plain_finite_weights(cfg_factory, overrides) -> None:
    fit = run(cfg_factory([*GPU, *SHORT, *overrides]))
    ckpt = Path(fit["last_checkpoint"])
    keys = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert keys and not any("_orig_mod" in k for k in keys)
    assert finite_weights(ckpt)
    assert 0.0 <= fit["metrics"]["test/acc"] <= 1.0


LOG_EVERY = 5


def syncs_off_the_log_steps(cfg_factory, data: str, counter: L.Callback) -> dict:
    """12 GPU steps logging every 5, counted by ``counter`` (its ``per_step``): the steps off
    the log interval that synced, and what they called."""
    cfg = cfg_factory(
        [
            *GPU,
            f"data={data}",
            "trainer.max_steps=12",
            "trainer.limit_val_batches=0",
            f"trainer.log_every_n_steps={LOG_EVERY}",
            "callbacks.model_checkpoint=null",
        ]
    )
    built = build(cfg)
    built.trainer.callbacks.append(counter)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert len(counter.per_step) == 12
    return {s: c for s, c in counter.per_step.items() if (s + 1) % LOG_EVERY != 0 and c}


@pytest.mark.parametrize("data", ["fashion_mnist", "fashion_mnist_gpu"])
def test_no_host_sync_between_log_steps_on_gpu(cfg_factory, data: str) -> None:
    """With the defaults (NaN flag read every 50 steps), steps off the log interval never sync."""
    quiet = syncs_off_the_log_steps(cfg_factory, data, SyncCounter(LOG_EVERY))
    assert not quiet, f"host syncs in training steps: {quiet}"


class CudaSyncWarnings(L.Callback):
    """CUDA's own count of host syncs per training step (``torch.cuda.set_sync_debug_mode``):
    it sees the syncs inside torch's C++ ops (``nonzero``, ``bincount``, a blocking copy)
    that the Python-level SyncCounter cannot."""

    def __init__(self) -> None:
        self.per_step: dict[int, list[str]] = {}
        self._catcher: warnings.catch_warnings | None = None
        self._caught: list | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        syncs = [str(w.message).splitlines()[0] for w in self._caught]
        self.per_step[trainer.global_step - 1] = [m for m in syncs if "synchroniz" in m]

    def on_exception(self, trainer, pl_module, exception):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("data", ["fashion_mnist", "fashion_mnist_gpu"])
def test_no_cuda_sync_between_log_steps(cfg_factory, data: str) -> None:
    """The same run, counted by CUDA itself: a step off the log interval that makes the host
    wait for the GPU serialises host and GPU work (the template's step then costs the host
    time plus the GPU time instead of the larger of the two)."""
    quiet = syncs_off_the_log_steps(cfg_factory, data, CudaSyncWarnings())
    assert not quiet, f"CUDA host syncs in training steps: {quiet}"


def test_nan_on_gpu_stops_in_one_line_and_saves_no_bad_weights(cfg_factory) -> None:
    """The device-side flag is read before the epoch-end checkpoint: nothing non-finite lands."""
    cfg = cfg_factory(
        [
            *GPU,
            "model.optimizer.lr=1e30",
            "model.scheduler=null",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=5",
            "trainer.limit_val_batches=1",
        ]
    )
    with pytest.raises(UserError) as info:
        run(cfg)
    line = str(info.value)  # the loss flag's stop, or the checkpoint's refusal to save
    assert "\n" not in line and re.search("training loss is|refused to save", line), line
    saved = list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
    assert all(finite_weights(p) for p in saved), saved


def test_more_devices_than_gpus_is_one_line(cfg_factory) -> None:
    n = torch.cuda.device_count()
    with pytest.raises(UserError, match=f"trainer.devices={n + 1} but this machine has {n} GPU"):
        run(cfg_factory(["trainer=gpu", f"trainer.devices={n + 1}", *SHORT]))
