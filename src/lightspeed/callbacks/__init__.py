"""Callbacks a user turns on and off by config: speed measurement (samples/s, data wait, peak
memory) and the curves plot. The run-safety callbacks the engine relies on are in
:mod:`lightspeed.safety`."""
