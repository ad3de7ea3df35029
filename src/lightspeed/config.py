"""The run config's schema and the checks that run before torch is imported.

A ``_target_`` node's keys and types are its target's constructor signature, read from source
(:mod:`lightspeed.signatures`), so a new DataModule or net needs no entry here; the entry's own
keys are the dataclasses below, registered with Hydra as ``train.yaml``'s schema. The rules
that span keys are written once each and raise a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightspeed.constraints import Range
from lightspeed.errors import ConfigError
from lightspeed.signatures import check_value, read_signature

PRECISIONS = ("auto", "32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64",
              "64-true")  # fmt: skip
TASKS = ("fit", "validate", "test", "predict", "export")
# What ``${data:<attribute>}`` resolves to before the DataModule exists (the check skips it).
FROM_DATA = "<from the data module>"


def choice(default: str, *others: str) -> Any:
    """A string field that accepts ``default`` or one of ``others`` (checked by validate)."""
    return field(default=default, metadata={"choices": (default, *others)})


def check_choices(section: Any, values: dict, prefix: str) -> None:
    """The ``choice`` fields of dataclass ``section`` hold one of their choices."""
    for f in dataclasses.fields(section):
        options = f.metadata.get("choices")
        if options and values.get(f.name) not in options:
            raise ConfigError(
                f"{prefix}.{f.name}={values.get(f.name)} is not one of: {', '.join(options)}"
            )


@dataclass
class PerfConfig:
    """``perf.*``: speed knobs the build applies to the net and to torch (not Trainer keys)."""

    compile: bool = False  # torch.compile the net (pays off on a GPU for long runs)
    compile_mode: str = choice(
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    )
    channels_last: bool = True  # NHWC activations: 1.45x faster conv steps on a 2-core CPU (oneDNN)
    cudnn_benchmark: bool = True  # autotune conv algorithms (input sizes are fixed here)
    matmul_precision: str = choice("high", "highest", "medium")  # high: TF32 on Ampere+ GPUs


@dataclass
class ExtrasConfig:
    """``extras.*``: what the entry does around the task."""

    print_config: bool = True  # print the resolved config tree at start
    test_after_fit: bool = True  # a fit ends by testing its best checkpoint


@dataclass
class PathsConfig:
    """``paths.*``: where data and runs live (``configs/paths/default.yaml`` sets them)."""

    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "logs"
    output_dir: str = "logs"  # this run's own directory (Hydra's runtime.output_dir)


@dataclass
class PredictConfig:
    """``predict.*``: what ``task=predict`` writes to ``predictions.csv``."""

    split: str = choice("test", "val", "train")  # the split to predict


@dataclass
class ExportConfig:
    """``export.*``: ``task=export`` writes ``model.onnx`` and checks it on test inputs."""

    batch: int = 8  # test inputs of the parity check (the batch dimension stays dynamic)
    tolerance: float = 1e-4  # largest |output difference| ONNX Runtime may show against torch


@dataclass
class ObjectiveConfig:
    """``objective.*``: the one number a run is judged by. The best checkpoint, early stopping,
    sweeps, the summary and the console read it; the project's ``train.yaml`` (or an
    ``experiment=``) names the metric its module logs."""

    metric: str = "val/loss"  # a validation metric the LightningModule logs with self.log
    mode: str = choice("min", "max")  # whether lower or higher is better


@dataclass
class CVConfig:
    """``cv.*``: k-fold cross-validation (:mod:`lightspeed.cv`): ``cv.folds=K`` runs K fits, fold
    i validating on the i-th of K folds of the training set and training on the rest."""

    folds: int = 0  # K >= 2 folds; 0: no cross-validation
    fold: int | None = None  # run only this fold (0..K-1), e.g. one job per fold with -m
    seed: int = 0  # seed of the assignment of rows to folds
    name: str | None = None  # the CV dir <paths.log_dir>/cv/<name>; None: from the command


@dataclass
class RunConfig:
    """Top-level keys; the groups (data, model, trainer, ...) are ``_target_`` nodes."""

    task: str = "fit"  # fit | validate | test | predict | export
    seed: int | None = 42  # seeds python, numpy, torch and loader workers
    ckpt_path: str | None = None  # weights for validate/test/predict, or a fit to continue
    resume: str | None = None  # auto | <run dir>: continue that run in its own directory
    weights_from: str | None = None  # a .ckpt whose weights start a new fit (a fine-tune)
    tags: list[str] = field(default_factory=list)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: Any = None
    model: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None
    hparams_search: Any = None  # an Optuna study of fits (lightspeed.sweep.OptunaSearch)
    paths: PathsConfig = field(default_factory=PathsConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    cv: CVConfig = field(default_factory=CVConfig)


def register_schema() -> None:
    """Registers :class:`RunConfig` with Hydra as ``run_schema`` (``train.yaml``'s first default)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    # before the DataModule exists (the check, --cfg), data-shape keys are placeholders; also
    # after an earlier build in this process (a sweep's previous trial), whose DataModule the
    # build bound to ${data:...}
    OmegaConf.register_new_resolver("data", lambda name: FROM_DATA, replace=True)


def suggest(name: str, options: Iterable[str]) -> str:
    """'did you mean X?' when a close option exists, else the list of options."""
    options = sorted(str(o) for o in options)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known: " + ", ".join(options[:40])


def gpu_present() -> bool:
    """Cheap, torch-free check for an NVIDIA GPU (the build checks again with torch)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def check_target(node: dict, prefix: str) -> None:
    """Checks the keys of one ``_target_`` node against its target's signature."""
    target = node["_target_"]
    sig = read_signature(target)
    if sig is None:
        return  # not readable from source: the build reports what the constructor says
    name = target.rsplit(".", 1)[-1]
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if key not in sig.params:
            if sig.open:
                continue
            raise ConfigError(f"unknown key '{prefix}.{key}': {suggest(key, sig.params)}")
        if value != FROM_DATA and not (isinstance(value, dict) and "_target_" in value):
            check_value(f"{prefix}.{key}", value, sig.params[key])
    missing = sorted(sig.required - set(node))
    if missing and not node.get("_partial_"):
        raise ConfigError(
            f"{prefix}: {name} needs {', '.join(missing)}; add {prefix}.{missing[0]}=..."
        )


def check_targets(node: Any, prefix: str) -> None:
    """Checks every ``_target_`` node below ``node`` (depth first)."""
    if isinstance(node, dict):
        if "_target_" in node:
            check_target(node, prefix)
        for key, value in node.items():
            check_targets(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_targets(value, f"{prefix}[{i}]")


# --- rules that span keys, each written once ------------------------------------------------

# Trainer values Lightning would refuse (or loop forever on) only after torch is imported.
TRAINER_RANGES = {
    "accumulate_grad_batches": Range(lo=1),
    "max_epochs": Range(lo=-1),
    "max_steps": Range(lo=-1),
    "num_nodes": Range(lo=1),
    "check_val_every_n_epoch": Range(lo=1),
    "log_every_n_steps": Range(lo=1),
}


def check_trainer(t: dict) -> None:
    for key, allowed in TRAINER_RANGES.items():
        value = t.get(key)
        if isinstance(value, (int, float)) and not allowed.accepts(value):
            rule = "must be >= 0 (or -1 for no limit)" if allowed.lo == -1 else allowed.describe()
            raise ConfigError(f"trainer.{key}={value} {rule}")
    precision = str(t.get("precision", "auto"))
    if precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision} is not supported; choose one of {', '.join(PRECISIONS)}"
        )
    if t.get("max_epochs") == -1 and t.get("max_steps", -1) == -1 and t.get("max_time") is None:
        raise ConfigError(
            "trainer.max_epochs=-1 with trainer.max_steps=-1 never stops; set one of them"
        )
    devices = t.get("devices", "auto")
    if devices == 0 or (isinstance(devices, int) and devices < -1) or devices == []:
        raise ConfigError(f"trainer.devices={devices}: use a count >= 1, a list of ids, -1 or auto")
    accelerator = t.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not gpu_present():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; use trainer=cpu"
        )
    if precision.startswith("16") and (accelerator == "cpu" or not gpu_present()):
        raise ConfigError(
            f"trainer.precision={precision} needs a CUDA GPU and none is used here; "
            "use trainer.precision=bf16-mixed (or 32) on the CPU"
        )


def check_run(run: dict) -> None:
    task = run.get("task")
    if task not in TASKS:
        raise ConfigError(
            f"task={task} is not a task: {suggest(str(task), TASKS)} (tasks: {', '.join(TASKS)})"
        )
    ckpt, resume = run.get("ckpt_path"), run.get("resume")
    if task != "fit" and not (ckpt or resume):
        raise ConfigError(f"task={task} needs the weights to use: add ckpt_path=<path to a .ckpt>")
    if ckpt and resume:
        raise ConfigError("ckpt_path and resume are both set; use one of them")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt}: no such file; give the path of a .ckpt file")
    weights = run.get("weights_from")
    if weights and (task != "fit" or ckpt or resume):
        raise ConfigError(
            "weights_from starts a new fit from a checkpoint's weights: use it with task=fit and "
            "without ckpt_path or resume"
        )
    if weights and not Path(weights).is_file():
        raise ConfigError(f"weights_from={weights}: no such file; give the path of a .ckpt file")


def check_cv(cv: dict, task: str) -> None:
    folds, fold = cv.get("folds", 0), cv.get("fold")
    if folds < 0 or folds == 1:
        raise ConfigError(f"cv.folds={folds} must be >= 2 (or 0 for no cross-validation)")
    if fold is not None and not folds:
        raise ConfigError(f"cv.fold={fold} needs cv.folds=K, the number of folds")
    if fold is not None and not 0 <= fold < folds:
        raise ConfigError(f"cv.fold={fold} is not a fold of cv.folds={folds}: use 0..{folds - 1}")
    if folds and task != "fit":
        raise ConfigError(f"cv.folds={folds} runs fits; task={task} cannot be cross-validated")


def check_data(data: dict) -> None:
    device = str(data.get("device", "cpu"))
    if device.startswith("cuda") and not gpu_present():
        raise ConfigError(
            f"data.device={device} but this machine has no CUDA GPU; use data.device=cpu (data=fashion_mnist)"
        )
    from lightspeed.data.loading import check_loader_settings  # the one place of these rules

    check_loader_settings(**{k: v for k, v in data.items() if not k.startswith("_")})


def check_model(model: dict) -> None:
    """The model is a class to build; its parts (net, optimizer, ...) are built objects too."""
    if "_target_" not in model:
        raise ConfigError("model needs a _target_ (the LightningModule to build)")
    for part in ("net", "optimizer", "scheduler"):  # the usual parts; a module may take others
        node = model.get(part)
        if isinstance(node, dict) and "_target_" not in node:
            raise ConfigError(f"model.{part} needs a _target_ (the class to build), or null")
    # learning rates: > 0 (torch refuses a negative lr, not a schedule's negative peak rate,
    # which would train on until the NaN guard stops it)
    for part, key in (("optimizer", "lr"), ("scheduler", "max_lr"), ("scheduler", "base_lr")):
        node = model.get(part)
        value = node.get(key) if isinstance(node, dict) else None
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 for v in values):
            raise ConfigError(f"model.{part}.{key}={value} must be > 0")


def validate(cfg: Any) -> dict:
    """Checks a composed config (DictConfig or dict); returns it as a plain dict.

    Raises:
        ConfigError: on the first problem, in one line.
    """
    from omegaconf import DictConfig, OmegaConf

    register_schema()
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # needs HydraConfig set (cli does it)
    run = {k: v for k, v in cfg.items() if k != "hydra"}
    check_run(run)
    groups = ("data", "model", "trainer", "callbacks", "logger", "hparams_search")
    check_targets({k: run.get(k) for k in groups}, "")
    check_trainer(run.get("trainer") or {})
    check_data(run.get("data") or {})
    check_cv(run.get("cv") or {}, run["task"])
    check_model(run.get("model") or {})
    check_choices(PerfConfig, run.get("perf") or {}, "perf")
    check_choices(ObjectiveConfig, run.get("objective") or {}, "objective")
    if not str(run["objective"]["metric"]).strip():
        raise ConfigError("objective.metric is empty: name a metric the module logs (val/loss)")
    check_choices(PredictConfig, run.get("predict") or {}, "predict")
    for key in ("export.batch",):
        section, name = key.split(".")
        if run[section][name] < 1:
            raise ConfigError(f"{key}={run[section][name]} must be >= 1")
    for group in ("callbacks", "logger"):
        for name, node in (run.get(group) or {}).items():
            if node is not None and not (isinstance(node, dict) and "_target_" in node):
                raise ConfigError(f"{group}.{name} must be null or a mapping with a _target_")
    return run
