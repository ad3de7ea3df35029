"""Real processes: SIGTERM saves last.ckpt and exits cleanly; a second writer is refused while
a fit runs; kill -9 never leaves a broken last.ckpt and the run still ends exactly.

The fit runs as ``python -m lightspeed`` on the tiny data with ``last.ckpt`` every step, so a
signal always finds a checkpoint being written or just written.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightspeed import cli


def base(tiny_data: Path, root: Path) -> list[str]:
    return [
        f"data.data_dir={tiny_data}", "data.val_size=100", "data.download=false",
        "callbacks.progress_bar=null", "++trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "extras.print_config=false",
        "callbacks.last_checkpoint.every_n_train_steps=1", "callbacks.last_checkpoint.min_interval_s=0", f"paths.root_dir={root}",
    ]  # fmt: skip


def command(tiny_data: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lightspeed", *base(tiny_data, root),
        "data.batch_size=20", "model.scheduler=null", *extra,
    ]  # fmt: skip


def wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hits = list(path_glob.glob(pattern))
        if hits:
            return hits[0]
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended early: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} under {path_glob} after {timeout} s")


def exit_line(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0), capsys.readouterr().err.strip()
    return 0, ""


def test_sigterm_saves_last_ckpt_and_exits(tiny_data: Path, tmp_path: Path, capsys) -> None:
    proc = subprocess.Popen(
        command(tiny_data, tmp_path, "trainer.max_epochs=50"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        last = wait_for(tmp_path / "logs", "fit/*/checkpoints/last.ckpt", proc, timeout=120)
        run = last.parent.parent
        # one writer per run dir: a resume, or a fresh fit into it, stops with one line
        for extra in (f"resume={run}", f"hydra.run.dir={run}"):
            code, err = exit_line([f"paths.root_dir={tmp_path}", extra], capsys)
            assert code == 2 and len(err.splitlines()) == 1, err
            assert f"is in use by pid {proc.pid} on " in err
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - sent < 15
    assert proc.returncode == 128 + signal.SIGTERM
    tail = [line for line in err.splitlines() if line.startswith("lightspeed: interrupted")]
    assert len(tail) == 1 and tail[0].endswith(f"-m lightspeed resume={run}")
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] > 0 and "lightspeed" in saved


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume(tiny_data: Path, tmp_path: Path) -> None:
    """kill -9 at 10 random moments of a 10-epoch fit (OneCycle; batches of 10, 500 steps, so
    that it outlasts 10 sessions on a fast CPU too): every last.ckpt seen loads with
    weights_only=True, each bare resume goes on from the last save, and the final weights equal
    an uninterrupted run's (the in-memory loader's resume is exact: docs/reliability.md)."""
    rng = random.Random(0)
    program = [sys.executable, "-m", "lightspeed"]
    epochs = 10
    settings = ["data.batch_size=10", "trainer.deterministic=true", f"trainer.max_epochs={epochs}"]
    straight = subprocess.run(
        [*program, *settings, *base(tiny_data, tmp_path / "a")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-2000:]
    runs = tmp_path / "b" / "logs" / "fit"
    seen_steps: list[int] = []
    start = [*program, *settings, *base(tiny_data, tmp_path / "b")]
    for _ in range(10):
        proc = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            last = wait_for(runs.parent.parent, "logs/fit/*/checkpoints/last.ckpt", proc, 120)
            before = last.stat().st_mtime_ns if seen_steps else 0
            while proc.poll() is None and last.stat().st_mtime_ns == before:
                time.sleep(0.02)  # until this session has saved once
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
        ckpt = torch.load(last, weights_only=True)
        seen_steps.append(ckpt["global_step"])
        start = [*program, f"resume={last.parent.parent}"]  # bare: the run's own settings
    assert proc.returncode == -signal.SIGKILL, "the run ended before its 10th kill"
    done = subprocess.run(start, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert seen_steps == sorted(seen_steps) and len(set(seen_steps)) > 5, seen_steps
    run = last.parent.parent
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == epochs * 50  # 500 images / 10 per batch
    reference = next((tmp_path / "a" / "logs" / "fit").glob("*/checkpoints/last.ckpt"))
    expected = torch.load(reference, weights_only=True)["state_dict"]
    for key, value in expected.items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 1
