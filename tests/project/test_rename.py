"""`make rename NAME=...` turns the example project into the user's: in a copy of the checkout,
the package, its imports, configs, tests and docs take the new name, the copy's config checks
pass, and a `debug=fdr` fit runs through the new console script; the engine keeps its name."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import project_copy, quiet_tiny_run

PARTS = ("src", "configs", "tests", "scripts", "docs", "README.md", "pyproject.toml", "Makefile")


def rename(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/rename.py", *args], cwd=root, capture_output=True, text=True
    )


def mentions(root: Path, word: str) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and ".venv" not in p.parts and "__pycache__" not in p.parts
        and not any(part.endswith(".egg-info") for part in p.parts)
        and p.suffix in (".py", ".yaml", ".md", ".toml", "") and word in p.read_text(errors="replace")
    )  # fmt: skip


def test_bad_names_and_a_second_rename_are_one_line(tmp_path: Path) -> None:
    root = project_copy(tmp_path, ("src", "scripts"))
    for bad, fragment in (("My-Proj", "is not a Python package name"), ("torch", "importable"),
                          ("lightspeed", "taken by the template")):  # fmt: skip
        done = rename(root, bad)
        assert done.returncode == 2 and fragment in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert rename(root, "my_proj").returncode == 0
    again = rename(root, "my_proj")
    assert again.returncode == 2 and "renamed already" in again.stderr, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a venv of its own, a pip install, the copy's config tests and a fit
def test_renamed_copy_checks_and_trains(tiny_data: Path, tmp_path: Path) -> None:
    root = project_copy(tmp_path, PARTS)
    engine_before = {p: p.read_bytes() for p in (root / "src" / "lightspeed").rglob("*.py")}
    done = rename(root, "my_proj")
    assert done.returncode == 0, done.stderr
    assert (root / "src" / "my_proj" / "classifier.py").is_file()
    assert not (root / "src" / "myproject").exists()
    assert mentions(root, "myproject") == ["scripts/rename.py"]  # its own source name
    assert {p: p.read_bytes() for p in engine_before} == engine_before  # engine untouched
    assert (
        "_target_: my_proj.classifier.Classifier"
        in (root / "configs/model/cnn_small.yaml").read_text()
    )

    # a venv of its own that sees the installed packages, and the copy installed into it: the
    # shared .venv is not touched (its editable install points at the checkout)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", root],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    assert (venv / "bin" / "my_proj").is_file()

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    checks = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/engine/test_config.py"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert checks.returncode == 0, checks.stdout[-3000:]
    fit = subprocess.run(
        ["my_proj", "debug=fdr", *quiet_tiny_run(tiny_data, tmp_path / "run")],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    (summary,) = (tmp_path / "run" / "logs" / "fit").glob("*/summary.json")
    assert "my_proj.classifier.Classifier" in (summary.parent / "config.yaml").read_text()
