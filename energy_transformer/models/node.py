"""The Energy Transformer for node-level prediction on one graph (spec §2.2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from energy_transformer.models.features import DegreeEncoding
from energy_transformer.nn.block import EnergyTransformer, Gradient, Trajectory
from energy_transformer.nn.checks import (
    check_count,
    check_descent,
    check_dropout,
    check_positive_int,
)
from energy_transformer.nn.sparse_attention import EdgeKeySets
from energy_transformer.text import counted

ENERGY_TERMS = ("total", "attention", "hopfield")

# Block sizes for node-level tasks at the harness's width D = 64 (``dim`` comes from the caller).
PRESETS: dict[str, dict[str, Any]] = {
    # Narrow heads and two short steps: the first configuration of the anomaly benchmark.
    "small": dict(heads=2, head_dim=8, steps=2, alpha=0.1),
    # The sizes of the authors' released anomaly-detection code (hid_dim 64, one energy layer,
    # head size = hid_dim, a step of size 1). Its update is g + (-dE/dg), added to the
    # normalised tokens g rather than to x as here; it also uses nn.LayerNorm, clamped attention
    # scores, 2 * dim memories and one learned beta: here the spec's energy layer norm and
    # update, unclamped scores, the default 4 * dim memories and beta = 1 / sqrt(head_dim).
    "released": dict(heads=2, head_dim=64, steps=1, alpha=1.0),
}


def node_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`NodeEnergyTransformer` for preset ``name``; ``overrides``
    that are ``None`` keep the preset's value.

    Example:
        >>> node_preset("released", steps=2)["steps"]
        2
    """
    if name not in PRESETS:
        raise ValueError(f"unknown node preset {name!r}; choose from {sorted(PRESETS)}")
    return {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}


class NodeEnergyTransformer(nn.Module):
    r"""Node classifier: every node is a token, attention runs over the graph's edges.

    .. math::
        x^{(0)}_C = W_{enc}\, f_C + b_{enc} \;(+\, z_C), \qquad
        x^{(t+1)} = x^{(t)} - \alpha\, \frac{\partial E}{\partial g}\big(\mathrm{LN}(x^{(t)})\big)

        \mathrm{logits}_C = \mathrm{MLP}\big([\mathrm{LN}(x^{(T)}_C) \,\Vert\, x^{(0)}_C]\big)

    where :math:`E` is the ET energy with key sets :math:`S(C) = \{B : B \to C\}` (plus
    :math:`C` itself when ``self_loops``), computed over the edge list by
    :class:`~energy_transformer.nn.sparse_attention.EdgeKeySets` in O(edges). Concatenating the
    input embedding :math:`x^{(0)}` follows the authors' released code (``concat_input``).

    :math:`z_C` is the optional degree embedding (``degree_buckets``).

    :meth:`energy_scores` reads the final energy of each node's token, a label-free anomaly
    score: attention energy (how weakly the node is bound to its neighbours) plus Hopfield
    energy (how far it is from every stored memory).

    Args:
        in_dim: node feature size :math:`F`.
        dim: token dimension :math:`D`.
        heads, head_dim: attention heads :math:`H` and their size :math:`Y`.
        memories: Hopfield memories :math:`K` (default ``4 * dim``).
        steps: descent steps :math:`T`.
        alpha: step size :math:`\alpha`.
        num_classes: outputs of the classifier (2: normal / anomaly).
        self_loops: let each node attend to itself.
        concat_input: feed the input embedding to the classifier too.
        hopfield: ``"relu"`` or ``"softmax"``.
        learn_beta: learn one attention inverse temperature per head.
        dropout: dropout on the input embedding and in the classifier.
        gradient: ``"closed_form"`` or ``"autograd"`` (see
            :class:`~energy_transformer.nn.block.EnergyTransformer`).
        noise_std: :math:`\sigma` of Langevin-like noise during training,
            :math:`\sqrt{\alpha}\,\sigma\,\varepsilon` per step (released graph code: 0.02).
        qk_init_std: init std of the attention weights; graphs train faster from a larger value
            than the image preset's 0.002.
        degree_buckets: add a learned embedding of each node's log2-bucketed in-degree to its
            input token (:class:`~energy_transformer.models.features.DegreeEncoding`, buckets
            ``0..degree_buckets``); 0: none, the paper's form.

    Shapes:
        - x: ``(N, in_dim)``; edge_index: ``(2, E)`` ``source -> target``
        - output: ``(N, num_classes)`` logits; :meth:`energy_scores`: ``(N,)``
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 64,
        heads: int = 4,
        head_dim: int = 16,
        memories: int | None = None,
        steps: int = 4,
        alpha: float = 0.1,
        num_classes: int = 2,
        self_loops: bool = True,
        concat_input: bool = True,
        hopfield: str = "relu",
        learn_beta: bool = False,
        dropout: float = 0.0,
        gradient: Gradient = "closed_form",
        noise_std: float = 0.0,
        qk_init_std: float = 0.02,
        degree_buckets: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("in_dim", in_dim)
        check_positive_int("num_classes", num_classes)
        check_descent(steps, alpha, noise_std)
        check_dropout(dropout)
        check_count("degree_buckets", degree_buckets)
        self.steps, self.alpha, self.gradient, self.noise_std = steps, alpha, gradient, noise_std
        self.self_loops, self.concat_input, self.dropout = self_loops, concat_input, dropout
        self.encoder = nn.Linear(in_dim, dim)
        self.degree = DegreeEncoding(degree_buckets, dim, log2=True) if degree_buckets else None
        self.block = EnergyTransformer(
            dim,
            heads,
            head_dim,
            memories=memories,
            hopfield=hopfield,
            learn_beta=learn_beta,
            qk_init_std=qk_init_std,
        )
        width = 2 * dim if concat_input else dim
        self.head = nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Linear(dim, num_classes))
        self._graph: tuple[Tensor, tuple[int, int], EdgeKeySets, Tensor | None] | None = None

    def structure(self, edge_index: Tensor, num_nodes: int) -> tuple[EdgeKeySets, Tensor | None]:
        """The graph's :class:`EdgeKeySets` and degree buckets (``(N,)``, or ``None`` without a
        degree encoding), cached while the same (unmodified) edge tensor is passed; the cache
        holds a reference, so a freed tensor's memory cannot alias it."""
        cached = self._graph
        if (
            cached is None
            or cached[0] is not edge_index
            or cached[1] != (edge_index._version, num_nodes)
        ):
            keysets = EdgeKeySets(edge_index, num_nodes, self_loops=self.self_loops)
            buckets = None if self.degree is None else self.degree.buckets(edge_index, num_nodes)
            cached = (edge_index, (edge_index._version, num_nodes), keysets, buckets)
            self._graph = cached
        return cached[2], cached[3]

    def keysets(self, edge_index: Tensor, num_nodes: int) -> EdgeKeySets:
        """The graph's cached :class:`EdgeKeySets` (see :meth:`structure`)."""
        return self.structure(edge_index, num_nodes)[0]

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point (num_nodes, in_dim) tensor, got {shape}")
        if x.shape[1] != self.encoder.in_features:
            raise ValueError(
                f"x has {counted(x.shape[1], 'feature')} but the model expects"
                f" {self.encoder.in_features}"
            )

    def descend(
        self, x: Tensor, edge_index: Tensor, return_trajectory: bool = False
    ) -> tuple[Tensor, Tensor, Trajectory | None]:
        """Embed and run the ET block: input tokens ``(N, dim)``, final tokens ``(N, dim)``
        and, when asked, the :class:`~energy_transformer.nn.block.Trajectory` (batch of 1)."""
        self._check(x)
        keysets, buckets = self.structure(edge_index, x.shape[0])
        x0 = self.encoder(x)
        if buckets is not None:
            x0 = x0 + self.degree.embed(buckets)
        x0 = F.dropout(x0, p=self.dropout, training=self.training)
        out = self.block(
            x0.unsqueeze(0),
            steps=self.steps,
            alpha=self.alpha,
            keysets=keysets,
            gradient=self.gradient,
            noise_std=self.noise_std if self.training else 0.0,
            return_trajectory=return_trajectory,
        )
        tokens, traj = out if return_trajectory else (out, None)
        return x0, tokens.squeeze(0), traj

    def classify(self, x0: Tensor, tokens: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` from input and final tokens."""
        h = self.block.norm(tokens)
        if self.concat_input:
            h = torch.cat([h, x0], dim=-1)
        return self.head(F.dropout(h, p=self.dropout, training=self.training))

    def forward(
        self, x: Tensor, edge_index: Tensor, return_trajectory: bool = False
    ) -> Tensor | tuple[Tensor, Trajectory]:
        """Logits ``(N, num_classes)`` of the nodes of ``x: (N, in_dim)`` with edges
        ``edge_index: (2, E)``; with ``return_trajectory`` also the descent's
        :class:`~energy_transformer.nn.block.Trajectory` (batch of 1)."""
        x0, tokens, traj = self.descend(x, edge_index, return_trajectory)
        logits = self.classify(x0, tokens)
        return (logits, traj) if return_trajectory else logits

    def node_energies(self, tokens: Tensor, edge_index: Tensor) -> dict[str, Tensor]:
        """Each node's share of the energy at ``tokens: (N, dim)``; each term ``(N,)``.

        The attention share of node :math:`C` is its query's log-sum-exp term, the Hopfield
        share its own memory energy; over all nodes they sum to the block's energy.
        """
        keysets = self.keysets(edge_index, tokens.shape[0])
        g = self.block.norm(tokens).unsqueeze(0)
        q, k = self.block.attention.project(g)
        attention = keysets.node_energy(q, k, self.block.attention.beta).squeeze(0)
        # One token per "sample" gives the Hopfield energy per node.
        hidden = (g.squeeze(0) @ self.block.hopfield.xi.T).unsqueeze(1)
        hopfield = self.block.hopfield.energy_from_hidden(hidden)
        return {"attention": attention, "hopfield": hopfield, "total": attention + hopfield}

    @torch.no_grad()
    def energy_scores(self, x: Tensor, edge_index: Tensor, term: str = "total") -> Tensor:
        """Final energy of each node's token, ``(N,)``: higher = more anomalous.

        In training mode the descent's noise and the dropout apply: call ``.eval()`` first for
        scores that do not change from call to call.

        Args:
            x, edge_index: the graph.
            term: ``"total"``, ``"attention"`` or ``"hopfield"``.
        """
        if term not in ENERGY_TERMS:
            raise ValueError(f"term must be one of {ENERGY_TERMS}, got {term!r}")
        _, tokens, _ = self.descend(x, edge_index)
        return self.node_energies(tokens, edge_index)[term]
