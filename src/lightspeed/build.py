"""cfg → (datamodule, module, trainer), and the tasks that use them.

Every task (fit/validate/test/predict) goes through :func:`build`; they differ only in which
Trainer method runs. This and ``cli.py`` are the only modules that know Hydra/OmegaConf.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from lightspeed import PROCESS_START, console, hardware
from lightspeed.callbacks.checkpointing import AtomicCheckpointIO, RestoreLoaderPosition
from lightspeed.callbacks.metadata import RunMetadata
from lightspeed.callbacks.plots import CurvePlotter
from lightspeed.callbacks.speed import SpeedMonitor
from lightspeed.errors import ConfigError, UserError
from lightspeed.resume import count_train_batches, job_checkpoint, start_resumed_fit
from lightspeed.rundir import prepare_run_dir, session_file
from lightspeed.tasks import TASKS

log = logging.getLogger(__name__)


@dataclass
class Built:
    datamodule: L.LightningDataModule
    module: L.LightningModule
    trainer: L.Trainer
    precision: str
    callbacks: list = field(default_factory=list)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(precision: Any, accelerator: str) -> str:
    """``auto`` → bf16-mixed where the device computes bf16 natively, else 32."""
    precision = str(precision)
    if precision != "auto":
        return precision  # checked against the device by lightspeed.config
    if _on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if hardware.cpu_has_bf16() else "32-true"


def check_devices(cfg: DictConfig) -> None:
    """Devices the machine cannot provide, caught before anything is built (config.py checks
    what needs no torch)."""
    t = cfg.trainer
    accelerator, devices = t.get("accelerator", "auto"), t.get("devices", "auto")
    strategy = str(t.get("strategy", "auto"))
    on_gpu = _on_gpu(accelerator)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU; use trainer=cpu"
        )
    count = len(devices) if isinstance(devices, (list, tuple)) else devices
    if on_gpu and isinstance(count, int) and count > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    if on_gpu and isinstance(devices, (list, tuple)) and max(devices) >= torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices={list(devices)} names a GPU this machine lacks (ids 0 to "
            f"{torch.cuda.device_count() - 1})"
        )
    if not on_gpu and isinstance(count, int) and count > 1 and strategy == "auto":
        raise ConfigError(
            f"trainer.devices={devices} on the CPU needs a multi-process strategy; use trainer=ddp_cpu"
        )
    if t.get("sync_batchnorm") and not on_gpu:
        raise ConfigError(
            "trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); "
            "set trainer.sync_batchnorm=false on the CPU"
        )
    nodes = t.get("num_nodes", 1)
    per_node = count if isinstance(count, int) and count > 0 else 1
    if on_gpu and count in ("auto", -1):
        per_node = torch.cuda.device_count()
    if cfg.get("task") in ("predict", "export") and per_node * nodes > 1:
        # each rank would see its own shard and write the same file
        raise ConfigError(
            f"task={cfg.task} runs in one process; trainer.devices={devices} x "
            f"trainer.num_nodes={nodes} would start {per_node * nodes}: "
            "add trainer.devices=1 trainer.num_nodes=1"
        )
    if strategy.startswith("ddp") and count == 1 and nodes == 1:
        log.warning("trainer.strategy=%s with one device: DDP adds overhead and no speed", strategy)


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose constructor's UserError comes out as itself (one line)."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, MisconfigurationException):  # Lightning's word for a bad setting
            raise ConfigError(f"{node.get('_target_')}: {str(cause).splitlines()[0]}") from None
        raise


def instantiate_group(node: DictConfig | None) -> list:
    """Builds every non-null entry of a callbacks/logger group, in config order."""
    return [instantiate(v) for v in (node or {}).values() if v is not None]


def bind_data_resolver(datamodule: Any) -> None:
    """``${data:num_classes}`` (in_channels, image_size, ...) now reads the built DataModule."""
    missing = [
        a for a in ("num_classes", "in_channels", "image_size") if not hasattr(datamodule, a)
    ]
    if missing:
        raise ConfigError(
            f"data: {type(datamodule).__name__} has no {', '.join(missing)}; a DataModule must "
            "expose its data shape (see lightspeed.contracts.DataModuleContract)"
        )

    def read(name: str) -> Any:
        value = getattr(datamodule, name)
        return list(value) if isinstance(value, tuple) else value

    OmegaConf.register_new_resolver("data", read, replace=True)


def check_contracts(datamodule: Any, module: Any) -> None:
    """One line, before training, when the model does not fit the data's shape."""
    # not isinstance(module, ModelContract): from Python 3.12 that looks attributes up
    # statically and misses nn.Module's submodules (kept in _modules, found by __getattr__)
    if not isinstance(getattr(module, "net", None), torch.nn.Module):
        raise ConfigError(
            f"model: {type(module).__name__} has no 'net'; the entry expects a LightningModule "
            "wrapping an nn.Module as .net (see lightspeed.contracts.ModelContract)"
        )
    h, w = datamodule.image_size
    probe = torch.zeros(2, datamodule.in_channels, h, w)
    was_training = module.training
    try:
        with torch.no_grad():  # eval mode: the probe must not move BatchNorm statistics
            logits = module.eval()(probe)
    except RuntimeError as e:
        raise ConfigError(
            f"model.net {type(module.net).__name__} cannot take the data's images "
            f"{list(probe.shape[1:])} ({str(e).splitlines()[0][:160]}); its shape keys should "
            "read the data: in_channels: ${data:in_channels}, image_size: ${data:image_size}"
        ) from None
    finally:
        module.train(was_training)
    if tuple(logits.shape) != (2, datamodule.num_classes):
        raise ConfigError(
            f"model.net {type(module.net).__name__} outputs {list(logits.shape[1:])} logits per "
            f"image but the data has {datamodule.num_classes} classes; set its num_classes "
            "from the data: num_classes: ${data:num_classes}"
        )


def apply_net_perf(module: Any, perf: DictConfig) -> None:
    """``perf.channels_last`` and ``perf.compile``, applied to ``module.net`` for any net."""
    if perf.channels_last:
        module.net.to(memory_format=torch.channels_last)
        module.net.register_forward_pre_hook(_to_channels_last)
    if perf.compile:
        # compile the inner net: the module's state_dict keeps plain keys (no _orig_mod.)
        module.net.compile(mode=perf.compile_mode)


def _to_channels_last(net: torch.nn.Module, args: tuple) -> tuple | None:
    x = args[0] if args else None
    if torch.is_tensor(x) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def build(cfg: DictConfig) -> Built:
    """Builds the datamodule, module and trainer that ``cfg`` describes (no training yet)."""
    check_devices(cfg)
    precision = resolve_precision(
        cfg.trainer.get("precision", "auto"), cfg.trainer.get("accelerator", "auto")
    )
    torch.set_float32_matmul_precision(cfg.perf.matmul_precision)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    bind_data_resolver(datamodule)
    module = instantiate(cfg.model)
    check_contracts(datamodule, module)
    # one image: the model summary then shows in/out shapes and real FLOPs (not "0")
    h, w = datamodule.image_size
    module.example_input_array = torch.zeros(1, datamodule.in_channels, h, w)
    apply_net_perf(module, cfg.perf)

    callbacks = instantiate_group(cfg.get("callbacks"))
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    callbacks.append(RunMetadata(plain, git_commit(), cfg.seed, hardware.versions()))
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor stops a Trainer that has no logger (logger=none)
        callbacks[:] = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer_kwargs = dict(precision=precision, callbacks=callbacks, logger=loggers or False)
    # atomic saves, weights_only loads, one-line errors for unusable checkpoints
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.expect(module)
    user_plugins = instantiate(cfg.trainer.get("plugins")) or []
    trainer_kwargs["plugins"] = [*user_plugins, checkpoint_io]
    callbacks.append(RestoreLoaderPosition())
    if cfg.trainer.get("benchmark") is None:  # the Trainer sets torch.backends.cudnn.benchmark
        trainer_kwargs["benchmark"] = bool(cfg.perf.cudnn_benchmark) and not cfg.trainer.get(
            "deterministic"
        )
    trainer = instantiate(cfg.trainer, **trainer_kwargs)
    plan = getattr(datamodule, "plan_batches", None)
    if plan is not None:  # data.batch_size is global: checked against the processes (one line)
        log.info(plan(trainer.world_size, trainer.accumulate_grad_batches))
    return Built(datamodule, module, trainer, precision, callbacks)


def run_task(cfg: DictConfig) -> dict:
    """Runs ``cfg.task`` and returns the summary (also written to ``summary.json``)."""
    t0 = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    resuming = bool(cfg.get("resume"))
    prepare_run_dir(run_dir, resuming)
    info = hardware.report()
    log.info("hardware: %s", hardware.one_line(info))
    built = build(cfg)  # binds ${data:...}: the config resolves with the data's shape
    info["precision"] = built.precision
    info["accelerator"] = str(built.trainer.accelerator.__class__.__name__)
    info["devices"] = built.trainer.num_devices
    if built.trainer.is_global_zero:  # ranks > 0 of a DDP run print and write nothing
        if cfg.get("extras", {}).get("print_config", True):
            console.print_config(OmegaConf.to_container(cfg, resolve=True))
        config = OmegaConf.to_yaml(cfg, resolve=True)
        session_file(run_dir, "config.yaml", resuming).write_text(config)
        session_file(run_dir, "hardware.json", resuming).write_text(json.dumps(info, indent=2))
    loader = getattr(built.datamodule, "loader", None)
    for reason in getattr(loader, "reasons", []):
        log.info("data loader: %s", reason)

    trainer, dm = built.trainer, built.datamodule
    summary: dict[str, Any] = {
        "task": cfg.task,
        "run_dir": str(run_dir),
        "precision": built.precision,
    }
    ckpt = job_checkpoint(cfg.ckpt_path, cfg.get("resume"), cfg.paths.log_dir, cfg.task, run_dir)
    if cfg.task == "fit" and ckpt:
        start_resumed_fit(trainer, ckpt, cfg, lambda: count_train_batches(dm))
    summary.update(TASKS[cfg.task](built, cfg, ckpt))
    for cb in built.callbacks:
        if isinstance(cb, SpeedMonitor):
            summary.update(cb.summary)
    for cb in built.callbacks:
        if isinstance(cb, CurvePlotter) and cb.path is not None:
            summary["curves"] = str(cb.path)
    summary["data_source"] = getattr(dm, "source_info", None)  # path + checksum of the files
    summary["wall_time_s"] = round(time.perf_counter() - t0, 2)
    summary["process_time_s"] = round(time.perf_counter() - PROCESS_START, 2)
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
