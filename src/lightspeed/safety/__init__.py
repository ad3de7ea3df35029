"""The callbacks and plugin that keep a run safe, which the default config always adds: atomic
checkpoints and ``last.ckpt`` (``checkpointing``), a clean stop on signals (``interrupt``), the
NaN guard (``nan_guard``) and the run's metadata inside every checkpoint (``metadata``)."""
