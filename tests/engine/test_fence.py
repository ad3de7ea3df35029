"""The fence between the engine and the project: the engine's files name no metric of the
example (the objective key names it), and their configs hold no problem of their own."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the engine: its package and its config groups (data/, model/, experiment/, local/ and
# train.yaml are the project's)
ENGINE = ("src/lightspeed", "configs/trainer", "configs/callbacks", "configs/logger",
          "configs/hydra", "configs/paths", "configs/debug", "configs/hparams_search")  # fmt: skip
EXAMPLE_METRICS = re.compile(r"val/acc|test/acc|best_val_acc")


def engine_files() -> list[Path]:
    files = [p for part in ENGINE for p in (REPO / part).rglob("*") if p.is_file()]
    return [p for p in files if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]


def test_the_engine_names_no_metric_of_the_example() -> None:
    files = engine_files()
    assert len(files) > 50 and any(p.name == "cli.py" for p in files)
    found = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if EXAMPLE_METRICS.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_engine_configs_read_the_objective() -> None:
    callbacks = (REPO / "configs" / "callbacks" / "default.yaml").read_text()
    assert "monitor: ${objective.metric}" in callbacks and "mode: ${objective.mode}" in callbacks
    stopping = (REPO / "configs" / "callbacks" / "early_stopping" / "on.yaml").read_text()
    assert "monitor: ${objective.metric}" in stopping
