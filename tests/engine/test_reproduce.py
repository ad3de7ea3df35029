"""scripts/reproduce.py: a finished tiny fit rerun from its own overrides in a fresh process
reproduces; a saved metric edited afterwards, or a changed machine, is named in one line."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import quiet_tiny_run

from lightspeed.run.records import differing_keys, flatten, read_run

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """The run dir of ``lightspeed <overrides>`` (in-process): a tiny fit of a few steps."""
    from lightspeed import cli

    root = tmp_path_factory.mktemp("reproduce")
    argv = [
        *quiet_tiny_run(tiny_data, root),
        "model=mlp",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "logger=csv",
        "callbacks.curves=null",
    ]
    with contextlib.suppress(SystemExit):
        cli.main(argv)
    (run,) = (root / "logs" / "fit").iterdir()
    assert (run / "summary.json").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    return run


@pytest.fixture(scope="module")
def reproduced(fitted: Path) -> tuple[int, list[str], Path]:
    """``scripts/reproduce.py <run>``: its exit status, its lines, the rerun's dir."""
    new = fitted.parent.parent / "rerun"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the rerun's own output goes to the process's fd
        code = reproduce.main([str(fitted), "--out", str(new)])
    return code, out.getvalue().splitlines(), new


def saved_copy(run: Path, tmp_path: Path) -> Path:
    """The files of ``run`` that reproduce.py reads, copied to be edited."""
    copy = tmp_path / "saved"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard", "csv"))
    return copy


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_finished_run_reproduces_bit_for_bit(fitted: Path, reproduced) -> None:
    code, lines, new = reproduced
    assert code == 0, lines
    assert lines[-1].startswith("reproduce: every metric reproduces within 0.0001 (best ")
    # same machine, same software: nothing differs, not even in the last bit
    assert not [line for line in lines if "differ" in line], lines
    saved, again = read_run(fitted), read_run(new)
    assert again.metrics == saved.metrics and len(saved.metrics) >= 2
    assert again.objective == saved.objective and saved.objective["best"] is not None
    names = ", ".join([f"best {saved.objective['metric']}", *saved.metrics])
    assert f"({names})" in lines[-1]
    # it ran from the run's own overrides, in a run dir of its own
    overrides = [(run / ".hydra" / "overrides.yaml").read_text() for run in (fitted, new)]
    assert overrides[0] == overrides[1]
    assert again.summary["run_dir"] == str(new)
    from lightspeed.build import git_commit

    assert reproduce.commit(fitted) == reproduce.commit(new) == git_commit()  # from checkpoints


def test_an_edited_metric_fails_with_one_line_naming_it(
    fitted: Path, reproduced, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _, _, new = reproduced
    saved = saved_copy(fitted, tmp_path)
    summary = json.loads((saved / "summary.json").read_text())
    metric = list(summary["metrics"])[-1]
    objective = f"best {summary['objective']['metric']}"

    def check(*args: str) -> tuple[int, str]:
        code = reproduce.main([str(saved), "--rerun", str(new), *args])
        return code, capsys.readouterr().err

    edit_json(
        saved / "summary.json", lambda s: s["metrics"].update({metric: s["metrics"][metric] + 0.01})
    )
    code, err = check()
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"reproduce: {metric} does not reproduce: saved "), err
    assert check("--tolerance", "0.02") == (0, "")  # within a looser tolerance
    edit_json(
        saved / "summary.json",
        lambda s: s["metrics"].update({metric: s["metrics"][metric] - 0.01 + 5e-5}),
    )
    assert check() == (0, "")  # within the default 1e-4
    edit_json(
        saved / "summary.json", lambda s: s["objective"].update(best=s["objective"]["best"] - 0.5)
    )
    code, err = check()
    assert code == 1 and err.startswith(f"reproduce: {objective} does not reproduce"), err


def test_another_machine_software_or_config_is_said_in_one_line_each(
    fitted: Path,
    reproduced,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, new = reproduced
    saved = saved_copy(fitted, tmp_path)
    hardware = json.loads((new / "hardware.json").read_text())
    units = {True: "with bf16 units (avx512_bf16/AMX)", False: "without bf16 units (AVX2)"}

    def older(h: dict) -> None:
        h["versions"]["torch"] = "2.0.0"
        h["cpu"], h["cpu_bf16"] = "Other CPU", not h["cpu_bf16"]

    edit_json(saved / "hardware.json", older)
    config = (saved / "config.yaml").read_text()
    (saved / "config.yaml").write_text(config.replace("\n    lr: 0.001\n", "\n    lr: 0.5\n"))
    commit = reproduce.commit
    monkeypatch.setattr(reproduce, "commit", lambda run: "0ld" if run == saved else commit(run))
    assert reproduce.main([str(saved), "--rerun", str(new)]) == 0  # the metrics still agree
    lines = capsys.readouterr().out.splitlines()
    said = [line for line in lines if "differ" in line]
    assert said == [
        f"reproduce: commit differs: saved 0ld, rerun {commit(new)}",
        f"reproduce: CPU differs: saved Other CPU {units[not hardware['cpu_bf16']]}, "
        f"rerun {hardware['cpu']} {units[hardware['cpu_bf16']]}",
        f"reproduce: package versions differ: torch 2.0.0 → {hardware['versions']['torch']}",
        "reproduce: config differs: model.optimizer.lr 0.5 → 0.001",
    ], lines


def test_what_cannot_be_rerun_is_one_line_and_status_2(
    fitted: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    assert reproduce.main([str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "is not a finished run: it has no config.yaml" in err, err
    assert reproduce.main([str(fitted.parent)]) == 2  # logs/fit/: the runs below it
    err = capfd.readouterr().err
    assert (
        err
        == f"reproduce: {fitted.parent} is not a run dir but holds 1 below it; give one, e.g. {fitted}\n"
    )
    saved = saved_copy(fitted, tmp_path)
    overrides = saved / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- trainer.max_epocs=1\n")  # a typo: refused
    assert reproduce.main([str(saved), "--out", str(tmp_path / "rerun")]) == 2
    err = capfd.readouterr().err.strip().splitlines()  # the rerun's error, then this one
    assert "trainer.max_epocs" in err[-2] and err[-1].startswith(
        "reproduce: the rerun failed (exit status 2"
    )
    assert not (tmp_path / "rerun").exists()


def test_a_run_without_overrides_is_rerun_from_its_config(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run made by a script (no .hydra/): its config.yaml, as a config dir, composes to the
    same config, with its own paths in the new run dir."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from lightspeed.plan import compose_for_run

    saved = read_run(fitted)
    configs = reproduce.config_dir_of(saved, tmp_path)
    monkeypatch.setenv("LIGHTSPEED_CONFIG_DIR", str(configs))
    try:
        cfg = compose_for_run([], tmp_path / "new")
    finally:
        HydraConfig.instance().cfg = None
    again = flatten(OmegaConf.to_container(cfg, resolve=True))
    assert again["trainer.default_root_dir"] == str(tmp_path / "new")
    assert again["callbacks.model_checkpoint.dirpath"] == str(tmp_path / "new" / "checkpoints")
    assert differing_keys([saved.config, again]) == []
    assert yaml.safe_load((configs / "train.yaml").read_text())["defaults"][0] == "run_schema"


@pytest.mark.slow
def test_a_run_without_overrides_reproduces(fitted: Path, tmp_path: Path) -> None:
    saved = saved_copy(fitted, tmp_path)
    shutil.rmtree(saved / ".hydra")
    assert reproduce.main([str(saved), "--out", str(tmp_path / "rerun")]) == 0
    assert read_run(tmp_path / "rerun").metrics == read_run(fitted).metrics
