"""What this run ran on: CPU, cores, memory, GPUs, CUDA/cuDNN and package versions."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata

PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "tensorboard",
    "numpy",
    "h5py",
)


def _cpuinfo(key: str) -> list[str]:
    """The values of ``/proc/cpuinfo``'s ``key`` lines, one per logical CPU ([] without it)."""
    try:
        with open("/proc/cpuinfo") as f:
            return [line.split(":", 1)[1].strip() for line in f if line.startswith(key)]
    except OSError:
        return []


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AVX-512 BF16 or AMX).

    Without them bf16 autocast is emulated: measured 6.5x *slower* than fp32 for the default
    CNN on an AVX2-only AMD EPYC (benchmarks/results/precision_cpu.md).
    """
    flags = set(next(iter(_cpuinfo("flags")), "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _physical_cores() -> int | None:
    cores = _cpuinfo("core id")
    sockets = _cpuinfo("physical id") or [None] * len(cores)
    return len(set(zip(sockets, cores, strict=False))) or None


def memory_gb() -> float | None:
    """Physical memory of this machine in GB (None where the OS does not say)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def report() -> dict:
    """A JSON-able description of this machine and software stack."""
    import torch

    cuda, cudnn = torch.cuda.is_available(), torch.backends.cudnn
    gpus = map(torch.cuda.get_device_properties, range(torch.cuda.device_count() if cuda else 0))
    return {
        "cpu": next(iter(_cpuinfo("model name")), platform.processor() or platform.machine()),
        "cpu_physical_cores": _physical_cores(),
        "cpu_threads": os.cpu_count(),
        "cpu_usable_cores": usable_cores(),
        "cpu_bf16": cpu_has_bf16(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": memory_gb(),
        "os": platform.platform(),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn.version() if cudnn.is_available() else None,
        "gpus": [
            {
                "name": p.name,
                "memory_gb": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}",
            }
            for p in gpus
        ],
        "versions": versions(),
    }


def one_line(info: dict) -> str:
    gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in info["gpus"]) or "no GPU"
    v = info["versions"]
    return (
        f"{info['cpu']} | {info['cpu_physical_cores']} cores / {info['cpu_threads']} threads "
        f"({info['cpu_usable_cores']} usable) | {info['ram_gb']} GB RAM | {gpus} | "
        f"torch {v.get('torch')} (CUDA {info['cuda_version']}, cuDNN {info['cudnn_version']}) | "
        f"lightning {v.get('lightning')}"
    )
