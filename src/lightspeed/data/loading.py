"""The loader knobs' rules: which combinations make sense, what ``auto`` means here, and how
the global batch divides over devices and fits in memory.

Torch-free, so the config check and :class:`~lightspeed.data.base.ImageDataModule` share
:func:`check_loader_settings`. What ``auto`` resolves to, and why: docs/data.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from lightspeed.errors import ConfigError
from lightspeed.hardware import memory_gb, usable_cores

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 8
# Each worker is a process with its own copy of the data set object and prefetched batches;
# beyond a few per core they only compete for the same cores and memory.
MAX_WORKERS_PER_CORE = 4


def check_loader_settings(**settings: Any) -> None:
    """Refuses loader knobs that contradict each other or this machine, in one line.

    Only the rules whose keys are in ``settings`` are checked; other keys are ignored, so a
    whole ``data`` config can be passed. ``num_workers=auto`` breaks no rule here; the count it
    resolves to is checked again by :func:`resolve_loader_settings`.

    Raises:
        ConfigError: naming the key, its value and the fix.
    """
    workers = settings.get("num_workers", "auto")
    if isinstance(workers, int) and not isinstance(workers, bool):
        _check_against_workers(workers, f"data.num_workers={workers}", settings)


def _check_against_workers(workers: int, shown: str, settings: dict[str, Any]) -> None:
    prefetch = settings.get("prefetch_factor", "auto")
    if workers == 0 and prefetch not in ("auto", None):
        raise ConfigError(
            f"data.prefetch_factor={prefetch} needs worker processes but {shown}; "
            "set data.num_workers>0 or data.prefetch_factor=auto"
        )
    if workers == 0 and settings.get("persistent_workers") is True:
        raise ConfigError(
            f"data.persistent_workers=true keeps worker processes alive but {shown}; "
            "set data.num_workers>0 or data.persistent_workers=auto"
        )
    cores = usable_cores()
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(
            f"data.num_workers={workers} is more than {MAX_WORKERS_PER_CORE}x the {cores} usable "
            f"cores of this machine; use at most {MAX_WORKERS_PER_CORE * cores} (or auto)"
        )


@dataclass
class LoaderSettings:
    """Concrete DataLoader knobs, with the reasons the ``auto`` ones got their values."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    reasons: list[str] = field(default_factory=list)

    def as_kwargs(self) -> dict:
        kw = {k: v for k, v in vars(self).items() if k != "reasons"}
        if self.num_workers <= 0:
            del kw["prefetch_factor"]  # DataLoader refuses one without workers
        return kw


def resolve_loader_settings(
    num_workers: int | str,
    pin_memory: bool | str,
    persistent_workers: bool | str,
    prefetch_factor: int | str | None,
    in_memory: bool,
    cuda: bool,
) -> LoaderSettings:
    """Turns ``auto`` values into concrete ones for this machine; explicit values are kept.

    Args:
        num_workers, pin_memory, persistent_workers, prefetch_factor: the knobs as configured.
        in_memory: the data is held as tensors (batches are indexed in-process).
        cuda: a CUDA device trains from batches that start on the host.
    """
    reasons = []
    cores = usable_cores()
    knobs = {"persistent_workers": persistent_workers, "prefetch_factor": prefetch_factor}
    if num_workers == "auto":
        if in_memory:
            num_workers = 0
            reasons.append("num_workers=0: data is held in memory, batches are indexed in-process")
        else:
            num_workers = max(1, min(cores // 2, MAX_AUTO_WORKERS))
            reasons.append(
                f"num_workers={num_workers}: half of {cores} usable cores (cap {MAX_AUTO_WORKERS})"
            )
        _check_against_workers(num_workers, "data.num_workers=auto is 0 for in-memory data", knobs)
    else:
        check_loader_settings(num_workers=num_workers, **knobs)
        if num_workers > cores:
            log.warning(
                "data.num_workers=%d is more than the %d usable cores; using it anyway, "
                "but expect the workers to compete with the training step",
                num_workers,
                cores,
            )
    if prefetch_factor == "auto":
        prefetch_factor = 2 if num_workers > 0 else None
    if pin_memory == "auto":
        # the in-memory loader hands out batches already where the data lives; pinning would
        # cost a copy per batch for nothing
        pin_memory = bool(cuda and not (in_memory and num_workers == 0))
        reasons.append(
            f"pin_memory={pin_memory}: "
            + ("host→GPU copies" if pin_memory else "no host→GPU copies from a DataLoader")
        )
    if persistent_workers == "auto":
        persistent_workers = num_workers > 0
    return LoaderSettings(
        int(num_workers), bool(pin_memory), bool(persistent_workers), prefetch_factor, reasons
    )


def per_device_batch(batch_size: int, world_size: int) -> int:
    """``batch_size / world_size``; ConfigError when it does not divide."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size or world_size
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and does not divide over "
            f"{world_size} processes (devices x num_nodes); use a multiple of {world_size}, "
            f"e.g. {lower} or {lower + world_size}"
        )
    return batch_size // world_size


def plan_batches(batch_size: int, world_size: int = 1, accumulate: int = 1) -> str:
    """Checks that the global ``batch_size`` divides over ``world_size`` processes; one line
    saying the per-device and effective (per optimizer step) batch.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``world_size``.
    """
    per_device = per_device_batch(batch_size, world_size)
    line = f"batch: data.batch_size={batch_size} global"
    if world_size > 1:
        line += f" = {world_size} processes x {per_device} per device"
    if accumulate > 1:
        line += (
            f"; effective {batch_size * accumulate} per optimizer step "
            f"({accumulate} accumulated batches)"
        )
    return line


def check_batch_memory(
    batch_size: int, eval_batch_size: int, in_channels: int, image_size: list[int]
) -> None:
    """Refuses batches (as float32) that would take more than a quarter of this machine's
    memory."""
    images = max(batch_size, eval_batch_size)
    gb = images * in_channels * math.prod(image_size) * 4 / 1e9  # float32
    ram = memory_gb()
    if ram and gb > ram / 4:
        raise ConfigError(
            f"one batch of {images} images of {in_channels}x{image_size[0]}x"
            f"{image_size[1]} takes {gb:.1f} GB, more than a quarter of this machine's "
            f"{ram} GB; lower data.batch_size/data.eval_batch_size or data.image_size"
        )
