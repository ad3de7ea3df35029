"""One plan per run: a fit, and a resumed fit, compose the config once before Hydra and read
their checkpoint's data once; the job carries the plan out."""

from __future__ import annotations

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
