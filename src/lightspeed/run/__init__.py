"""Run state, torch-free: run directories and their locks (``rundir``), checkpoint files
(``checkpoint``), resuming a run in its own directory (``resume``) and runs of several
processes (``distributed``). The entry calls it before torch is imported; callbacks use it, it
uses no callback."""
