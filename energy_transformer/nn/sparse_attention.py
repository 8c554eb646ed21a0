"""Energy attention over the edges of a graph: O(edges) memory and time instead of O(N^2)."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from energy_transformer.nn.checks import check_positive_int
from energy_transformer.text import counted

KERNELS = ("csr", "gather")


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
        E_{att} = -\sum_h \frac{1}{\beta_h} \sum_C \log \sum_{B \to C} \exp(\beta_h A_{hBC}),
        \qquad A_{hBC} = K_{hB} \cdot Q_{hC}

    The softmax over each node's incoming edges, :math:`\omega_{h,B \to C}`, gives the
    closed-form gradient as two scatters over the edges:

    .. math::
        -\frac{\partial E}{\partial Q_{hC}} = \sum_{B \to C} \omega_{h,B \to C} K_{hB},
        \qquad -\frac{\partial E}{\partial K_{hB}} = \sum_{B \to C} \omega_{h,B \to C} Q_{hC}

    No ``(N, N)`` tensor is ever built, and no compiled extension is needed. Two kernels compute
    :meth:`neg_grad`, both O(edges):

    - ``"csr"`` (default): the scores :math:`A_{hBC}` on the edges as one sampled product
      (``torch.sparse.sampled_addmm``, SDDMM) and the two sums above as sparse-times-dense
      products (SpMM) with :math:`\omega` as a CSR matrix, with a hand-written backward in the
      same two operations. No ``(E, heads, head_dim)`` tensor is built.
    - ``"gather"``: gathered ``(E, heads, head_dim)`` queries and keys, products and
      ``index_add`` (autograd differentiates it). It is what :meth:`energy` uses, so that
      autograd of the energy (the reference path) stays independent of the ``"csr"`` kernel.

    A node with no incoming edge (isolated, or without a self loop) contributes 0 energy and
    receives 0 gradient, never NaN. The same graph is shared by every sample of a batch.

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
        kernel: how :meth:`neg_grad` runs: ``"csr"`` (fast) or ``"gather"``.

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
        kernel: Literal["csr", "gather"] = "csr",
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        check_positive_int("num_nodes", num_nodes)
        check_edge_index(edge_index, num_nodes)
        src, dst = edge_index.long()
        if self_loops is not None:
            keep = src != dst
            src, dst = src[keep], dst[keep]
            if self_loops:
                loop = torch.arange(num_nodes, device=src.device)
                src, dst = torch.cat([src, loop]), torch.cat([dst, loop])
        # Sorted by target (the CSR row order of the queries), then by source.
        pair = dst * num_nodes + src
        pair = torch.unique(pair) if dedupe else pair.sort().values
        src, dst = pair % num_nodes, pair // num_nodes
        self.num_nodes, self.kernel = num_nodes, kernel
        self.src, self.dst = src, dst
        self._blocks: dict[tuple[int, torch.device], _BlockCSR] = {}
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
        self._blocks.clear()
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
            raise ValueError(
                f"q has {counted(q.shape[2], 'token')} but the graph has"
                f" {counted(self.num_nodes, 'node')}"
            )

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
        """:math:`E_{att}` per sample, ``(batch,)`` (the ``"gather"`` kernel, autograd-ready)."""
        return self.node_energy(q, k, beta).sum(-1)

    def neg_grad(self, q: Tensor, k: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        r"""The two scatters above, :math:`(-\partial E/\partial Q, -\partial E/\partial K)`,
        each like ``q``, by the ``kernel`` chosen at construction."""
        if self.kernel == "gather":
            return self._neg_grad_gather(q, k, beta)
        self._check(q, k)
        src, dst, _ = self._edges_on(q.device)
        batch, heads = q.shape[:2]
        key = (batch * heads, q.device)
        if key not in self._blocks:
            self._blocks[key] = _BlockCSR(src, dst, self.num_nodes, batch * heads)
        return _EdgeNegGrad.apply(q, k, beta, self._blocks[key])

    def _neg_grad_gather(self, q: Tensor, k: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        src, dst, _ = self._edges_on(q.device)
        q_dst, k_src, omega, _ = self._softmax_parts(q, k, beta)
        omega = omega.unsqueeze(-1)  # (b, E, h, 1)
        batch, heads, tokens, head_dim = q.shape
        zeros = q.new_zeros(batch, tokens, heads, head_dim)  # token-major, like the gathers
        dq = zeros.index_add(1, dst, omega * k_src)
        dk = zeros.index_add(1, src, omega * q_dst)
        return dq.transpose(1, 2), dk.transpose(1, 2)

    def __repr__(self) -> str:
        return (
            f"EdgeKeySets(num_nodes={self.num_nodes}, num_edges={self.num_edges},"
            f" kernel={self.kernel!r})"
        )


class _BlockCSR:
    """The edge list as ``blocks`` copies of one ``(N, N)`` sparsity pattern on the diagonal of
    a ``(blocks * N, blocks * N)`` one, so that every (sample, head) pair is one product call.

    Rows of :attr:`rows` are queries (targets) and its columns keys (sources); :attr:`cols` is
    the transpose, whose values are the edge values permuted by :attr:`perm`.
    """

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: int, blocks: int) -> None:
        edges = src.numel()
        self.size, self.blocks, self.num_nodes = blocks * num_nodes, blocks, num_nodes
        self.dst = dst.expand(blocks, -1)  # scatter index of the (blocks, E) edge values
        perm = torch.argsort(src, stable=True)
        self.perm = perm.expand(blocks, -1)  # gather index: faster than advanced indexing
        node_offset = num_nodes * torch.arange(blocks, device=src.device)[:, None]
        edge_offset = edges * torch.arange(blocks, device=src.device)[:, None]
        index = _index_dtype(self.size, blocks * edges)
        self.rows = (
            _crow(dst, num_nodes, edge_offset).to(index),
            (src + node_offset).flatten().to(index),
        )
        self.cols = (
            _crow(src[perm], num_nodes, edge_offset).to(index),
            (dst[perm] + node_offset).flatten().to(index),
        )
        self._patterns: dict[torch.dtype, Tensor] = {}
        with warnings.catch_warnings():
            # torch warns once per process that CSR tensors are in beta: consume it here.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self._pattern(torch.float32)

    def _pattern(self, dtype: torch.dtype) -> Tensor:
        """The sparsity pattern with zero values, the input of every SDDMM in ``dtype``."""
        if dtype not in self._patterns:
            zeros = torch.zeros(self.dst.shape, dtype=dtype, device=self.dst.device)
            self._patterns[dtype] = self.matrix(zeros)
        return self._patterns[dtype]

    def matrix(self, values: Tensor, transpose: bool = False) -> Tensor:
        """Edge values ``(blocks, E)`` as the sparse ``(blocks * N, blocks * N)`` matrix."""
        crow, col = self.cols if transpose else self.rows
        if transpose:
            values = values.gather(1, self.perm)
        return torch.sparse_csr_tensor(
            crow, col, values.flatten(), (self.size, self.size), check_invariants=False
        )

    def spmm(self, values: Tensor, dense: Tensor, transpose: bool = False) -> Tensor:
        """Per block, ``values`` as a matrix (rows = queries) times ``dense: (blocks * N, y)``."""
        return self.matrix(values, transpose) @ dense

    def sddmm(self, a: Tensor, b: Tensor) -> Tensor:
        """``(a @ b.T)`` at the edges: ``(blocks, E)``; ``a`` rows are queries, ``b`` keys."""
        # Into a matrix that shares the pattern's indices: without out= they are copied.
        out = self.matrix(a.new_empty(self.dst.shape))
        torch.sparse.sampled_addmm(self._pattern(a.dtype), a, b.T, beta=0.0, out=out)
        return out.values().view(self.blocks, -1)

    def softmax(self, scores: Tensor) -> Tensor:
        """Softmax of ``scores: (blocks, E)`` over each query's edges."""
        top = scores.new_full((self.blocks, self.num_nodes), float("-inf"))
        top = top.scatter_reduce(1, self.dst, scores, "amax")
        unnorm = (scores - top.gather(1, self.dst)).exp()
        return unnorm / self.row_sum(unnorm)

    def row_sum(self, values: Tensor) -> Tensor:
        """Sum of ``values: (blocks, E)`` over each query's edges, gathered back to the edges."""
        total = values.new_zeros(self.blocks, self.num_nodes).index_add(1, self.dst[0], values)
        return total.gather(1, self.dst)


def _index_dtype(size: int, nnz: int) -> torch.dtype:
    """int32 where every index and offset fits: the CPU sparse kernels convert int64 indices to
    int32 on every call (a copy of all the edges)."""
    return torch.int32 if max(size, nnz) < 2**31 else torch.int64


def _crow(rows: Tensor, num_nodes: int, edge_offset: Tensor) -> Tensor:
    """CSR row pointers of sorted ``rows``, repeated for each block with its edge offset."""
    counts = torch.bincount(rows, minlength=num_nodes)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return torch.cat([(crow[:-1] + edge_offset).flatten(), crow[-1:] + edge_offset[-1]])


class _EdgeNegGrad(torch.autograd.Function):
    r"""``(dq, dk)`` of :class:`EdgeKeySets` by SDDMM and SpMM, with a hand-written backward.

    With :math:`\omega` the softmax over each query's edges of :math:`s_{hBC} = \beta_h
    q_{hC} \cdot k_{hB}`, and upstream gradients :math:`G_q, G_k` of ``dq, dk``:

    .. math::
        a_{BC} = G_{q,C} \cdot k_B + q_C \cdot G_{k,B}, \qquad
        \delta_{BC} = \omega_{BC}\big(a_{BC} - \textstyle\sum_{B'} \omega_{B'C} a_{B'C}\big)

        \frac{\partial L}{\partial q_C} = \sum_B \omega_{BC} G_{k,B} + \beta \delta_{BC} k_B,
        \qquad
        \frac{\partial L}{\partial k_B} = \sum_C \omega_{BC} G_{q,C} + \beta \delta_{BC} q_C,
        \qquad \frac{\partial L}{\partial \beta} = \sum \delta_{BC}\, q_C \cdot k_B

    :math:`a` is one SDDMM (``[G_q | q] @ [k | G_k]^T`` at the edges), the rest SpMMs.
    Low-precision inputs (autocast) are computed in float32. First-order only.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: Tensor,
        k: Tensor,
        beta: Tensor,
        csr: _BlockCSR,
    ) -> tuple[Tensor, Tensor]:
        shape, dtype = q.shape, q.dtype
        with torch.autocast(q.device.type, enabled=False):
            qf, kf = _flat(q), _flat(k)
            dots = csr.sddmm(qf, kf)  # (batch * heads, E): q_C . k_B
            scale = beta.to(qf.dtype).repeat(shape[0])[:, None]  # (batch * heads, 1)
            omega = csr.softmax(dots * scale)
            dq = csr.spmm(omega, kf)
            dk = csr.spmm(omega, qf, transpose=True)
        ctx.save_for_backward(qf, kf, scale, omega, dots)
        ctx.csr, ctx.shape, ctx.dtypes = csr, shape, (dtype, k.dtype, beta.dtype)
        return dq.view(shape).to(dtype), dk.view(shape).to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_dq: Tensor, grad_dk: Tensor
    ) -> tuple[Tensor | None, ...]:
        qf, kf, scale, omega, dots = ctx.saved_tensors
        csr, shape = ctx.csr, ctx.shape
        with torch.autocast(qf.device.type, enabled=False):
            gq, gk = _flat(grad_dq, qf.dtype), _flat(grad_dk, qf.dtype)
            a = csr.sddmm(torch.cat([gq, qf], 1), torch.cat([kf, gk], 1))
            delta = omega * (a - csr.row_sum(omega * a))
            scaled = delta * scale
            grad_q = csr.spmm(omega, gk) + csr.spmm(scaled, kf)
            grad_k = csr.spmm(omega, gq, transpose=True) + csr.spmm(scaled, qf, transpose=True)
            grad_beta = None
            if ctx.needs_input_grad[2]:
                grad_beta = (delta * dots).view(*shape[:2], -1).sum(dim=(0, 2))
        q_dtype, k_dtype, beta_dtype = ctx.dtypes
        grad_beta = None if grad_beta is None else grad_beta.to(beta_dtype)
        return grad_q.view(shape).to(q_dtype), grad_k.view(shape).to(k_dtype), grad_beta, None


def _flat(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``(batch, heads, N, y) -> (batch * heads * N, y)`` contiguous, in float32 at least."""
    if dtype is None:
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    return t.reshape(-1, t.shape[-1]).to(dtype).contiguous()
