"""Flip test-time augmentation of the classifier: the mean of the image's and its mirror's
logits in validation, test and predict; ``tta=none`` is the plain forward pass."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from lightspeed.build import build

FP32 = ["trainer.precision=32-true"]  # the module's own passes compared without autocast


def module_and_batch(cfg_factory, tta: str) -> tuple:
    built = build(cfg_factory([*FP32, f"model.tta={tta}"]))
    built.datamodule.setup("fit")
    x, y = next(iter(built.datamodule.eval_dataloader("val")))
    return built, x[:16].float(), y[:16]


def test_flip_averages_the_logits_of_both_passes(cfg_factory) -> None:
    built, x, y = module_and_batch(cfg_factory, "flip")
    module = built.module.eval()
    with torch.no_grad():
        expected = (module(x) + module(x.flip(-1))) / 2
        assert not torch.allclose(expected, module(x), atol=1e-4)  # the mirror changes them
        torch.testing.assert_close(module.eval_logits(x), expected)
        probs, labels = module.predict_step((x, y), 0)
    torch.testing.assert_close(probs, expected.softmax(dim=1))
    assert torch.equal(labels, y)


def test_validation_loss_is_that_of_the_averaged_logits(cfg_factory) -> None:
    """Through the Trainer: val/loss of one batch is the cross-entropy of the mean logits."""
    built, x, y = module_and_batch(cfg_factory, "flip")
    module = built.module.eval()
    with torch.no_grad():
        expected = module.criterion((module(x) + module(x.flip(-1))) / 2, y).item()
        plain = module.criterion(module(x), y).item()
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    results = built.trainer.validate(module, dataloaders=loader, weights_only=True)
    assert abs(results[0]["val/loss"] - expected) < 1e-5
    assert abs(expected - plain) > 1e-4  # so the check above tells TTA from no TTA


def test_none_is_the_plain_forward(cfg_factory) -> None:
    built, x, _ = module_and_batch(cfg_factory, "none")
    module = built.module.eval()
    with torch.no_grad():
        assert torch.equal(module.eval_logits(x), module(x))
