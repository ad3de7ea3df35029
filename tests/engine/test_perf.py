"""Performance knobs: no hidden host syncs, compiled checkpoints, speed monitor, hardware report."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from lightspeed.build import build, resolve_precision
from lightspeed.session import run_task

# Tensor methods that force a device→host copy (a sync on a GPU) when called on a tensor.
SYNC_METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


class SyncCounter(L.Callback):
    """Counts sync-forcing tensor calls made between the start and end of each training batch."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.per_step: dict[int, list[str]] = {}
        self._originals = {}

    def _patch(self, step: int) -> None:
        calls = self.per_step.setdefault(step, [])
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def counted(t, *a, _name=name, _orig=original, **k):
                calls.append(_name)
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)

    def _unpatch(self) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._patch(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._unpatch()

    def on_exception(self, trainer, pl_module, exception):
        self._unpatch()


def test_no_host_sync_between_log_steps(cfg_factory):
    """Training steps make no .item()/.cpu()/bool() calls except on the logging interval."""
    log_every = 5
    cfg = cfg_factory(
        [
            "trainer.max_steps=12",
            "trainer.limit_val_batches=0",
            f"trainer.log_every_n_steps={log_every}",
            "callbacks.model_checkpoint=null",
            "data.batch_size=32",
            # the NaN guard reads the loss every step only on the CPU, where that is free; on a
            # GPU it reads a device-side flag on the logging interval: test that behaviour here
            f"callbacks.nan_guard.check_every_n_steps={log_every}",
        ]
    )
    built = build(cfg)
    counter = SyncCounter(log_every)
    built.trainer.callbacks.append(counter)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert len(counter.per_step) == 12
    # The logger converts tensors on its interval; every other step must be sync-free.
    quiet = {s: c for s, c in counter.per_step.items() if (s + 1) % log_every != 0}
    offenders = {s: c for s, c in quiet.items() if c}
    assert not offenders, f"host syncs in training steps: {offenders}"


def test_sync_counter_catches_an_item_call(cfg_factory):
    """The counter itself works: a module that calls .item() each step is caught."""
    cfg = cfg_factory(
        ["trainer.max_steps=3", "trainer.limit_val_batches=0", "callbacks.model_checkpoint=null"]
    )
    built = build(cfg)
    original = built.module.training_step

    def leaky_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        loss.item()
        return loss

    built.module.training_step = leaky_step
    counter = SyncCounter(log_every=50)
    built.trainer.callbacks.append(counter)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert all("item" in calls for calls in counter.per_step.values())


def test_compiled_checkpoint_loads_uncompiled_and_back(cfg_factory, tmp_path: Path):
    """perf.compile keeps plain state_dict keys: weights move between compiled and eager modules."""
    compiled = build(cfg_factory(["perf.compile=true"])).module
    eager = build(cfg_factory(["perf.compile=false", "seed=7"])).module
    keys = list(compiled.state_dict())
    assert keys and not any("_orig_mod" in k for k in keys)
    assert keys == list(eager.state_dict())
    path = tmp_path / "compiled.pt"
    torch.save(compiled.state_dict(), path)
    eager.load_state_dict(torch.load(path, weights_only=True))
    for k, v in compiled.state_dict().items():
        assert torch.equal(v, eager.state_dict()[k]), k
    # and back: eager weights into a compiled module
    with torch.no_grad():
        for p in eager.parameters():
            p.add_(1.0)
    compiled.load_state_dict(eager.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(compiled.state_dict().values(), eager.state_dict().values(), strict=True)
    )


def test_speed_monitor_and_hardware_report_in_run_dir(cfg_factory):
    cfg = cfg_factory(
        ["trainer.max_epochs=1", "data.batch_size=32", "callbacks.speed.warmup_steps=2"]
    )
    summary = run_task(cfg)
    run_dir = Path(cfg.paths.output_dir)
    for key in ("samples_per_s", "step_ms", "time_to_first_step_s"):
        assert summary[key] > 0, key
    assert 0 <= summary["data_wait_share"] < 1
    assert "cpu_peak_rss_mb" in summary or "gpu_peak_mem_mb" in summary
    hw = json.loads((run_dir / "hardware.json").read_text())
    assert hw["cpu_threads"] >= 1 and torch.__version__.startswith(hw["versions"]["torch"])
    assert hw["precision"] == summary["precision"]


def test_precision_auto_resolves_per_device():
    from lightspeed import hardware

    expected = "bf16-mixed" if hardware.cpu_has_bf16() else "32-true"
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


@pytest.mark.slow
def test_profiler_debug_config_writes_a_trace(cfg_factory):
    cfg = cfg_factory(["debug=profiler", "trainer.limit_train_batches=12", "data.batch_size=16"])
    run_task(cfg)
    traces = list(Path(cfg.paths.output_dir).rglob("*.pt.trace.json"))
    assert traces, "the profiler wrote no trace"


def test_default_profiler_hands_out_one_shared_no_op_context(cfg_factory):
    """The Trainer enters profiler.profile() for every hook of every callback: by default that
    costs nothing; a profiler the user asks for (trainer.profiler) replaces it."""
    from lightning.pytorch.profilers import SimpleProfiler

    from lightspeed.build import NoProfiler

    profiler = build(cfg_factory(["trainer.max_steps=1"])).trainer.profiler
    assert isinstance(profiler, NoProfiler)
    assert profiler.profile("a") is profiler.profile("b")
    with profiler.profile("[Callback]x.on_train_batch_end"):
        pass
    asked = build(cfg_factory(["trainer.max_steps=1", "++trainer.profiler=simple"]))
    assert isinstance(asked.trainer.profiler, SimpleProfiler)


def test_progress_bar_takes_a_training_batch_only_when_it_draws(cfg_factory, monkeypatch):
    """refresh_rate=1 and a clock that moves 0.3 s a batch: the bar takes batches 0, 4 and 8
    (a draw is due) and the epoch's last one (9); the batches in between cost one clock read."""
    from lightning.pytorch.callbacks import RichProgressBar as LightningBar

    from lightspeed.callbacks import progress

    clock = iter(0.3 * i for i in range(1, 1000))
    monkeypatch.setattr(progress, "monotonic", lambda: next(clock))
    taken: list[int] = []
    original = LightningBar.on_train_batch_end

    def spy(self, trainer, pl_module, outputs, batch, batch_idx):
        taken.append(batch_idx)
        original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(LightningBar, "on_train_batch_end", spy)
    cfg = cfg_factory(
        [
            "++callbacks.progress_bar={_target_: lightspeed.callbacks.progress.RichProgressBar,"
            " refresh_rate: 1}",
            "trainer.enable_progress_bar=true",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=10",
            "trainer.limit_val_batches=0",
            "data.batch_size=20",
        ]
    )
    built = build(cfg)
    assert isinstance(built.trainer.progress_bar_callback, progress.RichProgressBar)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert taken == [0, 4, 8, 9]
