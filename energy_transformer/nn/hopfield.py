"""Hopfield network module (spec §1.3): a per-token associative memory, no token mixing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from energy_transformer.nn.checks import check_positive_int, check_real

HOPFIELD_KINDS = ("relu", "softmax")


class HopfieldNetwork(nn.Module):
    r"""Associative memory over ``memories`` patterns :math:`\xi_m`, applied to each token.

    ReLU (the paper's default), a tied-weight MLP:

    .. math::
        E_{hn} = -\frac12 \sum_B \sum_m \operatorname{relu}(\xi_m \cdot g_B)^2, \qquad
        -\frac{\partial E_{hn}}{\partial g_B} = \sum_m \xi_m \operatorname{relu}(\xi_m \cdot g_B)

    Softmax (dense associative memory), with a learnable :math:`\beta_{hn}` (init 0.01):

    .. math::
        E_{hn} = -\frac{1}{\beta_{hn}} \sum_B \log \sum_m \exp(\beta_{hn}\, \xi_m \cdot g_B),
        \qquad -\frac{\partial E_{hn}}{\partial g_B} =
        \sum_m \xi_m \operatorname{softmax}_m(\beta_{hn}\, \xi \cdot g_B)

    Args:
        dim: token dimension :math:`D`.
        memories: :math:`K`, default ``4 * dim``.
        kind: ``"relu"`` or ``"softmax"``.
        beta: initial :math:`\beta_{hn}` of the softmax kind.
        init_std: std of the normal init of ``xi`` (spec: 0.02).

    Shapes:
        - ``xi``: ``(memories, dim)``
        - input ``g``: ``(batch, tokens, dim)``; :meth:`energy`: ``(batch,)``;
          :meth:`neg_grad`: ``(batch, tokens, dim)``
        - hidden ``h = g xi^T``: ``(batch, tokens, memories)``
        - ``token_weight``: optional ``(batch, tokens, 1)``, 0 for padding tokens
    """

    def __init__(
        self,
        dim: int,
        memories: int | None = None,
        kind: str = "relu",
        beta: float = 0.01,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if kind not in HOPFIELD_KINDS:
            raise ValueError(f"hopfield kind must be one of {HOPFIELD_KINDS}, got {kind!r}")
        check_positive_int("dim", dim)
        if memories is not None:
            check_positive_int("memories", memories)
        if kind == "softmax":
            check_real("beta", beta)
        check_real("init_std", init_std, allow_zero=True)
        self.dim = dim
        self.memories = memories if memories is not None else 4 * dim
        self.kind = kind
        self.xi = nn.Parameter(torch.randn(self.memories, dim) * init_std)
        if kind == "softmax":
            self.beta = nn.Parameter(torch.tensor(float(beta)))

    def energy_from_hidden(self, h: Tensor, token_weight: Tensor | None = None) -> Tensor:
        """:math:`E_{hn}` per sample of ``h = g xi^T``: ``(batch, N, memories) -> (batch,)``."""
        if self.kind == "relu":
            per_token = -0.5 * F.relu(h).pow(2).sum(dim=-1)
        else:
            per_token = -torch.logsumexp(self.beta * h, dim=-1) / self.beta
        if token_weight is not None:
            per_token = per_token * token_weight.squeeze(-1)
        return per_token.sum(dim=-1)

    def activation(
        self, h: Tensor, token_weight: Tensor | None = None, inplace: bool = False
    ) -> Tensor:
        """:math:`-\\partial E_{hn}/\\partial h`, so that :math:`-\\partial E_{hn}/\\partial g =`
        ``activation(h) @ xi``.

        ``inplace`` overwrites ``h`` with the result (no autograd graph: inference only).

        Shapes: ``h``: ``(batch, N, memories)`` -> the same; ``token_weight``: ``(batch, N, 1)``.
        """
        if inplace:
            if self.kind == "relu":
                h.relu_()
            else:
                h.copy_(torch.softmax(self.beta * h, dim=-1))
            return h if token_weight is None else h.mul_(token_weight)
        a = F.relu(h) if self.kind == "relu" else torch.softmax(self.beta * h, dim=-1)
        return a if token_weight is None else a * token_weight

    def energy(self, g: Tensor, token_weight: Tensor | None = None) -> Tensor:
        """:math:`E_{hn}(g)` per sample: ``(batch, tokens, dim) -> (batch,)``."""
        return self.energy_from_hidden(g @ self.xi.T, token_weight)

    def neg_grad(self, g: Tensor, token_weight: Tensor | None = None) -> Tensor:
        """Closed-form :math:`-\\partial E_{hn}/\\partial g`, ``(batch, tokens, dim)``."""
        return self.activation(g @ self.xi.T, token_weight) @ self.xi

    def extra_repr(self) -> str:
        return f"dim={self.dim}, memories={self.memories}, kind={self.kind!r}"
