"""docs/own_problem.md followed as a new user would: its four files are all a second problem
needs, and every command it shows runs as printed, in order, in a copy of the project — fit,
predict, export, a 2-trial sweep, a 2-process DDP fit, and a fit stopped with Ctrl-C (SIGINT)
then continued with ``resume=auto``."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import copy_environment, project_copy

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "own_problem.md"
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
FILE_ROW = re.compile(r"^\| \[`([^`]+)`\]", re.M)
# what belongs to the engine: a second problem edits none of it
ENGINE = ("src/lightspeed/", "configs/trainer/", "configs/callbacks/", "configs/logger/",
          "configs/hydra/", "configs/paths/", "configs/debug/", "configs/hparams_search/")  # fmt: skip

pytestmark = pytest.mark.slow  # one process per command


def page_files() -> list[str]:
    return FILE_ROW.findall(PAGE.read_text())


def page_commands() -> list[tuple[str, str]]:
    """``(command, comment)`` of each lightspeed line of the page's bash blocks."""
    out = []
    for block in BASH_BLOCK.findall(PAGE.read_text()):
        for line in block.splitlines():
            command, _, comment = line.partition("#")
            if command.strip().startswith(".venv/bin/lightspeed"):
                out.append((command.strip(), comment.strip()))
    return out


def test_the_problem_is_four_files_outside_the_engine() -> None:
    files = page_files()
    assert len(files) <= 4, files
    for rel in files:
        assert (REPO / rel).is_file(), rel
        assert not rel.startswith(ENGINE), f"{rel} is an engine file"
    assert any(f.endswith(".py") for f in files) and len(page_commands()) >= 7


def test_every_command_of_the_page_runs(tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="the sweep extra: pip install -e '.[sweep]'")
    pytest.importorskip("onnxscript", reason="the export extra: pip install -e '.[export]'")
    root = project_copy(tmp_path)
    # without the page's files the problem is unknown: they are what makes it
    hidden = tmp_path / "hidden"
    for rel in page_files():
        (hidden / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / rel, hidden / rel)
    env = copy_environment(root)
    missing = subprocess.run(
        [".venv/bin/lightspeed", "experiment=table_regression"], cwd=root, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "experiment=table_regression is not an option" in (
        missing.stderr
    ), missing.stderr
    for rel in page_files():
        shutil.move(hidden / rel, root / rel)

    for command, comment in page_commands():
        if "Ctrl-C" in comment:
            interrupt(command, root, env)
            continue
        proc = subprocess.run(
            command, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"

    logs = root / "logs"
    fits = sorted(p.parent for p in logs.glob("fit/*/summary.json"))
    assert len(fits) == 3, fits  # the first fit, the DDP fit, the continued one
    first = json.loads((fits[0] / "summary.json").read_text())
    assert first["objective"]["metric"] == "val/rmse" and first["objective"]["best"] > 0
    (predictions,) = logs.glob("predict/*/predictions.csv")
    assert predictions.read_text().splitlines()[0] == "sample,^IXIC,predicted_^IXIC"
    assert list(logs.glob("export/*/model.onnx"))
    with (logs / "sweeps" / "table" / "results.csv").open() as f:
        assert sum(1 for _ in f) == 3  # header + 2 trials
    resumed = json.loads((fits[-1] / "summary.json").read_text())
    assert len(list((fits[-1] / ".hydra").glob("resume-*"))) == 1
    assert resumed["objective"]["best"] > 0


def interrupt(command: str, root: Path, env: dict) -> None:
    """Runs ``command`` and sends it SIGINT once it has saved a last.ckpt (Ctrl-C)."""
    before = set(root.glob("logs/fit/*/checkpoints/last.ckpt"))
    proc = subprocess.Popen(shlex.split(command), cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not set(root.glob("logs/fit/*/checkpoints/last.ckpt")) - before:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "resume=" in err  # it says how to continue
