"""scripts/measure.py and scripts/bench.py: the shared quick fit, results files, a tiny bench."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    """Imports ``scripts/<name>.py`` under its own name, as ``python scripts/x.py`` lets its
    sibling scripts import it (load ``measure`` first: the others import it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


measure = load_script("measure")
bench = load_script("bench")


def tiny(tiny_data: Path, tmp_path: Path) -> list[str]:
    """Overrides that point the default data at the tiny IDX set."""
    return [
        f"data.data_dir={tiny_data}",
        "data.download=false",
        "data.val_size=100",
        f"paths.root_dir={tmp_path}",
    ]


def test_results_go_to_a_new_file_unless_recorded(tmp_path: Path) -> None:
    record = tmp_path / "bench_cpu.json"
    record.write_text("{}")
    path = measure.write_results({"a": 1}, "# a\n", "bench_cpu", record=False, out_dir=tmp_path)
    assert path.name.startswith("bench_cpu_2") and record.read_text() == "{}"
    assert json.loads(path.with_suffix(".json").read_text()) == {"a": 1}
    assert path.with_suffix(".md").read_text() == "# a\n"
    measure.write_results({"a": 2}, "# a\n", "bench_cpu", record=True, out_dir=tmp_path)
    assert json.loads(record.read_text()) == {"a": 2}


def test_quick_fit_times_the_batches_asked_for(tiny_data: Path, tmp_path: Path) -> None:
    summary = measure.quick_fit(
        [*tiny(tiny_data, tmp_path), "data.batch_size=16", "callbacks.speed.warmup_steps=1"],
        batches=4,
        out_dir=tmp_path / "fit",
    )
    assert summary["batches"] == 4 and summary["fit_wall_s"] > 0
    assert summary["samples_per_s"] > 0 and 0 <= summary["data_wait_share"] < 1


def test_tiny_bench_writes_a_dated_result(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "results"
    argv = ["bench.py", "--steps", "6", "--warmup", "2", "--repeats", "1", "--startup", "0"]
    argv += ["--compare-dataloader", "--out", str(out), "--", *tiny(tiny_data, tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "data.batch_size=16"])
    assert bench.main() == 0
    (written,) = out.glob("bench_*.json")
    result = json.loads(written.read_text())
    assert written.stem != "bench_cpu" and result["ratio_template_over_hand"]["median"] > 0
    assert result["samples_per_s"]["naive_dataloader"]["median"] > 0


@pytest.mark.slow
def test_proxy_bench_profiles_each_hook(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    """--proxy runs the default net at batch 32 into bench_proxy_<cpu kind>; --hooks adds the
    host time per step of the loop's, the module's and each callback's actions (the call count
    runs fits of 100 and 300 steps: 27 s on a 2-core AVX2 CPU, so a slow test)."""
    out = tmp_path / "results"
    argv = ["bench.py", "--proxy", "--hooks", "--steps", "6", "--warmup", "2", "--repeats", "1"]
    argv += ["--startup", "0", "--out", str(out), "--", *tiny(tiny_data, tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert bench.main() == 0
    (written,) = out.glob("bench_proxy_*_isa_avx2_*.json")
    result = json.loads(written.read_text())
    assert result["overrides"][0] == "data.batch_size=32"
    names = [name for name, _ in result["hook_profile"]]
    assert "run_training_batch" in names
    assert any(name.startswith("[Callback]") for name in names)
    assert all(us > 0 for _, us in result["hook_profile"])
    calls = result["python_calls_per_step"]
    assert calls["template"] > calls["hand"] > 0
    assert "µs per step" in written.with_suffix(".md").read_text()


@pytest.mark.slow
def test_startup_and_time_to_accuracy_beside_a_baseline(
    tiny_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """Both fresh-process benchmarks run a baseline checkout in the same rounds (here the
    same checkout: the plumbing, not the figures, is what a test can check)."""
    out, overrides = tmp_path / "results", [*tiny(tiny_data, tmp_path), "data.batch_size=16"]
    argv = ["bench.py", "--repeats", "0", "--startup", "1", "--baseline", str(ROOT)]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--", *overrides])
    assert bench.main() == 0
    startup = json.loads(next(out.glob("bench_cpu_*.json")).read_text())["startup"]
    for name in ("lightspeed", "baseline"):
        assert startup[name]["first_step_s"]["median"] > 0
        assert startup[name]["peak_rss_mib"]["median"] > 100
    bench_fit = load_script("bench_fit")
    argv = ["bench_fit.py", "--runs", "1", "--baseline", str(ROOT), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--", *overrides, "trainer.max_epochs=1"])
    assert bench_fit.main() == 0
    (written,) = out.glob("bench_fit_*.json")
    result = json.loads(written.read_text())
    assert written.stem.startswith(f"bench_fit_{result['cpu_kind']}_")
    for name in ("lightspeed", "baseline"):
        (run,) = result["runs"][name]
        assert run["process_s"] > run["train_time_s"] > 0 and 0 <= run["test_acc"] <= 1
    assert "| baseline" in written.with_suffix(".md").read_text()


def test_import_chain_attributes_each_module_to_the_statement_that_loaded_it() -> None:
    chain = load_script("import_chain")
    importtime = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 | encodings",  # the interpreter's own start
            "import time:      2000 |       2000 |   numpy",
            "import time:     50000 |      52000 | torch",
            "import time:    300000 |     300000 |       transformers",
            "import time:      1000 |     301000 |     torchmetrics",
            "import time:      4000 |     305000 | lightning",
            "import time:       500 |        500 |   hydra",
            "import time:       700 |       1200 | lightspeed",
            "import time:       300 |        300 | lightspeed.cli",
        ]
    )
    per = chain.attribute(importtime)
    assert dict(per["torch"]) == {"numpy": 0.002, "torch": 0.05}
    assert dict(per["lightning"]) == {
        "transformers": 0.3,
        "torchmetrics": 0.001,
        "lightning": 0.004,
    }
    assert dict(per["this project"]) == {"hydra": 0.0005, "lightspeed": 0.001}
    assert dict(per[chain.START]) == {"encodings": 0.0001}
