"""Energy attention: the energy against a loop over the spec's sum, the closed-form gradient
against autograd, key sets (mask, padding, exclude_self), empty key sets, learnable beta."""

import math

import pytest
import torch
from core_factory import DTYPE, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_transformer import DenseKeySets, EnergyAttention


def loop_energy(q, k, beta, allowed):
    """Spec §1.2 written as loops: -(1/beta_h) sum_C log sum_{B in S(C)} exp(beta_h q_C . k_B)."""
    batch, heads, tokens, _ = q.shape
    energy = torch.zeros(batch, dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            for c in range(tokens):
                keys = [j for j in range(tokens) if allowed[b, c, j]]
                if not keys:
                    continue  # empty key set: no energy
                terms = torch.stack([beta[h] * q[b, h, c] @ k[b, h, j] for j in keys])
                energy[b] -= torch.logsumexp(terms, 0) / beta[h]
    return energy


def random_qk(batch, heads, tokens, head_dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, tokens, head_dim, generator=gen, dtype=DTYPE)
    k = torch.randn(batch, heads, tokens, head_dim, generator=gen, dtype=DTYPE)
    beta = torch.rand(heads, generator=gen, dtype=DTYPE) + 0.3
    return q, k, beta


def allowed_keys(batch, tokens, mask, padding_mask, exclude_self):
    allowed = torch.ones(batch, tokens, tokens, dtype=torch.bool)
    if exclude_self:
        allowed &= ~torch.eye(tokens, dtype=torch.bool)
    if mask is not None:
        allowed &= mask
    if padding_mask is not None:
        allowed &= ~padding_mask[:, None, :] & ~padding_mask[:, :, None]
    return allowed


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 3),
    tokens=st.integers(1, 6),
    head_dim=st.integers(1, 4),
    exclude_self=st.booleans(),
    use_mask=st.booleans(),
    use_padding=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_energy_equals_loop_and_grad_equals_autograd(
    batch, heads, tokens, head_dim, exclude_self, use_mask, use_padding, seed
):
    q, k, beta = random_qk(batch, heads, tokens, head_dim, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(batch, tokens, tokens, generator=gen) < 0.5 if use_mask else None
    padding_mask = None
    if use_padding:
        padding_mask = torch.rand(batch, tokens, generator=gen) < 0.3
    keysets = DenseKeySets(tokens, mask, padding_mask, exclude_self, DTYPE)
    allowed = allowed_keys(batch, tokens, mask, padding_mask, exclude_self)

    q.requires_grad_()
    k.requires_grad_()
    energy = keysets.energy(q, k, beta)
    assert torch.isfinite(energy).all()
    torch.testing.assert_close(energy, loop_energy(q.detach(), k.detach(), beta, allowed))

    dq, dk = keysets.neg_grad(q.detach(), k.detach(), beta)
    gq, gk = torch.autograd.grad(energy.sum(), (q, k))
    assert torch.isfinite(dq).all() and torch.isfinite(dk).all()
    torch.testing.assert_close(dq, -gq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dk, -gk, rtol=1e-10, atol=1e-12)


def test_mask_is_additive_not_multiplicative():
    # A masked-out key with a huge score must have no influence at all.
    q, k, beta = random_qk(1, 1, 3, 2)
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    keysets = DenseKeySets(3, mask, dtype=DTYPE)
    k_far = k.clone()
    k_far[0, 0, 2] = 1e3 * q[0, 0, 0]
    dq, _ = keysets.neg_grad(q, k, beta)
    dq_far, _ = keysets.neg_grad(q, k_far, beta)
    torch.testing.assert_close(dq[0, 0, 0], dq_far[0, 0, 0])


def test_isolated_node_finite_and_zero_gradient():
    # Token 2's mask row is all False and exclude_self: an empty key set.
    tokens = 4
    q, k, beta = random_qk(2, 2, tokens, 3)
    mask = torch.ones(tokens, tokens, dtype=torch.bool)
    mask[2] = False
    keysets = DenseKeySets(tokens, mask, exclude_self=True, dtype=DTYPE)
    q.requires_grad_()
    energy = keysets.energy(q, k, beta)
    (gq,) = torch.autograd.grad(energy.sum(), q)
    dq, dk = keysets.neg_grad(q.detach(), k, beta)
    for t in (energy, gq, dq, dk):
        assert torch.isfinite(t).all()
    assert (dq[:, :, 2] == 0).all() and (gq[:, :, 2] == 0).all()
    # Its query contributes no energy: the energy does not depend on q_2 at all.
    q2 = q.detach().clone()
    q2[:, :, 2] = 100.0
    torch.testing.assert_close(keysets.energy(q2, k, beta), energy.detach())


def test_all_keys_masked_everywhere_gives_zero():
    q, k, beta = random_qk(2, 2, 3, 2)
    keysets = DenseKeySets(3, torch.zeros(3, 3, dtype=torch.bool), dtype=DTYPE)
    assert (keysets.energy(q, k, beta) == 0).all()
    dq, dk = keysets.neg_grad(q, k, beta)
    assert (dq == 0).all() and (dk == 0).all()


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("learn_beta", [False, True])
def test_module_neg_grad_equals_autograd(exclude_self, learn_beta):
    torch.manual_seed(0)
    att = EnergyAttention(5, 3, 4, learn_beta=learn_beta, init_std=0.7).to(DTYPE)
    g = torch.randn(2, 6, 5, dtype=DTYPE, requires_grad=True)
    keysets = DenseKeySets(6, exclude_self=exclude_self, dtype=DTYPE)
    (grad,) = torch.autograd.grad(att.energy(g, keysets).sum(), g)
    assert rel_err(att.neg_grad(g.detach(), keysets), -grad) < 1e-10


def test_shapes_and_defaults():
    att = EnergyAttention(10, 3, 7)
    assert att.wq.shape == att.wk.shape == (3, 7, 10)
    assert "beta" not in dict(att.named_parameters())
    torch.testing.assert_close(att.beta, torch.full((3,), 1 / math.sqrt(7)))
    q, k = att.project(torch.randn(2, 5, 10))
    assert q.shape == k.shape == (2, 3, 5, 7)
    learned = EnergyAttention(10, 3, 7, beta=0.5, learn_beta=True)
    assert learned.beta.shape == (3,) and learned.beta.requires_grad
    assert (learned.beta == 0.5).all()


def test_learned_beta_per_head_gets_its_own_gradient():
    torch.manual_seed(1)
    att = EnergyAttention(4, 3, 2, learn_beta=True, init_std=0.8).to(DTYPE)
    with torch.no_grad():
        att.beta.copy_(torch.tensor([0.3, 0.9, 1.7]))
    g = torch.randn(2, 5, 4, dtype=DTYPE)
    keysets = DenseKeySets(5, dtype=DTYPE)
    att.energy(g, keysets).sum().backward()
    grad = att.beta.grad.clone()
    # Finite difference per head: each head's beta only moves that head's term.
    for h in range(3):
        eps = 1e-6
        with torch.no_grad():
            att.beta[h] += eps
            up = att.energy(g, keysets).sum()
            att.beta[h] -= 2 * eps
            down = att.energy(g, keysets).sum()
            att.beta[h] += eps
        assert math.isclose(grad[h].item(), ((up - down) / (2 * eps)).item(), rel_tol=1e-6)


@pytest.mark.parametrize(("masked", "exclude_self"), [(False, False), (True, True)])
def test_neg_grad_backward_matches_finite_differences(masked, exclude_self):
    # The closed form's own backward (training through the descent), beta included.
    q, k, beta = random_qk(2, 2, 5, 3, seed=4)
    mask = padding_mask = None
    if masked:
        mask = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(4)) < 0.5
        mask[0, 1] = False  # an empty key set
        padding_mask = torch.tensor([[False] * 4 + [True], [False] * 5])
    keysets = DenseKeySets(5, mask, padding_mask, exclude_self, DTYPE)
    inputs = tuple(t.requires_grad_() for t in (q, k, beta))
    assert torch.autograd.gradcheck(keysets.neg_grad, inputs)


def test_neg_grad_backward_reaches_a_learned_bias_and_query_weight():
    # Subclasses (e.g. a learned soft adjacency) may make the bias a function of parameters.
    q, k, beta = random_qk(2, 3, 4, 2, seed=5)
    gen = torch.Generator().manual_seed(5)
    keysets = DenseKeySets(4, dtype=DTYPE)
    bias = torch.randn(2, 1, 4, 4, generator=gen, dtype=DTYPE, requires_grad=True)
    query_weight = torch.rand(2, 1, 4, generator=gen, dtype=DTYPE, requires_grad=True)

    def neg_grad(q, k, beta, bias, query_weight):
        keysets.bias, keysets.query_weight = bias, query_weight
        return keysets.neg_grad(q, k, beta)

    inputs = (q.requires_grad_(), k.requires_grad_(), beta.requires_grad_(), bias, query_weight)
    assert torch.autograd.gradcheck(neg_grad, inputs)


def test_neg_grad_backward_runs_under_the_forwards_autocast(monkeypatch):
    # CUDA's autocast runs softmax in float32 and products in bf16, so Omega and q, k saved for
    # the backward differ in dtype; emulate that policy on the CPU. The backward must mix them
    # as the forward did and give the float32 gradients to bf16 accuracy.
    softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda x, dim: softmax(x.float(), dim))
    q, k, beta = (t.float() for t in random_qk(2, 2, 6, 4, seed=6))
    keysets = DenseKeySets(6, dtype=torch.float32)
    weights = torch.randn(2, 2, 6, 4, generator=torch.Generator().manual_seed(6))

    def grads(autocast: bool) -> tuple[torch.Tensor, ...]:
        inputs = tuple(t.clone().requires_grad_() for t in (q, k))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            dq, dk = keysets.neg_grad(*inputs, beta)
        ((dq.float() + dk.float()) * weights).sum().backward()
        return tuple(t.grad for t in inputs)

    for low, full in zip(grads(True), grads(False), strict=True):
        assert low.dtype == torch.float32
        assert rel_err(low, full) < 0.05


@settings(max_examples=20, deadline=None)
@given(
    tokens=st.integers(1, 6),
    exclude_self=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_attention_weights_are_the_softmax_over_each_key_set_and_give_the_gradient(
    tokens, exclude_self, seed
):
    batch, heads, head_dim, dim = 2, 2, 3, 5
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, tokens, tokens, generator=gen) > 0.4
    padding = torch.zeros(batch, tokens, dtype=torch.bool)
    padding[1, tokens // 2 :] = tokens > 1  # the second sample's last tokens are padding
    attention = EnergyAttention(dim, heads, head_dim, init_std=0.5).double()
    g = torch.randn(batch, tokens, dim, generator=gen, dtype=DTYPE, requires_grad=True)
    keysets = DenseKeySets(tokens, mask, padding, exclude_self, DTYPE)
    omega = attention.weights(g, keysets)
    assert omega.shape == (batch, heads, tokens, tokens)
    allowed = allowed_keys(batch, tokens, mask, padding, exclude_self)
    q, k = attention.project(g)
    for b in range(batch):
        for h in range(heads):
            for c in range(tokens):
                keys = allowed[b, c].nonzero().flatten()
                expected = torch.zeros(tokens, dtype=DTYPE)
                if len(keys):  # padding queries and empty key sets: a row of zeros
                    expected[keys] = torch.softmax(
                        attention.beta[h] * k[b, h, keys] @ q[b, h, c], 0
                    )
                torch.testing.assert_close(omega[b, h, c], expected.detach())
    # Spec §1.2: -dE/dg = sum_h (Omega_h K_h W^Q_h + Omega_h^T Q_h W^K_h)
    (grad,) = torch.autograd.grad(attention.energy(g, keysets).sum(), g)
    pull = torch.einsum("bhcn,bhny,hyd->bcd", omega, k, attention.wq) + torch.einsum(
        "bhnc,bhny,hyd->bcd", omega, q, attention.wk
    )
    torch.testing.assert_close(pull, -grad, rtol=1e-10, atol=1e-12)


def test_edge_key_sets_give_no_attention_matrix():
    from energy_transformer import EdgeKeySets

    attention = EnergyAttention(4, 1, 2)
    keysets = EdgeKeySets(torch.tensor([[0, 1], [1, 0]]), 2)
    with pytest.raises(
        TypeError, match="EdgeKeySets gives no attention matrix: use a dense layout"
    ):
        attention.weights(torch.randn(1, 2, 4), keysets)


def test_a_bad_init_std_is_refused_under_this_class_name():
    # EnergyTransformer's own name for it is qk_init_std; built directly, it is init_std.
    with pytest.raises(ValueError, match=r"^init_std must be finite and >= 0, got -1"):
        EnergyAttention(8, 2, 4, init_std=-1.0)
