"""Run directories: checked before use, never reused by a new run, one writer at a time.

The writer holds an ``fcntl.flock`` on ``<run dir>/.lock``, which the kernel drops however the
process ends (``kill -9`` too); the file only names the owner for a second process's message.
Torch-free: the entry point checks a named run dir before Hydra writes anything into it.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import fcntl
import logging
import os
import shutil
import socket
from pathlib import Path

from lightspeed.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
RUN_MARKERS = ("checkpoints", "summary.json")  # a directory holding these holds a run
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
_held: dict[Path, int] = {}  # run dir → fd of its lock, for the locks this process holds


def check_writable(path: str | Path, key: str) -> None:
    """ConfigError unless ``path`` is (or can be made as) a writable directory."""
    path = Path(path)
    base = path.absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"{key}={path}: {base} is a file, not a directory; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {base} is not writable; choose a writable directory")


def _holds_run(run_dir: Path, markers: tuple[str, ...]) -> None:
    taken = [m for m in markers if (run_dir / m).exists()]
    if taken:
        raise ConfigError(
            f"run dir {run_dir} already holds a run ({', '.join(taken)}); refusing to "
            f"overwrite it: continue it with resume={run_dir}, or start a new run dir"
        )


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run never goes into a directory that holds a run (Hydra would overwrite .hydra/)."""
    check_writable(run_dir, "hydra.run.dir")
    check_free(run_dir)
    _holds_run(run_dir, (*RUN_MARKERS, ".hydra"))


def prepare_run_dir(run_dir: str | Path, resuming: bool) -> Path:
    """Checks and creates the run directory at job start, and takes its lock."""
    run_dir = Path(run_dir)
    check_writable(run_dir, "paths.output_dir")
    if not resuming and is_launching_process():
        _holds_run(run_dir, RUN_MARKERS)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"paths.output_dir={run_dir}: cannot create it ({e.strerror})") from None
    acquire(run_dir)
    return run_dir


# what a job writes into a new run dir before it trains (Hydra's files, the session's, the
# loggers' empty folders): a refused run takes them back, and the dir when nothing else is left
STARTED_FILES = (".hydra", "lightspeed.log", "config.yaml", "hardware.json", LOCK_NAME,
                 "csv", "tensorboard", "checkpoints", "mlruns", "wandb")  # fmt: skip


def discard_refused(run_dir: str | Path) -> bool:
    """Removes a new run dir whose job was refused before it saved anything (no checkpoint,
    no summary): what the job started there, then the dir if that left it empty. True when
    the dir is gone. A dir holding anything else (a user's file) keeps it."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    if (run_dir / "summary.json").exists() or (checkpoints.is_dir() and any(checkpoints.iterdir())):
        return False
    release(run_dir)
    for name in STARTED_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # not empty, or already gone
        return not run_dir.exists()
    return True


def session_file(run_dir: str | Path, name: str, resuming: bool) -> Path:
    """Where this session writes ``name``; a resumed one writes ``<stem>.resume<k><suffix>``."""
    path = Path(run_dir) / name
    k = 0
    while resuming and path.exists():
        k += 1
        path = path.with_name(f"{Path(name).stem}.resume{k}{Path(name).suffix}")
    return path


def is_launching_process() -> bool:
    """False in the extra processes of a multi-process run (DDP ranks > 0, other nodes)."""
    return all(os.environ.get(v, "0") == "0" for v in RANK_VARIABLES)


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock on ``path``, or None when another process holds it."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"run dir lock {path} cannot be opened ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not unlinked by its last owner
                return fd
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:
            pass
        os.close(fd)
    return None


def _owner(path: Path) -> str:
    try:
        fields = dict(f.split("=", 1) for f in path.read_text().split() if "=" in f)
    except OSError:
        fields = {}
    if "pid" not in fields:
        return "another process"
    return f"pid {fields['pid']} on {fields.get('host', '?')} (since {fields.get('start', '?')})"


def check_free(run_dir: str | Path) -> None:
    """ConfigError naming the owner when another process holds the run dir's lock."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or not (run_dir / LOCK_NAME).exists():
        return
    fd = _try_lock(run_dir / LOCK_NAME)
    if fd is None:
        raise ConfigError(
            f"run dir {run_dir} is in use by {_owner(run_dir / LOCK_NAME)}; one process writes "
            "a run at a time: wait for it to end (or stop it), or start a new run"
        )
    os.close(fd)


def acquire(run_dir: str | Path) -> None:
    """Takes the run dir's lock for this process (until it ends or :func:`release`)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or not is_launching_process():
        return
    path = run_dir / LOCK_NAME
    fd = _try_lock(path)
    if fd is None:
        check_free(run_dir)  # raises, naming the owner
        raise ConfigError(f"run dir {run_dir} is in use; try again")
    if os.fstat(fd).st_size:
        log.info("run dir lock: %s has ended; taking over", _owner(path))
    start = _dt.datetime.now().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()} start={start}\n".encode(), 0)
    _held[run_dir] = fd


def release(run_dir: str | Path) -> None:
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        (Path(run_dir) / LOCK_NAME).unlink(missing_ok=True)  # before unlocking: see _try_lock
        os.close(fd)


def release_all() -> None:
    """Releases every run-dir lock this process holds (at exit, or when its job ends)."""
    for run_dir in list(_held):
        release(run_dir)


def _forget_in_child() -> None:
    # a forked child (a loader worker) must not keep the lock alive after its parent is gone
    for fd in _held.values():
        os.close(fd)
    _held.clear()


atexit.register(release_all)
os.register_at_fork(after_in_child=_forget_in_child)
