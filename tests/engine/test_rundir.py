"""One writer per run dir: a second process stops with one line naming the owner; a lock left
by a killed process is taken over. The owner is a real process (a small Python one here; a
real fit in test_signals.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lightspeed.errors import ConfigError
from lightspeed.run import rundir
from lightspeed.run.rundir import prepare_run_dir

HOLD = (
    "import sys, time\nfrom lightspeed.run import rundir\n"
    "rundir.acquire(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)"
)


def holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_stops_and_a_killed_owners_lock_is_taken_over(tmp_path: Path, caplog) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = holder(run_dir)
    try:
        with pytest.raises(ConfigError, match=rf"in use by pid {proc.pid} on \S+ \(since ") as e:
            prepare_run_dir(run_dir, resuming=True)
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match="in use by"):
            rundir.check_free(run_dir)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert (run_dir / rundir.LOCK_NAME).is_file()  # a kill -9 leaves the file behind
    with caplog.at_level(logging.INFO, logger="lightspeed.run.rundir"):
        prepare_run_dir(run_dir, resuming=True)
    assert f"pid {proc.pid}" in caplog.text and "taking over" in caplog.text
    assert f"pid={os.getpid()} " in (run_dir / rundir.LOCK_NAME).read_text()
    prepare_run_dir(run_dir, resuming=True)  # this process holds it: a second session may
    rundir.release(run_dir)
    assert not (run_dir / rundir.LOCK_NAME).exists()


def test_stale_lock_file_and_other_ranks(tmp_path: Path, monkeypatch) -> None:
    """A lock file whose process is gone is free; ranks > 0 take no lock."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.LOCK_NAME).write_text("pid=999999999 host=elsewhere start=2020-01-01\n")
    rundir.check_free(run_dir)
    monkeypatch.setenv("LOCAL_RANK", "1")
    rundir.acquire(run_dir)
    assert run_dir.resolve() not in rundir._held
    monkeypatch.delenv("LOCAL_RANK")
    rundir.acquire(run_dir)
    assert run_dir.resolve() in rundir._held
    rundir.release(run_dir)
