"""Every use of Lightning's private API, in one place; ``tests/engine/test_compat.py`` fails
loudly when a Lightning release moves one of them.

* :func:`is_local_path`: whether a checkpoint path is on the local file system (the atomic
  save applies there); Lightning's own test of it is private.
* :func:`apply_pending_loader_state`: a mid-epoch resume's loader position. Lightning 2.6 keeps
  it in ``fit_loop._combined_loader_states_to_load`` and never applies it when the loader was
  built before the checkpoint's loop state was read (``trainer.estimated_stepping_batches``,
  which OneCycleLR's ``total_steps`` reads, builds it).
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

PENDING = "_combined_loader_states_to_load"  # fit loop: loader states read from a checkpoint
LOADER = "_combined_loader"  # fit loop: the CombinedLoader of this fit
LOAD = "_load_state_dicts"  # CombinedLoader: applies loader states


def is_local_path(path: Any) -> bool:
    """True for a path on the local file system (not ``s3://``, ``gs://``, ...)."""
    return _is_local_file_protocol(str(path))


def apply_pending_loader_state(fit_loop: Any) -> bool:
    """Applies loader states that a checkpoint left pending; True when there were some."""
    pending = getattr(fit_loop, PENDING, None)
    loader = getattr(fit_loop, LOADER, None)
    if not pending or loader is None:
        return False
    getattr(loader, LOAD)(pending)
    setattr(fit_loop, PENDING, [])
    return True
