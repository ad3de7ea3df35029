"""Weight initialisation schemes (myproject.init), applied to any net with net.apply."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from myproject.init import WEIGHT_INITS, initialize
from myproject.nets import MLP, SmallCNN


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


def test_whitening_from_data_decorrelates_patches_and_freezes_the_first_conv() -> None:
    torch.manual_seed(0)
    # images with strongly correlated neighbouring pixels, as photographs have
    images = nn.functional.avg_pool2d(torch.randn(64, 1, 30, 30), 3, stride=1)
    net = SmallCNN(widths=[16, 32], whiten=True)
    net.fit_data(lambda: images)
    conv = net.features[0][0]
    assert not conv.weight.requires_grad
    w = conv.weight.detach().double().reshape(16, 9)
    assert torch.allclose(w[:8], -w[8:])  # each component with both signs
    # the 8 filters' responses are uncorrelated with unit variance (up to the 1e-2 damping)
    patches = nn.functional.unfold(images.double(), 3, padding=1).transpose(1, 2).reshape(-1, 9)
    out = (patches - patches.mean(0)) @ w[:8].T
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.diag(cov.diagonal()), atol=1e-6)
    assert ((cov.diagonal() > 0.5) & (cov.diagonal() <= 1)).all()
    # the sign rule: each filter's largest weight is positive, whatever LAPACK returned
    assert (w[:8].gather(1, w[:8].abs().argmax(1, keepdim=True)) > 0).all()


def test_a_net_without_whitening_draws_no_data() -> None:
    def no_data() -> torch.Tensor:
        raise AssertionError("a net with whiten=False must not ask for data")

    net = SmallCNN(whiten=False)
    net.fit_data(no_data)
    assert all(p.requires_grad for p in net.parameters())
