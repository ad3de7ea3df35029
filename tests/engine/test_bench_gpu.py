"""scripts/bench_gpu.sh and its report: the GPU steps compose, a failing step is recorded and the
rest still run, and the dry run (the same steps on the CPU) writes one report entry per step.

No GPU is needed: the GPU commands are only composed (``--list``), the dry run trains on the tiny
generated data set, a few batches a step.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import VAL_SIZE

from lightspeed.plan import compose

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_gpu.sh"
STEPS = [
    "tests",
    "bench",
    "fit_default",
    "fit_gpu_data",
    "fp16",
    "bf16",
    "fashion_gpu",
    "fashion_gpu_s1",
    "fashion_gpu_s2",
    "compile",
]
FIGURES = ("test_acc", "train_time_s", "samples_per_s", "time_to_first_step_s", "peak_memory_mb")

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="the script needs bash and coreutils' timeout",
)


def script(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listed(*args: str) -> dict[str, list[str]]:
    """``--list``: each step's command, as arguments."""
    out = script("--list", *args)
    assert out.returncode == 0, out.stderr
    return {
        name: shlex.split(command)
        for name, command in (line.split("\t", 1) for line in out.stdout.splitlines())
    }


def overrides(argv: list[str]) -> list[str]:
    """The Hydra overrides of a step's command (bench.py: those after ``--``)."""
    argv = argv[argv.index("--") + 1 :] if "--" in argv else argv[3:]  # python -m lightspeed
    return [a for a in argv if not a.startswith("hydra.")]


def test_fashion_gpu_recipe_composes() -> None:
    cfg = compose(["experiment=fashion_gpu"])
    assert cfg.data.device == "cuda" and cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.data.batch_size == 512
    assert list(cfg.model.net.widths) == [64, 128, 256]
    assert cfg.model.net._target_ == "myproject.nets.SmallCNN"
    assert cfg.model.tta == "flip" and cfg.data.flip  # TTA only for a flip-trained net


def test_gpu_steps_compose(tmp_path: Path) -> None:
    """Every command of the real (GPU) run is a config Hydra composes, as the device will."""
    steps = listed("--dir", str(tmp_path))
    assert list(steps) == STEPS
    tests = steps.pop("tests")  # the GPU tests, with the GPU shown to them
    assert tests[:2] == ["env", "LIGHTSPEED_TEST_GPU=1"] and tests[-1] == "tests/engine/test_gpu.py"
    assert steps["bench"][1:3] == ["scripts/bench.py", "--repeats"]
    for name, argv in steps.items():
        args = overrides(argv)
        cfg = compose(args)
        if name != "bench":
            assert f"hydra.run.dir={tmp_path / name}" in argv
        assert cfg.trainer.accelerator == "gpu", name
    assert compose(overrides(steps["fp16"])).trainer.precision == "16-mixed"
    assert compose(overrides(steps["compile"])).perf.compile is True
    assert compose(overrides(steps["fit_gpu_data"])).data.device == "cuda"
    assert [compose(overrides(steps[f"fashion_gpu{s}"])).seed for s in ("", "_s1", "_s2")] == [
        42,
        1,
        2,
    ]
    assert not list(tmp_path.iterdir()), "--list runs and writes nothing"


def fake_python(tmp_path: Path) -> Path:
    """An interpreter whose training and test commands all fail: the real one otherwise."""
    path = tmp_path / "python"
    path.write_text(
        "#!/usr/bin/env bash\n"
        'case "$1 $2" in\n'
        '  "-m lightspeed"|"-m pytest"|scripts/bench.py*) echo "planted failure: $*" >&2; exit 3 ;;\n'
        "esac\n"
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    path.chmod(0o755)
    return path


def test_failed_and_skipped_steps_are_reported(tmp_path: Path) -> None:
    results = tmp_path / "results"
    out = script(
        "--dry-run",
        "--dir",
        str(results),
        env={"PYTHON": str(fake_python(tmp_path)), "LIGHTSPEED_BENCH_EXTRA": "data.data_dir=x"},
    )
    assert out.returncode == 1, out.stdout + out.stderr  # the report's: not every step ok
    report = json.loads((results / "bench_gpu.json").read_text())
    assert [s["name"] for s in report["steps"]] == STEPS and report["dry_run"] is True
    for step in report["steps"]:
        assert step["status"] == "failed (exit 3)", step
        assert any("planted failure" in line for line in step["log_tail"])
    assert "## compile: failed (exit 3)" in (results / "bench_gpu.md").read_text()

    skipped = tmp_path / "skipped"
    out = script(
        "--dry-run",
        "--dir",
        str(skipped),
        "--budget",
        "0",
        env={"LIGHTSPEED_BENCH_EXTRA": "data.data_dir=x"},
    )
    report = json.loads((skipped / "bench_gpu.json").read_text())
    assert {s["status"] for s in report["steps"]} == {"skipped (out of time)"}
    assert len(report["steps"]) == len(STEPS) and out.returncode == 1


@pytest.mark.slow  # ten processes on the CPU, one of them compiling: ~3 min on 2 cores
def test_dry_run_reports_every_step(tiny_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    committed = {p: p.stat().st_mtime for p in (REPO / "benchmarks" / "results").iterdir()}
    extra = [
        f"data.data_dir={tiny_data}",
        f"data.val_size={VAL_SIZE}",
        "data.batch_size=32",
        f"paths.root_dir={tmp_path}",
    ]
    env = {"LIGHTSPEED_BENCH_DRY_RUN": "1", "LIGHTSPEED_BENCH_EXTRA": " ".join(extra)}
    out = script("--dir", str(results), env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "DRY RUN" in out.stdout

    report = json.loads((results / "bench_gpu.json").read_text())
    assert report["dry_run"] is True and report["hardware"]["cpu"]
    assert [s["name"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        assert step["status"] == "ok", step
        figures = step["results"]
        if step["name"] == "tests":  # no GPU here: each GPU test skips
            assert "skipped" in figures["outcome"] and "failed" not in figures["outcome"]
            continue
        wanted = FIGURES[2:] if step["name"] == "bench" else FIGURES
        for key in wanted:
            assert isinstance(figures[key], int | float) and figures[key] >= 0, (step["name"], key)
        assert figures["precision"] in ("32-true", "bf16-mixed"), step["name"]
    assert report["bench"]["ratio_template_over_hand"]["median"] > 0
    # what a GPU run reports beside the ratio: the same keys, read here first
    markdown = (results / "bench_gpu.md").read_text()
    assert "Process start → first step" in markdown and "Python calls per training step" in markdown
    assert "| host time per step, by action | µs |" in markdown
    seeds = report["fashion_gpu_seeds"]  # the recipe's aim is a mean over 3 seeds
    assert seeds["runs"] == 3 and 0 < seeds["test_acc_mean_pct"] <= 100
    assert "experiment=fashion_gpu over 3 seeds" in markdown
    markdown = (results / "bench_gpu.md").read_text()
    for name in STEPS:
        assert f"| {name} |" in markdown
    # a rehearsal never touches the committed record
    after = {p: p.stat().st_mtime for p in (REPO / "benchmarks" / "results").iterdir()}
    assert after == committed
