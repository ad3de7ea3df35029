"""The checkpoint IO plugin beyond the bad-input cases: what Lightning itself loads through it."""

from __future__ import annotations

from pathlib import Path

import torch

from lightspeed.safety.checkpointing import AtomicCheckpointIO


def test_io_loads_a_bare_state_dict(tmp_path: Path) -> None:
    """ddp_spawn hands the trained weights back to the launching process as a bare state dict
    saved and loaded through the Trainer's CheckpointIO (not a Lightning checkpoint)."""
    io = AtomicCheckpointIO()
    io.expect(torch.nn.Linear(2, 3))
    weights = {"weight": torch.ones(3, 2), "bias": torch.zeros(3)}
    io.save_checkpoint(weights, tmp_path / ".temp.ckpt")
    loaded = io.load_checkpoint(tmp_path / ".temp.ckpt")
    assert loaded.keys() == weights.keys() and torch.equal(loaded["weight"], weights["weight"])
    assert [p.name for p in tmp_path.iterdir()] == [".temp.ckpt"]  # no temporary file left


def test_unreadable_checkpoint_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """Tests run as root, so a file without read permission is simulated."""
    import pytest

    from lightspeed.run.checkpoint import CheckpointError, read_plain

    path = tmp_path / "last.ckpt"
    path.write_bytes(b"PK\x03\x04")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(CheckpointError, match=r"cannot be read \(Permission denied\)"):
        read_plain(path)
