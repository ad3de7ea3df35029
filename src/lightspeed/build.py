"""cfg → (datamodule, module, trainer): objects only; :mod:`lightspeed.session` runs them.

Every task goes through :func:`build`. Besides the entry (``cli``, ``plan``) and the session,
this is the only module that knows Hydra/OmegaConf.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.profilers import PassThroughProfiler
from omegaconf import DictConfig, OmegaConf

from lightspeed import hardware
from lightspeed.contracts import CV_METHOD, DATA_METHODS, MODEL_METHODS, missing_methods
from lightspeed.errors import ConfigError, UserError
from lightspeed.safety.checkpointing import (
    AtomicCheckpointIO,
    ResizeSchedule,
    RestoreLoaderPosition,
)
from lightspeed.safety.metadata import RunMetadata

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
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            # a key of a class whose signature could not be read from source before the build
            raise ConfigError(f"{node.get('_target_')}: {str(cause).splitlines()[0]}") from None
        raise


def check_optimization(model: DictConfig) -> None:
    """Builds the model's optimizer and LR schedule on a stand-in parameter, so that a value
    the library refuses (momentum, weight decay, betas, eps, pct_start, ...) is one line naming
    the key before the data loads (the refused job's run dir is then taken back), not torch's
    traceback at the first step. The plan stays torch-free: a typo costs well under a second."""
    optimizer, scheduler = model.get("optimizer"), model.get("scheduler")
    if not (OmegaConf.is_dict(optimizer) and optimizer.get("_partial_")):
        return
    param = torch.nn.Parameter(torch.zeros(1))
    built = _probe("model.optimizer", optimizer, params=[param])
    if OmegaConf.is_dict(scheduler) and scheduler.get("_partial_"):
        length = {}
        if scheduler.get("total_steps", 0) is None and not scheduler.get("epochs"):
            length["total_steps"] = 1000  # the real length is filled in at fit time
        _probe("model.scheduler", scheduler, optimizer=built, **length)


def _probe(where: str, node: DictConfig, **kwargs: Any) -> Any:
    try:
        return instantiate(node)(**kwargs)
    except (ValueError, TypeError, KeyError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        named = [k for k in node if not str(k).startswith("_") and str(k).rstrip("s") in text]
        keys = ", ".join(f"{where}.{k}={node[k]}" for k in named) or where
        target = node.get("_target_")
        raise ConfigError(
            f"{keys}: {target} refuses {'them' if len(named) > 1 else 'it'} ({text})"
        ) from None


def instantiate_group(node: DictConfig | None) -> list:
    """Builds every non-null entry of a callbacks/logger group, in config order."""
    return [instantiate(v) for v in (node or {}).values() if v is not None]


def bind_data_resolver(datamodule: Any) -> None:
    """``${data:<attribute>}`` (num_classes, in_channels, num_features, ...) now reads the built
    DataModule; an attribute it lacks is one line."""

    def read(name: str) -> Any:
        if not hasattr(datamodule, name):
            raise ConfigError(
                f"${{data:{name}}}: {type(datamodule).__name__} has no attribute '{name}'; "
                "set it in the DataModule's __init__, or write the value in the model YAML"
            )
        value = getattr(datamodule, name)
        return list(value) if isinstance(value, tuple) else value

    OmegaConf.register_new_resolver("data", read, replace=True)


def check_contracts(datamodule: Any, module: Any) -> Any:
    """One line, before training, when the model or the data lacks what the engine calls, or
    the model does not fit the data's shape; returns the module's example input."""
    for obj, names, what in ((module, MODEL_METHODS, "model"), (datamodule, DATA_METHODS, "data")):
        missing = missing_methods(obj, names)
        if missing:
            kind = "ModelContract" if what == "model" else "DataModuleContract"
            raise ConfigError(
                f"{what}: {type(obj).__name__} has no {', '.join(missing)}; the engine calls "
                f"these (see lightspeed.contracts.{kind})"
            )
    # not isinstance(module, ModelContract): from Python 3.12 that looks attributes up
    # statically and misses nn.Module's submodules (kept in _modules, found by __getattr__)
    if not isinstance(getattr(module, "net", None), torch.nn.Module):
        raise ConfigError(
            f"model: {type(module).__name__} has no 'net'; the entry expects a LightningModule "
            "wrapping an nn.Module as .net (see lightspeed.contracts.ModelContract)"
        )
    probe = module.example_input(datamodule)
    shape = list(probe.shape[1:]) if torch.is_tensor(probe) else "the example input"
    was_training = module.training
    try:
        with torch.no_grad():  # eval mode: the probe must not move BatchNorm statistics
            output = module.eval()(probe)
    except RuntimeError as e:
        raise ConfigError(
            f"model.net {type(module.net).__name__} cannot take the data's inputs {shape} "
            f"({str(e).splitlines()[0][:160]}); its shape keys should read the data, e.g. "
            "in_channels: ${data:in_channels}"
        ) from None
    finally:
        module.train(was_training)
    problem = module.check_output(output, datamodule)
    if problem:
        raise ConfigError(f"model.net {type(module.net).__name__} {problem}")
    return probe


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


class NoProfiler(PassThroughProfiler):
    """Lightning's default (no profiling) without its per-step cost.

    The Trainer wraps every hook of every callback in ``profiler.profile(name)``; the default
    ``PassThroughProfiler`` makes a generator-based context manager each time, about 150 per
    training step with the default callbacks. This one hands out one shared no-op context.
    ``trainer.profiler=simple`` (or ``debug=profiler``) replaces it.
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._nothing


def cluster_plugins() -> list:
    """Under SLURM, Lightning's own USR1 handler (auto-requeue) is turned off: GracefulInterrupt
    saves last.ckpt on that signal and the entry requeues the job (lightspeed.run.distributed), and
    two handlers of one signal would race."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def select_fold(datamodule: Any, fold: int | None, folds: int, seed: int) -> None:
    """Makes ``datamodule`` validate on fold ``fold`` of ``folds`` (before its setup)."""
    name = type(datamodule).__name__
    if missing_methods(datamodule, [CV_METHOD]):
        raise ConfigError(
            f"cv.folds={folds}: {name} has no {CV_METHOD}(fold, folds, seed) method, so it "
            "cannot be cross-validated; add one (lightspeed.contracts.DataModuleContract)"
        )
    if fold is None:
        raise ConfigError(
            f"cv.folds={folds} without cv.fold: run it with `lightspeed cv.folds=...`"
        )
    getattr(datamodule, CV_METHOD)(fold, folds, seed)


def build(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> Built:
    """Builds the datamodule, module and trainer that ``cfg`` describes (no training yet).

    ``extra_callbacks`` come from a caller that runs the job (a sweep's pruning callback)."""
    check_devices(cfg)
    if cfg.task == "fit":
        check_optimization(cfg.model)  # before the data loads
    precision = resolve_precision(
        cfg.trainer.get("precision", "auto"), cfg.trainer.get("accelerator", "auto")
    )
    torch.set_float32_matmul_precision(cfg.perf.matmul_precision)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    if cfg.get("cv") and cfg.cv.folds:
        select_fold(datamodule, cfg.cv.fold, cfg.cv.folds, cfg.cv.seed)
    bind_data_resolver(datamodule)
    module = instantiate(cfg.model)
    probe = check_contracts(datamodule, module)
    # one input: the model summary then shows in/out shapes and real FLOPs (not "0")
    module.example_input_array = probe[:1] if torch.is_tensor(probe) else probe
    apply_net_perf(module, cfg.perf)

    callbacks = [*instantiate_group(cfg.get("callbacks")), *extra_callbacks]
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
    trainer_kwargs["plugins"] = [*user_plugins, *cluster_plugins(), checkpoint_io]
    callbacks += [RestoreLoaderPosition(), ResizeSchedule()]  # exact resumes, longer runs
    if cfg.trainer.get("benchmark") is None:  # the Trainer sets torch.backends.cudnn.benchmark
        trainer_kwargs["benchmark"] = bool(cfg.perf.cudnn_benchmark) and not cfg.trainer.get(
            "deterministic"
        )
    if cfg.trainer.get("profiler") is None:
        trainer_kwargs["profiler"] = NoProfiler()
    trainer = instantiate(cfg.trainer, **trainer_kwargs)
    plan = getattr(datamodule, "plan_batches", None)
    if plan is not None:  # data.batch_size is global: checked against the processes (one line)
        log.info(plan(trainer.world_size, trainer.accumulate_grad_batches))
    return Built(datamodule, module, trainer, precision, callbacks)
