"""One plan per run: a fit, and a resumed fit, compose the config once before Hydra and read
their checkpoint's data once; the job carries the plan out."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import quiet_tiny_run

from lightspeed import cli, plan
from lightspeed.run import checkpoint, resume


def counted(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts compositions through the plan and plain reads of checkpoint files, by name."""
    counts: Counter = Counter()
    compose, read_plain = plan._hydra_compose, checkpoint.read_plain

    def counting_compose(*args, **kwargs):
        counts["compose"] += 1
        return compose(*args, **kwargs)

    def counting_read(path, *args, **kwargs):
        counts[f"read {Path(path).name}"] += 1
        return read_plain(path, *args, **kwargs)

    monkeypatch.setattr(plan, "_hydra_compose", counting_compose)
    for module in (checkpoint, resume):  # resume.start_point reads through its own name
        monkeypatch.setattr(module, "read_plain", counting_read)
    return counts


def run(argv: list[str]) -> None:
    try:
        cli.main(argv)
    except SystemExit as e:
        assert not e.code, e.code


def test_compose_once_and_read_the_checkpoint_once(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [
        *quiet_tiny_run(tiny_data, tmp_path),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "model=mlp",
        "extras.test_after_fit=false",
    ]
    counts = counted(monkeypatch)
    run(argv)
    assert counts == Counter(compose=1), counts  # a plain fit reads no checkpoint

    (run_dir,) = (tmp_path / "logs" / "fit").iterdir()
    (run_dir / "summary.json").unlink()  # as if the fit had been stopped after its last save
    counts.clear()
    run([*argv, f"resume={run_dir}"])
    assert counts == Counter({"compose": 1, "read last.ckpt": 1}), counts
    assert (run_dir / "summary.json").is_file()  # the resumed job ran, in the run's own dir
    assert len(list((run_dir / ".hydra").glob("resume-*"))) == 1


def test_group_options_and_keys_are_checked_from_configs_and_schema() -> None:
    """Errors built from the configs/ listing and the signatures, not Hydra's wording."""
    with pytest.raises(plan.ConfigError, match=r"model=cnn_smal is not an option of 'model': "
                                               r"did you mean 'cnn_small'\?"):  # fmt: skip
        plan.make_plan(["model=cnn_smal"])
    with pytest.raises(plan.ConfigError, match=r"unknown key 'model.optimizer.moment': did you "
                                               r"mean 'momentum'\?"):  # fmt: skip
        plan.make_plan(["model.optimizer.moment=0.8"])
    with pytest.raises(plan.ConfigError, match=r"unknown key 'perf.chanels_last': did you mean "
                                               r"'channels_last'\?"):  # fmt: skip
        plan.make_plan(["perf.chanels_last=false"])
    # a parameter the YAML leaves out is a key too, applied as ++key=value
    assert plan.declare_keys(["model.optimizer.dampening=0.1", "perf.compile=true"]) == [
        "++model.optimizer.dampening=0.1",
        "perf.compile=true",
    ]
    assert plan.make_plan(["model.optimizer.dampening=0"]).cfg.model.optimizer.dampening == 0
    # a value torch refuses (checked at the build: the plan stays torch-free) names every key
    # torch's message names
    from lightspeed.build import check_optimization

    refused = plan.make_plan(["model.optimizer.dampening=0.1"]).cfg.model
    with pytest.raises(plan.ConfigError, match=r"^model.optimizer.momentum=0.9, model.optimizer."
                                               r"dampening=0.1: torch.optim.SGD refuses them"):  # fmt: skip
        check_optimization(refused)


def test_runtime_import_leaves_the_collector_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job loads torch and Lightning with the collector off, then turns it back on, also
    when the import fails."""
    import gc
    import sys

    objective_value, run_task = cli._runtime()
    assert callable(run_task) and callable(objective_value) and gc.isenabled()
    monkeypatch.setitem(sys.modules, "lightspeed.session", None)  # the import now fails
    with pytest.raises(ImportError):
        cli._runtime()
    assert gc.isenabled()


def hydra_files(run_dir: Path) -> dict:
    """The run files Hydra writes (``.hydra/``), the run dir's path made neutral."""
    import yaml

    files = ("config.yaml", "hydra.yaml", "overrides.yaml")
    text = {f: (run_dir / ".hydra" / f).read_text().replace(str(run_dir), "X") for f in files}
    return {f: yaml.safe_load(t) for f, t in text.items()}


def test_a_planned_run_is_composed_once_with_the_files_hydra_main_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hydra.main composes a run's config twice (first only to read ``hydra.mode``) after the
    plan's compose; a planned run is composed once in all, and Hydra writes the same run files
    and runs the job in the same mode. A config that asks for a multirun is run by hydra.main
    as before."""
    from hydra._internal.hydra import Hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    composed: Counter = Counter()
    compose_config = Hydra.compose_config

    def counting(self, *args, **kwargs):
        composed[kwargs.get("run_mode")] += 1
        return compose_config(self, *args, **kwargs)

    monkeypatch.setattr(Hydra, "compose_config", counting)
    modes: list = []
    monkeypatch.setattr(cli, "_job", lambda cfg, plan: modes.append(HydraConfig.get().mode))
    argv = [f"paths.log_dir={tmp_path / 'logs'}", "model=mlp", "trainer.max_epochs=2"]

    run([*argv, f"hydra.run.dir={tmp_path / 'planned'}"])
    assert composed == Counter({RunMode.RUN: 1}), composed  # the plan's, handed to the run
    composed.clear()
    with monkeypatch.context() as m:  # the same run through hydra.main
        m.setattr(cli, "_hydra_run", lambda job, composed: False)
        run([*argv, f"hydra.run.dir={tmp_path / 'main'}"])
    assert composed == Counter({RunMode.RUN: 2, RunMode.MULTIRUN: 1}), composed
    assert modes == [RunMode.RUN, RunMode.RUN]
    planned = hydra_files(tmp_path / "planned")
    assert planned == hydra_files(tmp_path / "main")
    assert planned["hydra.yaml"]["hydra"]["overrides"]["hydra"][-1] == "hydra.mode=RUN"

    modes.clear()
    run([*argv, "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path / 'multirun'}"])
    assert modes == [RunMode.MULTIRUN]
    assert (tmp_path / "multirun" / "0" / ".hydra" / "config.yaml").is_file()

    composed.clear()  # a Hydra without one of the internal steps: hydra.main runs the job
    monkeypatch.setitem(sys.modules, "hydra._internal.callbacks", None)
    run([*argv, f"hydra.run.dir={tmp_path / 'fallback'}"])
    assert composed == Counter({RunMode.RUN: 2, RunMode.MULTIRUN: 1}), composed
    assert hydra_files(tmp_path / "fallback") == planned
