"""Hopfield network: energies against the spec's formulas, closed-form gradient vs autograd."""

import pytest
import torch
from core_factory import DTYPE, rel_err

from energy_transformer import HopfieldNetwork


def make_hopfield(kind: str, dim: int = 5, memories: int = 9) -> HopfieldNetwork:
    torch.manual_seed(0)
    net = HopfieldNetwork(dim, memories, kind, beta=0.8, init_std=0.7).to(DTYPE)
    return net


def test_relu_energy_by_hand():
    net = make_hopfield("relu")
    g = torch.randn(2, 3, 5, dtype=DTYPE)
    expected = torch.zeros(2, dtype=DTYPE)
    for b in range(2):
        for t in range(3):
            for m in range(net.memories):
                expected[b] -= 0.5 * max(float(net.xi[m].detach() @ g[b, t]), 0.0) ** 2
    torch.testing.assert_close(net.energy(g), expected)


def test_softmax_energy_by_hand():
    net = make_hopfield("softmax")
    g = torch.randn(2, 3, 5, dtype=DTYPE)
    beta = net.beta
    expected = torch.stack(
        [
            -sum(torch.log(torch.exp(beta * net.xi @ g[b, t]).sum()) / beta for t in range(3))
            for b in range(2)
        ]
    )
    torch.testing.assert_close(net.energy(g), expected.detach())


@pytest.mark.parametrize("kind", ["relu", "softmax"])
@pytest.mark.parametrize("weighted", [False, True])
def test_neg_grad_equals_autograd(kind, weighted):
    net = make_hopfield(kind)
    g = torch.randn(3, 4, 5, dtype=DTYPE, requires_grad=True)
    token_weight = (torch.rand(3, 4, 1) < 0.6).to(DTYPE) if weighted else None
    (grad,) = torch.autograd.grad(net.energy(g, token_weight).sum(), g)
    assert rel_err(net.neg_grad(g.detach(), token_weight), -grad) < 1e-10
    if weighted:  # padding tokens: no energy, no gradient
        assert (grad * (1 - token_weight) == 0).all()


@pytest.mark.parametrize("kind", ["relu", "softmax"])
def test_inplace_activation_equals_out_of_place(kind):
    net = make_hopfield(kind)
    h = torch.randn(2, 3, net.memories, dtype=DTYPE)
    token_weight = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=DTYPE)[..., None]
    expected = net.activation(h, token_weight)
    with torch.no_grad():
        out = net.activation(h.clone(), token_weight, inplace=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_softmax_beta_is_learned():
    net = make_hopfield("softmax")
    assert isinstance(net.beta, torch.nn.Parameter)
    net.energy(torch.randn(2, 3, 5, dtype=DTYPE)).sum().backward()
    assert net.beta.grad is not None and net.beta.grad.abs() > 0
    assert HopfieldNetwork(4, kind="softmax").beta.item() == pytest.approx(0.01)


def test_defaults_and_bad_kind():
    net = HopfieldNetwork(6)
    assert net.kind == "relu" and net.memories == 24 and net.xi.shape == (24, 6)
    assert not hasattr(net, "beta")
    with pytest.raises(ValueError, match="hopfield kind"):
        HopfieldNetwork(6, kind="tanh")
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        HopfieldNetwork(6, kind="softmax", beta=0.0)
    with pytest.raises(ValueError, match="memories must be a positive int"):
        HopfieldNetwork(6, memories=True)


def test_a_bad_init_std_is_refused_under_this_class_name():
    with pytest.raises(ValueError, match=r"^init_std must be finite and >= 0, got -1"):
        HopfieldNetwork(8, init_std=-1.0)
