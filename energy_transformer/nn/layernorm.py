"""Energy layer norm: the gradient of a convex Lagrangian (spec §1.1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from energy_transformer.nn.checks import check_positive_int, check_real


class EnergyLayerNorm(nn.Module):
    r"""Layer norm written as the gradient of a convex Lagrangian, applied per token.

    .. math::
        \bar x = \frac{1}{D}\sum_j x_j, \qquad
        s = \sqrt{\tfrac{1}{D}\sum_j (x_j - \bar x)^2 + \epsilon}

        L(x) = D\,\gamma\,s + \sum_j \delta_j x_j, \qquad
        g_i = \frac{\partial L}{\partial x_i} = \gamma\,\frac{x_i - \bar x}{s} + \delta_i

    Its Jacobian :math:`M = \partial g / \partial x = \frac{\gamma}{s}\big[P - \frac{(Px)(Px)^\top}
    {D s^2}\big]` with :math:`P = I - \mathbf{1}\mathbf{1}^\top / D` is symmetric positive
    semi-definite exactly when :math:`\gamma > 0`; that is what makes the ET energy a Lyapunov
    function of the dynamics. ``gamma`` is therefore stored as ``log_gamma`` and exposed as
    ``gamma = exp(log_gamma)``, positive for every value of the parameter (clamped at the
    dtype's smallest normal number, so that ``exp`` cannot underflow to 0). It is one scalar: a
    per-feature gamma would make :math:`g` no longer a gradient.

    Since :math:`\sum_i (x_i - \bar x)^2 / s^2 < D`, :math:`\|g - \delta\| \le \gamma
    \sqrt{D}`: every token lives in a bounded set, so every energy of the block is bounded
    below.

    Args:
        dim: token dimension :math:`D`.
        eps: :math:`\epsilon` inside the square root.
        gamma: initial value of :math:`\gamma` (must be positive).

    Shapes:
        - input ``x``: ``(..., dim)``
        - output ``g``: ``(..., dim)``; :meth:`lagrangian`: ``(...)``
    """

    def __init__(self, dim: int, eps: float = 1e-5, gamma: float = 1.0) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_real("eps", eps)
        # gamma > 0 is what makes the energy a Lyapunov function of the descent.
        check_real("gamma", gamma)
        self.dim = dim
        self.eps = eps
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma)))
        self.delta = nn.Parameter(torch.zeros(dim))

    @property
    def gamma(self) -> Tensor:
        """The positive scale :math:`\\gamma = \\exp(\\text{log\\_gamma})`, a 0-d tensor."""
        return self.log_gamma.exp().clamp_min(torch.finfo(self.log_gamma.dtype).tiny)

    def _centred_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        centred = x - x.mean(dim=-1, keepdim=True)
        s = (centred.pow(2).mean(dim=-1, keepdim=True) + self.eps).sqrt()
        return centred, s

    def lagrangian(self, x: Tensor) -> Tensor:
        """:math:`L(x) = D\\gamma s + \\delta\\cdot x` per token: ``(..., dim) -> (...)``."""
        _, s = self._centred_and_scale(x)
        return self.dim * self.gamma * s.squeeze(-1) + x @ self.delta

    def forward(self, x: Tensor) -> Tensor:
        """:math:`g = \\partial L / \\partial x`: ``(..., dim) -> (..., dim)``."""
        # The same formula as F.layer_norm (biased variance, eps inside the root) with a scalar
        # weight: one fused kernel instead of eight elementwise passes, double-backward capable.
        return F.layer_norm(x, (self.dim,), self.gamma.expand(self.dim), self.delta, self.eps)

    def jacobian_vector(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`M v`, the change of :math:`g` that a small change :math:`v` of :math:`x` makes
        (per token), with the closed form above:

        .. math::
            M v = \frac{\gamma}{s}\Big[P v - \frac{(Px)\,\big((Px) \cdot (Pv)\big)}{D s^2}\Big]

        Shapes: ``x``, ``v``: ``(..., dim)`` -> ``(..., dim)``.
        """
        centred, s = self._centred_and_scale(x)
        pv = v - v.mean(dim=-1, keepdim=True)
        along = (centred * pv).sum(dim=-1, keepdim=True) / (self.dim * s.pow(2))
        return self.gamma / s * (pv - centred * along)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"
