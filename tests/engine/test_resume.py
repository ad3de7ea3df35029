"""Resume: an interrupted or extended fit continues, as it was configured, to the same weights
and one metrics log; a resume that cannot continue stops before it writes anything.

Most runs go through ``lightspeed.cli.main`` in this process (Hydra run dir, precheck, resume
overrides and all), on the tiny data set, deterministic on the CPU; the interrupted run whose
printed "continue with" command is run as printed is a real process.
"""

from __future__ import annotations

import csv
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import quiet_tiny_run

from lightspeed import cli
from lightspeed.errors import ConfigError
from lightspeed.run.resume import (
    find_latest_run,
    merge_overrides,
    resolve_resume,
    resume_command,
    resume_overrides,
)

BATCHES_PER_EPOCH = 5  # 500 training images / batch 100


class SignalAt(L.Callback):
    """Sends ``signum`` to this process at the end of training step ``step`` (test helper)."""

    def __init__(self, step: int, signum: int = int(signal.SIGINT)) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def base_args(tiny_data: Path, root: Path) -> list[str]:
    return [
        *quiet_tiny_run(tiny_data, root),
        "trainer.log_every_n_steps=1",
        "trainer.deterministic=true",
    ]


def run_cli(tiny_data: Path, root: Path, *extra: str, base: bool = True) -> int:
    """Runs the entry point in-process; returns its exit status (0 when it returns)."""
    argv = [*base_args(tiny_data, root), "data.batch_size=100"] if base else []
    try:
        cli.main([*argv, *extra])
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


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``folder`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_extend_finished_run_matches_straight_run(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """fit 2 epochs == fit 1 epoch, then resume=auto with max_epochs=2 (constant LR); the
    resume inherits the run's own model.scheduler=null."""
    assert run_cli(tiny_data, tmp_path / "a", "model.scheduler=null", "trainer.max_epochs=2") == 0
    assert run_cli(tiny_data, tmp_path / "b", "model.scheduler=null", "trainer.max_epochs=1") == 0
    first = the_run(tmp_path / "b")
    first_config = (first / "config.yaml").read_text()
    assert run_cli(tiny_data, tmp_path / "b", "trainer.max_epochs=2", "resume=auto") == 0
    resumed = the_run(tmp_path / "b")
    assert resumed == first  # continued in place, no second run dir
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert (first / "config.yaml").read_text() == first_config  # first session's files kept
    assert (first / "config.resume1.yaml").is_file()
    sessions = list((first / ".hydra").glob("resume-*/overrides.yaml"))
    assert len(sessions) == 1 and "model.scheduler=null" in sessions[0].read_text()
    assert_same_run(the_run(tmp_path / "a"), resumed)
    # finished at its length: a bare resume has nothing to continue, and writes nothing
    before = snapshot(first)
    capsys.readouterr()
    assert run_cli(tiny_data, tmp_path / "b", f"resume={first}", base=False) == 2
    assert "that run already finished" in capsys.readouterr().err
    assert snapshot(first) == before


def test_train_a_finished_run_further(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """A finished OneCycle fit: the bare resume refuses with a command that works as printed
    (a longer run), which continues the run in place with its schedule re-sized; then
    weights_from= starts a new run from its weights."""
    root = tmp_path / "b"
    assert run_cli(tiny_data, root, "trainer.max_epochs=1", "extras.test_after_fit=false") == 0
    run = the_run(root)
    capsys.readouterr()
    assert run_cli(tiny_data, root, f"resume={run}", base=False) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    printed = line.split("give it a longer run: ", 1)[1]
    argv = shlex.split(printed)
    assert argv[1:3] == ["-m", "lightspeed"] and argv[-1] == "trainer.max_epochs=2", printed
    assert run_cli(tiny_data, root, *argv[3:], base=False) == 0  # the printed command
    assert the_run(root) == run  # continued in place
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2 * BATCHES_PER_EPOCH
    assert last["lr_schedulers"][0]["total_steps"] == 2 * BATCHES_PER_EPOCH  # re-sized
    assert len(list((run / ".hydra").glob("resume-*"))) == 1

    fine = tmp_path / "c"
    weights = run / "checkpoints" / "last.ckpt"
    assert run_cli(tiny_data, fine, f"weights_from={weights}", "trainer.max_epochs=1") == 0
    first = lambda d: next(v for _, k, v in metric_rows(the_run(d)) if k == "train/loss")  # noqa: E731
    assert first(fine) < 0.5 * first(root)  # starts from the trained weights, not from scratch
    assert torch.load(the_run(fine) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_weights_that_do_not_fit_leave_no_run_dir(tiny_data: Path, tmp_path: Path, capsys):
    """weights_from= of another net: one line at the build, after Hydra made the run dir, which
    the refusal takes back."""
    root = tmp_path / "b"
    assert run_cli(tiny_data, root, "model=mlp", "trainer.max_epochs=1") == 0
    weights = the_run(root) / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    other = tmp_path / "c"
    assert run_cli(tiny_data, other, f"weights_from={weights}", "trainer.max_epochs=1") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"weights_from={weights} does not fit SmallCNN (it was made with MLP)" in line, line
    assert not list((other / "logs" / "fit").glob("*")), list(other.rglob("*"))


def test_interrupted_fit_continues_with_the_printed_command(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A fit started with several overrides and interrupted mid-epoch by Ctrl-C continues with
    the command its message prints (run as a real process), a bare resume=<run dir>, to an
    uninterrupted run's weights and metrics (OneCycle schedule, shuffling and loader position
    included). Resumes that change the schedule's length stop first, one line, writing nothing.
    """
    length = ["trainer.max_epochs=2", "trainer.limit_train_batches=6", "data.batch_size=50"]
    straight = tmp_path / "a"
    assert run_cli(tiny_data, straight, *length) == 0
    # started as `python -m lightspeed` (the SIGTERM test in test_signals.py is a real one)
    monkeypatch.setattr(sys, "argv", [str(Path(cli.__file__).with_name("__main__.py"))])
    monkeypatch.delenv("LIGHTSPEED_LAUNCHER", raising=False)
    signal_at = ["+callbacks.signal._target_=test_resume.SignalAt", "+callbacks.signal.step=8"]
    started = [*base_args(tiny_data, tmp_path / "b"), *length, *signal_at]
    capsys.readouterr()
    assert run_cli(tiny_data, tmp_path / "b", *started, base=False) == 128 + signal.SIGINT
    run = the_run(tmp_path / "b")
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 9 and not (run / "summary.json").exists()  # batch in flight
    line = next(x for x in capsys.readouterr().err.splitlines() if "interrupted" in x)
    command = shlex.split(line.split("continue with: ")[1])
    assert command[1:] == ["-m", "lightspeed", f"resume={run}"]

    for handler in [h for h in logging.root.handlers if isinstance(h, logging.FileHandler)]:
        logging.root.removeHandler(handler)  # Hydra's job log, as a new process would not have
        handler.close()
    before = snapshot(run)
    for change, named in (
        ("data.batch_size=25", "data.batch_size=50→25"),
        ("data.val_size=350", "train batches per epoch=6→5 (data size)"),
    ):
        assert run_cli(tiny_data, tmp_path / "b", f"resume={run}", change, base=False) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "how its steps are made" in err[0], err
        assert "weights_from=" in err[0], err  # the way on: a new run from its weights
        assert snapshot(run) == before  # no config.resumeN.yaml, no .hydra/resume-*
    (tmp_path / "empty").mkdir()  # data the check cannot load: the data's own line
    assert (
        run_cli(
            tiny_data,
            tmp_path / "b",
            f"resume={run}",
            f"data.data_dir={tmp_path / 'empty'}",
            base=False,
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.data_dir=" in err[0] and snapshot(run) == before, err

    # the run's SignalAt (test_resume), and conftest, which test_resume imports
    env = {**os.environ, "PYTHONPATH": f"{Path(__file__).parent}:{Path(__file__).parents[1]}"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # train/acc of the interrupted epoch averages only the batches after the resume
    # (metric accumulators are not checkpointed); docs/reliability.md lists it as inexact
    assert_same_run(the_run(straight), run, inexact=("train/acc",))


def fake_run(path: Path, mtime: float, overrides: list[str] | None = None) -> Path:
    ckpt = path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    os.utime(ckpt, (mtime, mtime))
    if overrides is not None:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return path


def test_resume_auto_picks_newest_last_ckpt(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    newest = fake_run(logs / "fit" / "2020-01-01_00-00-00-000001", 100)
    fake_run(logs / "fit" / "2020-01-02_00-00-00-000001", 50)
    (logs / "fit" / "no-ckpt").mkdir()
    assert find_latest_run(logs, "fit") == newest
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


def test_resume_starts_from_the_runs_own_overrides(tmp_path: Path) -> None:
    """The newest session's overrides, the command's on top; an added key stays added."""
    run = fake_run(tmp_path / "run", 1, ["trainer.max_epochs=2", "+extra.x=1", "ckpt_path=a.ckpt"])
    newer = run / ".hydra" / "resume-2020-01-02_00-00-00-000000"
    newer.mkdir()
    (newer / "overrides.yaml").write_text("- trainer.max_epochs=2\n- +extra.x=1\n- seed=3\n")
    argv = resume_overrides([f"resume={run}", "extra.x=2"], str(run), "logs", "fit")
    assert argv[:3] == ["trainer.max_epochs=2", "seed=3", "++extra.x=2"]
    assert merge_overrides(["a=1", "b=2"], ["a=3"]) == ["b=2", "a=3"]


def test_resume_honours_an_explicit_run_dir(tmp_path: Path) -> None:
    """hydra.run.dir names the run: resume=auto resumes it (not the newest elsewhere), and a
    resume= of another run is refused with one line."""
    logs = tmp_path / "logs"
    older = fake_run(logs / "fit" / "older", 50)
    fake_run(logs / "fit" / "newer", 100)
    argv = resume_overrides([f"hydra.run.dir={older}", "resume=auto"], "auto", str(logs), "fit")
    assert f"hydra.run.dir={older}" in argv and f"resume={older}" in argv
    with pytest.raises(ConfigError, match="is another directory") as info:
        resume_overrides([f"hydra.run.dir={older}"], str(logs / "fit" / "newer"), str(logs), "fit")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"resume=auto with hydra.run.dir=.* does not exist"):
        resume_overrides([f"hydra.run.dir={tmp_path / 'new'}"], "auto", str(logs), "fit")
    with pytest.raises(ConfigError, match="already holds a run"):  # a fresh run into it
        resume_overrides([f"hydra.run.dir={older}"], None, str(logs), "fit")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        resume_overrides([f"hydra.run.dir={tmp_path / 'file' / 'run'}"], None, str(logs), "fit")


def test_resume_command_matches_the_launcher(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "logs" / "fit" / "r1"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTSPEED_ROOT", raising=False)
    monkeypatch.delenv("LIGHTSPEED_CONFIG_DIR", raising=False)
    monkeypatch.setenv("LIGHTSPEED_LAUNCHER", "make train")
    assert resume_command(run) == "make train ARGS=resume=logs/fit/r1"
    more = resume_command(run, "trainer.max_epochs=6")  # one ARGS for make: it pastes as one
    assert more == "make train ARGS='resume=logs/fit/r1 trainer.max_epochs=6'"
    monkeypatch.delenv("LIGHTSPEED_LAUNCHER")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / ".venv" / "bin" / "pytest")])  # cli.main
    assert resume_command(run).split()[1:] == ["-m", "lightspeed", "resume=logs/fit/r1"]
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "src" / "lightspeed" / "__main__.py")])
    assert resume_command(run).split()[1:] == ["-m", "lightspeed", "resume=logs/fit/r1"]
    script = tmp_path / ".venv" / "bin" / "lightspeed"
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert resume_command(run) == ".venv/bin/lightspeed resume=logs/fit/r1"


def test_ckpt_path_keeps_working(cfg_factory, tmp_path: Path) -> None:
    """ckpt_path= resumes the full training state into a new run dir."""
    from lightspeed.session import run_task

    common = ["data.batch_size=100", "model.scheduler=null"]
    first = cfg_factory(["trainer.max_epochs=1", *common])
    run_task(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    summary = run_task(cfg_factory(["trainer.max_epochs=2", f"ckpt_path={ckpt}", *common]))
    saved = torch.load(summary["last_checkpoint"], weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] == 2 * BATCHES_PER_EPOCH


def test_longer_run_from_a_checkpoint_resizes_its_schedule(cfg_factory) -> None:
    """OneCycleLR is sized for the first run; a longer fit from its checkpoint goes on with the
    schedule re-sized (here in the job: run_task without the entry's plan), while a change of
    how steps are made is one line."""
    from lightspeed.session import run_task

    first = cfg_factory(["trainer.max_epochs=1", "data.batch_size=50"])
    run_task(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    steps = torch.load(ckpt, weights_only=True)["lr_schedulers"][0]["total_steps"]
    longer = cfg_factory(["trainer.max_epochs=2", "data.batch_size=50", f"ckpt_path={ckpt}"])
    run_task(longer)
    out = Path(longer.paths.output_dir) / "checkpoints" / "last.ckpt"
    last = torch.load(out, weights_only=True)
    assert last["epoch"] == 1 and last["lr_schedulers"][0]["total_steps"] == 2 * steps
    with pytest.raises(ConfigError, match=r"data.batch_size=50→100\).* weights_from="):
        run_task(cfg_factory(["trainer.max_epochs=2", "data.batch_size=100", f"ckpt_path={ckpt}"]))
