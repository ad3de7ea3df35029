"""Resolves DataLoader knobs given as ``auto`` into numbers for this machine, with the reason.

Rules (the seed posts' advice, measured in ``benchmarks/results/``):
- in-memory batches need no worker processes: ``num_workers=0``;
- file-backed data: about half the usable cores (leave the rest to the training step), capped;
- ``pin_memory`` only helps host→GPU copies, so only when a CUDA device trains;
- ``persistent_workers`` whenever there are workers (no re-fork every epoch);
- ``prefetch_factor`` only means something with workers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from lightspeed.errors import ConfigError

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class LoaderSettings:
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    reasons: list[str] = field(default_factory=list)

    def as_kwargs(self) -> dict:
        kw = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        if self.num_workers > 0:
            kw["prefetch_factor"] = self.prefetch_factor
        return kw


def resolve_loader_settings(
    num_workers: int | str = "auto",
    pin_memory: bool | str = "auto",
    persistent_workers: bool | str = "auto",
    prefetch_factor: int | str | None = "auto",
    in_memory: bool = False,
    cuda: bool = False,
) -> LoaderSettings:
    """Turns ``auto`` values into concrete ones; explicit values are checked and kept."""
    reasons = []
    cores = usable_cores()
    if num_workers == "auto":
        if in_memory:
            num_workers = 0
            reasons.append("num_workers=0: data is held in memory, batches are indexed in-process")
        else:
            num_workers = max(1, min(cores // 2, MAX_AUTO_WORKERS))
            reasons.append(
                f"num_workers={num_workers}: half of {cores} usable cores (cap {MAX_AUTO_WORKERS})"
            )
    elif num_workers > cores:
        log.warning(
            "data.num_workers=%d is more than the %d usable cores; using it anyway, "
            "but expect the workers to compete with the training step",
            num_workers,
            cores,
        )
    if prefetch_factor not in ("auto", None) and num_workers == 0:
        raise ConfigError(
            f"data.prefetch_factor={prefetch_factor} needs worker processes but data.num_workers=0; "
            "set data.num_workers>0 or data.prefetch_factor=auto"
        )
    if prefetch_factor == "auto":
        prefetch_factor = 2 if num_workers > 0 else None
    if pin_memory == "auto":
        pin_memory = bool(cuda and not in_memory)
        reasons.append(
            f"pin_memory={pin_memory}: "
            + ("host→GPU copies" if pin_memory else "no host→GPU copies through workers")
        )
    if persistent_workers == "auto":
        persistent_workers = num_workers > 0
    return LoaderSettings(
        int(num_workers), bool(pin_memory), bool(persistent_workers), prefetch_factor, reasons
    )
