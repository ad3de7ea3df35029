"""SpeedMonitor: samples/s, step time, data-wait share and peak memory, measured without syncs.

Data wait is the wall time between the end of one training batch and the start of the next
(Lightning fetches the next batch in between); step time is the time from one batch end to the
next. On a GPU, wall times of queued kernels average out over many steps, so no per-step
``cuda.synchronize`` is needed; the monitor syncs once per epoch, when it reports.

Not Lightning's ``ThroughputMonitor``: it synchronises CUDA at every batch end and measures
neither the data-wait share, the time to the first step nor peak memory.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightspeed import PROCESS_START
from lightspeed.constraints import NonNegativeInt


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory of this process: resident set size, and the CUDA allocator's on a GPU."""
    try:  # Linux: this program's own peak. ru_maxrss also counts the parent's peak at fork
        # (a run launched by a large process, e.g. a notebook or a benchmark, would show it)
        status = Path("/proc/self/status").read_text()
        peaks = {"cpu_peak_rss_mb": int(status.split("VmHWM:")[1].split()[0]) / 2**10}
    except (OSError, IndexError, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peaks = {"cpu_peak_rss_mb": rss / (2**20 if sys.platform == "darwin" else 2**10)}
    if device.type == "cuda":
        peaks["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


class SpeedMonitor(L.Callback):
    """Measures training throughput; logs ``speed/*`` each epoch and keeps a run summary.

    Args:
        warmup_steps: steps skipped at the start of each epoch (first-step costs such as
            allocator growth, cuDNN autotuning, compilation would skew the steady state).
    """

    def __init__(self, warmup_steps: NonNegativeInt = 5) -> None:
        self.warmup_steps = warmup_steps
        self.summary: dict[str, Any] = {}
        self.time_to_first_step: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._last_end: float | None = None
        self._batch_start = 0.0
        self._steps = 0
        self._samples = 0
        self._wait = 0.0
        self._cycle = 0.0

    def run_summary(self) -> dict[str, Any]:
        return dict(self.summary)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self.time_to_first_step is None:
            self.time_to_first_step = now - PROCESS_START
            self.summary["time_to_first_step_s"] = round(self.time_to_first_step, 3)
        self._batch_start = now
        if self._last_end is not None and batch_idx >= self.warmup_steps:
            self._wait += now - self._last_end

    def on_train_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_end is not None and batch_idx >= self.warmup_steps:
            self._cycle += now - self._last_end
            self._steps += 1
            self._samples += _batch_size(batch) * trainer.world_size
        self._last_end = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._steps == 0:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        stats = {
            "samples_per_s": self._samples / self._cycle,
            "step_ms": 1000 * self._cycle / self._steps,
            "data_wait_share": self._wait / self._cycle,
            **peak_memory_mb(pl_module.device),
        }
        self.summary.update({k: round(v, 4) for k, v in stats.items()})
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"speed/{k}": v for k, v in stats.items()}, step=trainer.global_step
            )


def _batch_size(batch: Any) -> int:
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    return int(batch.shape[0])
