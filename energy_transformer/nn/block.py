"""The Energy Transformer block (spec §1.4): T steps of gradient descent on one global energy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from energy_transformer.nn.attention import DenseKeySets, EnergyAttention, KeySets
from energy_transformer.nn.checks import check_descent, check_real
from energy_transformer.nn.hopfield import HopfieldNetwork
from energy_transformer.nn.layernorm import EnergyLayerNorm

Gradient = Literal["closed_form", "autograd"]
GRADIENTS: tuple[str, ...] = ("closed_form", "autograd")


class EnergyTerms(NamedTuple):
    """Energies per sample, each ``(batch,)`` (or ``(steps + 1, batch)`` in a trajectory)."""

    attention: Tensor
    hopfield: Tensor
    total: Tensor


@dataclass
class Trajectory:
    """What the descent went through: ``tokens: (steps + 1, batch, N, dim)`` and the energies
    of each term at every step, ``(steps + 1, batch)``; index 0 is the input."""

    tokens: Tensor
    energies: EnergyTerms


class EnergyTransformer(nn.Module):
    r"""One Energy Transformer block: layer norm, attention energy and Hopfield energy.

    .. math::
        g = \mathrm{LN}(x), \qquad E(g) = E_{att}(g) + E_{hn}(g), \qquad
        x^{(t+1)} = x^{(t)} - \alpha\, \frac{\partial E}{\partial g}\big(\mathrm{LN}(x^{(t)})\big)

    repeated for ``steps`` steps with one set of weights. It is the Euler step of
    :math:`\tau\, dx/dt = -\partial E / \partial g`, along which, with
    :math:`M = \partial g / \partial x` the layer norm's PSD Jacobian,

    .. math::
        \frac{dE}{dt} = -\frac{1}{\tau} \Big(\frac{\partial E}{\partial g}\Big)^{\top}
        M\, \frac{\partial E}{\partial g} \le 0,

    so a small enough :math:`\alpha` makes the discrete energy decrease monotonically, and it
    is bounded below because :math:`\|g - \delta\| \le \gamma \sqrt{D}`. Attention and
    Hopfield updates are computed from the same :math:`g` and summed. :math:`E` omits the layer
    norm's own Legendre term (:math:`x^\top g - L(x)`, :math:`O(\epsilon)`), as the spec does.

    ``gradient="closed_form"`` (the default, fast) uses spec §1.2/§1.3's formulas with one stacked
    projection ``g @ [W^Q; W^K; xi]^T`` and one stacked back-projection per step (two, Hopfield
    and attention, when training); ``gradient="autograd"`` differentiates :meth:`energy` (the
    reference). Training through the unrolled steps works with both. Under ``torch.no_grad``
    the descent updates a private copy of ``x`` in place and reuses one projection buffer for
    every step; the input is never modified.

    Args:
        dim: token dimension :math:`D`.
        heads: attention heads :math:`H`.
        head_dim: :math:`Y`, the key/query dimension of one head.
        memories: Hopfield memories :math:`K` (default ``4 * dim``).
        hopfield: ``"relu"`` (paper) or ``"softmax"``.
        exclude_self: remove :math:`B = C` from every key set (the paper's choice) or allow it
            (the default: the released ImageNet weights were trained so, and the spec says the
            model "works equally well both ways").
        beta: attention inverse temperature (default ``1 / sqrt(head_dim)``).
        learn_beta: learn one ``beta`` per head.
        eps: layer-norm epsilon.
        qk_init_std, xi_init_std: init scales of ``wq``/``wk`` and ``xi`` (spec: 0.002, 0.02).

    Shapes:
        - ``x``: ``(batch, tokens, dim)``
        - ``mask``: ``(batch, tokens, tokens)`` or ``(tokens, tokens)`` bool; ``mask[b, C, B]``
          True means query ``C`` may attend key ``B``
        - ``padding_mask``: ``(batch, tokens)`` bool, True = padding
        - output: ``(batch, tokens, dim)``
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        memories: int | None = None,
        hopfield: str = "relu",
        exclude_self: bool = False,
        beta: float | None = None,
        learn_beta: bool = False,
        eps: float = 1e-5,
        qk_init_std: float = 0.002,
        xi_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        # Checked here too, so that a refusal names this class's parameter.
        check_real("qk_init_std", qk_init_std, allow_zero=True)
        check_real("xi_init_std", xi_init_std, allow_zero=True)
        self.dim = dim
        self.exclude_self = exclude_self
        self.norm = EnergyLayerNorm(dim, eps=eps)
        self.attention = EnergyAttention(dim, heads, head_dim, beta, learn_beta, qk_init_std)
        self.hopfield = HopfieldNetwork(dim, memories, hopfield, init_std=xi_init_std)

    # -- inputs -----------------------------------------------------------------------------

    def _check(self, x: Tensor, mask: Tensor | None, padding_mask: Tensor | None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.dim() != 3:
            raise ValueError(f"x must have shape (batch, tokens, dim), got {tuple(x.shape)}")
        batch, tokens, dim = x.shape
        if dim != self.dim:
            raise ValueError(f"x has dim {dim} but the block was built with dim {self.dim}")
        weights = self.attention.wq.dtype
        if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"x has dtype {x.dtype} but the block's weights are {weights}: convert one to"
                " the other (block.to(dtype)), or run under torch.autocast"
            )
        # A finite sum proves every entry finite in one reduction; only an overflowing sum
        # needs the elementwise check.
        if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError("mask must be a bool tensor (True = query may attend key)")
            if mask.shape not in ((batch, tokens, tokens), (tokens, tokens)):
                raise ValueError(
                    f"mask must have shape ({batch}, {tokens}, {tokens}) or ({tokens}, {tokens}),"
                    f" got {tuple(mask.shape)}"
                )
        if padding_mask is not None:
            if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
                raise TypeError("padding_mask must be a bool tensor (True = padding token)")
            if padding_mask.shape != (batch, tokens):
                raise ValueError(
                    f"padding_mask must have shape ({batch}, {tokens}),"
                    f" got {tuple(padding_mask.shape)}"
                )

    def _context(
        self, x: Tensor, mask: Tensor | None, padding_mask: Tensor | None, keysets: KeySets | None
    ) -> tuple[KeySets, Tensor | None]:
        """Key sets and Hopfield token weights ``(batch, tokens, 1)``, built once per call."""
        self._check(x, mask, padding_mask)
        if keysets is None:
            keysets = DenseKeySets(
                x.shape[1], mask, padding_mask, self.exclude_self, x.dtype, x.device
            )
        elif mask is not None:
            raise ValueError("pass either mask or keysets, not both")
        token_weight = None if padding_mask is None else (~padding_mask).to(x.dtype)[..., None]
        return keysets, token_weight

    # -- energy -----------------------------------------------------------------------------

    def _stacked_weight(self) -> Tensor:
        """``[W^Q; W^K; xi]``: ``(2 * heads * head_dim + memories, dim)``."""
        att = self.attention
        return torch.cat([att.wq.flatten(0, 1), att.wk.flatten(0, 1), self.hopfield.xi])

    def _split(self, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split ``g @ W^T`` into ``q, k: (batch, heads, N, head_dim)``, ``h: (batch, N, K)``."""
        att = self.attention
        hy = att.heads * att.head_dim
        batch, tokens, _ = p.shape
        q, k, h = p.split([hy, hy, self.hopfield.memories], dim=-1)
        q = q.view(batch, tokens, att.heads, att.head_dim).transpose(1, 2)
        k = k.view(batch, tokens, att.heads, att.head_dim).transpose(1, 2)
        return q, k, h

    def _energy_terms_of_g(
        self, g: Tensor, keysets: KeySets, token_weight: Tensor | None, weight: Tensor
    ) -> EnergyTerms:
        q, k, h = self._split(g @ weight.T)
        e_att = keysets.energy(q, k, self.attention.beta)
        e_hn = self.hopfield.energy_from_hidden(h, token_weight)
        return EnergyTerms(e_att, e_hn, e_att + e_hn)

    @torch.no_grad()
    def _report_energy(
        self, g: Tensor, keysets: KeySets, token_weight: Tensor | None, weight: Tensor
    ) -> EnergyTerms:
        # Energies in a trajectory are for looking at: no graph, reduced in float32 at least.
        if g.dtype in (torch.float16, torch.bfloat16):
            g, weight = g.float(), weight.float()
        return self._energy_terms_of_g(g, keysets, token_weight, weight)

    def energy_terms(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        keysets: KeySets | None = None,
    ) -> EnergyTerms:
        """Attention, Hopfield and total energy of tokens ``x`` per sample, each ``(batch,)``.

        The layer norm is applied inside: :math:`E(\\mathrm{LN}(x))`. ``mask``,
        ``padding_mask`` and ``keysets`` as in :meth:`forward`.
        """
        keysets, token_weight = self._context(x, mask, padding_mask, keysets)
        return self._energy_terms_of_g(self.norm(x), keysets, token_weight, self._stacked_weight())

    def energy(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        keysets: KeySets | None = None,
    ) -> Tensor:
        """Total energy :math:`E(\\mathrm{LN}(x))` per sample: ``(batch, N, dim) -> (batch,)``."""
        return self.energy_terms(x, mask, padding_mask, keysets).total

    def attention_weights(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        keysets: KeySets | None = None,
    ) -> Tensor:
        r"""Where each token looks: the attention matrix :math:`\Omega` of :math:`\mathrm{LN}(x)`,
        ``(batch, N, dim) -> (batch, heads, N, N)``, rows = queries (0 for padding queries).
        Key sets with a dense layout only (a mask, none, or key sets that give ``weights``;
        an edge list gives no ``(N, N)`` matrix)."""
        keysets, _ = self._context(x, mask, padding_mask, keysets)
        return self.attention.weights(self.norm(x), keysets)

    # -- gradient ---------------------------------------------------------------------------

    def _back_weights(self, weight: Tensor, scale: float, inplace: bool) -> list[Tensor]:
        """``scale * weight`` for the back-projection, scaled once per call (not in every step's
        backward); split as :meth:`_closed_form_terms` splits its factors."""
        if inplace:
            return [scale * weight]
        rows = 2 * self.attention.heads * self.attention.head_dim
        return [scale * weight[rows:], scale * weight[:rows]]

    def _closed_form_terms(
        self,
        g: Tensor,
        keysets: KeySets,
        token_weight: Tensor | None,
        weight: Tensor,
        inplace: bool,
        out: Tensor | None = None,
    ) -> list[Tensor]:
        """Closed form :math:`-\\partial E/\\partial g` as factors ``a: (batch * N, rows)``
        whose products with :meth:`_back_weights` sum to it.

        ``inplace`` (no autograd, no autocast: inference): one factor, ``[dq | dk | act]``
        written over the projection ``g @ weight.T`` itself (in ``out`` when given) for one
        stacked back-projection, with no concatenation and no new buffer per step. Otherwise:
        ``act`` and ``[dq | dk]`` separately, so that the tensor the ReLU keeps for its backward
        is not copied into a second ``(batch, N, memories)`` one.
        """
        batch, tokens, dim = g.shape
        p = torch.mm(g.reshape(-1, dim), weight.T, out=out if inplace else None)
        q, k, h = self._split(p.view(batch, tokens, -1))
        dq, dk = keysets.neg_grad(q, k, self.attention.beta)
        if inplace:
            q.copy_(dq)
            k.copy_(dk)
            self.hopfield.activation(h, token_weight, inplace=True)
            return [p]
        act = self.hopfield.activation(h, token_weight)
        dqk = torch.stack([dq.transpose(1, 2), dk.transpose(1, 2)], dim=2)  # (batch, N, 2, H, Y)
        return [act.reshape(batch * tokens, -1), dqk.reshape(batch * tokens, -1)]

    def _neg_grad_autograd(
        self, g: Tensor, keysets: KeySets, token_weight: Tensor | None, weight: Tensor
    ) -> Tensor:
        if torch.is_inference_mode_enabled():
            # Its tensors cannot enter autograd: torch's own message names no cause.
            raise RuntimeError(
                "gradient='autograd' differentiates the energy, which torch.inference_mode()"
                " does not allow: use torch.no_grad(), or the closed form"
            )
        # The step needs a graph whenever anything upstream learns: g itself, or a weight of
        # the energy (g needs no grad when x does not and the layer norm is frozen), the key
        # sets' own included (a soft adjacency's learned weights).
        create_graph = torch.is_grad_enabled() and (
            g.requires_grad or any(p.requires_grad for p in self.parameters()) or _learns(keysets)
        )
        with torch.enable_grad():
            if not g.requires_grad:
                g = g.detach().requires_grad_()
            e = self._energy_terms_of_g(g, keysets, token_weight, weight).total.sum()
            (grad,) = torch.autograd.grad(e, g, create_graph=create_graph)
        return -grad

    def energy_grad(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        keysets: KeySets | None = None,
        gradient: Gradient = "closed_form",
    ) -> Tensor:
        """:math:`\\partial E/\\partial g` at :math:`g = \\mathrm{LN}(x)`: ``(batch, N, dim) ->
        (batch, N, dim)``; the arguments as in :meth:`forward`."""
        _check_gradient(gradient)
        keysets, token_weight = self._context(x, mask, padding_mask, keysets)
        g, weight = self.norm(x), self._stacked_weight()
        if gradient == "autograd":
            return -self._neg_grad_autograd(g, keysets, token_weight, weight)
        inplace = _inplace_ok(g)
        factors = self._closed_form_terms(g, keysets, token_weight, weight, inplace)
        back = self._back_weights(weight, -1.0, inplace)
        return sum(a @ w for a, w in zip(factors, back, strict=True)).view_as(g)

    # -- dynamics ---------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        steps: int = 12,
        alpha: float = 0.1,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        keysets: KeySets | None = None,
        gradient: Gradient = "closed_form",
        noise_std: float = 0.0,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, Trajectory]:
        r"""Run ``steps`` steps of energy descent from tokens ``x``.

        Args:
            x: ``(batch, tokens, dim)`` tokens.
            steps: number of descent steps :math:`T` (0 returns ``x``).
            alpha: step size :math:`\alpha > 0`.
            mask, padding_mask: see the class docstring.
            keysets: prebuilt key sets (e.g. an edge list), instead of ``mask``; they carry
                their own choice of self-attention (``EdgeKeySets(self_loops=...)``), so the
                block's ``exclude_self`` does not apply to them.
            gradient: ``"closed_form"`` (fast) or ``"autograd"`` (reference).
            noise_std: :math:`\sigma` of Langevin-like noise: each step adds
                :math:`\sqrt{\alpha}\,\sigma\,\varepsilon`, :math:`\varepsilon \sim
                \mathcal N(0, I)`, to the tokens, the Euler-Maruyama form the released graph
                code uses (with :math:`\sigma = 0.02`; the paper uses none).
            return_trajectory: also return a :class:`Trajectory` of tokens and energies.

        Returns:
            The final tokens ``(batch, tokens, dim)``, and the trajectory when asked for.

        Raises:
            TypeError: ``x`` not a floating-point tensor, or of another dtype than the weights
                outside autocast; a mask that is not bool.
            ValueError: a shape that does not fit (``x``, masks), NaN or inf in ``x``, both
                ``mask`` and ``keysets``, ``steps`` < 0, ``alpha`` <= 0, ``noise_std`` < 0 or an
                unknown ``gradient``.
            RuntimeError: ``gradient="autograd"`` under ``torch.inference_mode()``.
        """
        check_descent(steps, alpha, noise_std)
        _check_gradient(gradient)
        keysets, token_weight = self._context(x, mask, padding_mask, keysets)
        weight = self._stacked_weight()
        batch, tokens, dim = x.shape
        if batch == 0 or tokens == 0:  # an empty batch, or samples without tokens: nothing moves
            if not return_trajectory:
                return x.clone()
            terms = self._report_energy(self.norm(x), keysets, token_weight, weight)
            repeated = EnergyTerms(*(t.expand(steps + 1, *t.shape).clone() for t in terms))
            return x.clone(), Trajectory(x.expand(steps + 1, *x.shape).clone(), repeated)
        # Without autograd nothing needs the old tokens: update one copy of x in place and
        # reuse one projection buffer for every step.
        inplace = _inplace_ok(x)
        if inplace:
            x = x.clone(memory_format=torch.contiguous_format)
        buffer = None
        back = self._back_weights(weight, alpha, inplace) if gradient == "closed_form" else []
        # Under autocast the product is low precision: add it to the tokens out of place, as
        # x + update, so that the token stream keeps x's dtype.
        fused = not torch.is_autocast_enabled(x.device.type)

        energies: list[EnergyTerms] = []
        tokens_seen = [x.clone() if inplace else x] if return_trajectory else []
        for _ in range(steps):
            g = self.norm(x)
            if return_trajectory:
                energies.append(self._report_energy(g, keysets, token_weight, weight))
            if gradient == "closed_form":
                factors = self._closed_form_terms(g, keysets, token_weight, weight, inplace, buffer)
                # x + alpha * (-dE/dg) as fused product-and-adds.
                x2d = x.view(-1, dim) if inplace else x.reshape(-1, dim)
                for a, w in zip(factors, back, strict=True):
                    if inplace:
                        x2d.addmm_(a, w)
                    else:
                        x2d = x2d.addmm(a, w) if fused else x2d + a @ w
                x = x2d.view(batch, tokens, dim)
                buffer = factors[0] if inplace else None
            else:
                update = self._neg_grad_autograd(g, keysets, token_weight, weight)
                x = x.add_(update, alpha=alpha) if inplace else torch.add(x, update, alpha=alpha)
            if noise_std > 0:
                noise = (alpha**0.5 * noise_std) * torch.randn_like(x)
                if token_weight is not None:
                    noise = noise * token_weight
                x = x.add_(noise) if inplace else x + noise
            if return_trajectory:
                tokens_seen.append(x.clone() if inplace else x)
        if not return_trajectory:
            return x
        energies.append(self._report_energy(self.norm(x), keysets, token_weight, weight))
        terms = EnergyTerms(*(torch.stack(t) for t in zip(*energies, strict=True)))
        return x, Trajectory(torch.stack(tokens_seen), terms)


def _inplace_ok(x: Tensor) -> bool:
    """Whether the descent may overwrite its buffers: no autograd graph, and no autocast (whose
    products would not write into buffers of the tokens' dtype)."""
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def _learns(keysets: KeySets) -> bool:
    """Whether prebuilt key sets hold a tensor that learns (e.g. a soft adjacency's bias)."""
    held = getattr(keysets, "__dict__", {}).values()
    return any(isinstance(t, Tensor) and t.requires_grad for t in held)


def _check_gradient(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
