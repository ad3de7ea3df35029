"""Bad inputs: each gives one clear line (a UserError, exit 2 from the CLI), loses no earlier
run's files and leaves no half-written checkpoint. docs/reliability.md lists every message.

Config mistakes go through ``lightspeed.plan.precheck`` (what the entry point runs before
Hydra); file and runtime problems through ``lightspeed.session.run_task`` on the tiny data.
"""

from __future__ import annotations

import errno
import gzip
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import quiet_tiny_run

from lightspeed import cli
from lightspeed.config import gpu_present
from lightspeed.errors import UserError
from lightspeed.plan import precheck
from lightspeed.run.checkpoint import CHECKPOINT_KEY
from myproject.classifier import Classifier

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
    from myproject.idx import read_idx, write_idx

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


def random_bytes_ckpt(tiny: Path, tmp: Path, good: Path) -> list[str]:
    bad = tmp / "noise.ckpt"
    bad.write_bytes(random.Random(0).randbytes(4096))
    return ckpt_overrides(bad)


def empty_ckpt(tiny: Path, tmp: Path, good: Path) -> list[str]:
    bad = tmp / "empty.ckpt"
    bad.write_bytes(b"")
    return ckpt_overrides(bad)


def zip_without_pickle(tiny: Path, tmp: Path, good: Path) -> list[str]:
    import zipfile

    bad = tmp / "archive.ckpt"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("notes.txt", "not weights")
    return ckpt_overrides(bad)


def objects_ckpt(tiny: Path, tmp: Path, good: Path) -> list[str]:
    """What lightning-hydra-template's save_hyperparameters() stores: an nn.Module."""
    bad = tmp / "objects.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": torch.nn.Linear(2, 2)}}, bad)
    return ckpt_overrides(bad)


def legacy_objects_ckpt(tiny: Path, tmp: Path, good: Path) -> list[str]:
    import datetime

    bad = tmp / "legacy.ckpt"
    obj = {"state_dict": {}, "made": datetime.date(2020, 1, 1)}
    torch.save(obj, bad, _use_new_zipfile_serialization=False)
    return ckpt_overrides(bad)


def other_widths(tiny: Path, tmp: Path, good: Path) -> list[str]:
    return [*ckpt_overrides(good), "model.net.widths=[8,16,32]"]


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
    ("lr-zero", ["model.optimizer.lr=0"], "model.optimizer.lr=0 must be > 0"),
    ("lr-negative", ["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1 must be > 0"),
    ("max-epochs", ["trainer.max_epochs=-2"], "trainer.max_epochs=-2 must be >= 0"),
    ("accumulate", ["trainer.accumulate_grad_batches=0"], "accumulate_grad_batches=0 must be >= 1"),
    ("model-option", ["model=resnet999"], "model=resnet999 is not an option of 'model'"),
    ("precision-name", ["trainer.precision=fp8"], "trainer.precision=fp8 is not supported"),
    ("precision-device", ["trainer=cpu", "trainer.precision=16-mixed"], "needs a CUDA GPU"),
    ("gpu-absent", ["trainer.accelerator=gpu", "trainer.devices=4"], "no CUDA GPU"),  # no GPU only
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
        "last-ckpt-every",
        ["callbacks.last_checkpoint.every_n_train_steps=-1"],
        "callbacks.last_checkpoint.every_n_train_steps=-1 must be >= 0",
    ),
    (
        "nan-guard-action",
        ["callbacks.nan_guard.action=explode"],
        "callbacks.nan_guard.action='explode' has the wrong type: expected 'stop' | 'skip'",
    ),
    (
        "nan-guard-every",
        ["callbacks.nan_guard.check_every_n_steps=0"],
        "callbacks.nan_guard.check_every_n_steps=0 must be > 0",
    ),
    ("speed-warmup", ["callbacks.speed.warmup_steps=-3"], "warmup_steps=-3 must be >= 0"),
    (
        "label-smoothing",
        ["model.label_smoothing=1.5"],
        "model.label_smoothing=1.5 must be >= 0 and < 1",
    ),
]


NO_GPU_ONLY = pytest.mark.skipif(
    gpu_present(),
    reason="valid where a GPU is; tests/engine/test_gpu.py checks the device count there",
)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param(*c[1:], id=c[0], marks=NO_GPU_ONLY if c[0] == "gpu-absent" else ())
        for c in CONFIG_CASES
    ],
)
def test_config_mistake_is_one_line(overrides: list[str], fragment: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        precheck([f"paths.root_dir={tmp_path}", *overrides])
    line = str(info.value)
    assert "\n" not in line and fragment in line


class Wrapper(L.LightningModule):
    """A model wrapping ``net``, or lacking one when ``net`` is None; it keeps the engine's
    contract the way the example Classifier does."""

    def __init__(self, net: torch.nn.Module | None) -> None:
        super().__init__()
        if net is not None:
            self.net = net  # a registered submodule: reached through nn.Module.__getattr__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    example_input = Classifier.example_input
    check_output = Classifier.check_output
    export_input = Classifier.export_input
    prediction_table = Classifier.prediction_table


class Bare(L.LightningModule):
    """A LightningModule with a net and nothing of the engine's contract."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 2)


@pytest.mark.parametrize(
    ("net", "fragment"),
    [
        (None, "model: Wrapper has no 'net'; the entry expects"),
        (torch.nn.Linear(3, 10), "model.net Linear cannot take the data's inputs [1, 8, 8]"),
        (
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)),
            "model.net Sequential outputs [5] logits per image but the data has 10 classes",
        ),
    ],
    ids=["no-net", "wrong-input", "wrong-classes"],
)
def test_model_that_does_not_fit_the_data_is_one_line(net, fragment: str) -> None:
    from types import SimpleNamespace

    from lightspeed.build import check_contracts
    from lightspeed.contracts import DATA_METHODS

    loaders = dict.fromkeys(DATA_METHODS, lambda *args: None)
    data = SimpleNamespace(image_size=[8, 8], in_channels=1, num_classes=10, **loaders)
    with pytest.raises(UserError) as info:
        check_contracts(data, Wrapper(net))
    assert "\n" not in str(info.value) and fragment in str(info.value), str(info.value)
    fits = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    check_contracts(data, Wrapper(fits))  # a net held as a submodule passes, on every Python


def test_model_without_the_engine_contract_is_one_line() -> None:
    from types import SimpleNamespace

    from lightspeed.build import check_contracts

    with pytest.raises(UserError) as info:
        check_contracts(SimpleNamespace(), Bare())
    message = str(info.value)
    assert message.startswith("model: Bare has no example_input, check_output, export_input, ")
    assert "lightspeed.contracts.ModelContract" in message and "\n" not in message


def cli_error(argv: list[str], capsys) -> str:
    """The one line the entry point (in this process) prints for ``argv``, exiting 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("lightspeed: error: ")
    return lines[0]


def test_resume_auto_with_nothing_to_resume(tmp_path: Path, capsys) -> None:
    line = cli_error([f"paths.root_dir={tmp_path}", "resume=auto"], capsys)
    assert "resume=auto: no run under" in line and "nothing to resume" in line


def test_resume_dir_without_checkpoint(tmp_path: Path, capsys) -> None:
    line = cli_error([f"paths.root_dir={tmp_path}", f"resume={tmp_path}"], capsys)
    assert "checkpoints/last.ckpt does not exist" in line


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

    from lightspeed.plan import compose
    from lightspeed.session import run_task

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
        *quiet_tiny_run(tiny, root),
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

FILE_CASES: list[tuple[str, Callable, str]] = [  # diagnosed from the file alone, without torch
    ("ckpt-truncated", truncated_ckpt, "is truncated or corrupt"),
    ("ckpt-text", text_ckpt, "is not a torch checkpoint"),
    ("ckpt-random-bytes", random_bytes_ckpt, "is not a torch checkpoint"),
    ("ckpt-empty", empty_ckpt, "is empty (0 bytes)"),
    ("ckpt-zip-not-torch", zip_without_pickle, "is not a torch checkpoint (a zip archive"),
    ("ckpt-objects", objects_ckpt, "holds Python objects (torch.nn.modules.linear.Linear)"),
    ("ckpt-legacy-objects", legacy_objects_ckpt, "holds Python objects (datetime.date)"),
    ("ckpt-no-state-dict", dict_without_weights, "is not a Lightning checkpoint"),
    ("ckpt-newer-format", newer_format, "has format_version 99, newer than"),
]
CKPT_CASES: list[tuple[str, Callable, str]] = [
    *FILE_CASES,
    ("ckpt-other-shape", other_widths, "(checkpoint vs model): net.features.0.0.weight [16, 1,"),
    ("ckpt-other-model", other_model, "does not fit MLP (it was made with SmallCNN)"),
    ("run-dir-reused", reused_run_dir, "already holds a run"),
]


def run_in_process(cfg_factory, overrides: list[str], output_dir: Path | None = None) -> None:
    from lightspeed.session import run_task

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


@pytest.mark.parametrize(
    ("make", "fragment"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_bad_checkpoint_file_stops_the_entry_point(
    make, fragment: str, made_checkpoint, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    """The entry point diagnoses the file before Hydra makes a run dir (and before torch)."""
    overrides = make(tiny_data, tmp_path, made_checkpoint[0])
    line = cli_error([f"paths.root_dir={tmp_path}", *overrides], capsys)
    assert fragment in line
    assert not (tmp_path / "logs").exists()


def test_checkpoint_diagnosis_needs_no_torch(tmp_path: Path) -> None:
    bad = tmp_path / "notes.ckpt"
    bad.write_text("these are not weights\n")
    code = (
        "import sys\nfrom lightspeed import cli\ntry:\n    cli.main(sys.argv[1:])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)"
    )
    args = [f"paths.root_dir={tmp_path}", "task=validate", f"ckpt_path={bad}"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert "is not a torch checkpoint" in proc.stderr


def test_full_disk_keeps_previous_last_ckpt(cfg_factory, tmp_path: Path, monkeypatch) -> None:
    """A checkpoint write failing with ENOSPC stops the run with one line naming the path and
    the error; the previous last.ckpt is intact and no temporary file is left."""
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(obj["global_step"])
        if len(saves) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError) as info:
        run_in_process(
            cfg_factory,
            [
                "callbacks.last_checkpoint.every_n_train_steps=1",
                "callbacks.last_checkpoint.min_interval_s=0",
                "model.scheduler=null",
            ],
        )
    monkeypatch.undo()
    line = str(info.value)
    last = tmp_path / "run0" / "checkpoints" / "last.ckpt"
    assert "\n" not in line and f"could not write {last}: No space left on device (ENOSPC)" in line
    assert torch.load(last, weights_only=True)["global_step"] == 1
    assert not list(last.parent.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["callbacks.interrupt.signals=[SIGNOPE]"], "unknown signal(s) ['SIGNOPE']"),
        (["callbacks.interrupt.signals=[SIGINT,SIGKILL]"], "['SIGKILL'] cannot be caught"),
        (["callbacks.last_checkpoint.dirpath=__file__/sub"], "is a file, not a directory"),
    ],
    ids=["unknown-signal", "uncatchable-signal", "ckpt-dir-under-a-file"],
)
def test_callback_setting_is_one_line(
    overrides: list[str], fragment: str, cfg_factory, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    overrides = [o.replace("__file__", str(tmp_path / "file")) for o in overrides]
    with pytest.raises(UserError) as info:
        run_in_process(cfg_factory, overrides)
    assert "\n" not in str(info.value) and fragment in str(info.value), str(info.value)


def test_nan_loss_stops_with_step_and_last_good_checkpoint(cfg_factory) -> None:
    from lightspeed.safety.nan_guard import NonFiniteLossError

    with pytest.raises(NonFiniteLossError) as info:
        run_in_process(
            cfg_factory,
            [
                "model.optimizer.lr=1e30",
                "model.scheduler=null",
                "trainer.limit_train_batches=5",
                "trainer.max_epochs=3",
                "callbacks.last_checkpoint.every_n_train_steps=1",
                "callbacks.last_checkpoint.min_interval_s=0",
            ],
        )
    line = str(info.value)
    assert "\n" not in line and "training loss is nan at global step" in line
    last = line.split("last good checkpoint: ")[1].split(";")[0]
    weights = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_nan_loss_skip_keeps_weights_finite(cfg_factory) -> None:
    from lightspeed.session import run_task

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


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.optimizer.momentum=-1", "model.optimizer.momentum=-1: torch.optim.SGD refuses it"),
        ("model.optimizer.weight_decay=-1", "model.optimizer.weight_decay=-1: torch.optim.SGD"),
        ("model.scheduler.max_lr=-0.3", "model.scheduler.max_lr=-0.3 must be > 0"),
        ("model.scheduler.pct_start=1.5", "model.scheduler.pct_start=1.5: torch.optim.lr_sch"),
    ],
)
def test_library_values_are_refused_before_anything_is_written(
    override: str, fragment: str, tmp_path: Path, capsys
) -> None:
    """Values torch's constructors check (or, for a schedule's peak rate, do not check) stop
    with one line naming the key before the data loads, not in torch's traceback (or, for
    max_lr, 97 steps into training), and leave no run dir."""
    line = cli_error([f"paths.root_dir={tmp_path}", override], capsys)
    assert fragment in line, line
    assert not list((tmp_path / "logs").glob("fit/*")), list(tmp_path.rglob("*"))


def test_nan_guard_names_the_knob_that_sets_the_rate() -> None:
    from types import SimpleNamespace

    from lightspeed.safety.nan_guard import rate_knob

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.3, total_steps=10)
    with_cycle = SimpleNamespace(lr_scheduler_configs=[SimpleNamespace(scheduler=one_cycle)])
    assert rate_knob(with_cycle).endswith("model.scheduler.max_lr")
    assert rate_knob(SimpleNamespace(lr_scheduler_configs=[])) == "model.optimizer.lr"
