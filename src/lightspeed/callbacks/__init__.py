"""Callbacks a user turns on and off by config: speed measurement (samples/s, data wait, peak
memory), the curves plot, and an EMA of the weights (``callbacks/ema=on``). The run-safety
callbacks the engine relies on are in :mod:`lightspeed.safety`."""
