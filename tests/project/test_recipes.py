"""docs/own_model.md and docs/own_data.md, followed literally in a copy of the project.

Each fenced block whose info string names a file (```python file=src/...) is written to that
path of a temporary copy of ``src/`` and ``configs/``; nothing else is edited. A plain
```python block (own_data.md's saving of the reader's arrays) runs in the copy's root with the
arrays it names generated. Then every ``.venv/bin/lightspeed`` command the page shows runs there
as printed, as a process, on generated data in the copy's ``data/`` folder. So a recipe that
needs a third file, or a snippet or command that does not run, fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_environment, project_copy, rgb_class_folders, write_tiny_idx

REPO = Path(__file__).resolve().parents[2]
FILE_BLOCK = re.compile(r"```\w+ file=(\S+)\n(.*?)```", re.S)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)  # no file=: a snippet the reader runs

pytestmark = pytest.mark.slow  # one process per command: ~10 s each


def follow(page: str, root: Path) -> list[str]:
    """Writes the page's files into ``root``; returns its lightspeed commands."""
    text = (REPO / "docs" / page).read_text()
    files = FILE_BLOCK.findall(text)
    assert len(files) == 2, f"{page} should add exactly two files, found {[f for f, _ in files]}"
    for rel, body in files:
        path = root / rel
        assert not path.exists(), f"{page} would overwrite {rel}"
        path.write_text(body)
    commands = [
        line.strip()
        for block in BASH_BLOCK.findall(text)
        for line in block.splitlines()
        if line.strip().startswith(".venv/bin/lightspeed")
    ]
    assert commands, f"{page} shows no lightspeed command"
    return commands


def run(command: str, root: Path) -> subprocess.CompletedProcess:
    env = copy_environment(root)
    proc = subprocess.run(
        command, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    return proc


def arrays() -> dict[str, np.ndarray]:
    """The reader's arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (20x24 RGB, 4 classes)."""
    rng = np.random.default_rng(1)
    out = {}
    for split, n in (("train", 200), ("test", 60)):
        y = rng.integers(0, 4, size=n)
        x = np.clip(y[:, None, None, None] * 60 + rng.normal(0, 30, (n, 20, 24, 3)), 0, 255)
        out[f"x_{split}"], out[f"y_{split}"] = x.astype(np.uint8), y
    return out


def run_snippets(page: str, root: Path, names: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the page's plain ```python blocks in ``root``, with ``names`` defined."""
    snippets = PYTHON_BLOCK.findall((REPO / "docs" / page).read_text())
    assert snippets, f"{page} shows no snippet to run"
    monkeypatch.chdir(root)
    for snippet in snippets:
        exec(compile(snippet, f"{page} snippet", "exec"), dict(names))


def summaries(root: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted(root.glob("logs/fit/*/summary.json"))]


def test_own_model_recipe(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    # the default data set's stand-in, found in data/ before any system copy; 5,600 training
    # images so that the default val_size (5,000) leaves some to train on
    write_tiny_idx(root / "data", train_size=5600)
    commands = follow("own_model.md", root)
    for command in commands:
        run(command, root)
    runs = summaries(root)
    assert len(runs) == len(commands)
    assert runs[-1]["metrics"]["test/acc"] is not None
    config = (Path(runs[-1]["run_dir"]) / "config.yaml").read_text()
    assert "TinyResNet" in config
    assert "in_channels: 1" in config  # read from the data


def test_own_data_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project_copy(tmp_path)
    rgb_class_folders(root / "data" / "my_images")
    run_snippets("own_data.md", root, arrays(), monkeypatch)  # saves into data/arrays/
    commands = follow("own_data.md", root)
    for command in commands:
        run(command, root)
    runs = summaries(root)
    assert len(runs) == len(commands)
    configs = [(Path(r["run_dir"]) / "config.yaml").read_text() for r in runs]
    assert "in_channels: 3" in configs[0]  # RGB class folders, no shape override
    assert "- 32" in configs[0]
    assert "ArrayDataModule" in configs[-1]
    assert "- 20" in configs[-1] and "- 24" in configs[-1]  # the arrays' own size
