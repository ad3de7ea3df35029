"""Typed schema of the run config, and the checks that run before anything heavy is imported.

Each section is a dataclass whose fields document the keys; :func:`validate` checks a composed
config against them (unknown keys with a suggestion, types, ranges, cross-field rules) and
raises :class:`ConfigError` with one line naming the key, the bad value and what is accepted.
This module imports neither torch nor Lightning, so a typo costs a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from lightspeed.errors import ConfigError

PRECISIONS = (
    "auto",
    "32",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "bf16-true",
    "16-true",
    "64",
    "64-true",
)
TASKS = ("fit", "validate", "test", "predict")


def suggest(name: str, options: typing.Iterable[str]) -> str:
    """' (did you mean X?)' when a close option exists, else a list of the options."""
    options = sorted(str(o) for o in options)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known: " + ", ".join(options[:40])


def _conforms(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, t) for t in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if origin in (list, tuple) or tp in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_section(schema: type, values: dict, prefix: str, open_keys: bool = False) -> Any:
    """Checks ``values`` against dataclass ``schema``; returns the dataclass instance.

    ``open_keys`` lets keys outside the schema through (sections users extend freely).
    """
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    known = {}
    for key, value in values.items():
        if key not in names:
            if open_keys or key.startswith("_"):
                continue
            raise ConfigError(f"unknown key '{prefix}.{key}': {suggest(key, names)}")
        if not _conforms(value, hints[key]):
            raise ConfigError(
                f"{prefix}.{key}={value!r} has the wrong type: expected {_describe(hints[key])}"
            )
        known[key] = value
    try:
        return schema(**known)
    except ConfigError:
        raise
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix}: {e}") from None


def _non_negative(prefix: str, **values: Any) -> None:
    for key, value in values.items():
        if value is not None and value < 0:
            raise ConfigError(f"{prefix}.{key}={value} must be >= 0")


def _positive(prefix: str, **values: Any) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{prefix}.{key}={value} must be > 0")


@dataclass
class TrainerConfig:
    """Keys of ``trainer:``; passed to ``lightning.Trainer`` as they are (precision resolved).

    Only the keys that Lightning's Trainer takes are accepted, so a typo is caught here.
    ``max_steps`` wins over ``max_epochs`` when both are set (Lightning stops at whichever
    limit comes first; set ``max_epochs=-1`` to train by steps alone).
    """

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    strategy: Any = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: Any = "auto"
    fast_dev_run: int | bool = False
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: Any = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    overfit_batches: int | float = 0.0
    val_check_interval: int | float | None = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: int | float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: bool | str | None = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Any = None
    detect_anomaly: bool = False
    barebones: bool = False
    plugins: Any = None
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    default_root_dir: str | None = None

    def __post_init__(self) -> None:
        p = "trainer"
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(
                f"{p}.precision={self.precision} is not supported; choose one of {', '.join(PRECISIONS)}"
            )
        if self.accumulate_grad_batches < 1:
            raise ConfigError(
                f"{p}.accumulate_grad_batches={self.accumulate_grad_batches} must be >= 1"
            )
        if self.max_epochs is not None and self.max_epochs < -1:
            raise ConfigError(f"{p}.max_epochs={self.max_epochs} must be >= 0 (or -1 for no limit)")
        if self.max_steps < -1:
            raise ConfigError(f"{p}.max_steps={self.max_steps} must be >= 0 (or -1 for no limit)")
        if self.max_epochs == -1 and self.max_steps == -1 and self.max_time is None:
            raise ConfigError(f"{p}.max_epochs=-1 with max_steps=-1 never stops; set one of them")
        if (isinstance(self.devices, int) and self.devices < -1) or self.devices == 0:
            raise ConfigError(
                f"{p}.devices={self.devices}: use a count >= 1, a list of ids, -1 or auto"
            )
        _positive(
            p,
            num_nodes=self.num_nodes,
            check_val_every_n_epoch=self.check_val_every_n_epoch,
            log_every_n_steps=self.log_every_n_steps,
        )
        if self.precision == "16-mixed" and (self.accelerator == "cpu" or not gpu_present()):
            raise ConfigError(
                f"{p}.precision=16-mixed needs a CUDA GPU and none is used here; "
                "use trainer.precision=bf16-mixed (or 32) on the CPU"
            )
        if self.accelerator in ("gpu", "cuda") and not gpu_present():
            raise ConfigError(
                f"{p}.accelerator={self.accelerator} but this machine has no CUDA GPU; use trainer=cpu"
            )


def gpu_present() -> bool:
    """Cheap, torch-free check for an NVIDIA GPU (final check happens when the trainer is built)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


@dataclass
class LoaderConfig:
    """DataLoader keys every data config here shares (docs/data.md says what ``auto`` means)."""

    batch_size: int = 256
    eval_batch_size: int = 1024
    num_workers: int | Literal["auto"] = "auto"
    pin_memory: bool | Literal["auto"] = "auto"
    persistent_workers: bool | Literal["auto"] = "auto"
    prefetch_factor: int | Literal["auto"] | None = "auto"
    drop_last: bool = False
    split_seed: int = 12345

    def __post_init__(self) -> None:
        check_loader_knobs(self)


@dataclass
class IdxDataConfig(LoaderConfig):
    """Keys of ``data:`` for Fashion-MNIST/MNIST (see ``IdxDataModule`` for their meaning)."""

    _target_: str = "lightspeed.data.fashion_mnist.IdxDataModule"
    dataset: Literal["fashion_mnist", "mnist"] = "fashion_mnist"
    data_dir: str = "data"
    download: bool = True
    val_size: int = 5000
    flip: bool = False
    crop_padding: int = 0
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("data", val_size=self.val_size, crop_padding=self.crop_padding)
        if self.device.startswith("cuda") and not gpu_present():
            raise ConfigError(
                f"data.device={self.device} but this machine has no CUDA GPU; "
                "use data.device=cpu (data=fashion_mnist)"
            )


def check_loader_knobs(cfg: Any) -> None:
    """Range checks shared by every data config that has DataLoader knobs."""
    _positive(
        "data", batch_size=cfg.batch_size, eval_batch_size=getattr(cfg, "eval_batch_size", None)
    )
    if cfg.num_workers != "auto" and cfg.num_workers < 0:
        raise ConfigError(
            f"data.num_workers={cfg.num_workers} must be >= 0 (0 = load in the main process) or auto"
        )
    if cfg.prefetch_factor not in ("auto", None):
        _positive("data", prefetch_factor=cfg.prefetch_factor)
        if cfg.num_workers == 0:
            raise ConfigError(
                f"data.prefetch_factor={cfg.prefetch_factor} needs worker processes but data.num_workers=0; "
                "set data.num_workers>0 or data.prefetch_factor=auto"
            )


# Schemas of the data modules this project ships; a user's own module is checked by its
# DataModule's constructor instead.
DATA_SCHEMAS: dict[str, type] = {IdxDataConfig._target_: IdxDataConfig}


@dataclass
class Hdf5DataConfig(LoaderConfig):
    """Keys of ``data:`` for an HDF5 file (see ``lightspeed.data.hdf5.Hdf5DataModule``)."""

    _target_: str = "lightspeed.data.hdf5.Hdf5DataModule"
    path: str = "data/fashion_mnist.h5"
    val_size: int = 5000
    flip: bool = False
    crop_padding: int = 0
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("data", val_size=self.val_size, crop_padding=self.crop_padding)
        if (self.mean is None) != (self.std is None):
            raise ConfigError("data.mean and data.std go together: set both or neither")
        _positive("data", std=self.std)


@dataclass
class ImageFolderDataConfig(LoaderConfig):
    """Keys of ``data:`` for class-subfolder images (see ``ImageFolderDataModule``)."""

    _target_: str = "lightspeed.data.image_folder.ImageFolderDataModule"
    data_dir: str = "data/images"
    image_size: list = field(default_factory=lambda: [64, 64])
    channels: Literal[1, 3] = 3
    mean: list = field(default_factory=lambda: [0.5])
    std: list = field(default_factory=lambda: [0.5])
    val_size: int | float = 0.1
    batch_size: int = 64
    eval_batch_size: int = 256
    flip: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        size = self.image_size
        if not (len(size) in (1, 2) and all(isinstance(s, int) and s > 0 for s in size)):
            raise ConfigError(
                f"data.image_size={size} must be [height, width] (or [side]) of ints > 0"
            )
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) not in (1, self.channels):
                raise ConfigError(
                    f"data.{key}={value} needs 1 or data.channels={self.channels} values"
                )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"data.std={self.std} must be > 0")
        if self.val_size < 0:
            raise ConfigError(
                f"data.val_size={self.val_size} must be >= 0 (a count or a fraction < 1)"
            )


DATA_SCHEMAS[Hdf5DataConfig._target_] = Hdf5DataConfig
DATA_SCHEMAS[ImageFolderDataConfig._target_] = ImageFolderDataConfig


@dataclass
class ModelConfig:
    """Keys of ``model:`` (see ``lightspeed.models.classifier.Classifier``)."""

    _target_: str = "lightspeed.models.classifier.Classifier"
    net: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    scheduler: dict | None = None
    scheduler_interval: Literal["step", "epoch"] = "step"
    num_classes: int = 10
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing={self.label_smoothing} must be in [0, 1)")
        for part in ("net", "optimizer"):
            if "_target_" not in getattr(self, part):
                raise ConfigError(f"model.{part} needs a _target_ (the class to build)")
        lr = self.optimizer.get("lr")
        if lr is not None and (not isinstance(lr, (int, float)) or lr <= 0):
            raise ConfigError(f"model.optimizer.lr={lr} must be a number > 0")
        _positive("model", num_classes=self.num_classes)


@dataclass
class PerfConfig:
    """Keys of ``perf:``: speed knobs that are not Trainer arguments."""

    compile: bool = False
    channels_last: bool = True
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "default"
    cudnn_benchmark: bool = True
    matmul_precision: Literal["highest", "high", "medium"] = "high"


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "logs"
    output_dir: str = "logs"


@dataclass
class RunConfig:
    """Top-level keys of ``configs/train.yaml``."""

    task: str = "fit"
    seed: int | None = 42
    ckpt_path: str | None = None
    resume: str | None = None
    tags: list = field(default_factory=list)
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    callbacks: dict | None = None
    logger: dict | None = None
    paths: dict = field(default_factory=dict)
    perf: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    hydra: Any = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(
                f"task={self.task} is not a task: {suggest(self.task, TASKS)} (tasks: {', '.join(TASKS)})"
            )
        if self.task in ("validate", "test") and not (self.ckpt_path or self.resume):
            raise ConfigError(
                f"task={self.task} needs the weights to use: add ckpt_path=<path to a .ckpt>"
            )
        if self.ckpt_path and not Path(self.ckpt_path).is_file():
            raise ConfigError(
                f"ckpt_path={self.ckpt_path}: no such file; give the path of a .ckpt file"
            )
        if self.ckpt_path and self.resume:
            raise ConfigError("ckpt_path and resume are both set; use one of them")


def validate(cfg: Any) -> RunConfig:
    """Checks a composed config (DictConfig or plain dict); raises ConfigError on the first problem."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # needs HydraConfig set (cli does it)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    run = check_section(RunConfig, cfg, prefix="")
    run.trainer = check_section(TrainerConfig, run.trainer, "trainer")
    run.model = check_section(ModelConfig, run.model, "model")
    run.perf = check_section(PerfConfig, run.perf, "perf")
    run.paths = check_section(PathsConfig, run.paths, "paths", open_keys=True)
    schema = DATA_SCHEMAS.get(run.data.get("_target_"))
    if schema is not None:
        run.data = check_section(schema, run.data, "data")
    for group in ("callbacks", "logger"):
        for name, node in (getattr(run, group) or {}).items():
            if node is not None and not (isinstance(node, dict) and "_target_" in node):
                raise ConfigError(f"{group}.{name} must be null or a mapping with a _target_")
    return run
