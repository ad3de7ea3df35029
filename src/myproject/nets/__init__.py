"""Plain ``nn.Module`` nets: no Lightning, no Hydra. Swap one by editing ``configs/model/net/``."""

from myproject.nets.cnn import SmallCNN
from myproject.nets.mlp import MLP

__all__ = ["MLP", "SmallCNN"]
