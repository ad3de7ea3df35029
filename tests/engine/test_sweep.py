"""hparams_search: an Optuna study of fits driven from the entry (lightspeed.sweep).

The slow test runs a real 2-trial study on the tiny data, stops it with SIGTERM while trial 1
trains, and runs the same command again: trial 0 is not run again, trial 1 continues from its
last.ckpt, and the study ends with both.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightspeed import cli

optuna = pytest.importorskip("optuna", reason="the sweep extra: pip install -e '.[sweep]'")

from lightspeed.errors import ConfigError  # noqa: E402
from lightspeed.sweep.pruning import OptunaPruning  # noqa: E402
from lightspeed.sweep.space import distribution  # noqa: E402


def test_search_spaces_in_hydra_sweep_syntax() -> None:
    d = optuna.distributions
    assert distribution("a", "choice(0, 1e-4, mlp)") == d.CategoricalDistribution([0, 1e-4, "mlp"])
    assert distribution("a", "tag(log, interval(1e-3, 1))") == d.FloatDistribution(
        1e-3, 1.0, log=True
    )
    assert distribution("a", "range(8, 64, 8)") == d.IntDistribution(8, 56, step=8)
    assert distribution("a", "tag(int, interval(8, 128))") == d.IntDistribution(8, 128)
    with pytest.raises(ConfigError, match="is not a search space: use choice"):
        distribution("a", "0.1")


def test_pruning_stops_a_trial_behind_the_others() -> None:
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(1, n_warmup_steps=0)
    )
    first = study.ask()
    first.report(0.9, step=0)
    study.tell(first, 0.9)
    second = study.ask()
    import torch

    callback = OptunaPruning(second, monitor="val/acc")
    trainer = SimpleNamespace(
        sanity_checking=False, current_epoch=0, should_stop=False,
        callback_metrics={"val/acc": torch.tensor(0.2)},
    )  # fmt: skip
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and callback.pruned_at == 0
    assert study.trials[1].user_attrs["pruned_at_epoch"] == 0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["trainer=ddp_cpu"], "hparams_search runs its trials in this process, one device each"),
        (["resume=auto"], "hparams_search with resume=auto: each trial is a new fit"),
        (["+hparams_search.params.x=y"], "hparams_search.params: x: y is not a search space"),
    ],
)
def test_sweep_refusals_are_one_line(extra, expected, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["hparams_search=lr_wd", f"paths.root_dir={tmp_path}", *extra])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert expected in err


def results(sweep: Path) -> list[dict]:
    with (sweep / "results.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_interrupted_sweep_restarts_without_running_finished_trials(
    tiny_data: Path, tmp_path: Path
) -> None:
    argv = [
        sys.executable, "-m", "lightspeed", "hparams_search=lr_wd", "hparams_search.n_trials=2",
        "hparams_search.study_name=tiny", "model=mlp", "trainer.max_epochs=3",
        "data.batch_size=20", f"data.data_dir={tiny_data}", "data.val_size=100",
        "callbacks.progress_bar=null", "++trainer.enable_progress_bar=false",
        "callbacks.last_checkpoint.every_n_train_steps=1", "callbacks.last_checkpoint.min_interval_s=0", f"paths.root_dir={tmp_path}",
    ]  # fmt: skip
    sweep = tmp_path / "logs" / "sweeps" / "tiny"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        while not (sweep / "trial_001" / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < end, "trial 1 did not start training"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "sweep interrupted; finished trials are kept" in err
    first = {r["trial"]: r["state"] for r in results(sweep)}
    assert first == {"0": "complete", "1": "running"}
    trial_0 = (sweep / "trial_000" / "summary.json").stat().st_mtime_ns

    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "trial 1 continues from" in log and "resuming from" in log
    assert "trial 0/2:" not in log  # not run again
    assert (sweep / "trial_000" / "summary.json").stat().st_mtime_ns == trial_0
    rows = results(sweep)
    assert [
        (r["trial"], r["state"], r["epochs"]) for r in sorted(rows, key=lambda r: r["trial"])
    ] == [
        ("0", "complete", "3"),
        ("1", "complete", "3"),
    ]
    assert "study tiny: val/acc (maximize)" in done.stdout and "best: trial" in done.stdout
    assert sorted(p.name for p in sweep.glob("trial_*")) == ["trial_000", "trial_001"]


def test_a_study_continues_only_with_its_own_command(tmp_path: Path) -> None:
    from lightspeed.sweep import OptunaSearch

    search = OptunaSearch("s", {"model.optimizer.lr": "interval(0.01, 0.1)"})
    search.open_study(tmp_path, ["model=mlp"])
    assert search.open_study(tmp_path, ["model=mlp"]).user_attrs["command"] == ["model=mlp"]
    with pytest.raises(ConfigError, match=r"was started with other settings \(command: "):
        search.open_study(tmp_path, ["model=cnn_small"])


def test_a_continued_study_samples_new_parameters(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 trials, then the same command to 4: the sampler, made again with the same seed, drew
    trials 2 and 3 with exactly the parameters of trials 0 and 1. The fits are stood in for
    (a trial's value is its learning rate): only the sampling is under test."""
    from lightspeed.sweep import OptunaSearch

    def fit(self, study, trial, command, sweep_dir, resume) -> None:
        study.tell(trial, trial.params["model.optimizer.lr"])

    monkeypatch.setattr(OptunaSearch, "run_trial", fit)
    argv = ["hparams_search=lr_wd", "hparams_search.study_name=tiny", "model=mlp",
            f"data.data_dir={tiny_data}", f"paths.root_dir={tmp_path}"]  # fmt: skip
    for n_trials in (2, 4):
        with pytest.raises(SystemExit) as stop:
            cli.main([*argv, f"hparams_search.n_trials={n_trials}"])
        assert stop.value.code == 0
    rows = results(tmp_path / "logs" / "sweeps" / "tiny")
    assert sorted(r["trial"] for r in rows) == ["0", "1", "2", "3"]
    params = [(r["model.optimizer.lr"], r["model.optimizer.weight_decay"]) for r in rows]
    assert len(set(params)) == 4, params


def test_an_interrupted_study_continues_with_new_points(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2+2: a 2-trial study stopped by a signal in its second trial (no checkpoint yet), then
    the same command with n_trials=4: the cut trial runs again with its own parameters, and
    every trial drawn after it has parameters no finished trial had."""
    from lightspeed.errors import RunInterrupted
    from lightspeed.sweep import OptunaSearch

    calls = []

    def fit(self, study, trial, command, sweep_dir, resume) -> None:
        calls.append(trial.number)
        if len(calls) == 2:  # the first command's second trial: SIGTERM, before any save
            raise RunInterrupted("interrupted", exit_code=128 + signal.SIGTERM)
        study.tell(trial, trial.params["model.optimizer.lr"])

    monkeypatch.setattr(OptunaSearch, "run_trial", fit)
    argv = ["hparams_search=lr_wd", "hparams_search.study_name=cut", "model=mlp",
            f"data.data_dir={tiny_data}", f"paths.root_dir={tmp_path}"]  # fmt: skip
    for n_trials, code in ((2, 128 + signal.SIGTERM), (4, 0)):
        with pytest.raises(SystemExit) as stop:
            cli.main([*argv, f"hparams_search.n_trials={n_trials}"])
        assert stop.value.code == code
    rows = {r["trial"]: r for r in results(tmp_path / "logs" / "sweeps" / "cut")}
    done = [r for r in rows.values() if r["state"] == "complete"]
    assert len(done) == 4, rows
    cut = (rows["1"]["model.optimizer.lr"], rows["1"]["model.optimizer.weight_decay"])
    params = [(r["model.optimizer.lr"], r["model.optimizer.weight_decay"]) for r in done]
    assert params.count(cut) == 1  # the cut trial's point, run again once
    assert len(set(params)) == 4, params
