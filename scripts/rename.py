"""`make rename NAME=myproj`: the example project becomes your project, under your name.

Renames the project package ``src/myproject`` to ``src/<name>`` and every reference to it — the
imports, the ``_target_`` of every config, tests, scripts, docs, README — makes ``<name>`` the
distribution's name in pyproject.toml and adds a ``<name>`` console script (the same entry as
``lightspeed``). The engine is not renamed: ``src/lightspeed``, its imports, its ``_target_``s
and the ``lightspeed`` command stay as they are, so that a template update still merges into
your clone without conflicts (docs/own_problem.md). Run ``make test`` afterwards: it reinstalls
the package (pyproject.toml changed) and runs the suite under the new name.

    python scripts/rename.py myproj
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = "myproject"
ENGINE = Path("src") / "lightspeed"
TEXT = {".py", ".yaml", ".yml", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh", ""}
RESERVED = {"lightspeed", OLD, "test", "tests", "src", "configs", "scripts", "docs"}


class RenameError(Exception):
    """A name or a state of the checkout that the rename refuses (one line)."""


def check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise RenameError(
            f"NAME={name!r} is not a Python package name: use lowercase letters, digits and "
            "underscores, starting with a letter (e.g. NAME=my_project)"
        )
    if name in RESERVED:
        raise RenameError(f"NAME={name} is taken by the template itself; choose another name")
    if importlib.util.find_spec(name) is not None:
        raise RenameError(
            f"NAME={name} is already an importable package here ({name} would shadow it or be "
            "shadowed); choose another name"
        )


def project_files(root: Path) -> list[Path]:
    """Text files of the checkout outside the engine (git's list when it is a git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        paths = [root / p for p in listed]
    except (OSError, subprocess.CalledProcessError):
        top = {".git", ".venv", "logs", "data", "multirun", "outputs"}  # not the project's text
        caches = {"__pycache__", ".pytest_cache", ".ruff_cache"}
        paths = [
            p
            for p in root.rglob("*")
            if p.relative_to(root).parts[0] not in top and not caches & set(p.parts)
        ]
    engine = root / ENGINE
    return [
        p
        for p in paths
        if p.is_file()
        and p.suffix in TEXT
        and not p.is_relative_to(engine)
        and p.resolve() != Path(__file__).resolve()
        and ".egg-info" not in str(p)
    ]


def rename(root: Path, name: str) -> int:
    """Renames the project in ``root``; returns how many files changed."""
    source, target = root / "src" / OLD, root / "src" / name
    if not source.is_dir():
        raise RenameError(
            f"src/{OLD} is not there: this checkout was renamed already (its project package is "
            f"another folder of src/); rename that folder by hand, or start from a fresh clone"
        )
    check_name(name)
    if target.exists():
        raise RenameError(f"src/{name} exists already; choose another NAME or remove it")
    files = project_files(root)
    pattern = re.compile(rf"\b{OLD}\b")
    changed = 0
    for path in files:
        text = path.read_text(errors="surrogateescape")
        new = pattern.sub(name, text)
        if path.name == "pyproject.toml" and path.parent == root:
            new = rename_distribution(new, name)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    source.rename(target)
    return changed


def rename_distribution(pyproject: str, name: str) -> str:
    """``[project] name`` becomes ``name``; a ``name`` console script joins ``lightspeed``."""
    pyproject = re.sub(r'(?m)^name = "lightspeed"$', f'name = "{name}"', pyproject, count=1)
    script = 'lightspeed = "lightspeed.cli:main"'
    if script in pyproject and f'\n{name} = "lightspeed.cli:main"' not in pyproject:
        pyproject = pyproject.replace(script, f'{script}\n{name} = "lightspeed.cli:main"', 1)
    return pyproject


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the new name of the project package (e.g. my_project)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        changed = rename(args.root, args.name)
    except RenameError as e:
        print(f"rename: {e}", file=sys.stderr)
        return 2
    print(
        f"renamed the project to {args.name}: src/{args.name}, {changed} files changed, console "
        f"script {args.name}; now run `make test` (it reinstalls the package under the new name)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
