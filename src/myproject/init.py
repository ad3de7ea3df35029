"""Weight initialisation by name (``model.init``), applied to any net with ``net.apply``.

``default`` keeps what the net's constructor did (PyTorch's layer defaults, or the net's own
``reset_parameters``: SmallCNN already uses He init). The others re-initialise every
convolution and linear layer (weights by the scheme, biases to 0) and reset normalisation
layers to the identity (weight 1, bias 0); layers of other kinds keep their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

Scheme = Literal["default", "kaiming", "xavier", "orthogonal"]

WEIGHT_INITS: dict[str, Callable[[Tensor], object]] = {
    # He normal for ReLU nets: keeps activation variance through depth (fan_in: forward pass)
    "kaiming": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    # Glorot uniform: for tanh/sigmoid/linear nets
    "xavier": nn.init.xavier_uniform_,
    # orthogonal rows (conv kernels flattened): norm-preserving at the start of training
    "orthogonal": nn.init.orthogonal_,
}
WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def initialize(net: nn.Module, scheme: Scheme = "default") -> nn.Module:
    """Re-initialises ``net``'s layers in place with ``scheme``; returns ``net``.

    Raises:
        ValueError: for a scheme that is not one of ``default``, ``kaiming``, ``xavier``,
            ``orthogonal``.
    """
    if scheme == "default":
        return net
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"init={scheme!r} is not a scheme: use default, {', '.join(WEIGHT_INITS)}")
    weight_init = WEIGHT_INITS[scheme]

    def init_layer(module: nn.Module) -> None:
        if isinstance(module, WEIGHTED):
            weight_init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, NORMS):
            if getattr(module, "weight", None) is not None:  # affine=False has none
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    return net.apply(init_layer)
