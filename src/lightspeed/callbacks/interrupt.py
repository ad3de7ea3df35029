"""GracefulInterrupt: Ctrl-C, SIGTERM or SIGUSR1 → finish the batch, save last.ckpt, exit.

Lightning alone turns Ctrl-C into a ``KeyboardInterrupt`` wherever it lands and exits 1 without
a checkpoint, and turns SIGTERM into a stop without one. This callback, from the start of
training to its end, replaces those handlers:

1. the first signal only sets a flag (the step in flight is never torn);
2. at the next batch end (or, for the last batch of an epoch, at the epoch end after its
   validation) it saves ``last.ckpt`` through the atomic ``CheckpointIO``; once Lightning has
   logged that step, it raises :class:`~lightspeed.errors.RunInterrupted`, which the entry
   point prints as one line naming the run to resume, exiting with 128 + the signal number
   (130 for Ctrl-C, 143 for SIGTERM);
3. a second signal exits at once (``os._exit``): atomic writes mean the previous last.ckpt is
   still whole.

Under DDP every rank must receive the signal (SLURM and Ctrl-C in a terminal do this), since
the save is a collective call.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L

from lightspeed.callbacks.checkpointing import LastCheckpoint
from lightspeed.errors import ConfigError, RunInterrupted
from lightspeed.resume import resume_command

log = logging.getLogger(__name__)


def last_path(trainer: L.Trainer) -> Path:
    """The run's ``last.ckpt``: the LastCheckpoint callback's file, else ``checkpoints/``'s."""
    last = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
    return last.path if last else Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class GracefulInterrupt(L.Callback):
    """Saves ``last.ckpt`` and stops cleanly on the listed signals.

    Args:
        signals: names of the signals handled (``SIGINT``, ``SIGTERM``, ``SIGUSR1``, ...).
        dirpath: folder for ``last.ckpt``; default: the LastCheckpoint callback's.
    """

    def __init__(
        self,
        signals: list[str] | str = ("SIGINT", "SIGTERM", "SIGUSR1"),
        dirpath: str | None = None,
    ) -> None:
        self.names = [signals] if isinstance(signals, str) else [str(s) for s in signals]
        self.signals: list[int] = []
        self.dirpath = dirpath
        self.received: int | None = None
        self._pending: RunInterrupted | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            # a second signal: the user wants out now; atomic saves keep last.ckpt whole
            os.write(2, f"\nlightspeed: second {name}: stopping at once\n".encode())
            os._exit(128 + signum)
        self.received = signum
        print(
            f"\nlightspeed: {name} received: saving last.ckpt after this batch "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # checked here, not in __init__: Hydra's instantiate would wrap the error in a traceback
        unknown = [s for s in self.names if not isinstance(getattr(signal, s, None), int)]
        fixed = [s for s in self.names if s in ("SIGKILL", "SIGSTOP")]
        if unknown or fixed:
            raise ConfigError(
                f"callbacks.interrupt.signals={self.names}: "
                + (f"unknown signal(s) {unknown}" if unknown else f"{fixed} cannot be caught")
                + "; e.g. [SIGINT, SIGTERM, SIGUSR1]"
            )
        self.signals = [getattr(signal, s) for s in self.names]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        self._pending = None
        self._install()

    def _save(self, trainer: L.Trainer, where: str) -> None:
        """Saves last.ckpt now; the stop itself waits for the next hook (see on_train_batch_start)."""
        if self.received is None or self._pending is not None:
            return
        signum = self.received
        path = Path(self.dirpath) / "last.ckpt" if self.dirpath else last_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # full state, for resume
        name = signal.Signals(signum).name
        self._pending = RunInterrupted(
            f"interrupted by {name} {where} (epoch {trainer.current_epoch}, "
            f"step {trainer.global_step}); saved {path}; "
            f"continue with: {resume_command(trainer.default_root_dir)}",
            exit_code=128 + signum,
            checkpoint=str(path),
        )

    def _raise_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._restore()
            raise pending

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        # The last batch of an epoch is left to on_train_epoch_end: the epoch's validation
        # then runs first, as in an uninterrupted run, and the epoch-end state is saved.
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save(trainer, "mid-epoch")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "at epoch end")

    # Raising waits until Lightning has logged the saved step's metrics, so the metrics log
    # holds every step the checkpoint holds.
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._raise_pending()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_pending()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "at the end of training")
        self._raise_pending()
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
