"""A multi-layer perceptron on flattened images: the simplest baseline."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn

from lightspeed.constraints import PositiveInt, UnitInterval
from myproject.nets.cnn import side_lengths


class MLP(nn.Module):
    """Flatten → (Linear → ReLU → Dropout) × len(hidden) → Linear.

    Args:
        in_channels: image channels (the config reads them from the data).
        num_classes: output logits.
        image_size: input ``[height, width]`` (or one side).
        hidden: sizes of the hidden layers.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        in_channels: PositiveInt = 1,
        num_classes: PositiveInt = 10,
        image_size: int | list[int] = 28,
        hidden: Sequence[int] = (512, 256),
        dropout: UnitInterval = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        sizes = [in_channels * math.prod(side_lengths(image_size)), *hidden]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
