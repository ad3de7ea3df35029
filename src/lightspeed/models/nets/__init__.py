"""Plain ``nn.Module`` nets: no Lightning, no Hydra. Swap one by editing ``configs/model/net/``."""

from lightspeed.models.nets.cnn import SmallCNN
from lightspeed.models.nets.mlp import MLP

__all__ = ["MLP", "SmallCNN"]
