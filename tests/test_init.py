"""Weight initialisation schemes (lightspeed.models.init), applied to any net with net.apply."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightspeed.models.init import WEIGHT_INITS, initialize
from lightspeed.models.nets import MLP, SmallCNN


class Wrapped(nn.Module):
    """Layers nested in containers and a custom module: net.apply must reach them all."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU())
        self.inner = nn.ModuleDict({"head": nn.Linear(256, 128)})
        self.norm = nn.LayerNorm(128)
        self.plain = nn.Linear(128, 10, bias=False)


def perturbed() -> Wrapped:
    net = Wrapped()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    return net


def test_default_keeps_the_nets_own_init() -> None:
    torch.manual_seed(0)
    net = SmallCNN()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert initialize(net, "default") is net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("scheme", sorted(WEIGHT_INITS))
def test_scheme_reinitialises_every_layer(scheme: str) -> None:
    torch.manual_seed(0)
    net = initialize(perturbed(), scheme)
    conv, bn = net.body[0], net.body[1]
    head = net.inner["head"]
    for layer in (conv, head, net.plain):
        assert not torch.all(layer.weight == 0.5)
    for bias in (conv.bias, head.bias, net.norm.bias, bn.bias):
        assert torch.all(bias == 0)
    assert torch.all(bn.weight == 1) and torch.all(net.norm.weight == 1)


def test_scheme_statistics() -> None:
    torch.manual_seed(0)
    fan_in, fan_out = 256, 128
    std = initialize(nn.Linear(fan_in, fan_out), "kaiming").weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    bound = math.sqrt(6 / (fan_in + fan_out))
    w = initialize(nn.Linear(fan_in, fan_out), "xavier").weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound
    w = initialize(nn.Linear(fan_in, fan_out), "orthogonal").weight  # 128 orthonormal rows
    assert torch.allclose(w @ w.T, torch.eye(fan_out), atol=1e-5)


def test_same_seed_same_weights_and_nets_still_train() -> None:
    for scheme in WEIGHT_INITS:
        nets = []
        for _ in range(2):
            torch.manual_seed(1)
            nets.append(initialize(MLP(hidden=[32]), scheme))
        a, b = (n.state_dict() for n in nets)
        assert all(torch.equal(a[k], b[k]) for k in a)
        out = nets[0](torch.randn(4, 1, 28, 28))
        assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="init='he' is not a scheme: use default, kaiming"):
        initialize(nn.Linear(2, 2), "he")  # type: ignore[arg-type]
