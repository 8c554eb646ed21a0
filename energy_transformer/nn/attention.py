"""Multi-head energy attention (spec §1.2): the energy, key sets S(C), closed-form gradient."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor, nn

from energy_transformer.nn.checks import check_positive_int, check_real


class KeySets(Protocol):
    r"""Which keys :math:`B \in S(C)` each query :math:`C` may attend to; reductions over them.

    Implementations: :class:`DenseKeySets` (an ``(N, N)`` mask per sample, O(N^2)) and
    :class:`~energy_transformer.nn.sparse_attention.EdgeKeySets` (an edge list, O(edges)).
    Both take ``q, k: (batch, heads, tokens, head_dim)`` and ``beta: (heads,)``.
    """

    def energy(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        """:math:`E_{att}` per sample, ``(batch,)``."""
        ...

    def neg_grad(self, q: Tensor, k: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`(-\\partial E/\\partial Q, -\\partial E/\\partial K)`, each like ``q``."""
        ...


def scaled_scores(q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
    r""":math:`\beta_h A_{hBC}` as ``(batch, heads, C, B)``, rows = queries, from ``q, k:
    (batch, heads, N, head_dim)`` and ``beta: (heads,)``."""
    return torch.matmul(q * beta[:, None, None], k.transpose(-1, -2))


class DenseKeySets:
    r"""Key sets given by a dense boolean mask, applied additively (``-inf`` before logsumexp).

    :math:`S(C)` is every token, minus :math:`C` itself when ``exclude_self``, minus keys with
    ``mask[b, C, B] = False``, minus padding tokens. A padding query contributes nothing, and a
    query whose key set is empty (an isolated node with ``exclude_self``) contributes 0 energy and
    0 gradient rather than NaN.

    Args:
        tokens: number of tokens :math:`N`.
        mask: optional ``(batch, N, N)`` or ``(N, N)`` bool; ``mask[b, C, B]`` True means query
            ``C`` may attend key ``B``.
        padding_mask: optional ``(batch, N)`` bool; True marks a padding token (PyTorch's
            ``key_padding_mask`` convention).
        exclude_self: remove :math:`B = C` from every key set (the paper's choice).
        dtype, device: of the additive bias.

    Shapes:
        - ``q``, ``k``: ``(batch, heads, N, head_dim)``; ``beta``: ``(heads,)``
        - :meth:`energy`: ``(batch,)``; :meth:`neg_grad`: two tensors like ``q``
    """

    def __init__(
        self,
        tokens: int,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        exclude_self: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> None:
        # bias: (batch or 1, 1, N, N) additive; query_weight: (batch or 1, 1, N) in {0, 1}.
        self.bias: Tensor | None = None
        self.query_weight: Tensor | None = None
        if mask is None and padding_mask is None and not exclude_self:
            return
        allowed = torch.ones(tokens, tokens, dtype=torch.bool, device=device)
        if exclude_self:
            allowed &= ~torch.eye(tokens, dtype=torch.bool, device=device)
        if mask is not None:
            allowed = allowed & mask
        if allowed.dim() == 2:
            allowed = allowed.unsqueeze(0)
        query_ok = torch.ones(allowed.shape[:2], dtype=torch.bool, device=device)
        if padding_mask is not None:
            allowed = allowed & ~padding_mask[:, None, :]
            query_ok = query_ok & ~padding_mask
        query_ok = query_ok & allowed.any(dim=-1)
        # Rows of queries that do not count are left unmasked so logsumexp stays finite there;
        # their weight of 0 then removes them from the energy and the gradient.
        allowed = allowed | ~query_ok[..., None]
        self.bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        self.bias.masked_fill_(~allowed, float("-inf"))
        self.bias = self.bias.unsqueeze(1)
        self.query_weight = query_ok.to(dtype).unsqueeze(1)

    def _scores(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        # Adding the bias in place is safe under autograd too: the product does not keep its
        # output for its backward.
        scores = scaled_scores(q, k, beta)
        return scores if self.bias is None else scores.add_(self.bias)

    def weights(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        r"""The attention matrix :math:`\Omega_{hCB} = \mathrm{softmax}_{B \in S(C)}(\beta_h
        K_{hB} \cdot Q_{hC})`, ``(batch, heads, N, N)``, rows = queries; the rows of queries that
        do not count (padding, an empty key set) are 0."""
        omega = torch.softmax(self._scores(q, k, beta), dim=-1)
        return omega if self.query_weight is None else omega * self.query_weight[..., None]

    def energy(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        """:math:`E_{att}` per sample, ``(batch,)``."""
        lse = torch.logsumexp(self._scores(q, k, beta), dim=-1)  # (batch, heads, N)
        if self.query_weight is not None:
            lse = lse * self.query_weight
        return -(lse.sum(dim=-1) / beta).sum(dim=-1)

    def neg_grad(self, q: Tensor, k: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(-\partial E/\partial Q, -\partial E/\partial K) = (\Omega K, \Omega^\top Q)`
        per head, each like ``q``."""
        # One contiguous copy of each, shared by the three products (matmul would copy strided
        # operands once per product). Queries that do not count are zeroed in q and in dq,
        # which removes their rows of Omega at O(N Y) instead of O(N^2) cost.
        k = k.contiguous()
        weight = None if self.query_weight is None else self.query_weight[..., None]
        q = q.contiguous() if weight is None else q * weight
        return _DenseNegGrad.apply(q, k, beta, self.bias, weight)


class _DenseNegGrad(torch.autograd.Function):
    r"""``(dq, dk) = ((Omega k) * weight, Omega^T q)``, :math:`\Omega = \mathrm{softmax}(\beta
    q k^\top + \text{bias})`, with a hand-written backward (a Hessian-vector product of the
    energy) for training through the closed-form descent.

    The backward forms :math:`\partial L/\partial\Omega = G_{dq} k^\top + q G_{dk}^\top` as
    ONE product ``[G_dq | q] @ [k | G_dk]^T`` (autograd would do two, a transposed copy and a
    sum of ``(N, N)`` tensors) and the softmax backward in place. A ``bias`` or ``weight`` that
    requires grad (e.g. a learned soft adjacency) gets its gradient too. First-order only: the
    autograd path (``gradient="autograd"``) is the one for higher derivatives.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: Tensor,
        k: Tensor,
        beta: Tensor,
        bias: Tensor | None,
        weight: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        # q, k: contiguous (batch, heads, N, Y), q zero at queries that do not count;
        # weight: (batch or 1, 1, N, 1) in {0, 1} or None.
        scores = torch.matmul(q * beta[:, None, None], k.transpose(-1, -2))
        if bias is not None:
            scores.add_(bias)
        omega = torch.softmax(scores, dim=-1)  # (batch, heads, N queries, N keys)
        del scores  # not needed below: free it before the two products
        dq = torch.matmul(omega, k)
        if weight is not None:
            dq.mul_(weight)
        ctx.save_for_backward(q, k, beta, omega, weight)
        ctx.bias_shape = None if bias is None else bias.shape
        device = q.device.type
        # Under autocast (e.g. CUDA's, where softmax runs in float32 but products in bf16) the
        # saved tensors mix dtypes: the backward runs under the same autocast as the forward.
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        return dq, torch.matmul(omega.transpose(-1, -2), q)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_dq: Tensor, grad_dk: Tensor
    ) -> tuple[Tensor | None, ...]:
        device, dtype, enabled = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return _DenseNegGrad._backward(ctx, grad_dq, grad_dk)

    @staticmethod
    def _backward(
        ctx: torch.autograd.function.FunctionCtx, grad_dq: Tensor, grad_dk: Tensor
    ) -> tuple[Tensor | None, ...]:
        q, k, beta, omega, weight = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[4]:
            grad_weight = (torch.matmul(omega, k) * grad_dq).sum_to_size(weight.shape)
        if weight is not None:
            grad_dq = grad_dq * weight
        scale = beta[:, None, None]
        grad_omega = torch.matmul(
            torch.cat([grad_dq, q], dim=-1), torch.cat([k, grad_dk], dim=-1).transpose(-1, -2)
        )
        # Softmax backward, in place: Omega * (G - rowsum(Omega * G)).
        row = (grad_omega * omega).sum(dim=-1, keepdim=True)
        grad_scores = grad_omega.sub_(row).mul_(omega)
        grad_scores_k = torch.matmul(grad_scores, k)
        grad_q = torch.matmul(omega, grad_dk).add_(grad_scores_k * scale)
        grad_k = torch.matmul(omega.transpose(-1, -2), grad_dq)
        grad_k.add_(torch.matmul(grad_scores.transpose(-1, -2), q).mul_(scale))
        grad_beta = None
        if ctx.needs_input_grad[2]:
            # d/dbeta_h of beta_h q.k summed against the score gradient.
            grad_beta = (q * grad_scores_k).sum(dim=(0, 2, 3))
        grad_bias = grad_scores.sum_to_size(ctx.bias_shape) if ctx.needs_input_grad[3] else None
        return grad_q, grad_k, grad_beta, grad_bias, grad_weight


class EnergyAttention(nn.Module):
    r"""Multi-head energy attention: no value matrix, no output projection, no biases.

    .. math::
        K_{ahB} = \sum_j W^K_{ahj} g_{jB}, \qquad Q_{ahC} = \sum_j W^Q_{ahj} g_{jC}, \qquad
        A_{hBC} = \sum_a K_{ahB} Q_{ahC}

        E_{att} = -\sum_h \frac{1}{\beta_h} \sum_C \log \sum_{B \in S(C)} \exp(\beta_h A_{hBC})

    With :math:`\Omega_h = \operatorname{softmax}_{B \in S(C)}(\beta_h A_{hBC})` (rows = queries)
    the gradient has the closed form

    .. math::
        -\frac{\partial E_{att}}{\partial G} = \sum_h \big(\Omega_h K_h W^Q_h
            + \Omega_h^\top Q_h W^K_h\big)

    ordinary softmax attention whose values are :math:`K_h W^Q_h`, plus the same attention
    transposed. :math:`\beta_h = \beta = 1/\sqrt{Y}` for every head by default (the spec's
    single :math:`\beta`); ``learn_beta`` learns one per head (as the released
    graph-classification code does).

    Args:
        dim: token dimension :math:`D`.
        heads: :math:`H`.
        head_dim: :math:`Y`, independent of ``dim / heads``.
        beta: inverse temperature; default ``1 / sqrt(head_dim)``.
        learn_beta: make ``beta`` a learnable ``(heads,)`` parameter.
        init_std: std of the normal init of ``wq``, ``wk`` (spec: 0.002).

    Shapes:
        - ``wq``, ``wk``: ``(heads, head_dim, dim)``
        - input ``g``: ``(batch, tokens, dim)``; :meth:`energy`: ``(batch,)``;
          :meth:`neg_grad`: ``(batch, tokens, dim)``
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        beta: float | None = None,
        learn_beta: bool = False,
        init_std: float = 0.002,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("heads", heads), ("head_dim", head_dim)):
            check_positive_int(name, value)
        if beta is not None:
            check_real("beta", beta)
        check_real("init_std", init_std, allow_zero=True)
        self.dim, self.heads, self.head_dim = dim, heads, head_dim
        self.wq = nn.Parameter(torch.randn(heads, head_dim, dim) * init_std)
        self.wk = nn.Parameter(torch.randn(heads, head_dim, dim) * init_std)
        beta_init = torch.full((heads,), beta if beta is not None else 1.0 / math.sqrt(head_dim))
        if learn_beta:
            self.beta = nn.Parameter(beta_init)
        else:
            self.register_buffer("beta", beta_init)

    def project(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys ``(batch, heads, tokens, head_dim)`` of ``g: (batch, tokens, dim)``."""
        return (
            torch.einsum("bnd,hyd->bhny", g, self.wq),
            torch.einsum("bnd,hyd->bhny", g, self.wk),
        )

    def energy(self, g: Tensor, keysets: KeySets) -> Tensor:
        """:math:`E_{att}(g)` per sample: ``(batch, tokens, dim) -> (batch,)``."""
        q, k = self.project(g)
        return keysets.energy(q, k, self.beta)

    def neg_grad(self, g: Tensor, keysets: KeySets) -> Tensor:
        """Closed-form :math:`-\\partial E_{att}/\\partial g`, ``(batch, tokens, dim)``."""
        q, k = self.project(g)
        dq, dk = keysets.neg_grad(q, k, self.beta)
        return torch.einsum("bhny,hyd->bnd", dq, self.wq) + torch.einsum(
            "bhny,hyd->bnd", dk, self.wk
        )

    def weights(self, g: Tensor, keysets: KeySets) -> Tensor:
        r"""The attention matrix :math:`\Omega` of ``g: (batch, tokens, dim)``, ``(batch, heads,
        tokens, tokens)``, rows = queries: where each token looks. Key sets with a dense layout
        only: others (an edge list) raise ``TypeError``."""
        if not hasattr(keysets, "weights"):
            raise TypeError(
                f"{type(keysets).__name__} gives no attention matrix: use a dense layout"
                " (DenseKeySets, a mask)"
            )
        q, k = self.project(g)
        return keysets.weights(q, k, self.beta)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, head_dim={self.head_dim}"
