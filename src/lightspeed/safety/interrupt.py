"""GracefulInterrupt: Ctrl-C, SIGTERM or SIGUSR1 → finish the batch, save last.ckpt, exit.

Lightning alone stops on these without a checkpoint. Here the first signal sets a flag; the
next batch end (an epoch's last batch: after its validation) saves ``last.ckpt`` and raises
:class:`~lightspeed.errors.RunInterrupted` (exit 128 + signal); a second signal exits at once.
Under DDP the save is a collective call, so all ranks must make it at the same batch, whichever
of them got the signal (a ``kill <pid>`` reaches only one): :class:`RankAgreement` sees to it.
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
import torch

from lightspeed.errors import ConfigError, RunInterrupted
from lightspeed.run.resume import resume_command
from lightspeed.safety.checkpointing import LastCheckpoint

log = logging.getLogger(__name__)


def last_path(trainer: L.Trainer) -> Path:
    """The run's ``last.ckpt``: the LastCheckpoint callback's file, else ``checkpoints/``'s."""
    last = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
    return last.path if last else Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class RankAgreement:
    """Which signal any rank has received, known to all ranks at the same batch end.

    Each batch end starts an all-reduce (max) of this rank's signal number over a gloo group
    (CPU tensors: no GPU sync, nothing blocks) and reads the one started a batch earlier, long
    finished by then. Epoch and training ends agree at once (one blocking call each).
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = dist.new_group(backend="gloo")  # collective: every rank calls it
        self._work: Any = None
        self._flag = torch.zeros(1, dtype=torch.int32)

    def _start(self, signum: int | None) -> None:
        self._flag = torch.tensor([signum or 0], dtype=torch.int32)
        max_op = self._dist.ReduceOp.MAX
        self._work = self._dist.all_reduce(self._flag, max_op, group=self.group, async_op=True)

    def _finish(self) -> int | None:
        if self._work is None:
            return None
        self._work.wait()
        self._work = None
        return int(self._flag.item()) or None

    def batch_end(self, signum: int | None) -> int | None:
        """The signal some rank had at the previous batch end (the same on every rank)."""
        agreed = self._finish()
        if agreed is None:
            self._start(signum)
        return agreed

    def now(self, signum: int | None) -> int | None:
        """The signal some rank has now (blocking)."""
        agreed = self._finish()
        self._start(signum)
        return agreed or self._finish()


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
        self._agreement: RankAgreement | None = None
        self._children: list[Any] = []  # ranks > 0 that Lightning's launcher started

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            # a second signal: the user wants out now; atomic saves keep last.ckpt whole
            os.write(2, f"\nlightspeed: second {name}: stopping at once\n".encode())
            for child in self._children:  # else they would wait for this rank until a timeout
                child.kill()
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
        distributed = trainer.world_size > 1 and torch.distributed.is_initialized()
        self._agreement = RankAgreement() if distributed else None
        self._children = list(getattr(trainer.strategy.launcher, "procs", None) or [])
        self._install()

    def _signal(self, batch_end: bool = False) -> int | None:
        """The signal to act on: this process's, or under DDP the one the ranks agree on."""
        if self._agreement is None or self._pending is not None:
            return self.received
        if batch_end:
            return self._agreement.batch_end(self.received)
        return self._agreement.now(self.received)

    def _save(self, trainer: L.Trainer, where: str, signum: int | None) -> None:
        """Saves last.ckpt now; the stop itself waits for the next hook (see on_train_batch_start)."""
        if signum is None or self._pending is not None:
            return
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
        signum = self._signal(batch_end=True)
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save(trainer, "mid-epoch", signum)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "at epoch end", self._signal())

    # Raising waits until Lightning has logged the saved step's metrics, so the metrics log
    # holds every step the checkpoint holds.
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._raise_pending()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_pending()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "at the end of training", self._signal())
        self._raise_pending()
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
