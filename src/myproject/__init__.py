"""The project: what this clone trains. It starts as the Fashion-MNIST example and a table
regression, and is the part a user replaces or renames.

* ``nets/``: plain ``nn.Module`` nets (no Lightning, no Hydra).
* ``classifier.py``: the image-classification ``LightningModule`` (loss, metrics, optimiser),
  ``init.py``: weight initialisation of its nets.
* ``idx.py``, ``sources.py``, ``idx_datamodule.py``: Fashion-MNIST and MNIST (IDX files), found
  offline, held in memory.

The engine (``lightspeed``) never imports this package: it builds what the YAMLs in
``configs/`` name with ``_target_``, and relies only on the contracts in
``lightspeed.contracts``.
"""
