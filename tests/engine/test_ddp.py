"""DDP on the CPU: two gloo processes (``trainer=ddp_cpu``) stand in for several GPUs.

The fast tests check how the global batch is split over ranks. The slow ones run the entry as
a real process (``python -m lightspeed``), so Lightning's launcher
re-runs the command for rank 1 as it does on a GPU machine. An audit hook (a ``sitecustomize``
on ``PYTHONPATH``) records each file or folder that a process of rank > 0 creates or opens for
writing below the test's folder: it must record none.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightspeed.data.base import ImageDataModule
from lightspeed.data.memory import InMemoryBatchLoader
from lightspeed.errors import ConfigError

AUDIT_HOOK = """
import os, sys
if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
    _root, _log = os.environ["AUDIT_ROOT"], os.environ["AUDIT_LOG"]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    with open(_log + ".active", "a") as f:  # the test checks that the hook ran in rank 1
        f.write(f"{os.getpid()}\\n")

    def _under_root(path):
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(_root)
        except TypeError:
            return False  # a file descriptor

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & _WRITE
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.symlink"):
            path, writing = args[0], event != "os.mkdir" or not os.path.exists(args[0])
        else:
            return
        if writing and _under_root(path):
            with open(_log, "a") as f:
                f.write(f"{os.getpid()} {event} {os.fsdecode(path)}\\n")

    sys.addaudithook(_hook)
"""


def epoch_batches(n: int, batch: int, world: int, train: bool = True) -> list[list[list[int]]]:
    """``[rank][batch index]`` sample indices of one epoch of the in-memory loader."""
    x, y = torch.arange(n).float().view(n, 1, 1, 1), torch.arange(n)
    loaders = [
        InMemoryBatchLoader(x, y, batch, shuffle=train, seed=7, rank=r, world_size=world)
        for r in range(world)
    ]
    for loader in loaders:
        loader.sampler.set_epoch(3)
    return [[labels.tolist() for _, labels in loader] for loader in loaders]


def test_ranks_split_each_global_batch_as_one_process_sees_it() -> None:
    (single,) = epoch_batches(23, 6, world=1)
    ranks = epoch_batches(23, 6, world=2)
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 4  # every rank steps together
    for i, batch in enumerate(single):
        assert sorted(ranks[0][i] + ranks[1][i]) == sorted(batch)  # the same samples per step
    assert [len(b) for b in ranks[0]] == [3, 3, 3, 3] and [len(b) for b in ranks[1]][-1] == 2
    assert epoch_batches(23, 6, world=2) == ranks  # same seed and epoch → same order


def test_a_tail_smaller_than_the_ranks() -> None:
    train = epoch_batches(9, 8, world=4)  # last global batch: 1 sample for 4 ranks
    assert all(len(r) == 2 for r in train)  # training pads it: every rank takes the step
    evaluation = epoch_batches(9, 8, world=4, train=False)
    assert sorted(i for r in evaluation for b in r for i in b) == list(range(9))


def test_batch_plan_line_and_the_one_line_refusal() -> None:
    dm = ImageDataModule(batch_size=512)
    assert dm.plan_batches(4, 2) == (
        "batch: data.batch_size=512 global = 4 processes x 128 per device; "
        "effective 1024 per optimizer step (2 accumulated batches)"
    )
    assert dm.plan_batches() == "batch: data.batch_size=512 global"
    with pytest.raises(ConfigError, match=r"does not divide over 3 processes .* e\.g\. 510 or 513"):
        dm.plan_batches(3)


def env_with_module(folder: Path, name: str, source: str, **extra: str) -> dict[str, str]:
    """This environment with ``folder/name.py`` (holding ``source``) importable first."""
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    path = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, **extra}


def audit_env(tmp_path: Path, root: Path) -> dict[str, str]:
    log = tmp_path / "rank_writes.log"
    return env_with_module(
        tmp_path / "audit_hook", "sitecustomize", AUDIT_HOOK,
        AUDIT_ROOT=str(root), AUDIT_LOG=str(log),
    )  # fmt: skip


def command(tiny_data: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lightspeed", f"data.data_dir={tiny_data}", "data.val_size=100",
        "++data.download=false", "callbacks.progress_bar=null", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "extras.print_config=false",
        f"paths.root_dir={root}", *extra,
    ]  # fmt: skip


def run(argv: list[str], env: dict | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def only_run_dir(root: Path) -> Path:
    runs = [p for p in (root / "logs" / "fit").iterdir()]
    assert len(runs) == 1, runs
    return runs[0]


def last_values(run_dir: Path, *keys: str) -> dict[str, float]:
    """The last logged value of each key in the run's metrics.csv."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {k: float([r[k] for r in rows if r.get(k)][-1]) for k in keys}


def assert_rank_zero_wrote_alone(tmp_path: Path, root: Path, ignore_mkdir: bool = False) -> None:
    log = tmp_path / "rank_writes.log"
    assert Path(f"{log}.active").is_file(), "the audit hook did not run in rank 1"
    writes = log.read_text().splitlines() if log.exists() else []
    writes = [w for w in writes if not (ignore_mkdir and " os.mkdir " in w)]
    assert not writes, "ranks > 0 wrote:\n" + "\n".join(writes)
    assert not list(root.rglob("train_ddp_process_*")), "a rank > 0 wrote its own log"


@pytest.mark.slow
def test_two_process_fit_equals_one_process(tiny_data: Path, tmp_path: Path) -> None:
    """Global batch 50 on one process vs 2 x 25 on two: the same samples in every step.

    MLP without dropout: nothing random in the step, and no BatchNorm, whose statistics over
    25 images per rank would differ from those over 50 (on the GPU trainer=ddp syncs them;
    torch's SyncBatchNorm has no CPU version). What remains is the order of float sums in the
    gradient all-reduce: ~1e-7 per step. In float32: under bf16-mixed (precision=auto on a CPU
    with bf16 units) the same sums differ by bf16's rounding, ~0.5% of val/loss.
    """
    same = ["model=mlp", "model.net.dropout=0", "data.batch_size=50", "trainer.max_epochs=2",
            "trainer.precision=32"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    run(command(tiny_data, one, "trainer=cpu", *same))
    t0 = time.monotonic()
    out = run(command(tiny_data, two, "trainer=ddp_cpu", *same), env=audit_env(tmp_path, two))
    ddp_seconds = time.monotonic() - t0
    assert "batch: data.batch_size=50 global = 2 processes x 25 per device" in out
    assert out.count("lightspeed fit summary") == 1  # the console summary from rank zero only

    run_dir = only_run_dir(two)
    assert_rank_zero_wrote_alone(tmp_path, two)
    assert (run_dir / "summary.json").is_file() and (run_dir / ".hydra").is_dir()
    keys = ("val/loss", "val/acc", "test/loss", "test/acc")
    single, ddp = last_values(only_run_dir(one), *keys), last_values(run_dir, *keys)
    for key in keys:
        assert ddp[key] == pytest.approx(single[key], rel=1e-4, abs=0), (key, single, ddp)
    print(f"2-process fit: {ddp_seconds:.1f} s; {single} vs {ddp}")


@pytest.mark.slow
def test_global_batch_that_does_not_divide_is_one_line(tiny_data: Path, tmp_path: Path) -> None:
    argv = command(tiny_data, tmp_path, "trainer=ddp_cpu", "data.batch_size=51")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("lightspeed: error:")]
    assert errors == [
        "lightspeed: error: data.batch_size=51 is the global batch and does not divide over 2 "
        "processes (devices x num_nodes); use a multiple of 2, e.g. 50 or 52"
    ]
    assert "Traceback" not in done.stderr


def wait_for_last_ckpt(root: Path, proc: subprocess.Popen, timeout: float = 180) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = list((root / "logs").glob("fit/*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no last.ckpt after {timeout} s")


@pytest.mark.slow
def test_sigterm_to_rank_zero_then_resume_finishes_in_the_same_run_dir(
    tiny_data: Path, tmp_path: Path
) -> None:
    """SIGTERM reaches rank zero only (``kill <pid>``): the ranks still agree on the batch to
    stop at (the save is a collective call), and ``resume=<run dir>`` finishes the run there."""
    root = tmp_path / "root"
    env = audit_env(tmp_path, root)
    extra = ["trainer=ddp_cpu", "data.batch_size=20", "trainer.max_epochs=3",
             "callbacks.last_checkpoint.every_n_train_steps=1",
             "callbacks.last_checkpoint.min_interval_s=0"]  # fmt: skip
    proc = subprocess.Popen(
        command(tiny_data, root, *extra), env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        last = wait_for_last_ckpt(root, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    run_dir = last.parent.parent
    stopped = [line for line in err.splitlines() if line.startswith("lightspeed: interrupted")]
    assert len(stopped) == 1 and "mid-epoch" in stopped[0], err[-3000:]
    assert not (run_dir / "summary.json").exists()

    out = run(command(tiny_data, root, f"resume={run_dir}"), env=env)
    assert "resuming from" in out
    assert only_run_dir(root) == run_dir
    assert (run_dir / "summary.json").is_file() and (run_dir / "config.resume1.yaml").is_file()
    with (run_dir / "csv" / "metrics.csv").open() as f:
        epochs = {r["epoch"] for r in csv.DictReader(f) if r.get("val/acc")}
    assert epochs == {"0", "1", "2"}
    assert_rank_zero_wrote_alone(tmp_path, root)


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_run_in_their_job_dir(tiny_data: Path, tmp_path: Path) -> None:
    """``-m`` with a DDP trainer, two jobs in one process: rank 1 joins each job's own dir
    instead of re-running the sweep command (a run dir per rank, or the sweep started again,
    in other templates), and job 1 meets its own rank 1 (job 0's process group, to a rank 1
    that had exited, failed it with "Connection closed by peer")."""
    root = tmp_path / "root"
    argv = command(tiny_data, root, "trainer=ddp_cpu", "debug=fdr", "data.batch_size=50",
                   "model.optimizer.lr=0.1,0.2")  # fmt: skip
    run([argv[0], "-m", "lightspeed", "-m", *argv[3:]], env=audit_env(tmp_path, root))
    fit = root / "logs" / "fit"
    assert [p.name for p in fit.iterdir()] == ["multiruns"]
    (sweep,) = (fit / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    assert (sweep / "0" / "summary.json").is_file() and (sweep / "1" / "summary.json").is_file()
    assert_rank_zero_wrote_alone(tmp_path, root)


@pytest.mark.slow
def test_torchrun_two_nodes_share_one_run_dir(tiny_data: Path, tmp_path: Path) -> None:
    """The docs' torchrun recipe for several machines, as two one-process nodes on this one:
    both ranks name the run dir after ``--rdzv-id``; rank 1 writes no file (it may make the
    empty run dir when it gets there first)."""
    root = tmp_path / "root"
    env = audit_env(tmp_path, root)
    trainer = ["trainer=multinode", "trainer.accelerator=cpu", "trainer.sync_batchnorm=false",
               "trainer.num_nodes=2", "trainer.devices=1", "debug=fdr", "data.batch_size=50"]  # fmt: skip
    port = 29400 + os.getpid() % 500
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                "--master-addr=127.0.0.1", f"--master-port={port}", "--rdzv-id=sim2"]  # fmt: skip
    script = ["-m", *command(tiny_data, root, *trainer)[2:]]
    nodes = [
        subprocess.Popen(
            [*torchrun, f"--node-rank={rank}", *script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert only_run_dir(root).name == "torchrun-sim2"
    assert (root / "logs" / "fit" / "torchrun-sim2" / "summary.json").is_file()
    assert "lightspeed fit summary" in outputs[0] and "lightspeed fit summary" not in outputs[1]
    assert_rank_zero_wrote_alone(tmp_path, root, ignore_mkdir=True)


POISON = """
import lightning as L


class PoisonRank(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 1 and trainer.global_step == 3:
            batch[0].fill_(float("nan"))  # a NaN in rank 1's shard only
"""


@pytest.mark.slow
@pytest.mark.parametrize("action", ["stop", "skip"])
def test_nan_on_one_rank_stops_or_skips_every_rank(
    action: str, tiny_data: Path, tmp_path: Path
) -> None:
    """Rank 1 alone sees a NaN loss at step 3. ``stop``: every rank stops there, rank zero
    prints one line, exit 2 (a rank stopping alone left rank zero with a gloo traceback).
    ``skip``: every rank skips the step; rank zero, whose own loss was finite, would otherwise
    apply the all-reduced NaN gradients and end with NaN weights."""
    env = env_with_module(tmp_path / "poison", "poison_rank", POISON)
    argv = command(
        tiny_data, tmp_path / "run", "trainer=ddp_cpu", "trainer.max_epochs=3",
        f"callbacks.nan_guard.action={action}", "+callbacks.poison._target_=poison_rank.PoisonRank",
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out[-3000:]
    if action == "stop":
        assert done.returncode == 2, out[-3000:]
        errors = [line for line in out.splitlines() if line.startswith("lightspeed: error:")]
        assert len(errors) == 1, errors
        assert "training loss is NaN/inf on another rank at global step 3" in errors[0]
        return
    assert done.returncode == 0, out[-3000:]
    assert out.count("non-finite loss at global step 3: optimizer step skipped") == 2  # 2 ranks
    last = only_run_dir(tmp_path / "run") / "checkpoints" / "last.ckpt"
    weights = torch.load(last, weights_only=True)["state_dict"].values()
    assert all(bool(w.isfinite().all()) for w in weights if w.is_floating_point())
