"""EMA of the weights: the average as defined, validated in the fit, checkpointed as the
weights (the training weights beside them), resumed exactly."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from lightspeed.build import build
from lightspeed.callbacks.ema import EMA
from lightspeed.errors import ConfigError, RunInterrupted
from lightspeed.plan import precheck
from lightspeed.session import run_task

# the tiny data set (500 training images) at batch 50: 10 steps an epoch, no schedule
FAST = [
    "callbacks/ema=on",
    "data.batch_size=50",
    "model.scheduler=null",
    "trainer.precision=32-true",
    "trainer.deterministic=true",
    "callbacks.curves=null",
    "extras.test_after_fit=false",
]


def floats(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the module's floating-point state_dict entries (what the EMA averages)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.allclose(a[k], b[k], rtol=0, atol=1e-4) for k in a)


class Toy(nn.Module):
    """Float parameters, float buffers and an integer buffer (BatchNorm's batch count)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2, dtype=torch.float64)
        self.norm = nn.BatchNorm1d(2, dtype=torch.float64)


def drive(ema: EMA, module: nn.Module, weights: list[float], first_step: int = 1) -> None:
    """Sets every float entry of ``module`` to ``weights[i]`` at optimizer step ``first_step +
    i``, and runs the callback's batch end there, as a fit would."""
    trainer = SimpleNamespace(global_step=first_step - 1, callbacks=[])
    for i, value in enumerate(weights):
        with torch.no_grad():
            for t in floats_by_reference(module):
                t.fill_(value)
        trainer.global_step = first_step + i
        ema.on_train_batch_end(trainer)


def floats_by_reference(module: nn.Module) -> list[torch.Tensor]:
    return [v for v in module.state_dict(keep_vars=True).values() if v.is_floating_point()]


def start(ema: EMA, module: nn.Module, initial: float) -> None:
    with torch.no_grad():
        for t in floats_by_reference(module):
            t.fill_(initial)
    trainer = SimpleNamespace(global_step=0, callbacks=[])
    ema.on_fit_start(trainer, module)
    ema.on_train_start(trainer, module)


def test_average_after_k_updates_is_the_closed_form() -> None:
    """ema_k = d^k w_0 + (1 - d) sum_i d^(k-i) w_i, on every float entry; integer buffers are
    not averaged."""
    decay, w0, ws = 0.8, 5.0, [1.0, -2.0, 3.0, 0.5]
    module, ema = Toy(), EMA(decay=decay)
    start(ema, module, w0)
    drive(ema, module, ws)
    k = len(ws)
    expected = decay**k * w0 + (1 - decay) * sum(decay ** (k - i) * w for i, w in enumerate(ws, 1))
    averaged = ema.averaged_weights()
    assert set(averaged) == {k for k, v in module.state_dict().items() if v.is_floating_point()}
    assert "norm.num_batches_tracked" not in averaged
    for name, value in averaged.items():
        torch.testing.assert_close(value, torch.full_like(value, expected), msg=name)
    assert ema.updates == k


def test_every_n_steps_and_warmup() -> None:
    """every_n_steps=2, warmup_steps=2: step 2 copies the weights, steps 4 and 6 average,
    odd steps and a repeated step (gradient accumulation's micro-batches) do nothing."""
    decay = 0.5
    module, ema = Toy(), EMA(decay=decay, every_n_steps=2, warmup_steps=2)
    start(ema, module, 9.0)
    drive(ema, module, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # steps 1..6
    trainer = SimpleNamespace(global_step=6, callbacks=[])
    ema.on_train_batch_end(trainer)  # step 6 again: no second update
    expected = decay * (decay * 2.0 + (1 - decay) * 4.0) + (1 - decay) * 6.0
    for name, value in ema.averaged_weights().items():
        torch.testing.assert_close(value, torch.full_like(value, expected), msg=name)
    assert ema.updates == 2


def test_a_checkpoint_saved_before_the_batch_end_holds_that_steps_average(tmp_path) -> None:
    """A callback ahead of EMA (GracefulInterrupt) saves at the batch end before EMA's own
    update: the save makes that update first, so the file pairs this step's weights with this
    step's average; the file round-trips through weights_only loading."""
    module, ema = Toy(), EMA(decay=0.5)
    start(ema, module, 0.0)
    drive(ema, module, [2.0])  # step 1 done
    with torch.no_grad():
        for t in floats_by_reference(module):
            t.fill_(4.0)  # step 2's weights, before EMA's batch end
    checkpoint = {"state_dict": module.state_dict()}
    ema.on_save_checkpoint(SimpleNamespace(global_step=2), module, checkpoint)
    torch.save(checkpoint, tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)
    state = loaded["callbacks"]["EMA"]
    assert state["updates"] == 2
    for name, value in state["live"].items():
        torch.testing.assert_close(value, torch.full_like(value, 4.0), msg=name)
        average = loaded["state_dict"][name]  # (0.5 * 0 + 0.5 * 2) * 0.5 + 0.5 * 4
        torch.testing.assert_close(average, torch.full_like(average, 2.5), msg=name)
    # a new callback resumes it: the module gets the training weights, EMA the average
    fresh, resumed = Toy(), EMA(decay=0.5)
    fresh.load_state_dict(loaded["state_dict"])
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), global_step=2, callbacks=[])
    resumed.on_load_checkpoint(trainer, fresh, loaded)
    resumed.on_fit_start(trainer, fresh)
    assert resumed.updates == 2
    assert_same(floats(fresh), {k: torch.full_like(v, 4.0) for k, v in floats(fresh).items()})
    assert_same(resumed.averaged_weights(), ema.averaged_weights())


class Recorder(L.Callback):
    """Runs after EMA: the module's weights and the average at each point of the fit."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema
        self.after_step: list[tuple[dict, dict]] = []  # (live, average) at each batch end
        self.in_validation: list[dict] = []
        self.before_step: list[dict] = []
        self.at_train_end: tuple[dict, dict] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before_step.append(floats(pl_module))

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        average = {k: v.clone() for k, v in self.ema.averaged_weights().items()}
        self.after_step.append((floats(pl_module), average))

    def on_validation_batch_start(self, trainer, pl_module, *args) -> None:
        if trainer.state.fn == "fit":
            self.in_validation.append(floats(pl_module))

    def on_train_end(self, trainer, pl_module) -> None:
        self.at_train_end = (floats(pl_module), dict(self.after_step[-1][1]))


def fit_with_recorder(cfg) -> tuple:
    built = build(cfg)
    ema = next(c for c in built.trainer.callbacks if isinstance(c, EMA))
    recorder = Recorder(ema)
    built.trainer.callbacks.append(recorder)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    return built, recorder


def test_validation_uses_the_average_and_training_goes_on_with_the_live_weights(cfg_factory):
    """Validation sees the average of the step before it; the next step starts from the
    weights training left; after the fit the module holds the average."""
    built, rec = fit_with_recorder(cfg_factory([*FAST, "trainer.max_epochs=2"]))
    assert len(rec.after_step) == 20 and len(rec.in_validation) == 2  # one val batch an epoch
    live, average = rec.after_step[9]  # the first epoch's last step
    assert differ(live, average)  # or the checks below could not tell them apart
    assert_same(rec.in_validation[0], average)
    assert_same(rec.before_step[10], live)
    assert_same(floats(built.module), rec.at_train_end[1])


def test_checkpoint_holds_the_average_and_loads_weights_only(cfg_factory) -> None:
    """last.ckpt: state_dict = the average, the EMA entry = the training weights, plain data;
    a test from it, with the callback on, evaluates the average it holds."""
    cfg = cfg_factory([*FAST, "trainer.max_epochs=1"])
    _, rec = fit_with_recorder(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    live, average = rec.at_train_end
    assert_same({k: checkpoint["state_dict"][k] for k in average}, average)
    assert_same(checkpoint["callbacks"]["EMA"]["live"], live)
    assert checkpoint["callbacks"]["EMA"]["updates"] == 10
    best = next(Path(cfg.paths.output_dir, "checkpoints").glob("best-*.ckpt"))
    assert_same(floats_of(torch.load(best, weights_only=True)["state_dict"]), rec.in_validation[-1])

    tester = build(cfg_factory([*FAST, "task=test"]))
    tester.trainer.test(tester.module, datamodule=tester.datamodule, ckpt_path=str(last))
    assert_same(floats(tester.module), average)


def floats_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


class SignalAt(L.Callback):
    """Sends SIGINT to this process at the end of training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_continues_the_average_exactly(cfg_factory) -> None:
    """2 epochs straight == interrupted mid-epoch (Ctrl-C: GracefulInterrupt saves last.ckpt
    at the batch end, ahead of EMA's own update), then a fit from that file: same average,
    same training weights, same update count. Without the callback, that checkpoint is
    refused in one line (its weights are the average)."""

    def last_of(cfg) -> dict:
        return torch.load(
            Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
        )

    straight = cfg_factory([*FAST, "trainer.max_epochs=2"])
    run_task(straight)
    first = cfg_factory([*FAST, "trainer.max_epochs=2"])
    with pytest.raises(RunInterrupted):
        run_task(first, extra_callbacks=[SignalAt(step=7)])
    assert last_of(first)["global_step"] == 8  # the batch in flight when the signal came
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = cfg_factory([*FAST, "trainer.max_epochs=2", f"ckpt_path={ckpt}"])
    run_task(resumed)
    a, b = last_of(resumed), last_of(straight)
    assert a["global_step"] == b["global_step"] == 20
    assert_same(floats_of(a["state_dict"]), floats_of(b["state_dict"]))
    assert_same(a["callbacks"]["EMA"]["live"], b["callbacks"]["EMA"]["live"])
    assert a["callbacks"]["EMA"]["updates"] == b["callbacks"]["EMA"]["updates"] == 20

    without = [o for o in FAST if o != "callbacks/ema=on"]
    with pytest.raises(ConfigError, match=r"add callbacks/ema=on.*weights_from=") as err:
        run_task(cfg_factory([*without, "trainer.max_epochs=2", f"ckpt_path={ckpt}"]))
    assert "\n" not in str(err.value)


def test_updates_make_no_host_sync(cfg_factory) -> None:
    """The update is one foreach lerp on the device: no .item()/.cpu()/bool() in any step."""
    from test_perf import SyncCounter  # tests/engine is on the path, as for conftest

    every = 50  # the logger's and the NaN guard's reads stay out of these 8 steps
    cfg = cfg_factory(
        [
            *FAST,
            "trainer.max_steps=8",
            "trainer.limit_val_batches=0",
            f"trainer.log_every_n_steps={every}",
            f"callbacks.nan_guard.check_every_n_steps={every}",
            "callbacks.model_checkpoint=null",
        ]
    )
    built = build(cfg)
    ema = next(c for c in built.trainer.callbacks if isinstance(c, EMA))
    counter = SyncCounter(every)
    built.trainer.callbacks.append(counter)  # after EMA: its update falls inside the count
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert ema.updates == 8 and len(counter.per_step) == 8
    assert not any(counter.per_step.values()), counter.per_step


@pytest.mark.parametrize(
    ("override", "named"),
    [("callbacks.ema.decay=1.0", "decay"), ("callbacks.ema.every_n_steps=0", "every_n_steps")],
)
def test_bad_values_are_one_line(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"callbacks\.ema\.{named}") as err:
        precheck(["callbacks/ema=on", override])
    assert "\n" not in str(err.value)
