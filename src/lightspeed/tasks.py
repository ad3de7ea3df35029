"""The tasks the entry runs on a built (datamodule, module, trainer): one function each.

``fit`` trains (and tests the best checkpoint), ``validate``/``test`` evaluate weights,
``predict`` writes ``predictions.csv``, ``export`` writes ``model.onnx`` and checks it against
the net. Each returns the entries it adds to the run's summary; the metric names are the
module's own (whatever it logs), the objective is the config's.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightspeed.errors import ConfigError, UserError

log = logging.getLogger(__name__)


def _metrics(results: list[dict] | None) -> dict[str, float]:
    """The metrics a validate/test run logged (``val/...``, ``test/...``), as plain floats."""
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def _last_checkpoint(trainer: Any) -> str | None:
    paths = [getattr(cb, "last_model_path", "") for cb in trainer.checkpoint_callbacks]
    return next((p for p in paths if p and Path(p).is_file()), None)


def fit(built: Any, cfg: Any, ckpt: str | None) -> dict:
    t0 = time.perf_counter()
    trainer, module, dm = built.trainer, built.module, built.datamodule
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    cb = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best, score = (cb.best_model_path, cb.best_model_score) if cb is not None else ("", None)
    out = {
        "objective": {
            "metric": cfg.objective.metric,
            "mode": cfg.objective.mode,
            "best": float(score) if score is not None else None,
        },
        "best_checkpoint": best or None,
        "last_checkpoint": _last_checkpoint(trainer),
        "train_time_s": round(time.perf_counter() - t0, 2),
    }
    if not trainer.interrupted and cfg.extras.test_after_fit:
        out.update(test(built, cfg, best or None))
    return out


def validate(built: Any, cfg: Any, ckpt: str | None) -> dict:
    results = built.trainer.validate(
        built.module, datamodule=built.datamodule, ckpt_path=ckpt, weights_only=True
    )
    return {"metrics": _metrics(results)}


def test(built: Any, cfg: Any, ckpt: str | None) -> dict:
    results = built.trainer.test(
        built.module, datamodule=built.datamodule, ckpt_path=ckpt, weights_only=True
    )
    return {"metrics": _metrics(results)}


def predict(built: Any, cfg: Any, ckpt: str | None) -> dict:
    """``predictions.csv`` for every sample of ``predict.split``: its columns and rows are the
    module's (``prediction_table``), from its ``predict_step`` outputs."""
    dm, split = built.datamodule, cfg.predict.split
    dm.setup("predict")
    loader = dm.eval_dataloader(split)
    outputs = built.trainer.predict(
        built.module, dataloaders=loader, ckpt_path=ckpt, weights_only=True
    )
    table = built.module.prediction_table(outputs or [], dm, split)
    path = Path(cfg.paths.output_dir) / "predictions.csv"
    rows = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.header)
        for row in table.rows:
            writer.writerow(row)
            rows += 1
    log.info("wrote %d predictions of the %s split to %s", rows, split, path)
    return {"predictions": str(path), "predict_rows": rows, "metrics": dict(table.metrics)}


def _onnx_modules() -> tuple[Any, Any | None]:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ConfigError(
            "task=export needs onnx and onnxscript: .venv/bin/pip install -e '.[export]' "
            "(onnxruntime too, for the parity check)"
        ) from None
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    return onnx, onnxruntime


def export(built: Any, cfg: Any, ckpt: str | None) -> dict:
    """The trained net as ONNX (dynamic batch), checked against torch on a batch of test data
    (the module's ``export_input`` of it)."""
    from lightspeed.run.checkpoint import read_checkpoint

    onnx, onnxruntime = _onnx_modules()
    module, dm = built.module, built.datamodule
    if ckpt:
        module.load_state_dict(read_checkpoint(ckpt, map_location="cpu")["state_dict"])
    net = module.net.float().cpu().eval()
    dm.setup("test")
    batch = next(iter(dm.eval_dataloader("test")))
    inputs = module.export_input(batch)[: cfg.export.batch].float().cpu()
    path = Path(cfg.paths.output_dir) / "model.onnx"
    batch_dim = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        expected = net(inputs)
        program = torch.onnx.export(
            net,
            (inputs,),
            dynamic_shapes=({0: batch_dim},),
            input_names=["input"],
            output_names=["output"],
            dynamo=True,
            external_data=False,
        )
    program.save(str(path))
    describe = getattr(module, "export_metadata", None)  # optional: what a consumer must know
    if callable(describe):
        model = onnx.load(str(path))
        for key, value in describe(dm).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    out: dict[str, Any] = {"onnx": str(path)}
    if onnxruntime is None:
        log.info("onnxruntime is not installed: checked the graph only (onnx.checker)")
        return out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])
    diff = (got - expected).abs().max().item()
    out["onnx_max_abs_diff"] = diff
    log.info("ONNX Runtime vs torch on %d test inputs: max |Δoutput| = %.2e", len(inputs), diff)
    if diff > cfg.export.tolerance:
        raise UserError(
            f"{path}: ONNX Runtime's outputs differ from torch's by {diff:.2e} "
            f"(> export.tolerance={cfg.export.tolerance}; largest |output| "
            f"{expected.abs().max().item():.3g})"
        )
    return out


TASKS = {"fit": fit, "validate": validate, "test": test, "predict": predict, "export": export}
