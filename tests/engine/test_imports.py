"""The import graph of src/: no cycle, the engine never imports the user's project, and no
lower layer of the engine imports a higher one. Function-level imports count too: a lazy
import that closes a cycle is still a cycle in the design."""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ENGINE = "lightspeed"
# lowest first; a module may import its own layer and the ones below. Names are the engine's
# top-level modules and subpackages ("" is the package itself: PROCESS_START).
LAYERS = (
    ("", "errors", "constraints"),  # facts with no dependencies
    ("hardware", "signatures", "contracts", "compat", "optim", "console", "trackers"),
    ("data", "run"),  # reusable data path; run state (torch-free)
    ("config",),  # the schema and its checks (reads the loader rules in data.loading)
    ("loggers", "callbacks", "safety"),  # Lightning callbacks and loggers
    ("build", "tasks"),  # cfg -> objects; what each task does with them
    ("session",),  # one job carried out
    ("plan",),  # argv -> one checked plan
    ("sweep", "cv"),  # run trials / folds through plan and session
    ("cli", "__main__"),  # the entry
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The src/ modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # lightspeed.run.resume.LAST -> the module
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
                break
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p, known) - {m} for m, p in mods.items()}


def component(module: str) -> str:
    """``lightspeed.run.resume`` -> ``run``; ``lightspeed`` -> ``""``."""
    return module.split(".")[1] if module.count(".") else ""


def test_no_import_cycle() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(g):
        if module not in state:
            visit(module, [module])


def test_the_engine_never_imports_the_project() -> None:
    g = graph()
    engine = [m for m in g if m.split(".")[0] == ENGINE]
    projects = {m.split(".")[0] for m in g} - {ENGINE}
    assert "myproject" in projects  # the graph does see the example project
    wrong = [(m, i) for m in engine for i in g[m] if i.split(".")[0] in projects]
    assert not wrong, f"engine modules importing the project: {wrong}"


def test_no_layer_imports_a_higher_one() -> None:
    g = graph()
    engine = sorted(m for m in g if m.split(".")[0] == ENGINE)
    unplaced = sorted({component(m) for m in engine} - set(LAYER))
    assert not unplaced, f"place these engine modules in a layer of this test: {unplaced}"
    upward = [
        f"{m} ({component(m)}, layer {LAYER[component(m)]}) imports {i} "
        f"({component(i)}, layer {LAYER[component(i)]})"
        for m in engine
        for i in sorted(g[m])
        if i.split(".")[0] == ENGINE and LAYER[component(i)] > LAYER[component(m)]
    ]
    assert not upward, "\n".join(upward)


def test_the_check_sees_a_cycle_and_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    """The checks above can fail: a planted cycle and a planted upward import are found."""
    pkg = tmp_path / ENGINE
    (pkg / "run").mkdir(parents=True)
    for name, text in (
        ("__init__.py", ""),
        ("errors.py", "from lightspeed import cli\n"),  # layer 0 -> the entry
        ("cli.py", "from lightspeed import errors\n"),
        ("run/__init__.py", ""),
    ):
        (pkg / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    g = graph()
    assert g["lightspeed.errors"] == {"lightspeed.cli"}
    for check in (test_no_import_cycle, test_no_layer_imports_a_higher_one):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} missed the planted problem")
    assert list(itertools.chain(*LAYERS)).count("cli") == 1
