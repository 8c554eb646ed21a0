"""Random float64 Energy Transformer blocks and inputs for the core tests.

Weights are drawn with stds of 0.3-1.0 (not the spec's 0.002) so that attention is far from
uniform and the Hopfield ReLUs are both on and off: otherwise gradient checks are weak.
"""

from __future__ import annotations

import torch

from energy_transformer import EnergyTransformer

DTYPE = torch.float64


def make_block(
    dim: int = 6,
    heads: int = 2,
    head_dim: int = 3,
    memories: int | None = 8,
    hopfield: str = "relu",
    exclude_self: bool = False,
    learn_beta: bool = False,
    seed: int = 0,
    std: float = 0.6,
) -> EnergyTransformer:
    """A float64 block with large random weights, a random gamma and a random delta."""
    torch.manual_seed(seed)
    block = EnergyTransformer(
        dim,
        heads,
        head_dim,
        memories,
        hopfield=hopfield,
        exclude_self=exclude_self,
        learn_beta=learn_beta,
        qk_init_std=std,
        xi_init_std=std,
    ).to(DTYPE)
    with torch.no_grad():
        block.norm.log_gamma.fill_(float(torch.empty(()).uniform_(-0.5, 0.5)))
        block.norm.delta.normal_(0.0, 0.3)
        if learn_beta:
            block.attention.beta.uniform_(0.2, 1.5)
        if hopfield == "softmax":
            block.hopfield.beta.fill_(0.7)
    return block


def make_inputs(
    batch: int,
    tokens: int,
    dim: int,
    seed: int = 0,
    mask: bool = False,
    padding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Tokens ``(batch, tokens, dim)``, an optional random ``(batch, N, N)`` mask and an optional
    padding mask with a different number of padding tokens per sample (never all padding)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim, generator=gen, dtype=DTYPE)
    attn_mask = torch.rand(batch, tokens, tokens, generator=gen) < 0.6 if mask else None
    padding_mask = None
    if padding:
        real = torch.randint(1, tokens + 1, (batch,), generator=gen)
        padding_mask = torch.arange(tokens)[None, :] >= real[:, None]
    return x, attn_mask, padding_mask


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
