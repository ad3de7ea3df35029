"""Resume: an interrupted or extended fit continues to the same weights and one metrics log.

The runs go through ``lightspeed.cli.main`` in this process (Hydra run dir, precheck, resume
overrides and all), on the tiny data set, deterministic on the CPU.
"""

from __future__ import annotations

import csv
import os
import signal
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch

from lightspeed import cli
from lightspeed.errors import ConfigError
from lightspeed.resume import find_latest_run, resolve_resume, resume_overrides

BATCHES_PER_EPOCH = 5  # 500 training images / batch 100


class SignalAt(L.Callback):
    """Sends ``signum`` to this process at the end of training step ``step`` (test helper)."""

    def __init__(self, step: int, signum: int = int(signal.SIGINT)) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def run_cli(tiny_data: Path, root: Path, *extra: str) -> int:
    """Runs the entry point in-process; returns its exit status (0 when it returns)."""
    argv = [
        f"data.data_dir={tiny_data}",
        "data.val_size=100",
        "data.download=false",
        "data.batch_size=100",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
        "trainer.deterministic=true",
        "extras.print_config=false",
        f"paths.root_dir={root}",
        *extra,
    ]
    try:
        cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def metric_rows(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, key, value) of every logged value in the run's metrics.csv."""
    rows = []
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    rows.append((int(row["step"]), key, float(value)))
    return rows


def assert_same_run(straight: Path, resumed: Path, inexact: tuple[str, ...] = ()) -> None:
    """Same final weights; same logged (step, metric) pairs, equal except ``inexact`` keys."""
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    rows_a, rows_b = metric_rows(straight), metric_rows(resumed)
    duplicated = [k for k, n in Counter((s, key) for s, key, _ in rows_b).items() if n > 1]
    assert not duplicated, f"steps logged twice after resume: {duplicated[:5]}"
    train_a = {(s, k): v for s, k, v in rows_a if k.startswith(("train/", "val/"))}
    train_b = {(s, k): v for s, k, v in rows_b if k.startswith(("train/", "val/"))}
    assert train_a.keys() == train_b.keys()
    for key, value in train_a.items():
        if key[1] in inexact:
            continue
        assert train_b[key] == pytest.approx(value, abs=1e-5), key


def the_run(root: Path) -> Path:
    runs = [p for p in (root / "logs" / "fit").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_extend_finished_run_matches_straight_run(tiny_data: Path, tmp_path: Path) -> None:
    """fit 2 epochs == fit 1 epoch, then resume=auto with max_epochs=2 (constant LR)."""
    common = ("model.scheduler=null",)
    assert run_cli(tiny_data, tmp_path / "a", *common, "trainer.max_epochs=2") == 0
    assert run_cli(tiny_data, tmp_path / "b", *common, "trainer.max_epochs=1") == 0
    first = the_run(tmp_path / "b")
    first_config = (first / "config.yaml").read_text()
    assert run_cli(tiny_data, tmp_path / "b", *common, "trainer.max_epochs=2", "resume=auto") == 0
    resumed = the_run(tmp_path / "b")
    assert resumed == first  # continued in place, no second run dir
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert (first / "config.yaml").read_text() == first_config  # first session's files kept
    assert (first / "config.resume1.yaml").is_file()
    assert len(list((first / ".hydra").glob("resume-*/config.yaml"))) == 1
    assert_same_run(the_run(tmp_path / "a"), resumed)


def test_resume_mid_epoch_after_sigint(tiny_data: Path, tmp_path: Path) -> None:
    """A Ctrl-C in the middle of epoch 2 saves last.ckpt; resume=auto ends where a straight
    run ends (OneCycle schedule, augmentation and shuffling included)."""
    assert run_cli(tiny_data, tmp_path / "a", "trainer.max_epochs=2") == 0
    stop_at = BATCHES_PER_EPOCH + 2
    code = run_cli(
        tiny_data,
        tmp_path / "b",
        "trainer.max_epochs=2",
        "+callbacks.signal._target_=test_resume.SignalAt",
        f"+callbacks.signal.step={stop_at}",
    )
    assert code == 128 + signal.SIGINT
    run = the_run(tmp_path / "b")
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == stop_at + 1  # stopped at the end of the batch in flight
    assert not (run / "summary.json").exists()
    assert run_cli(tiny_data, tmp_path / "b", "trainer.max_epochs=2", "resume=auto") == 0
    assert (run / "summary.json").is_file()
    # train/acc of the interrupted epoch averages only the batches after the resume
    # (metric accumulators are not checkpointed); docs/reliability.md lists it as inexact
    assert_same_run(the_run(tmp_path / "a"), run, inexact=("train/acc",))


def test_resume_auto_picks_newest_last_ckpt(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for name, mtime in (("2020-01-01_00-00-00-000001", 100), ("2020-01-02_00-00-00-000001", 50)):
        ckpt = logs / "fit" / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (mtime, mtime))
    (logs / "fit" / "no-ckpt").mkdir()
    assert find_latest_run(logs, "fit") == logs / "fit" / "2020-01-01_00-00-00-000001"
    run = resolve_resume("auto", logs, "fit")
    assert resolve_resume(str(run / "checkpoints" / "last.ckpt"), logs) == run
    argv = resume_overrides(["trainer.max_epochs=3", "resume=auto"], "auto", str(logs), "fit")
    assert argv[0] == "trainer.max_epochs=3" and f"resume={run}" in argv
    assert f"hydra.run.dir={run}" in argv
    assert any(a.startswith("hydra.output_subdir=.hydra/resume-") for a in argv)
    with pytest.raises(ConfigError, match="nothing to resume"):
        resolve_resume("auto", tmp_path / "empty", "fit")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_resume(str(logs / "fit" / "no-ckpt"), logs)


def test_ckpt_path_keeps_working(cfg_factory, tmp_path: Path) -> None:
    """ckpt_path= resumes the full training state into a new run dir."""
    from lightspeed.build import run_task

    common = ["data.batch_size=100", "model.scheduler=null"]
    first = cfg_factory(["trainer.max_epochs=1", *common])
    run_task(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    summary = run_task(cfg_factory(["trainer.max_epochs=2", f"ckpt_path={ckpt}", *common]))
    saved = torch.load(summary["last_checkpoint"], weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] == 2 * BATCHES_PER_EPOCH


def test_resume_refuses_longer_run_with_fixed_length_schedule(cfg_factory) -> None:
    """OneCycleLR is sized for the first run; a longer resume fails with one line up front."""
    from lightspeed.build import run_task

    first = cfg_factory(["trainer.max_epochs=1", "data.batch_size=250"])
    run_task(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=1→2\).* sized for \d+ steps"):
        run_task(cfg_factory(["trainer.max_epochs=2", f"ckpt_path={ckpt}"]))
