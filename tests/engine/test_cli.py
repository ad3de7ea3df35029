"""The entry point as a real process: exit codes, the one-line error, --help, a smoke run.

Each test here starts Python (torch + Lightning import in the run: seconds), so there are
few; behaviour that needs no process is tested in-process in test_config / test_train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CONSOLE_SCRIPT = Path(sys.executable).with_name("lightspeed")


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LIGHTSPEED_ROOT")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder below ``folder`` with its modification time and contents."""
    state = {}
    for path in sorted(folder.rglob("*")):
        data = path.read_bytes() if path.is_file() else b""
        state[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, data)
    return state


def test_typo_exits_2_with_one_line_and_touches_nothing(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    earlier = log_dir / "fit" / "2020-01-01_00-00-00-000000"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "summary.json").write_text('{"task": "fit"}')
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    before = snapshot(tmp_path)

    proc = run_cli(
        [
            sys.executable,
            "-m",
            "lightspeed",
            "trainer.precison=16",
            f"paths.root_dir={tmp_path}",
            f"paths.log_dir={log_dir}",
        ],
        cwd=tmp_path,
    )

    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lightspeed: error: ")
    assert "trainer.precison" in lines[0]
    assert "precision" in lines[0].replace("precison", "")  # the suggestion, not the typo
    assert proc.stdout == ""
    # no new run directory, no Hydra outputs in the working directory, earlier run intact
    assert snapshot(tmp_path) == before


def test_help(tmp_path: Path) -> None:
    proc = run_cli([str(CONSOLE_SCRIPT), "--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # Hydra's help lists the config groups and their options
    for group in ("data", "model", "trainer"):
        assert f"{group}:" in proc.stdout
    assert "cnn_small" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # --help runs no job


def test_debug_fdr_smoke(tmp_path: Path, tiny_data: Path) -> None:
    """The console script end to end on the tiny data: one batch of fit and test."""
    proc = run_cli(
        [
            str(CONSOLE_SCRIPT),
            "debug=fdr",
            f"paths.root_dir={tmp_path}",
            f"data.data_dir={tiny_data}",
            "data.download=false",
            "data.val_size=100",
            "callbacks.progress_bar=null",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lightspeed fit summary" in proc.stdout
    assert "test/acc" in proc.stdout  # the metric as the module logged it

    runs = list((tmp_path / "logs" / "fit").iterdir())
    assert len(runs) == 1, runs
    run_dir = runs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_dir"] == str(run_dir)
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    for name in ("config.yaml", "hardware.json", ".hydra/overrides.yaml"):
        assert (run_dir / name).is_file(), name
    # the run wrote only under paths.log_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
