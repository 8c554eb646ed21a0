"""Energy attention over the edges of a graph: O(edges) memory and time instead of O(N^2)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    """Raise a clear TypeError / ValueError unless ``edge_index`` is a ``(2, E)`` integer tensor
    of node ids in ``[0, num_nodes)``."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must be an integer tensor, got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(
            f"edge_index has node ids in [{int(edge_index.min())}, {int(edge_index.max())}]"
            f" but num_nodes is {num_nodes}"
        )


class EdgeKeySets:
    r"""Key sets :math:`S(C)` given by an edge list: key :math:`B` feeds query :math:`C` iff
    the edge ``B -> C`` (``edge_index[0] = B``, ``edge_index[1] = C``, PyG's source-to-target
    convention) is in the graph.

    .. math::
        E_{att} = -\frac{1}{\beta} \sum_h \sum_C \log \sum_{B \to C} \exp(\beta A_{hBC}),
        \qquad A_{hBC} = K_{hB} \cdot Q_{hC}

    The softmax over each node's incoming edges, :math:`\omega_{h,B \to C}`, gives the
    closed-form gradient as two scatters over the edges:

    .. math::
        -\frac{\partial E}{\partial Q_{hC}} = \sum_{B \to C} \omega_{h,B \to C} K_{hB},
        \qquad -\frac{\partial E}{\partial K_{hB}} = \sum_{B \to C} \omega_{h,B \to C} Q_{hC}

    Everything is a gather, ``torch.scatter_reduce`` or ``index_add`` over the ``E`` edges: no
    ``(N, N)`` tensor is ever built, and no compiled extension is needed. Autograd through
    :meth:`energy` works too (the reference path). A node with no incoming edge (isolated, or
    without a self loop) contributes 0 energy and receives 0 gradient, never NaN. The same graph
    is shared by every sample of a batch.

    Equals :class:`~energy_transformer.nn.attention.DenseKeySets` with
    ``mask[C, B] = (B -> C in the graph)``.

    Args:
        edge_index: ``(2, E)`` integer tensor of directed edges ``source -> target``. For an
            undirected graph give both directions (as PyG's ``to_undirected`` does).
        num_nodes: :math:`N`, the number of tokens.
        self_loops: ``True`` lets every node attend to itself (adds the loops ``C -> C``),
            ``False`` removes any self loop (the paper's ``exclude_self``), ``None`` keeps the
            edge list as it is.
        dedupe: drop repeated edges so that each key counts once (as in a dense mask).

    Shapes:
        - ``q``, ``k``: ``(batch, heads, N, head_dim)``; ``beta``: ``(heads,)``
        - :meth:`energy`: ``(batch,)``; :meth:`node_energy`: ``(batch, N)``;
          :meth:`neg_grad`: two tensors like ``q``
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_nodes: int,
        self_loops: bool | None = True,
        dedupe: bool = True,
    ) -> None:
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
        check_edge_index(edge_index, num_nodes)
        src, dst = edge_index.long()
        if self_loops is not None:
            keep = src != dst
            src, dst = src[keep], dst[keep]
            if self_loops:
                loop = torch.arange(num_nodes, device=src.device)
                src, dst = torch.cat([src, loop]), torch.cat([dst, loop])
        if dedupe:
            # Sorting by target also makes the scatters below write memory in order.
            pair = torch.unique(dst * num_nodes + src)
            src, dst = pair % num_nodes, pair // num_nodes
        self.num_nodes = num_nodes
        self.src, self.dst = src, dst
        self.has_keys = torch.zeros(num_nodes, dtype=torch.bool, device=dst.device)
        self.has_keys[dst] = True

    @property
    def num_edges(self) -> int:
        """Number of (key, query) pairs, self loops included."""
        return int(self.src.numel())

    def to(self, device: torch.device | str) -> EdgeKeySets:
        """Move the edge list to ``device`` (in place; returns ``self``)."""
        self.src, self.dst = self.src.to(device), self.dst.to(device)
        self.has_keys = self.has_keys.to(device)
        return self

    def _edges_on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if self.src.device != device:
            self.to(device)
        return self.src, self.dst, self.has_keys

    def _check(self, q: Tensor, k: Tensor) -> None:
        if q.dim() != 4 or q.shape != k.shape:
            raise ValueError(
                "q and k must both have shape (batch, heads, N, head_dim),"
                f" got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        if q.shape[2] != self.num_nodes:
            raise ValueError(f"q has {q.shape[2]} tokens but the graph has {self.num_nodes} nodes")

    def _softmax_parts(
        self, q: Tensor, k: Tensor, beta: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-edge pieces: gathered queries and keys ``(b, E, h, y)``, softmax weights
        :math:`\\omega` ``(b, E, h)`` and per-node logsumexp ``(b, N, h)`` (0 without keys)."""
        self._check(q, k)
        src, dst, has_keys = self._edges_on(q.device)
        # Token-major layout: each gathered row is one node's heads * head_dim contiguous floats.
        q_dst = q.transpose(1, 2).index_select(1, dst)
        k_src = k.transpose(1, 2).index_select(1, src)
        scores = (q_dst * k_src).sum(-1) * beta  # (b, E, h)
        shape = (scores.shape[0], self.num_nodes, scores.shape[2])
        has_keys = has_keys[:, None]
        # The shift only keeps exp() in range; its gradient cancels, so it is detached.
        top = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device)
        index = dst[None, :, None].expand_as(scores)
        top = top.scatter_reduce(1, index, scores.detach(), "amax", include_self=True)
        top = torch.where(has_keys, top, torch.zeros_like(top))
        unnorm = (scores - top.index_select(1, dst)).exp()
        total = torch.zeros(shape, dtype=scores.dtype, device=scores.device)
        total = total.index_add(1, dst, unnorm)
        # A node without keys has total 0: log(1) keeps it finite, then it is zeroed.
        total = torch.where(has_keys, total, torch.ones_like(total))
        lse = torch.where(has_keys, top + total.log(), torch.zeros_like(top))
        omega = unnorm / total.index_select(1, dst)
        return q_dst, k_src, omega, lse

    def node_energy(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        """Each query's share of :math:`E_{att}`: :math:`-\\sum_h \\frac{1}{\\beta_h}
        \\log\\sum_{B \\to C} \\exp(\\beta_h A_{hBC})`, ``(batch, N)``; sums to :meth:`energy`."""
        lse = self._softmax_parts(q, k, beta)[-1]
        return -(lse / beta).sum(-1)

    def energy(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        return self.node_energy(q, k, beta).sum(-1)

    def neg_grad(self, q: Tensor, k: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        src, dst, _ = self._edges_on(q.device)
        q_dst, k_src, omega, _ = self._softmax_parts(q, k, beta)
        omega = omega.unsqueeze(-1)  # (b, E, h, 1)
        batch, heads, tokens, head_dim = q.shape
        zeros = q.new_zeros(batch, tokens, heads, head_dim)  # token-major, like the gathers
        dq = zeros.index_add(1, dst, omega * k_src)
        dk = zeros.index_add(1, src, omega * q_dst)
        return dq.transpose(1, 2), dk.transpose(1, 2)

    def __repr__(self) -> str:
        return f"EdgeKeySets(num_nodes={self.num_nodes}, num_edges={self.num_edges})"
