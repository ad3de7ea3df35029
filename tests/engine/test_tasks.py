"""task=predict writes predictions.csv that agrees with task=test; task=export writes ONNX."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightspeed.session import run_task


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A short fit on the tiny data: its best checkpoint (shared by the module's tests)."""
    from conftest import VAL_SIZE

    from lightspeed.plan import compose_for_run

    out = tmp_path_factory.mktemp("fit")
    cfg = compose_for_run(
        [
            "trainer=cpu",
            "trainer.max_epochs=3",
            "data.batch_size=50",  # 10 steps an epoch: the net learns the tiny data
            "++callbacks.progress_bar=null",
            "trainer.enable_progress_bar=false",
            "extras.print_config=false",
            f"data.data_dir={tiny_data}",
            f"data.val_size={VAL_SIZE}",
        ],
        out,
    )
    summary = run_task(cfg)
    assert summary["objective"]["best"] > 0.5
    return Path(summary["best_checkpoint"])


def test_predict_writes_csv_whose_accuracy_equals_test(fitted: Path, cfg_factory) -> None:
    from conftest import TEST_SIZE

    test = run_task(cfg_factory(["task=test", f"ckpt_path={fitted}"]))
    summary = run_task(cfg_factory(["task=predict", f"ckpt_path={fitted}", "model.top_k=3"]))
    rows = list(csv.DictReader(Path(summary["predictions"]).read_text().splitlines()))
    assert len(rows) == TEST_SIZE == summary["predict_rows"]
    assert list(rows[0]) == [
        "sample", "label", "predicted", "probability",
        "predicted_2", "probability_2", "predicted_3", "probability_3",
    ]  # fmt: skip
    correct = sum(r["label"] == r["predicted"] for r in rows)
    assert summary["metrics"]["predict/acc"] == pytest.approx(correct / len(rows))
    assert summary["metrics"]["predict/acc"] == pytest.approx(test["metrics"]["test/acc"], abs=1e-9)
    for r in rows[:20]:  # best first, probabilities in [0, 1]
        p = [float(r["probability"]), float(r["probability_2"]), float(r["probability_3"])]
        assert p == sorted(p, reverse=True) and 0 <= p[-1] <= p[0] <= 1


def test_predict_on_image_folder_rows_are_file_paths(cfg_factory, tiny_images: Path) -> None:
    fit = run_task(cfg_factory(["data=image_folder", "trainer.max_epochs=1", "trainer=cpu"]))
    summary = run_task(
        cfg_factory(["data=image_folder", "task=predict", f"ckpt_path={fit['last_checkpoint']}"])
    )
    rows = list(csv.DictReader(Path(summary["predictions"]).read_text().splitlines()))
    assert rows and all(Path(r["sample"]).is_file() for r in rows)
    assert all(Path(r["sample"]).parent.name == r["label"] for r in rows)


def test_export_writes_onnx_matching_torch(fitted: Path, cfg_factory) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    summary = run_task(cfg_factory(["task=export", f"ckpt_path={fitted}"]))
    assert Path(summary["onnx"]).is_file()
    assert summary["onnx_max_abs_diff"] <= 1e-4
    import json

    import onnx

    meta = {p.key: p.value for p in onnx.load(summary["onnx"]).metadata_props}
    assert len(json.loads(meta["class_names"])) == 10  # what the model's export_metadata says
    assert meta["input"].startswith("float32 [N, C, H, W]: (pixel / 255 - mean) / std")


def test_export_without_its_extra_leaves_no_run_dir(
    fitted: Path, tiny_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """One line naming the install, and the run dir Hydra made is taken back."""
    import builtins

    from conftest import quiet_tiny_run

    from lightspeed import cli

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxscript"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(SystemExit) as stop:
        cli.main([*quiet_tiny_run(tiny_data, tmp_path), "task=export", f"ckpt_path={fitted}"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "task=export needs onnx and onnxscript" in line, line
    assert not list((tmp_path / "logs" / "export").glob("*")), "a refused export left its run dir"


def test_export_needs_weights() -> None:
    from lightspeed.errors import ConfigError
    from lightspeed.plan import precheck

    with pytest.raises(ConfigError, match="task=export needs the weights"):
        precheck(["task=export"])


@pytest.mark.parametrize("task", ["predict", "export"])
def test_predict_and_export_refuse_several_processes(task: str, cfg_factory) -> None:
    """Under DDP each rank would predict its own shard and write the same file."""
    from lightspeed.build import check_devices
    from lightspeed.errors import ConfigError

    check_devices(cfg_factory([f"task={task}", "trainer=cpu"]))  # one process: accepted
    with pytest.raises(ConfigError) as refused:
        check_devices(cfg_factory([f"task={task}", "trainer=ddp_cpu"]))
    assert str(refused.value) == (
        f"task={task} runs in one process; trainer.devices=2 x trainer.num_nodes=1 would start 2: "
        "add trainer.devices=1 trainer.num_nodes=1"
    )
    check_devices(cfg_factory(["task=test", "trainer=ddp_cpu"]))  # test and validate shard
