"""Lightspeed: a PyTorch Lightning + Hydra template whose defaults are measured speed practices."""

import time

__version__ = "0.1.0"

# First import of the package ≈ process start; the speed monitor reports time to first step.
PROCESS_START = time.perf_counter()
