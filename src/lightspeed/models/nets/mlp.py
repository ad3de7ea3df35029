"""A multi-layer perceptron on flattened images: the simplest baseline."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten → (Linear → ReLU → Dropout) × len(hidden) → Linear.

    Args:
        in_features: pixels per image (28*28 for Fashion-MNIST).
        num_classes: output logits.
        hidden: sizes of the hidden layers.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        sizes = [in_features, *hidden]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
