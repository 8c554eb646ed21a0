"""EnergyLayerNorm: the gradient of a convex Lagrangian, PSD Jacobian, positive gamma."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_transformer import EnergyLayerNorm

DTYPE = torch.float64


def make_norm(dim: int, log_gamma: float, seed: int) -> EnergyLayerNorm:
    torch.manual_seed(seed)
    norm = EnergyLayerNorm(dim).to(DTYPE)
    with torch.no_grad():
        norm.log_gamma.fill_(log_gamma)
        norm.delta.normal_()
    return norm


@settings(max_examples=20, deadline=None)
@given(
    dim=st.integers(2, 12),
    log_gamma=st.floats(-2.0, 2.0),
    scale=st.floats(1e-2, 1e2),
    seed=st.integers(0, 10_000),
)
def test_forward_is_gradient_of_lagrangian(dim, log_gamma, scale, seed):
    norm = make_norm(dim, log_gamma, seed)
    x = (scale * torch.randn(3, 4, dim, dtype=DTYPE)).requires_grad_()
    (grad,) = torch.autograd.grad(norm.lagrangian(x).sum(), x)
    torch.testing.assert_close(norm(x), grad, rtol=1e-12, atol=1e-12)


def test_forward_matches_spec_formula():
    norm = make_norm(5, 0.3, 0)
    x = torch.randn(7, 5, dtype=DTYPE)
    centred = x - x.mean(-1, keepdim=True)
    s = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
    torch.testing.assert_close(norm(x), norm.gamma * centred / s + norm.delta)


@pytest.mark.parametrize("log_gamma", [-1.0, 0.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jacobian_is_symmetric_psd_and_matches_closed_form(log_gamma, seed):
    dim = 7
    norm = make_norm(dim, log_gamma, seed)
    x = 3 * torch.randn(dim, dtype=DTYPE)
    jac = torch.autograd.functional.jacobian(norm, x)
    torch.testing.assert_close(jac, jac.T, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(jac).min() > -1e-12
    # Spec §1.1: M = (gamma / s) [P - (Px)(Px)^T / (D s^2)], P = I - 11^T / D.
    proj = torch.eye(dim, dtype=DTYPE) - 1.0 / dim
    px = proj @ x
    s = torch.sqrt(px.pow(2).mean() + norm.eps)
    expected = norm.gamma / s * (proj - torch.outer(px, px) / (dim * s**2))
    torch.testing.assert_close(jac, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, DTYPE])
@pytest.mark.parametrize("log_gamma", [-1e4, -60.0, -5.0, 0.0, 5.0, 60.0])
def test_gamma_positive_for_any_parameter_value(log_gamma, dtype):
    norm = EnergyLayerNorm(4).to(dtype)
    with torch.no_grad():
        norm.log_gamma.fill_(log_gamma)
    assert norm.gamma.item() > 0  # even where exp(log_gamma) underflows
    if log_gamma > -60:
        assert math.isclose(norm.gamma.item(), math.exp(log_gamma), rel_tol=1e-6)


def test_gamma_stays_positive_after_a_huge_gradient_step():
    norm = EnergyLayerNorm(4)
    x = torch.randn(8, 4)
    norm.lagrangian(x).sum().backward()  # dL/dgamma > 0: a descent step pushes gamma down
    with torch.no_grad():
        for p in norm.parameters():
            p -= 1e3 * p.grad
    assert norm.gamma.item() > 0


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(2, 16), log_gamma=st.floats(-2.0, 2.0), scale=st.floats(1e-3, 1e3))
def test_output_lies_in_ball_of_radius_gamma_sqrt_dim(dim, log_gamma, scale):
    norm = make_norm(dim, log_gamma, 0)
    x = scale * torch.randn(50, dim, dtype=DTYPE)
    radius = (norm(x) - norm.delta).norm(dim=-1)
    assert (radius <= norm.gamma * math.sqrt(dim) * (1 + 1e-12)).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"dim": 0}, "dim"), ({"gamma": 0.0}, "gamma"), ({"eps": -1e-5}, "eps must be finite")],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyLayerNorm(**{"dim": 4, **kwargs})


def test_defaults_are_the_specs():
    # Spec §1.1: eps = 1e-5, init gamma = 1, delta = 0; gamma one scalar, delta a D-vector.
    norm = EnergyLayerNorm(6)
    assert norm.eps == 1e-5
    assert norm.gamma.shape == () and norm.gamma.item() == pytest.approx(1.0, abs=1e-7)
    assert norm.delta.shape == (6,) and not norm.delta.any()
    assert [n for n, _ in norm.named_parameters()] == ["log_gamma", "delta"]
    # A constant token maps to delta; an alternating +-1 one to itself / sqrt(1 + eps).
    x = torch.tensor(
        [[3.0, 3.0, 3.0, 3.0, 3.0, 3.0], [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]], dtype=DTYPE
    )
    expected = torch.stack([torch.zeros(6, dtype=DTYPE), x[1] / math.sqrt(1 + 1e-5)])
    torch.testing.assert_close(norm.double()(x), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_every_output_lies_in_the_ball_that_bounds_the_energy(scale):
    torch.manual_seed(0)
    dim, eps = 17, 1e-5
    norm = EnergyLayerNorm(dim, eps=eps, gamma=2.5).double()
    with torch.no_grad():
        norm.delta.normal_()
    x = torch.randn(500, dim, dtype=torch.float64) * scale
    x[0] = 0.0  # a constant token: g = delta
    radius = (norm(x) - norm.delta).norm(dim=-1)
    bound = norm.gamma.item() * dim**0.5
    assert radius[0] == 0 and radius.max() <= bound * (1 + 1e-12)
    # gamma ||c|| / sqrt(||c||^2 / D + eps) for the centred token c: the bound as eps -> 0
    centred = x - x.mean(-1, keepdim=True)
    c2 = centred.pow(2).sum(-1)
    assert torch.allclose(radius, bound * (c2 / (c2 + dim * eps)).sqrt(), rtol=1e-12, atol=0)


def test_jacobian_vector_is_autograds_jvp():
    norm = make_norm(9, 0.7, seed=4)
    x = 3 * torch.randn(2, 5, 9, dtype=DTYPE)
    v = torch.randn(2, 5, 9, dtype=DTYPE)
    _, expected = torch.func.jvp(norm, (x,), (v,))
    torch.testing.assert_close(norm.jacobian_vector(x, v), expected, rtol=1e-12, atol=1e-12)
