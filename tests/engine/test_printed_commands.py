"""Every command the program prints pastes into a fresh shell in the project root, on one line.

The entry, the interrupt message and the sweep print lightspeed commands through one function,
``lightspeed.run.resume.command_line`` (in the form the process was started with: ``make
train``, ``.venv/bin/lightspeed``, ``python -m lightspeed``); ``make tune-loader`` prints its own
``use it`` lines. Each form is run here from a clean environment (no activated venv: a bare
``lightspeed`` would not be found), with ``--help`` so that it parses without training, and
``make -n`` for the make form.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import project_copy

from lightspeed.run.resume import command_line, resume_command

REPO = Path(__file__).resolve().parents[2]


def fresh_shell(command: str, root: Path) -> subprocess.CompletedProcess:
    """``command`` in bash with only a system PATH, in ``root``: as pasted into a new terminal.
    (PYTHONPATH: the copy's linked venv is the checkout's; a user's points at their clone.)"""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(root),
        "PYTHONPATH": str(root / "src"),
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory.mktemp("paste"), ("src", "configs", "scripts", "Makefile",
                                                           "pyproject.toml"))  # fmt: skip
    return root


def printed(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """The commands the program prints, in each form it prints them."""
    monkeypatch.chdir(root)
    run = root / "logs" / "fit" / "2026-01-01_00-00-00-000000"
    shown = []
    for argv0, launcher in (
        (str(root / ".venv" / "bin" / "lightspeed"), None),  # the console script
        (str(root / "src" / "lightspeed" / "__main__.py"), None),  # python -m lightspeed
        (str(root / ".venv" / "bin" / "pytest"), None),  # cli.main from other code
        ("lightspeed", "make train"),  # make train
    ):
        monkeypatch.setattr(sys, "argv", [argv0])
        if launcher:
            monkeypatch.setenv("LIGHTSPEED_LAUNCHER", launcher)
        shown += [
            resume_command(run),  # the interrupt message
            resume_command(run, "trainer.max_epochs=6"),  # a finished run: a longer run
            command_line("++model.optimizer.lr=0.1", "task=test", "ckpt_path=a b.ckpt"),  # sweep
        ]
        monkeypatch.delenv("LIGHTSPEED_LAUNCHER", raising=False)
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from tune_loader import use_it
    finally:
        sys.path.remove(str(REPO / "scripts"))
    tuned = root / "tuned" / "loader_mnist.yaml"  # written elsewhere (--out): copied first
    tuned.parent.mkdir(exist_ok=True)
    tuned.write_text("# @package _global_\n")
    for out in (tuned, REPO / "configs" / "local" / "loader_mnist.yaml"):
        shown += [line.split(":", 1)[1].strip() for line in use_it(out).splitlines()]
    return shown


def test_every_printed_command_pastes(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = printed(monkeypatch, root)
    assert len(commands) == 15 and not any(c.startswith("lightspeed ") for c in commands)
    for command in commands:
        assert "\n" not in command, command
        words = shlex.split(command)
        if words[0] == "make":
            dry = fresh_shell(f"make -n {command.removeprefix('make ')}", root)
            assert dry.returncode == 0, f"{command}\n{dry.stderr}"
            args = shlex.split(command.split("ARGS=", 1)[1])[0].split()
            line = next(ln for ln in dry.stdout.splitlines() if ".venv/bin/lightspeed" in ln)
            assert all(a in line for a in args), (command, line)
            continue
        done = fresh_shell(f"{command} --help", root)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        assert "Powered by Hydra" in done.stdout, command


def test_commands_printed_by_real_runs_paste(
    tiny_data: Path, root: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The lines real runs print, collected from their output: a finished run's bare resume
    (its longer-run command), and a sweep's reproduce / test-it lines."""
    from conftest import quiet_tiny_run

    from lightspeed import cli
    from lightspeed.sweep import OptunaSearch

    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", [str(root / ".venv" / "bin" / "lightspeed")])
    base = [*quiet_tiny_run(tiny_data, root), "model=mlp", "trainer.max_epochs=1"]

    def main(argv: list[str]) -> int:
        try:
            cli.main(argv)
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    assert main([*base, "extras.test_after_fit=false"]) == 0
    (run,) = (root / "logs" / "fit").iterdir()
    capsys.readouterr()
    assert main([f"resume={run}"]) == 2
    err = capsys.readouterr().err
    collected = [err.split("give it a longer run: ", 1)[1].strip()]

    def fit(self, study, trial, command, sweep_dir, resume) -> None:  # the sampling only
        (sweep_dir / f"trial_{trial.number:03d}" / "checkpoints").mkdir(parents=True)
        (sweep_dir / f"trial_{trial.number:03d}" / "checkpoints" / "best-x.ckpt").touch()
        study.tell(trial, 0.5)

    pytest.importorskip("optuna", reason="the sweep extra: pip install -e '.[sweep]'")
    monkeypatch.setattr(OptunaSearch, "run_trial", fit)
    assert main([*base, "hparams_search=lr_wd", "hparams_search.n_trials=1"]) == 0
    out = capsys.readouterr().out
    for prefix in ("reproduce: ", "test it: "):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(prefix)]
        collected.append(line.removeprefix(prefix))
    assert len(collected) == 3
    for command in collected:
        assert command.startswith(".venv/bin/lightspeed "), command
        done = fresh_shell(f"{command} --help", root)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
