"""Models: the LightningModule (loss, metrics, optimisation) and plain nets in ``nets/``."""
