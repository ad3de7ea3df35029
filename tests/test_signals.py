"""Real processes: SIGTERM saves last.ckpt and exits cleanly; kill -9 never leaves a broken one.

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


def command(tiny_data: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lightspeed",
        f"data.data_dir={tiny_data}", "data.val_size=100", "data.download=false",
        "data.batch_size=20", "model.scheduler=null",
        "callbacks.progress_bar=null", "++trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "extras.print_config=false",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        f"paths.root_dir={root}", *extra,
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


def test_sigterm_saves_last_ckpt_and_exits(tiny_data: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        command(tiny_data, tmp_path, "trainer.max_epochs=50"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        last = wait_for(tmp_path / "logs", "fit/*/checkpoints/last.ckpt", proc, timeout=120)
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - sent < 15
    assert proc.returncode == 128 + signal.SIGTERM
    tail = [line for line in err.splitlines() if line.startswith("lightspeed: interrupted")]
    assert len(tail) == 1 and f"resume={last.parent.parent}" in tail[0]
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] > 0 and "lightspeed" in saved


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume(tiny_data: Path, tmp_path: Path) -> None:
    """Five kill -9 at random moments: every last.ckpt loads; resume=auto then finishes."""
    rng = random.Random(0)
    epochs = "trainer.max_epochs=4"
    seen_steps = []
    run_dir = None
    for attempt in range(5):
        extra = [epochs] if attempt == 0 else [epochs, "resume=auto"]
        proc = subprocess.Popen(
            command(tiny_data, tmp_path, *extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if run_dir is None:
                last = wait_for(tmp_path / "logs", "fit/*/checkpoints/last.ckpt", proc, 120)
                run_dir = last.parent.parent
            else:
                time.sleep(4.0)  # startup: imports, data, restore
            time.sleep(rng.uniform(0.0, 2.0))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        seen_steps.append(ckpt["global_step"])
    done = subprocess.run(
        command(tiny_data, tmp_path, epochs, "resume=auto"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 4 * 25  # 500 images / 20 per batch, 4 epochs
    assert seen_steps == sorted(seen_steps)  # every resume went forward from the last save
    assert len([p for p in (tmp_path / "logs" / "fit").iterdir() if p.is_dir()]) == 1
