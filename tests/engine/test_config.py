"""Every config option composes, validates and builds; bad values stop with one named line.

Options are discovered from ``configs/<group>/*.yaml`` (nested groups such as ``model/net``
included), so a new YAML file is tested as soon as it exists.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lightspeed.config import gpu_present
from lightspeed.errors import ConfigError, UserError
from lightspeed.plan import compose, config_dir, precheck

CONFIG_DIR = config_dir()


def discover_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file below ``configs/`` except the root config."""
    found = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        if group != ".":
            found.append((group, path.stem))
    return found


OPTIONS = discover_options()
# Options of another problem than the default's, tested with their partner (the net of a table
# regression cannot read an image data set's shape, and the other way round)
PARTNERS = {"data=table": ["model=regressor"], "model=regressor": ["data=table"]}
# Groups whose options are objects the run builds (the rest only set values).
BUILT_GROUPS = ("data", "model", "model/net", "callbacks", "logger", "trainer")


def option_id(option: tuple[str, str]) -> str:
    return f"{option[0]}={option[1]}"


def with_partners(override: str) -> list[str]:
    return [override, *PARTNERS.get(override, [])]


@functools.cache
def composed(override: str) -> DictConfig:
    """The config with one option chosen (cached: composing costs ~0.1 s; callers only read)."""
    return compose(with_partners(override))


def needs_gpu(cfg: DictConfig) -> bool:
    """The composed config trains on, or keeps its data on, a CUDA device."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or str(cfg.data.get("device", "cpu")).startswith("cuda")


def test_options_were_found() -> None:
    groups = {g for g, _ in OPTIONS}
    # a broken discovery would make every parametrised test below vanish silently
    assert {"data", "model", "model/net", "trainer", "callbacks", "logger", "debug"} <= groups
    assert ("experiment", "mlp_baseline") in OPTIONS


@pytest.mark.parametrize("option", OPTIONS, ids=option_id)
def test_option_composes_and_validates(option: tuple[str, str]) -> None:
    override = option_id(option)
    cfg = composed(override)
    if needs_gpu(cfg) and not gpu_present():
        pytest.skip(f"{override} needs a CUDA GPU and this machine has none")
    checked = precheck(with_partners(override))
    assert checked.task == "fit"


@pytest.mark.skipif(gpu_present(), reason="checks the message given on machines without a GPU")
def test_gpu_options_without_gpu_are_config_errors() -> None:
    """On a CPU-only machine a GPU option stops at the check, naming the GPU, not in CUDA code."""
    gpu_options = [o for o in map(option_id, OPTIONS) if needs_gpu(composed(o))]
    assert gpu_options, "no GPU option found: needs_gpu() no longer recognises them"
    for override in gpu_options:
        with pytest.raises(ConfigError, match="GPU") as err:
            precheck([override])
        assert "\n" not in str(err.value), override


@pytest.mark.parametrize("option", [o for o in OPTIONS if o[0] in BUILT_GROUPS], ids=option_id)
def test_option_builds(option: tuple[str, str], cfg_factory) -> None:
    """The same ``build`` the entry point uses turns the option into objects of its classes."""
    import hydra
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor

    from lightspeed.build import build

    override = option_id(option)
    cfg = cfg_factory(with_partners(override))
    if needs_gpu(cfg) and not torch.cuda.is_available():
        pytest.skip(f"{override} needs a CUDA GPU and torch sees none")
    devices = cfg.trainer.get("devices")
    if needs_gpu(cfg) and isinstance(devices, int) and devices > torch.cuda.device_count():
        pytest.skip(f"{override} needs {devices} GPUs, torch sees {torch.cuda.device_count()}")
    try:
        built = build(cfg)
    except ConfigError as e:  # an extra's package (wandb, mlflow): its line is test_trackers'
        if "which is not installed" not in str(e):
            raise
        pytest.skip(str(e))

    assert isinstance(built.datamodule, hydra.utils.get_class(cfg.data._target_))
    assert isinstance(built.module, hydra.utils.get_class(cfg.model._target_))
    assert isinstance(built.module.net, hydra.utils.get_class(cfg.model.net._target_))
    for group, objects in (("callbacks", built.callbacks), ("logger", built.trainer.loggers)):
        wanted = {v._target_ for v in (cfg.get(group) or {}).values() if v is not None}
        got = {f"{type(o).__module__}.{type(o).__qualname__}" for o in objects}
        for target in wanted:
            cls = hydra.utils.get_class(target)
            if cls is LearningRateMonitor and not built.trainer.loggers:
                continue  # dropped on purpose: it refuses a Trainer without loggers
            assert any(isinstance(o, cls) for o in objects), f"{target} not built; got {got}"
    # the net maps an input shaped like the data's to what the module expects of it
    module, dm = built.module.eval(), built.datamodule
    with torch.no_grad():
        output = module(module.example_input(dm))
    assert module.check_output(output, dm) is None


def test_default_config_checks_in_well_under_a_second() -> None:
    """The precheck must stay cheap: it runs before every command, typos included."""
    import time

    precheck([])  # warm: Hydra's own first-use costs
    t0 = time.perf_counter()
    precheck([])
    assert time.perf_counter() - t0 < 1.0


# --- bad values: one line, naming the key, the value and what would work ----------------------


def config_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        precheck(overrides)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_unknown_key_suggests_the_right_one() -> None:
    msg = config_error(["trainer.precison=16"])
    assert "trainer.precison" in msg
    assert "did you mean 'precision'" in msg


def test_unknown_top_level_key() -> None:
    msg = config_error(["sed=1"])
    assert "'sed'" in msg
    assert "seed" in msg


def test_unknown_key_added_with_plus_is_caught_by_the_schema() -> None:
    """``+key=value`` gets past Hydra's struct mode; the typed schema must still refuse it."""
    msg = config_error(["+trainer.max_epoch=3"])
    assert "trainer.max_epoch" in msg
    assert "max_epochs" in msg


@pytest.mark.parametrize("value", ["17", "16", "float16"])
def test_unsupported_precision(value: str) -> None:
    msg = config_error([f"trainer.precision={value}"])
    assert f"trainer.precision={value}" in msg
    assert "bf16-mixed" in msg  # lists what is accepted


@pytest.mark.skipif(gpu_present(), reason="16-mixed is valid where a GPU is present")
def test_fp16_mixed_on_cpu_suggests_bf16() -> None:
    msg = config_error(["trainer.precision=16-mixed"])
    assert "trainer.precision=16-mixed" in msg
    assert "bf16-mixed" in msg


def test_fp16_mixed_with_cpu_accelerator_suggests_bf16() -> None:
    msg = config_error(["trainer=cpu", "trainer.precision=16-mixed"])
    assert "trainer.precision=16-mixed" in msg
    assert "bf16-mixed" in msg


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.batch_size=-8", "data.batch_size=-8"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0"),
        ("data.num_workers=-1", "data.num_workers=-1"),
        ("data.val_size=-1", "data.val_size=-1"),
        ("model.optimizer.lr=0", "model.optimizer.lr=0"),
        ("model.optimizer.lr=-0.1", "model.optimizer.lr=-0.1"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
        ("trainer.max_epochs=-2", "trainer.max_epochs=-2"),
        ("trainer.max_steps=-5", "trainer.max_steps=-5"),
        ("trainer.devices=0", "trainer.devices=0"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0"),
        ("model.label_smoothing=1.5", "model.label_smoothing=1.5"),
    ],
)
def test_out_of_range_value(override: str, key: str) -> None:
    assert key in config_error([override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=big", "data.batch_size='big'"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs=1.5"),
        ("data.num_workers=many", "data.num_workers='many'"),
    ],
)
def test_wrong_type(override: str, key: str) -> None:
    msg = config_error([override])
    assert key in msg
    assert "expected" in msg


def test_prefetch_without_workers() -> None:
    msg = config_error(["data.num_workers=0", "data.prefetch_factor=4"])
    assert "data.prefetch_factor=4" in msg
    assert "num_workers" in msg


def test_never_ending_run() -> None:
    msg = config_error(["trainer.max_epochs=-1"])
    assert "max_epochs=-1" in msg


def test_misspelt_task() -> None:
    msg = config_error(["task=fitt"])
    assert "task=fitt" in msg
    assert "did you mean 'fit'" in msg


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.ckpt"
    msg = config_error([f"ckpt_path={missing}"])
    assert f"ckpt_path={missing}" in msg
    assert "no such file" in msg


@pytest.mark.parametrize("task", ["validate", "test"])
def test_eval_task_needs_weights(task: str) -> None:
    msg = config_error([f"task={task}"])
    assert f"task={task}" in msg
    assert "ckpt_path" in msg


def test_key_the_yaml_leaves_out_is_still_a_key() -> None:
    """Any constructor parameter can be overridden, listed in the YAML or not."""
    cfg = precheck(["model.net.dropout=0.25", "trainer.gradient_clip_val=1.0"])
    assert cfg.model.net.dropout == 0.25
    assert cfg.trainer.gradient_clip_val == 1.0


def test_unknown_model_lists_the_options() -> None:
    msg = config_error(["model=resnet999"])
    assert "model=resnet999" in msg
    for option in sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")):
        assert option in msg


def test_misspelt_option_suggests_the_right_one() -> None:
    msg = config_error(["data=fashion_mnst"])
    assert "did you mean 'fashion_mnist'" in msg


def test_errors_are_user_errors() -> None:
    """The entry point turns UserError into one line and exit 2; config errors must be ones."""
    assert issubclass(ConfigError, UserError)


def test_valid_overrides_pass() -> None:
    cfg = precheck(
        [
            "trainer.precision=bf16-mixed",
            "trainer.accumulate_grad_batches=4",
            "data.num_workers=2",
            "data.batch_size=64",
            "model=mlp",
            "trainer.max_epochs=1",
        ]
    )
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.net._target_.endswith("MLP")
