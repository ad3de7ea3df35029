"""The console progress bar, at the cost of what it shows.

Lightning's ``RichProgressBar`` is drawn ``refresh_rate`` times a second by a background
thread, yet every training batch updates its task and reads the progress-bar metrics: work
no one sees between two draws, paid on every step (about 90 µs a step here, the largest
callback cost in ``python scripts/bench.py --hooks``). This one passes a training batch on
only when a draw is due, and always the epoch's last batch, so the bar shows what it showed.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme

from lightspeed.constraints import NonNegativeInt


class RichProgressBar(LightningRichProgressBar):
    """Lightning's ``RichProgressBar`` with training-batch updates cut to its draw rate.

    Args:
        refresh_rate: draws per second (0: no bar).
        leave: keep each finished epoch's bar on the console.
        theme: colours and styles (Lightning's ``RichProgressBarTheme``).
        console_kwargs: arguments of rich's ``Console``.
    """

    def __init__(
        self,
        refresh_rate: NonNegativeInt = 10,
        leave: bool = False,
        theme: RichProgressBarTheme | None = None,
        console_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            refresh_rate=refresh_rate,
            leave=leave,
            theme=theme or RichProgressBarTheme(),
            console_kwargs=console_kwargs,
        )
        self._next_update = 0.0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = monotonic()
        last = batch_idx + 1 >= self.total_train_batches
        if now < self._next_update and not last:
            return
        self._next_update = now + 1 / max(self.refresh_rate, 1)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
