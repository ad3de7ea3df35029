"""SLURM without a cluster: the launcher config, the sbatch file it makes, and the time-limit
path (signal → last.ckpt → requeue → the requeued job continues the same run dir), simulated
with SLURM's environment variables, the signal, and a stand-in ``scontrol`` on ``PATH``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightspeed.plan import compose
from lightspeed.run import distributed


def fake_tools(folder: Path, *names: str) -> Path:
    """Executables that append their arguments to ``<folder>/calls.log`` and succeed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        tool = folder / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{folder}/calls.log"\n')
        tool.chmod(0o755)
    return folder


class Submitted(Exception):
    """Raised instead of submitting: carries the sbatch file the launcher would submit."""


def test_slurm_launcher_config_composes_into_an_sbatch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hydra

    submitit = pytest.importorskip("submitit", reason="the slurm extra: pip install -e '.[slurm]'")
    tools = fake_tools(tmp_path / "bin", "srun")  # submitit looks for srun before anything
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")

    def capture(self, fn, *args):
        raise Submitted(self._executor._make_submission_file_text("python -m submitit", "0"))

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    cfg = compose(
        [
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=multinode",
            "trainer.num_nodes=2", "trainer.devices=4", f"paths.root_dir={tmp_path}",
        ],
        return_hydra_config=True,
    )  # fmt: skip
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted) as sbatch:
        launcher.launch([["trainer.max_epochs=1"]], initial_job_idx=0)
    lines = str(sbatch.value).splitlines()
    for flag in (
        "--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4",
        "--time=240", "--signal=USR1@120", "--requeue",
    ):  # fmt: skip
        assert f"#SBATCH {flag}" in lines, (flag, lines)
    assert (tmp_path / "logs" / "fit" / "multiruns").is_dir()  # the sweep dir, not a run per rank


SLURM_JOB = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "lightspeed", "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}  # fmt: skip


def test_requeued_multirun_job_continues_its_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that submitit runs again after a requeue gets the same job dir: it resumes there,
    and a DDP launch inside it re-runs this job's overrides, not the sweep's command."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    job_dir = tmp_path / "multiruns" / "0"
    (job_dir / "checkpoints").mkdir(parents=True)
    (job_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    cfg = compose(["model.optimizer.lr=0.1"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.overrides.task = ["model.optimizer.lr=0.1"]
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(sys, "argv", ["lightspeed", "-m", "model.optimizer.lr=0.1,0.2"])
    try:
        for key, value in {**SLURM_JOB, "SLURM_RESTART_COUNT": "1"}.items():
            monkeypatch.setenv(key, value)
        distributed.prepare_job(cfg)
        assert cfg.resume == str(job_dir)
        assert sys.argv == ["lightspeed", "model.optimizer.lr=0.1"]
        assert HydraConfig.get().run.dir == str(job_dir)
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_time_limit_signal_requeues_and_the_requeued_job_resumes(
    tiny_data: Path, tmp_path: Path
) -> None:
    """USR1 (``sbatch --signal=USR1@120``) mid-epoch: last.ckpt, ``scontrol requeue 4242``, exit
    138; the requeued job (same command, SLURM_RESTART_COUNT=1) finishes the same run dir."""
    tools = fake_tools(tmp_path / "bin", "scontrol")
    env = {**os.environ, **SLURM_JOB, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    argv = [
        sys.executable, "-m", "lightspeed", f"data.data_dir={tiny_data}", "data.val_size=100",
        "data.download=false", "callbacks.progress_bar=null", "extras.print_config=false",
        "++trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "data.batch_size=20", "trainer.max_epochs=3", "model=mlp",
        "callbacks.last_checkpoint.every_n_train_steps=1", "callbacks.last_checkpoint.min_interval_s=0", f"paths.root_dir={tmp_path}",
    ]  # fmt: skip
    run_dir = tmp_path / "logs" / "fit" / "slurm-4242"  # named after the job: found again
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 180
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < end, "no last.ckpt after 180 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)
        err = proc.communicate(timeout=120)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "interrupted by SIGUSR1 mid-epoch" in err
    assert "lightspeed: requeued SLURM job 4242" in err
    assert (tools / "calls.log").read_text().split() == ["scontrol", "requeue", "4242"]
    assert not (run_dir / "summary.json").exists()

    requeued = {**env, "SLURM_RESTART_COUNT": "1"}
    done = subprocess.run(argv, env=requeued, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout + done.stderr
    assert [p.name for p in (tmp_path / "logs" / "fit").iterdir()] == ["slurm-4242"]
    assert (run_dir / "summary.json").is_file() and (run_dir / "config.resume1.yaml").is_file()


def test_one_signal_path_under_slurm(cfg_factory, monkeypatch) -> None:
    """In a SLURM batch job Lightning's own USR1 handler (auto-requeue) is off: GracefulInterrupt
    saves last.ckpt and the entry requeues the job, and two handlers of one signal would race."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from lightspeed.build import build

    for key, value in {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    assert SLURMEnvironment.detect()
    trainer = build(cfg_factory(["model=mlp"])).trainer
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.delenv("SLURM_NTASKS")
    trainer = build(cfg_factory(["model=mlp"])).trainer
    assert not isinstance(trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
