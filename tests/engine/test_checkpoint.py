"""The checkpoint IO plugin beyond the bad-input cases: what Lightning itself loads through it."""

from __future__ import annotations

from pathlib import Path

import pytest
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


@pytest.mark.parametrize(("min_interval_s", "saved"), [(0, [2, 4, 6, 8, 10]), (1, [8, 10])])
def test_last_checkpoint_saves_every_n_steps_at_most_once_per_interval(
    cfg_factory, monkeypatch, min_interval_s: float, saved: list[int]
) -> None:
    """Every 2 steps, a clock moving 0.3 s a read: with a 1 s floor the steps 2, 4 and 6 come
    too soon after the start; 8 saves, 10 is too soon again but the epoch's end saves it."""
    from lightspeed.build import build
    from lightspeed.safety import checkpointing

    clock = iter(0.3 * i for i in range(1, 1000))
    monkeypatch.setattr(checkpointing, "monotonic", lambda: next(clock))
    cfg = cfg_factory(
        [
            "callbacks.model_checkpoint=null",
            "callbacks.last_checkpoint.every_n_train_steps=2",
            f"callbacks.last_checkpoint.min_interval_s={min_interval_s}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=10",
            "trainer.limit_val_batches=0",
            "data.batch_size=20",
        ]
    )
    built = build(cfg)
    steps: list[int] = []
    save = built.trainer.save_checkpoint

    def spy(*args, **kwargs):
        steps.append(built.trainer.global_step)
        return save(*args, **kwargs)

    monkeypatch.setattr(built.trainer, "save_checkpoint", spy)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert steps == saved
    assert Path(cfg.paths.output_dir, "checkpoints", "last.ckpt").is_file()
