"""Lightning's private API, all of it in ``lightspeed.compat``: this fails loudly when a
Lightning release moves a piece the engine reaches into."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
from lightning.pytorch.utilities.combined_loader import CombinedLoader

from lightspeed import compat


def test_the_private_pieces_are_where_compat_reads_them() -> None:
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert hasattr(trainer.fit_loop, compat.PENDING), f"FitLoop.{compat.PENDING} is gone"
    assert hasattr(trainer.fit_loop, compat.LOADER), f"FitLoop.{compat.LOADER} is gone"
    assert callable(getattr(CombinedLoader, compat.LOAD, None)), f"CombinedLoader.{compat.LOAD}"
    assert compat.is_local_path("/tmp/run/last.ckpt")
    assert not compat.is_local_path("s3://bucket/run/last.ckpt")


def test_pending_loader_state_is_applied_once() -> None:
    applied = []
    loader = SimpleNamespace(**{compat.LOAD: applied.append})
    fit_loop = SimpleNamespace(**{compat.PENDING: [{"batch": 3}], compat.LOADER: loader})
    assert compat.apply_pending_loader_state(fit_loop)
    assert applied == [[{"batch": 3}]] and getattr(fit_loop, compat.PENDING) == []
    assert not compat.apply_pending_loader_state(fit_loop)  # nothing pending any more
