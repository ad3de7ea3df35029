"""The tasks the entry runs on a built (datamodule, module, trainer): one function each.

``fit`` trains (and tests the best checkpoint), ``validate``/``test`` evaluate weights,
``predict`` writes ``predictions.csv``, ``export`` writes ``model.onnx`` and checks it against
the net. Each returns the entries it adds to the run's summary.
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


def _metric(results: list[dict] | None, key: str) -> float | None:
    return float(results[0][key]) if results and key in results[0] else None


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
        "best_val_acc": float(score) if score is not None else None,
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
    return {"val_acc": _metric(results, "val/acc")}


def test(built: Any, cfg: Any, ckpt: str | None) -> dict:
    results = built.trainer.test(
        built.module, datamodule=built.datamodule, ckpt_path=ckpt, weights_only=True
    )
    return {"test_acc": _metric(results, "test/acc")}


def predict(built: Any, cfg: Any, ckpt: str | None) -> dict:
    """Class probabilities for every sample of ``predict.split``, into ``predictions.csv``.

    Columns: ``sample`` (row index, or file path for an image folder), ``label`` (the true
    class, where the data has labels), ``predicted`` and ``probability``, then the next
    ``predict.top_k - 1`` classes and their probabilities.
    """
    dm, split, top_k = built.datamodule, cfg.predict.split, cfg.predict.top_k
    dm.setup("predict")
    loader = dm.eval_dataloader(split)
    batches = built.trainer.predict(
        built.module, dataloaders=loader, ckpt_path=ckpt, weights_only=True
    )
    probs = torch.cat([p for p, _ in batches]).float()
    labels = torch.cat([y for _, y in batches]) if batches and batches[0][1] is not None else None
    names = list(dm.class_names) or [str(c) for c in range(probs.shape[1])]
    ids = dm.sample_ids(split) if hasattr(dm, "sample_ids") else range(len(probs))
    k = min(top_k, probs.shape[1])
    top_p, top_c = probs.topk(k, dim=1)
    path = Path(cfg.paths.output_dir) / "predictions.csv"
    header = ["sample", "label", "predicted", "probability"]
    header += [f"{col}_{i}" for i in range(2, k + 1) for col in ("predicted", "probability")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row, sample in enumerate(ids):
            label = names[int(labels[row])] if labels is not None else ""
            ranked = zip(top_c[row].tolist(), top_p[row].tolist(), strict=True)
            writer.writerow(
                [sample, label, *(v for c, p in ranked for v in (names[c], f"{p:.6f}"))]
            )
    out: dict[str, Any] = {"predictions": str(path), "predict_rows": len(probs)}
    if labels is not None:
        out["predict_acc"] = (top_c[:, 0] == labels.to(top_c.device)).float().mean().item()
    log.info("wrote %d predictions of the %s split to %s", len(probs), split, path)
    return out


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
    """The trained net as ONNX (dynamic batch), checked against torch on a batch of test data."""
    from lightspeed.checkpoint import read_checkpoint

    onnx, onnxruntime = _onnx_modules()
    module, dm = built.module, built.datamodule
    if ckpt:
        module.load_state_dict(read_checkpoint(ckpt, map_location="cpu")["state_dict"])
    net = module.net.float().cpu().eval()
    dm.setup("test")
    images = next(iter(dm.eval_dataloader("test")))[0][: cfg.export.batch].float().cpu()
    path = Path(cfg.paths.output_dir) / "model.onnx"
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        expected = net(images)
        program = torch.onnx.export(
            net,
            (images,),
            dynamic_shapes=({0: batch},),
            input_names=["images"],
            output_names=["logits"],
            dynamo=True,
            external_data=False,
        )
    program.save(str(path))
    onnx.checker.check_model(str(path))
    out: dict[str, Any] = {"onnx": str(path)}
    if onnxruntime is None:
        log.info("onnxruntime is not installed: checked the graph only (onnx.checker)")
        return out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    diff = (got - expected).abs().max().item()
    out["onnx_max_abs_logit_diff"] = diff
    log.info("ONNX Runtime vs torch on %d test images: max |Δlogit| = %.2e", len(images), diff)
    if diff > cfg.export.tolerance:
        raise UserError(
            f"{path}: ONNX Runtime's logits differ from torch's by {diff:.2e} "
            f"(> export.tolerance={cfg.export.tolerance}; largest |logit| "
            f"{expected.abs().max().item():.3g})"
        )
    return out


TASKS = {"fit": fit, "validate": validate, "test": test, "predict": predict, "export": export}
