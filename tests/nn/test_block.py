"""The Energy Transformer block: closed-form gradient == autograd of the energy, monotone and
bounded energy descent, padding invariance, batching, training through unrolled steps, errors."""

import math

import pytest
import torch
from core_factory import DTYPE, make_block, make_inputs, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from energy_transformer import DenseKeySets, EnergyTransformer

block_config = {
    "dim": st.integers(4, 10),
    "heads": st.integers(1, 3),
    "head_dim": st.integers(1, 5),
    "memories": st.integers(1, 12),
    "hopfield": st.sampled_from(["relu", "softmax"]),
    "exclude_self": st.booleans(),
    "learn_beta": st.booleans(),
}
input_config = {
    "batch": st.integers(1, 3),
    "tokens": st.integers(1, 7),
    "mask": st.booleans(),
    "padding": st.booleans(),
    "seed": st.integers(0, 10_000),
}


def reference_neg_grad(block, x, mask=None, padding_mask=None):
    """-dE/dg at g = LN(x) by autograd of the per-module energies (not the block's own code)."""
    g = block.norm(x).detach().requires_grad_()
    keysets = DenseKeySets(x.shape[1], mask, padding_mask, block.exclude_self, DTYPE)
    weight = None if padding_mask is None else (~padding_mask).to(DTYPE)[..., None]
    energy = block.attention.energy(g, keysets) + block.hopfield.energy(g, weight)
    (grad,) = torch.autograd.grad(energy.sum(), g)
    return -grad


@settings(max_examples=40, deadline=None)
@given(**block_config, **input_config)
def test_closed_form_equals_autograd(
    dim,
    heads,
    head_dim,
    memories,
    hopfield,
    exclude_self,
    learn_beta,
    batch,
    tokens,
    mask,
    padding,
    seed,
):
    block = make_block(dim, heads, head_dim, memories, hopfield, exclude_self, learn_beta, seed)
    x, attn_mask, padding_mask = make_inputs(batch, tokens, dim, seed, mask, padding)
    expected = -reference_neg_grad(block, x, attn_mask, padding_mask)
    for gradient in ("closed_form", "autograd"):
        got = block.energy_grad(x, attn_mask, padding_mask, gradient=gradient)
        assert rel_err(got, expected) < 1e-10, gradient
        with torch.no_grad():  # the in-place inference path
            got = block.energy_grad(x, attn_mask, padding_mask, gradient=gradient)
        assert rel_err(got, expected) < 1e-10, gradient
    # The descent itself: both gradients, with and without autograd, give the same tokens.
    steps = {"steps": 3, "alpha": 0.05, "mask": attn_mask, "padding_mask": padding_mask}
    reference = block(x, gradient="autograd", **steps)
    assert rel_err(block(x, **steps), reference) < 1e-10
    with torch.no_grad():
        assert rel_err(block(x, **steps), reference) < 1e-10


def test_energy_terms_are_the_module_energies():
    block = make_block(hopfield="softmax", exclude_self=True)
    x, mask, padding_mask = make_inputs(2, 5, 6, mask=True, padding=True)
    g = block.norm(x)
    keysets = DenseKeySets(5, mask, padding_mask, True, DTYPE)
    weight = (~padding_mask).to(DTYPE)[..., None]
    terms = block.energy_terms(x, mask, padding_mask)
    torch.testing.assert_close(terms.attention, block.attention.energy(g, keysets))
    torch.testing.assert_close(terms.hopfield, block.hopfield.energy(g, weight))
    torch.testing.assert_close(terms.total, terms.attention + terms.hopfield)
    torch.testing.assert_close(block.energy(x, mask, padding_mask), terms.total)


@torch.no_grad()
def energy_lower_bound(block: EnergyTransformer, tokens: int) -> float:
    """A bound from ||g - delta|| <= gamma sqrt(D): |g| <= R, so |q . k| <= |W^Q_h| |W^K_h| R^2."""
    radius = float(block.norm.gamma * math.sqrt(block.dim) + block.norm.delta.norm())
    att = block.attention
    bound = 0.0
    for h in range(att.heads):
        a_max = float(
            torch.linalg.matrix_norm(att.wq[h], 2) * torch.linalg.matrix_norm(att.wk[h], 2)
        )
        bound -= tokens * (a_max * radius**2 + math.log(tokens) / float(att.beta[h]))
    xi_norms = block.hopfield.xi.norm(dim=-1)
    if block.hopfield.kind == "relu":
        bound -= tokens * 0.5 * float((xi_norms * radius).pow(2).sum())
    else:
        beta_hn = float(block.hopfield.beta)
        bound -= tokens * (
            float(xi_norms.max()) * radius + math.log(block.hopfield.memories) / beta_hn
        )
    return bound


@settings(max_examples=15, deadline=None)
@given(
    dim=st.integers(4, 10),
    heads=st.integers(1, 3),
    hopfield=st.sampled_from(["relu", "softmax"]),
    exclude_self=st.booleans(),
    mask=st.booleans(),
    padding=st.booleans(),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 10_000),
)
def test_energy_never_increases_and_is_bounded_below(
    dim, heads, hopfield, exclude_self, mask, padding, scale, seed
):
    block = make_block(dim, heads, 3, 2 * dim, hopfield, exclude_self, seed=seed)
    x, attn_mask, padding_mask = make_inputs(2, 5, dim, seed, mask, padding)
    with torch.no_grad():
        _, traj = block(
            scale * x, steps=12, alpha=1e-3, mask=attn_mask, padding_mask=padding_mask,
            return_trajectory=True,
        )  # fmt: skip
    energy = traj.energies.total  # (steps + 1, batch)
    increase = energy[1:] - energy[:-1]
    assert (increase <= 1e-12 * (1 + energy[:-1].abs())).all(), increase.max()
    assert (increase < 0).any()
    assert (energy >= energy_lower_bound(block, 5)).all()


def test_energy_bounded_below_for_any_tokens():
    block = make_block(memories=10, hopfield="relu")
    bound = energy_lower_bound(block, 4)
    x = torch.randn(200, 4, 6, dtype=DTYPE) * torch.logspace(-3, 3, 200, dtype=DTYPE)[:, None, None]
    assert (block.energy(x) >= bound).all()
    # A long descent with the spec's step size stays above it too.
    with torch.no_grad():
        _, traj = block(x[:5], steps=60, alpha=0.1, return_trajectory=True)
    assert (traj.energies.total >= bound).all()


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_padding_invariance(gradient, exclude_self):
    block = make_block(hopfield="softmax", exclude_self=exclude_self, seed=3)
    x, mask, _ = make_inputs(2, 5, 6, seed=3, mask=True)
    extra = torch.randn(2, 3, 6, dtype=DTYPE)
    x_pad = torch.cat([x, extra], dim=1)
    mask_pad = torch.rand(2, 8, 8) < 0.6  # random where padding is involved
    mask_pad[:, :5, :5] = mask
    padding_mask = torch.zeros(2, 8, dtype=torch.bool)
    padding_mask[:, 5:] = True
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled):
            out, traj = block(x, 4, 0.1, mask, gradient=gradient, return_trajectory=True)
            out_pad, traj_pad = block(
                x_pad, 4, 0.1, mask_pad, padding_mask, gradient=gradient, return_trajectory=True
            )
        torch.testing.assert_close(out_pad[:, :5], out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out_pad[:, 5:], extra, rtol=0, atol=0)  # padding stays put
        for term, term_pad in zip(traj.energies, traj_pad.energies, strict=True):
            torch.testing.assert_close(term_pad, term, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
def test_batched_equals_one_by_one(gradient):
    block = make_block(exclude_self=True, seed=5)
    x, mask, padding_mask = make_inputs(3, 6, 6, seed=5, mask=True, padding=True)
    out, traj = block(x, 3, 0.1, mask, padding_mask, gradient=gradient, return_trajectory=True)
    for b in range(3):
        one, traj_one = block(
            x[b : b + 1], 3, 0.1, mask[b : b + 1], padding_mask[b : b + 1], gradient=gradient,
            return_trajectory=True,
        )  # fmt: skip
        torch.testing.assert_close(out[b : b + 1], one, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(traj.energies.total[:, b : b + 1], traj_one.energies.total)


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
def test_isolated_node(gradient):
    # Token 1 attends nothing (mask row all False, exclude_self) and nobody attends it.
    block = make_block(exclude_self=True, seed=7)
    x, _, _ = make_inputs(2, 5, 6, seed=7)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[1, :] = False
    mask[:, 1] = False
    g = block.norm(x)
    keysets = DenseKeySets(5, mask, exclude_self=True, dtype=DTYPE)
    att_grad = block.attention.neg_grad(g, keysets)
    assert torch.isfinite(att_grad).all() and (att_grad[:, 1] == 0).all()
    grad = block.energy_grad(x, mask, gradient=gradient)
    out = block(x, 3, 0.1, mask, gradient=gradient)
    assert torch.isfinite(grad).all() and torch.isfinite(out).all()
    # Only the Hopfield term moves it: the same as with no attention partner at all.
    hopfield_only = -block.hopfield.neg_grad(g)
    torch.testing.assert_close(grad[:, 1], hopfield_only[:, 1], rtol=1e-12, atol=1e-12)


def tiny_descent(block, names, gradient, x, padding_mask):
    def run(*params):
        state = dict(zip(names, params, strict=True))
        out = functional_call(
            block,
            state,
            (x,),
            {"steps": 2, "alpha": 0.3, "padding_mask": padding_mask, "gradient": gradient},
        )
        return out.pow(2).sum(dim=(1, 2))

    return run


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
@pytest.mark.parametrize(("hopfield", "learn_beta"), [("relu", True), ("softmax", False)])
def test_parameter_gradients_match_finite_differences(gradient, hopfield, learn_beta):
    block = make_block(4, 2, 2, 5, hopfield, exclude_self=True, learn_beta=learn_beta, seed=11)
    x, _, padding_mask = make_inputs(2, 3, 4, seed=11, padding=True)
    names, params = zip(*block.named_parameters(), strict=True)
    fn = tiny_descent(block, names, gradient, x, padding_mask)
    inputs = tuple(p.detach().clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_training_gives_equal_parameter_grads_for_both_paths(hopfield):
    block = make_block(8, 3, 4, 16, hopfield, exclude_self=False, learn_beta=True, seed=13)
    x, mask, padding_mask = make_inputs(3, 6, 8, seed=13, mask=True, padding=True)
    x.requires_grad_()
    target = torch.randn_like(x)
    grads = {}
    for gradient in ("closed_form", "autograd"):
        block.zero_grad()
        x.grad = None
        out = block(x, 5, 0.1, mask, padding_mask, gradient=gradient)
        (out - target).pow(2).sum().backward()
        grads[gradient] = {n: p.grad.clone() for n, p in block.named_parameters()} | {"x": x.grad}
    assert set(grads["closed_form"]) == {
        "norm.log_gamma", "norm.delta", "attention.wq", "attention.wk", "attention.beta",
        "hopfield.xi", "x",
    } | ({"hopfield.beta"} if hopfield == "softmax" else set())  # fmt: skip
    for name, grad in grads["autograd"].items():
        assert grad.abs().sum() > 0, name
        assert rel_err(grads["closed_form"][name], grad) < 1e-10, name


@pytest.mark.parametrize("frozen", ["norm", "attention"])
def test_autograd_path_trains_the_weights_when_other_parameters_are_frozen(frozen):
    # g = LN(x) needs no grad when x does not and the layer norm is frozen: the autograd path
    # must still build the graph of each step (spec §1.4) for the weights that do learn.
    block = make_block(learn_beta=True, seed=5)
    getattr(block, frozen).requires_grad_(False)
    x, mask, _ = make_inputs(2, 5, 6, seed=5, mask=True)
    grads = {}
    for gradient in ("closed_form", "autograd"):
        block.zero_grad()
        block(x, 3, 0.1, mask, gradient=gradient).pow(2).sum().backward()
        grads[gradient] = {n: p.grad for n, p in block.named_parameters() if p.requires_grad}
    for name, grad in grads["closed_form"].items():
        assert grads["autograd"][name] is not None, name
        assert rel_err(grads["autograd"][name], grad) < 1e-10, name


def test_inference_does_not_touch_the_input_and_matches_grad_mode():
    block = make_block()
    x, mask, padding_mask = make_inputs(2, 5, 6, mask=True, padding=True)
    x_before = x.clone()
    with_grad, traj = block(x, 3, 0.1, mask, padding_mask, return_trajectory=True)
    with torch.no_grad():
        without, traj_ng = block(x, 3, 0.1, mask, padding_mask, return_trajectory=True)
    assert torch.equal(x, x_before)
    torch.testing.assert_close(without, with_grad, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(traj_ng.tokens, traj.tokens, rtol=1e-13, atol=1e-13)
    assert not without.requires_grad and with_grad.requires_grad


def test_autograd_path_passes_the_gradient_to_x_when_every_weight_is_frozen():
    # Nothing in the block learns, but x does: each step's graph is still needed, or the
    # gradient of the tokens misses the path through -dE/dg.
    block = make_block(seed=5)
    block.requires_grad_(False)
    x, mask, _ = make_inputs(2, 5, 6, seed=5, mask=True)
    grads = {}
    for gradient in ("closed_form", "autograd"):
        leaf = x.clone().requires_grad_()
        block(leaf, 3, 0.1, mask, gradient=gradient).pow(2).sum().backward()
        grads[gradient] = leaf.grad
    assert rel_err(grads["autograd"], grads["closed_form"]) < 1e-10


def test_the_autograd_path_under_inference_mode_says_why_it_cannot_run():
    block = make_block()
    x, mask, _ = make_inputs(2, 5, 6, mask=True)
    with torch.inference_mode():
        closed = block(x, 3, 0.1, mask)  # the closed form runs there
        # torch's "element 0 of tensors does not require grad" named no cause.
        with pytest.raises(RuntimeError, match=r"torch.inference_mode\(\) does not allow"):
            block(x, 3, 0.1, mask, gradient="autograd")
        with pytest.raises(RuntimeError, match="use torch.no_grad"):
            block.energy_grad(x, mask, gradient="autograd")
    with torch.no_grad():
        torch.testing.assert_close(block(x, 3, 0.1, mask, gradient="autograd"), closed)


def test_trajectory_records_tokens_and_energies():
    block = make_block(hopfield="softmax")
    x, _, padding_mask = make_inputs(2, 4, 6, padding=True)
    out, traj = block(x, 4, 0.1, padding_mask=padding_mask, return_trajectory=True)
    assert traj.tokens.shape == (5, 2, 4, 6)
    torch.testing.assert_close(traj.tokens[0], x)
    torch.testing.assert_close(traj.tokens[-1], out)
    for t in range(5):
        terms = block.energy_terms(traj.tokens[t], padding_mask=padding_mask)
        for got, expected in zip(traj.energies, terms, strict=True):
            torch.testing.assert_close(got[t], expected)
    assert torch.equal(block(x, steps=0), x)


def test_noise_spares_padding_and_follows_the_seed():
    block = make_block()
    x, _, padding_mask = make_inputs(2, 5, 6, padding=True)
    torch.manual_seed(0)
    a = block(x, 2, 0.1, padding_mask=padding_mask, noise_std=0.5)
    torch.manual_seed(0)
    b = block(x, 2, 0.1, padding_mask=padding_mask, noise_std=0.5)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[padding_mask], x[padding_mask], rtol=0, atol=0)
    assert not torch.allclose(a, block(x, 2, 0.1, padding_mask=padding_mask))


def test_noise_is_sqrt_alpha_sigma_per_step_as_in_the_released_code():
    # x <- x - alpha dE/dg + sqrt(alpha) sigma eps: one step's noise is the difference from the
    # noiseless step, whatever the energy.
    block = make_block()
    x = torch.randn(8, 64, 6, dtype=torch.float64)
    with torch.no_grad():
        noise = block(x, 1, 0.25, noise_std=0.5) - block(x, 1, 0.25)
    assert abs(noise.std().item() - 0.25**0.5 * 0.5) < 0.02  # 3072 draws: std error ~0.003
    assert abs(noise.mean().item()) < 0.02


def test_bfloat16_energies_reported_in_float32():
    block = make_block(std=0.1).to(torch.bfloat16)
    x = torch.randn(2, 5, 6, dtype=torch.bfloat16)
    with torch.no_grad():
        out, traj = block(x, 2, 0.1, return_trajectory=True)
    assert out.dtype == torch.bfloat16 and traj.energies.total.dtype == torch.float32


def test_public_names_and_shapes():
    block = EnergyTransformer(16, 4, 8)
    assert block.attention.wq.shape == block.attention.wk.shape == (4, 8, 16)
    assert block.hopfield.xi.shape == (64, 16) and block.hopfield.kind == "relu"
    assert block.norm.delta.shape == (16,) and block.norm.gamma.item() == pytest.approx(1.0)
    assert not block.exclude_self
    assert block.energy(torch.randn(3, 5, 16)).shape == (3,)


X = torch.randn(2, 4, 6, dtype=DTYPE)
BAD_CALLS = [
    # (exception, message fragment, call kwargs)
    (ValueError, "shape \\(batch, tokens, dim\\)", {"x": X[0]}),
    (ValueError, "dim 5", {"x": X[..., :5]}),
    (TypeError, "floating-point", {"x": X.long()}),
    (TypeError, "torch.Tensor", {"x": X.tolist()}),
    (ValueError, "NaN or inf", {"x": X.clone().index_fill_(1, torch.tensor([2]), float("nan"))}),
    (ValueError, "NaN or inf", {"x": X.clone().index_fill_(2, torch.tensor([0]), float("inf"))}),
    (ValueError, "mask must have shape", {"mask": torch.ones(2, 4, 5, dtype=torch.bool)}),
    (ValueError, "mask must have shape", {"mask": torch.ones(3, 4, 4, dtype=torch.bool)}),
    (TypeError, "mask must be a bool", {"mask": torch.ones(4, 4)}),
    (
        ValueError,
        "padding_mask must have shape",
        {"padding_mask": torch.zeros(2, 5, dtype=torch.bool)},
    ),
    (TypeError, "padding_mask must be a bool", {"padding_mask": torch.zeros(2, 4)}),
    (ValueError, "steps", {"steps": -1}),
    (ValueError, "steps", {"steps": 2.5}),
    (ValueError, "steps", {"steps": True}),
    (ValueError, "alpha", {"alpha": 0.0}),
    (ValueError, "alpha", {"alpha": -0.1}),
    (ValueError, "alpha", {"alpha": float("nan")}),
    (ValueError, "alpha", {"alpha": float("inf")}),
    (TypeError, "alpha", {"alpha": "0.1"}),
    (ValueError, "noise_std", {"noise_std": -1.0}),
    (ValueError, "gradient must be one of", {"gradient": "numerical"}),
    (
        ValueError,
        "either mask or keysets",
        {"mask": torch.ones(4, 4, dtype=torch.bool), "keysets": DenseKeySets(4)},
    ),
]


@pytest.mark.parametrize(("error", "match", "kwargs"), BAD_CALLS)
def test_bad_input_gets_a_clear_error(error, match, kwargs):
    block = make_block()
    kwargs = {"x": X} | kwargs
    with pytest.raises(error, match=match):
        block(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"heads": 1.5}, "heads"),
        ({"head_dim": -2}, "head_dim"),
        ({"hopfield": "tanh"}, "hopfield kind"),
        ({"memories": 0}, "memories must be a positive int, got 0"),
        ({"beta": -0.5}, r"beta must be finite and > 0, got -0.5"),
        ({"beta": float("inf")}, "beta must be finite"),
        ({"eps": 0.0}, r"eps must be finite and > 0"),
        ({"qk_init_std": float("nan")}, r"qk_init_std must be finite and >= 0, got nan"),
        ({"xi_init_std": -1.0}, r"xi_init_std must be finite and >= 0"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyTransformer(**{"dim": 4, "heads": 2, "head_dim": 3} | kwargs)


def test_tokens_of_another_dtype_than_the_weights_need_autocast():
    block = EnergyTransformer(8, 2, 4)  # float32 weights
    x = torch.rand(1, 3, 8, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="x has dtype torch.bfloat16 but the block's weights are"):
        block(x, steps=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(x, steps=1).shape == (1, 3, 8)


def test_zero_init_std_is_allowed_and_a_string_scale_is_not():
    block = EnergyTransformer(4, 2, 3, qk_init_std=0.0)
    assert not block.attention.wq.any() and not block.attention.wk.any()
    with pytest.raises(TypeError, match="beta must be a real number, got str"):
        EnergyTransformer(4, 2, 3, beta="0.1")


def test_energy_and_energy_grad_check_their_inputs():
    block = make_block()
    with pytest.raises(ValueError, match="NaN or inf"):
        block.energy(torch.full((1, 3, 6), float("nan"), dtype=DTYPE))
    with pytest.raises(ValueError, match="gradient must be one of"):
        block.energy_grad(X, gradient="exact")


@pytest.mark.parametrize("grad_enabled", [True, False])
@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
def test_autocast_keeps_the_token_dtype(grad_enabled, gradient):
    block = make_block(std=0.3).float()
    x = torch.randn(2, 5, 6)
    expected = block(x, 3, 0.1, gradient=gradient)
    with torch.set_grad_enabled(grad_enabled), torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x, 3, 0.1, gradient=gradient)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("shape", [(0, 5, 6), (2, 0, 6)])
def test_an_empty_batch_or_no_tokens_descends_to_itself(shape):
    block = make_block()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(block(x, 3, 0.1), x)
    y, trajectory = block(x, 3, 0.1, return_trajectory=True)
    assert trajectory.tokens.shape == (4, *shape)
    assert trajectory.energies.total.shape == (4, shape[0])
    assert (trajectory.energies.total == 0).all()


def spec_energy_of_g(block, g, mask=None, padding_mask=None):
    """Spec §1.2 + §1.3 written out token by token, head by head and memory by memory from the
    block's raw parameters (no code of the library): E_att + E_hn of ``g: (batch, N, D)``."""
    att, hn = block.attention, block.hopfield
    batch, tokens, _ = g.shape
    e_att, e_hn = [], []
    for b in range(batch):
        real = [t for t in range(tokens) if padding_mask is None or not padding_mask[b, t]]
        energy = g.new_zeros(())
        for h in range(att.heads):
            beta = att.beta[h]
            for c in real:  # query C: Q[a, h, C] = sum_j WQ[h, a, j] g[j, C]
                keys = [
                    key for key in real
                    if not (block.exclude_self and key == c) and (mask is None or mask[b, c, key])
                ]  # fmt: skip
                if not keys:  # an empty S(C): no energy
                    continue
                query = att.wq[h] @ g[b, c]
                scores = torch.stack([beta * (att.wk[h] @ g[b, key]) @ query for key in keys])
                energy = energy - torch.log(torch.exp(scores).sum()) / beta
        e_att.append(energy)
        energy = g.new_zeros(())
        for t in real:
            overlaps = hn.xi @ g[b, t]  # xi_m . g_B
            if hn.kind == "relu":
                energy = energy - 0.5 * sum(torch.clamp(o, min=0) ** 2 for o in overlaps)
            else:
                energy = energy - torch.log(torch.exp(hn.beta * overlaps).sum()) / hn.beta
        e_hn.append(energy)
    return torch.stack(e_att), torch.stack(e_hn)


def spec_layer_norm(block, x):
    """Spec §1.1 with its eps = 1e-5: gamma (x - mean) / sqrt(mean((x - mean)^2) + eps) + delta."""
    centred = x - x.sum(-1, keepdim=True) / x.shape[-1]
    s = torch.sqrt((centred * centred).sum(-1, keepdim=True) / x.shape[-1] + 1e-5)
    return torch.exp(block.norm.log_gamma) * centred / s + block.norm.delta


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_energy_and_descent_are_the_specs_formulas_written_out(hopfield, exclude_self):
    # The other tests compare the closed form with autograd of the library's own energy: a
    # wrong energy (beta placement, 1/2 factor, relu vs relu^2, eps, q/k roles) would pass them.
    # Here the energy, its gradient and one descent step come from the spec's sums directly.
    block = make_block(5, 2, 3, 7, hopfield, exclude_self, learn_beta=True, seed=21)
    x, _, _ = make_inputs(2, 5, 5, seed=21)
    # Key sets of several keys (one key per query would hide the roles of q and k), one empty
    # key set (query 1 of sample 0), an asymmetric mask, one padding token (4 of sample 1).
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    mask[0, 1] = False
    mask[0, 2, 3:] = False
    mask[1, 0, 1] = False
    padding_mask = torch.zeros(2, 5, dtype=torch.bool)
    padding_mask[1, 4] = True
    g = spec_layer_norm(block, x).detach().requires_grad_()
    e_att, e_hn = spec_energy_of_g(block, g, mask, padding_mask)
    terms = block.energy_terms(x, mask, padding_mask)
    torch.testing.assert_close(terms.attention, e_att, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms.hopfield, e_hn, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms.total, e_att + e_hn, rtol=1e-10, atol=1e-12)
    # The module's own projections (wq for queries, wk for keys) give the same E_att.
    keysets = DenseKeySets(5, mask, padding_mask, exclude_self, DTYPE)
    torch.testing.assert_close(block.attention.energy(g, keysets), e_att, rtol=1e-10, atol=0)
    # x(1) = x(0) - alpha dE/dg(LN(x(0))), on every path; padding tokens stay where they are.
    (grad,) = torch.autograd.grad((e_att + e_hn).sum(), g)
    expected = x - 0.1 * grad
    for gradient in ("closed_form", "autograd"):
        torch.testing.assert_close(
            block(x, 1, 0.1, mask, padding_mask, gradient=gradient),
            expected,
            rtol=1e-10,
            atol=1e-12,
        )
        with torch.no_grad():
            out = block(x, 1, 0.1, mask, padding_mask, gradient=gradient)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    assert (grad[padding_mask] == 0).all()
