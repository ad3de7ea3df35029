"""Bad inputs: each gives one clear line (a UserError, exit 2 from the CLI), loses no earlier
run's files and leaves no half-written checkpoint. docs/reliability.md lists every message.

Config mistakes go through ``lightspeed.cli.precheck`` (what the entry point runs before
Hydra); file and runtime problems through ``lightspeed.build.run_task`` on the tiny data.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightspeed.callbacks.metadata import CHECKPOINT_KEY
from lightspeed.cli import precheck
from lightspeed.errors import UserError

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def copy_data(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    return dest


def truncated_idx(tiny: Path, tmp: Path) -> list[str]:
    d = copy_data(tiny, tmp / "data")
    raw = gzip.decompress((d / IDX_TRAIN_IMAGES).read_bytes())
    (d / IDX_TRAIN_IMAGES).write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return [f"data.data_dir={d}"]


def wrong_magic_idx(tiny: Path, tmp: Path) -> list[str]:
    d = copy_data(tiny, tmp / "data")
    raw = bytearray(gzip.decompress((d / IDX_TRAIN_IMAGES).read_bytes()))
    raw[:4] = b"\x08\x03\x00\x00"
    (d / IDX_TRAIN_IMAGES).write_bytes(gzip.compress(bytes(raw)))
    return [f"data.data_dir={d}"]


def label_count_mismatch(tiny: Path, tmp: Path) -> list[str]:
    from lightspeed.data.idx import read_idx, write_idx

    d = copy_data(tiny, tmp / "data")
    labels = read_idx(d / IDX_TRAIN_LABELS)
    write_idx(d / IDX_TRAIN_LABELS, labels[:-7])
    return [f"data.data_dir={d}"]


def missing_idx(tiny: Path, tmp: Path) -> list[str]:
    d = tmp / "empty"
    d.mkdir()
    return [f"data.data_dir={d}", "data.dataset=mnist"]  # no system copy of MNIST here


def good_checkpoint(tmp: Path, model: str = "cnn_small") -> Path:
    """A real checkpoint of a 1-batch fit (cached per model for the session)."""
    cache = Path(os.environ.get("PYTEST_BAD_INPUT_CACHE", tmp)) / f"{model}.ckpt"
    return cache


def ckpt_overrides(path: Path) -> list[str]:
    return ["task=validate", f"ckpt_path={path}"]


def truncated_ckpt(tiny: Path, tmp: Path, good: Path) -> list[str]:
    bad = tmp / "trunc.ckpt"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return ckpt_overrides(bad)


def text_ckpt(tiny: Path, tmp: Path, good: Path) -> list[str]:
    bad = tmp / "notes.ckpt"
    bad.write_text("these are not weights\n")
    return ckpt_overrides(bad)


def dict_without_weights(tiny: Path, tmp: Path, good: Path) -> list[str]:
    bad = tmp / "plain.ckpt"
    torch.save({"hello": torch.zeros(2)}, bad)
    return ckpt_overrides(bad)


def newer_format(tiny: Path, tmp: Path, good: Path) -> list[str]:
    ckpt = torch.load(good, weights_only=True)
    ckpt[CHECKPOINT_KEY]["format_version"] = 99
    bad = tmp / "future.ckpt"
    torch.save(ckpt, bad)
    return ckpt_overrides(bad)


def other_model(tiny: Path, tmp: Path, good: Path) -> list[str]:
    return [*ckpt_overrides(good), "model=mlp"]


def reused_run_dir(tiny: Path, tmp: Path, good: Path) -> list[str]:
    return ["__output_dir__"]  # the run dir of the fit that made `good`


# (id, overrides, expected fragment of the one line)
CONFIG_CASES = [
    (
        "unknown-key",
        ["trainer.precison=16"],
        "unknown key 'trainer.precison': did you mean 'precision'",
    ),
    ("unknown-root-key", ["sed=1"], "unknown key 'sed'"),
    ("wrong-type", ["data.batch_size=abc"], "data.batch_size='abc' has the wrong type"),
    ("batch-size-zero", ["data.batch_size=0"], "data.batch_size=0 must be > 0"),
    ("lr-zero", ["model.optimizer.lr=0"], "model.optimizer.lr=0 must be a number > 0"),
    ("lr-negative", ["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1 must be a number > 0"),
    ("max-epochs", ["trainer.max_epochs=-2"], "trainer.max_epochs=-2 must be >= 0"),
    ("accumulate", ["trainer.accumulate_grad_batches=0"], "accumulate_grad_batches=0 must be >= 1"),
    ("model-option", ["model=resnet999"], "model=resnet999 is not an option of 'model'"),
    ("precision-name", ["trainer.precision=fp8"], "trainer.precision=fp8 is not supported"),
    ("precision-device", ["trainer=cpu", "trainer.precision=16-mixed"], "needs a CUDA GPU"),
    ("gpu-absent", ["trainer.accelerator=gpu", "trainer.devices=4"], "no CUDA GPU"),
    ("never-stops", ["trainer.max_epochs=-1", "trainer.max_steps=-1"], "never stops"),
    ("task-typo", ["task=trian"], "task=trian is not a task"),
    ("validate-no-weights", ["task=validate"], "needs the weights to use: add ckpt_path"),
    (
        "ckpt-missing",
        ["ckpt_path=/nonexistent/x.ckpt"],
        "ckpt_path=/nonexistent/x.ckpt: no such file",
    ),
    ("num-workers", ["data.num_workers=-1"], "data.num_workers=-1 must be >= 0"),
    (
        "label-smoothing",
        ["model.label_smoothing=1.5"],
        "model.label_smoothing=1.5 must be in [0, 1)",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "fragment"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_mistake_is_one_line(overrides: list[str], fragment: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        precheck([f"paths.root_dir={tmp_path}", *overrides])
    line = str(info.value)
    assert "\n" not in line and fragment in line


def test_resume_auto_with_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"resume=auto: no run under .* nothing to resume") as info:
        precheck([f"paths.root_dir={tmp_path}", "resume=auto"])
    assert "\n" not in str(info.value)


def test_resume_dir_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"checkpoints/last\.ckpt does not exist"):
        precheck([f"paths.root_dir={tmp_path}", f"resume={tmp_path}"])


@pytest.mark.parametrize(
    "make_unwritable",
    ["access-denied", "under-a-file"],
)
def test_unwritable_log_dir(make_unwritable: str, tmp_path: Path, monkeypatch) -> None:
    """Tests run as root, so a read-only dir is simulated (os.access) or made impossible."""
    if make_unwritable == "access-denied":
        monkeypatch.setattr(os, "access", lambda path, mode: False)
        root, fragment = tmp_path, "is not writable"
    else:
        (tmp_path / "file").write_text("x")
        root, fragment = tmp_path / "file", "is a file, not a directory"
    with pytest.raises(UserError, match=fragment) as info:
        precheck([f"paths.root_dir={root}"])
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def made_checkpoint(tmp_path_factory, tiny_data: Path) -> tuple[Path, Path]:
    """(last.ckpt of a one-batch cnn_small fit, its run dir)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lightspeed.build import run_task
    from lightspeed.cli import compose

    out = tmp_path_factory.mktemp("made") / "run"
    cfg = compose(
        [*base_overrides(tiny_data, out.parent), "trainer.max_steps=1", "trainer.max_epochs=1"],
        return_hydra_config=True,
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    run_task(cfg)
    HydraConfig.instance().cfg = None
    return out / "checkpoints" / "last.ckpt", out


def base_overrides(tiny: Path, root: Path) -> list[str]:
    return [
        f"data.data_dir={tiny}",
        "data.val_size=100",
        "data.download=false",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "extras.print_config=false",
        f"paths.root_dir={root}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    ]


DATA_CASES: list[tuple[str, Callable, str]] = [
    ("idx-truncated", truncated_idx, "truncated"),
    ("idx-wrong-magic", wrong_magic_idx, "bad IDX magic number"),
    ("idx-label-count", label_count_mismatch, "labels"),
    ("idx-missing", missing_idx, "mnist not found"),
]

CKPT_CASES: list[tuple[str, Callable, str]] = [
    ("ckpt-truncated", truncated_ckpt, "is truncated or corrupt"),
    ("ckpt-not-a-checkpoint", text_ckpt, "is not a torch checkpoint"),
    ("ckpt-no-state-dict", dict_without_weights, "is not a Lightning checkpoint"),
    ("ckpt-newer-format", newer_format, "has format_version 99, newer than"),
    ("ckpt-other-model", other_model, "does not fit MLP (it was made with SmallCNN)"),
    ("run-dir-reused", reused_run_dir, "already holds a run"),
]


def run_in_process(cfg_factory, overrides: list[str], output_dir: Path | None = None) -> None:
    from lightspeed.build import run_task

    cfg = cfg_factory(
        [
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            *overrides,
        ],
        output_dir=output_dir,
    )
    run_task(cfg)


@pytest.mark.parametrize(
    ("make", "fragment"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES]
)
def test_broken_data_is_one_line(
    make, fragment: str, cfg_factory, tiny_data: Path, tmp_path: Path
) -> None:
    overrides = make(tiny_data, tmp_path)
    with pytest.raises(UserError) as info:
        run_in_process(cfg_factory, overrides)
    assert "\n" not in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize(
    ("make", "fragment"), [c[1:] for c in CKPT_CASES], ids=[c[0] for c in CKPT_CASES]
)
def test_bad_checkpoint_is_one_line(
    make, fragment: str, made_checkpoint, cfg_factory, tiny_data: Path, tmp_path: Path
) -> None:
    good, run_dir = made_checkpoint
    before = {
        p: p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and "tensorboard" not in p.parts
    }
    overrides = make(tiny_data, tmp_path, good)
    output_dir = None
    if overrides == ["__output_dir__"]:
        overrides, output_dir = [], run_dir
    with pytest.raises(UserError) as info:
        run_in_process(cfg_factory, overrides, output_dir)
    line = str(info.value)
    assert "\n" not in line and fragment in line, line
    after = {p: p.read_bytes() for p in before}
    assert after == before  # the earlier run's files are untouched
    assert not list(run_dir.rglob("*.tmp"))


def test_nan_loss_stops_with_step_and_last_good_checkpoint(cfg_factory) -> None:
    from lightspeed.callbacks.nan_guard import NonFiniteLossError

    with pytest.raises(NonFiniteLossError) as info:
        run_in_process(
            cfg_factory,
            [
                "model.optimizer.lr=1e30",
                "model.scheduler=null",
                "trainer.limit_train_batches=5",
                "trainer.max_epochs=3",
                "callbacks.last_checkpoint.every_n_train_steps=1",
            ],
        )
    line = str(info.value)
    assert "\n" not in line and "training loss is nan at global step" in line
    last = line.split("last good checkpoint: ")[1].split(";")[0]
    weights = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_nan_loss_skip_keeps_weights_finite(cfg_factory) -> None:
    from lightspeed.build import run_task

    cfg = cfg_factory(
        [
            "model.optimizer.lr=1e30",
            "model.scheduler=null",
            "trainer.limit_train_batches=3",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=1",
            "callbacks.nan_guard.action=skip",
            "callbacks.nan_guard.max_consecutive_skips=100",
        ]
    )
    summary = run_task(cfg)
    weights = torch.load(summary["last_checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_cli_exit_status_and_single_line(tmp_path: Path) -> None:
    """The real entry point: exit 2, one line on stderr, nothing written."""
    proc = subprocess.run(
        [sys.executable, "-m", "lightspeed", f"paths.root_dir={tmp_path}", "resume=auto"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("lightspeed: error: resume=auto")
    assert not (tmp_path / "logs").exists()
