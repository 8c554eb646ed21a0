r"""Graph classification with the Energy Transformer (spec §2.3).

Tokens are the nodes of a graph (embedded features plus projected Laplacian positional
encodings) and one learnable CLS token connected to every node. Attention is restricted by the
adjacency; the class is read from the final CLS token:

.. math::
    x^{(0)} = [\,\mathrm{CLS};\; W_x x_v + b_x + W_p\, (s \odot \phi_v) + b_p\,]_{v \in V},
    \qquad x^{(T)} = \mathrm{ET}^{T}(x^{(0)}), \qquad
    \hat y = W_o\, \mathrm{LN}(x^{(T)}_{\mathrm{CLS}}) + b_o

where :math:`x_v` are the node features (continuous columns standardised with training-graph
statistics, :class:`~energy_transformer.models.features.FeatureScaler`),
:math:`\phi_v \in \mathbb{R}^k` holds the eigenvectors 2 to :math:`k + 1` (by ascending
eigenvalue) of :math:`L = I - D^{-1/2} A D^{-1/2}` at node :math:`v` and
:math:`s \in \{\pm 1\}^k` is a random sign per graph and eigenvector during training (an
eigenvector's sign is arbitrary). On a connected graph those are the :math:`k` smallest
non-trivial ones; a graph of :math:`c` components of two or more nodes has :math:`c` zero
eigenvalues (an isolated node has :math:`L_{vv} = 1`, eigenvalue 1), and after the first the
other :math:`c - 1` vectors of an orthonormal basis of that null space are kept, as in the
usual Laplacian encodings. The optional degree embedding, MLP head, sum readout and dropout
(departures, below) add to :math:`x^{(0)}`, replace :math:`W_o`, widen what it reads and drop
entries of it in training.

Graphs of different sizes are padded to one batch (``to_dense_batch``); padding tokens are
removed from every key set and contribute no energy, so a graph's prediction does not depend on
what it is batched with.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_adj, to_dense_batch

from energy_transformer.models.features import DegreeEncoding, FeatureScaler
from energy_transformer.nn import DenseKeySets, EnergyTransformer, Trajectory
from energy_transformer.nn.attention import scaled_scores
from energy_transformer.nn.checks import check_descent, check_dropout, check_positive_int
from energy_transformer.nn.sparse_attention import EdgeKeySets, check_edge_index
from energy_transformer.text import counted

ADJACENCIES = ("hard", "soft", "released")
ATTENTIONS = ("edges", "dense")
HEADS = ("linear", "mlp")
READOUTS = ("cls", "cls+sum")
# Dense eigendecomposition up to this many nodes, shift-invert Lanczos above.
_DENSE_EIGH_MAX = 1500

# Model presets. "released": the authors' graph-classification code (4 blocks x 1 step, its
# adjacency weighting with mixed heads, learned beta, Langevin-like noise). "paper": the paper's
# single block with a hard adjacency mask; the spec gives no step count for graphs, so its 4
# steps (as many as the released 4 blocks x 1 step) are this library's choice. "cpu": the
# paper's form, small enough to train on a laptop CPU.
PRESETS: dict[str, dict] = {
    "released": dict(
        dim=128,
        heads=12,
        head_dim=64,
        memories=512,
        alpha=0.1,
        blocks=4,
        steps=1,
        noise_std=0.02,
        adjacency="released",
        learn_beta=True,
        pe_dim=15,
    ),
    "paper": dict(
        dim=128,
        heads=12,
        head_dim=64,
        memories=512,
        alpha=0.1,
        blocks=1,
        steps=4,
        noise_std=0.0,
        adjacency="hard",
        learn_beta=False,
        pe_dim=15,
    ),
}
PRESETS["cpu"] = {**PRESETS["paper"], "dim": 64, "heads": 4, "head_dim": 16, "memories": 256}
# Training settings of each preset (released: batch 64, 300 epochs, AdamW, warm-up + cosine to
# lr 1e-3, label smoothing 0.05). The spec gives no weight decay for graphs: 0.05 is this
# library's choice (the image task's).
TRAIN_PRESETS: dict[str, dict] = {
    "released": dict(epochs=300, batch_size=64, lr=1e-3, weight_decay=0.05, label_smoothing=0.05),
    "paper": dict(epochs=300, batch_size=64, lr=1e-3, weight_decay=0.05, label_smoothing=0.05),
    "cpu": dict(epochs=30, batch_size=32, lr=1e-3, weight_decay=0.05, label_smoothing=0.05),
}


# -- Laplacian positional encodings ---------------------------------------------------------


def normalized_laplacian(edge_index: Tensor, num_nodes: int) -> sp.csr_matrix:
    r""":math:`L = I - D^{-1/2} A D^{-1/2}` of the undirected simple graph of ``edge_index``.

    Edges are symmetrised, self-loops and duplicates dropped; an isolated node gets
    :math:`L_{vv} = 1`. Returns a sparse ``(n, n)`` matrix.
    """
    src, dst = edge_index.cpu().numpy()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    adj = sp.coo_matrix(
        (np.ones(2 * src.size), (np.r_[src, dst], np.r_[dst, src])), shape=(num_nodes, num_nodes)
    ).tocsr()
    adj.data[:] = 1.0  # duplicates were summed: back to 0/1
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    norm_adj = sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)
    return (sp.identity(num_nodes, format="csr") - norm_adj).tocsr()


def _dense_normalized_laplacian(edge_index: Tensor, num_nodes: int) -> np.ndarray:
    """:func:`normalized_laplacian` as a dense array (faster for small graphs)."""
    src, dst = edge_index.cpu().numpy()
    adj = np.zeros((num_nodes, num_nodes))
    adj[src, dst] = 1.0
    adj[dst, src] = 1.0
    np.fill_diagonal(adj, 0.0)
    deg = adj.sum(axis=1)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return np.eye(num_nodes) - inv_sqrt[:, None] * adj * inv_sqrt[None, :]


@functools.cache
def _blas_controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries scans the process's memory map: once, not per graph.
    return ThreadpoolController()


def laplacian_eigenvectors(edge_index: Tensor, num_nodes: int, k: int) -> tuple[Tensor, Tensor]:
    r"""The ``k`` eigenpairs after the first of the symmetric normalised Laplacian.

    The first eigenpair (eigenvalue 0) is skipped. On a graph of ``c > 1`` components of two or
    more nodes the next ``c - 1`` eigenvalues are 0 too (an isolated node's is 1): those null
    vectors (an orthonormal basis, not necessarily the component indicators) are kept. A graph
    with fewer than ``k + 1`` nodes is zero-padded
    (eigenvalue and eigenvector columns of 0).

    Args:
        edge_index: ``(2, edges)`` long.
        num_nodes: number of nodes ``n``.
        k: number of eigenvectors.

    Returns:
        ``(eigenvalues (k,), eigenvectors (n, k))`` in float64, ascending eigenvalue order, each
        eigenvector of unit norm.
    """
    if num_nodes < 1:
        raise ValueError("an empty graph has no Laplacian eigenvectors")
    check_positive_int("k", k)
    check_edge_index(edge_index, num_nodes)
    wanted = min(k + 1, num_nodes)
    if num_nodes <= _DENSE_EIGH_MAX or wanted >= num_nodes - 1:
        # One BLAS thread: threaded LAPACK on many small matrices is ~20x slower on a busy CPU.
        with _blas_controller().limit(limits=1, user_api="blas"):
            vals, vecs = np.linalg.eigh(_dense_normalized_laplacian(edge_index, num_nodes))
        vals, vecs = vals[:wanted], vecs[:, :wanted]
    else:
        # Shift-invert around a point just below 0 finds the smallest eigenvalues fast.
        lap = normalized_laplacian(edge_index, num_nodes)
        vals, vecs = scipy.sparse.linalg.eigsh(lap, k=wanted, sigma=-1e-3, which="LM")
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
    eigenvalues = torch.zeros(k, dtype=torch.float64)
    eigenvectors = torch.zeros(num_nodes, k, dtype=torch.float64)
    eigenvalues[: wanted - 1] = torch.from_numpy(vals[1:wanted].copy())
    eigenvectors[:, : wanted - 1] = torch.from_numpy(vecs[:, 1:wanted].copy())
    return eigenvalues, eigenvectors


class LaplacianPE:
    """Data transform adding ``pe: (nodes, k)`` float32 (Laplacian eigenvectors) and
    ``pe_eigenvalues: (1, k)`` to a graph; apply it once per dataset and keep the result.

    Args:
        k: number of eigenvectors (spec: 15).
    """

    def __init__(self, k: int = 15) -> None:
        check_positive_int("k", k)
        self.k = k

    def __call__(self, data: Data) -> Data:
        """A copy of ``data`` with ``pe`` and ``pe_eigenvalues`` added."""
        vals, vecs = laplacian_eigenvectors(data.edge_index, data.num_nodes, self.k)
        data = data.clone()
        data.pe = vecs.float()
        data.pe_eigenvalues = vals.float().unsqueeze(0)
        return data

    def __repr__(self) -> str:
        return f"LaplacianPE(k={self.k})"


# -- the model ------------------------------------------------------------------------------


class SoftAdjacencyKeySets(DenseKeySets):
    r"""Key sets over every token, with a learned additive bias per head on graph edges.

    A simple soft adjacency of this library's own (the released code's form, which mixes the
    heads and multiplies the scores, is :class:`ReleasedAdjacencyKeySets`): one learned bias per
    head inside the energy's log-sum-exp,

    .. math::
        E_{att} = -\sum_h \frac{1}{\beta_h} \sum_C \log \sum_B
            \exp\big(\beta_h A_{hBC} + w_h\, \mathrm{adj}_{CB}\big)

    which is still an energy of the tokens (the bias does not depend on them), so the closed-form
    gradient of :class:`~energy_transformer.nn.DenseKeySets` applies unchanged. Padding tokens are
    removed as for the hard mask.

    Args:
        adjacency: ``(batch, N, N)`` bool or float; ``adjacency[b, C, B]`` weights query ``C``
            attending key ``B``.
        edge_weight: ``(heads,)`` learned :math:`w_h`.
        padding_mask: ``(batch, N)`` bool, True = padding.
        exclude_self: remove :math:`B = C` from every key set.
    """

    def __init__(
        self,
        adjacency: Tensor,
        edge_weight: Tensor,
        padding_mask: Tensor | None = None,
        exclude_self: bool = False,
    ) -> None:
        dtype = edge_weight.dtype
        super().__init__(
            adjacency.shape[-1], None, padding_mask, exclude_self, dtype, adjacency.device
        )
        soft = edge_weight[None, :, None, None] * adjacency[:, None].to(dtype)
        self.bias = soft if self.bias is None else self.bias + soft


class ReleasedAdjacencyKeySets:
    r"""The released graph code's attention: heads mixed, then each pair's score weighted.

    .. math::
        S_{gCB} = W_{gCB} \sum_h M_{hg}\, \beta_h A_{hBC}, \qquad
        E_{att} = -\sum_g \frac{1}{\beta_g} \sum_C \log \sum_{B:\, W_{gCB} \ne 0}
            \exp S_{gCB}

    with :math:`A_{hBC} = K_{hB} \cdot Q_{hC}`, a learned head-mixing matrix :math:`M`
    (``(heads, heads)``, one per block) and pair weights :math:`W` computed once from the
    adjacency and the input tokens (:meth:`GraphEnergyTransformer.pair_weights`). As in the
    released code, a key is out of :math:`S(C)` only where its weight is exactly 0 (and for
    padding, or itself with ``exclude_self``). :math:`W` does not depend on the descending
    tokens, so this is an energy and its gradient has the closed form

    .. math::
        -\frac{\partial E}{\partial Q_{hC}} = \sum_B P_{hCB} K_{hB}, \qquad
        -\frac{\partial E}{\partial K_{hB}} = \sum_C P_{hCB} Q_{hC}, \qquad
        P_{hCB} = \beta_h \sum_g M_{hg} \frac{W_{gCB}\, \Omega_{gCB}}{\beta_g}

    where :math:`\Omega_g = \operatorname{softmax}_{B}(S_{gCB})` over the key set. A query
    whose key set is empty contributes 0 energy and 0 gradient.

    Args:
        weight: ``(batch, heads, N, N)`` pair weights :math:`W_{gCB}` (rows = queries).
        mixing: ``(heads, heads)`` :math:`M_{hg}`.
        padding_mask: ``(batch, N)`` bool, True = padding.
        exclude_self: remove :math:`B = C` from every key set.

    Shapes:
        - ``q``, ``k``: ``(batch, heads, N, head_dim)``; ``beta``: ``(heads,)``
        - :meth:`energy`: ``(batch,)``; :meth:`neg_grad`: two tensors like ``q``
    """

    def __init__(
        self,
        weight: Tensor,
        mixing: Tensor,
        padding_mask: Tensor | None = None,
        exclude_self: bool = False,
    ) -> None:
        _, heads, n, _ = weight.shape
        if mixing.shape != (heads, heads):
            raise ValueError(f"mixing must have shape {(heads, heads)}, got {tuple(mixing.shape)}")
        allowed = weight != 0
        if padding_mask is not None:
            allowed = allowed & ~padding_mask[:, None, None, :]
        if exclude_self:
            allowed = allowed & ~torch.eye(n, dtype=torch.bool, device=weight.device)
        self.weight, self.mixing, self.allowed = weight, mixing, allowed
        self.has_keys = allowed.any(-1)  # (batch, heads, N)
        if padding_mask is not None:
            self.has_keys = self.has_keys & ~padding_mask[:, None, :]

    def _scores(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        """:math:`S` with keys outside the key set at ``-inf`` and empty rows at 0,
        ``(batch, heads, N, N)``."""
        if q.shape[1] != self.mixing.shape[0]:
            raise ValueError(
                f"q has {counted(q.shape[1], 'head')}, the mixing {self.mixing.shape[0]}"
            )
        mixed = torch.einsum("bhcn,hg->bgcn", scaled_scores(q, k, beta), self.mixing) * self.weight
        mixed = mixed.masked_fill(~self.allowed, float("-inf"))
        return torch.where(self.has_keys[..., None], mixed, torch.zeros_like(mixed))

    def energy(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        """:math:`E_{att}` per sample, ``(batch,)``."""
        lse = torch.logsumexp(self._scores(q, k, beta), dim=-1) * self.has_keys
        return -(lse.sum(dim=-1) / beta).sum(dim=-1)

    def weights(self, q: Tensor, k: Tensor, beta: Tensor) -> Tensor:
        r""":math:`\Omega_g`, ``(batch, heads, N, N)``, rows of queries without keys at 0."""
        return torch.softmax(self._scores(q, k, beta), dim=-1) * self.has_keys[..., None]

    def neg_grad(self, q: Tensor, k: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(-\partial E/\partial Q, -\partial E/\partial K) = (P K, P^\top Q)`, each
        like ``q``."""
        omega = self.weights(q, k, beta)
        pull = torch.einsum("bgcn,hg->bhcn", self.weight * omega / beta[:, None, None], self.mixing)
        pull = pull * beta[:, None, None]  # P: (batch, heads, C, B)
        return torch.matmul(pull, k), torch.matmul(pull.transpose(-1, -2), q)


def _lecun_normal_(weight: Tensor, fan_in: int) -> None:
    """flax's default kernel init: a normal of variance 1 / fan_in truncated at 2 std (its
    std corrected for the truncation)."""
    std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class GraphEnergyTransformer(nn.Module):
    r"""Graph-level classifier: node tokens + a CLS token, energy descent, CLS readout.

    The paper's form is ``blocks=1`` with a hard adjacency mask. The released code's options are
    departures from it, available for comparison: several blocks each run for ``steps`` steps
    (``blocks=4, steps=1``), Langevin-like noise on the tokens during training (``noise_std``),
    its learned weighting of the adjacency with mixed heads (``adjacency="released"``, see
    :class:`ReleasedAdjacencyKeySets` and :meth:`pair_weights`) and one learned :math:`\beta`
    per head (``learn_beta``). ``adjacency="soft"`` is a simpler soft adjacency of this
    library's own, a learned bias per head on edges (:class:`SoftAdjacencyKeySets`).

    ``max_degree > 0`` is a departure from both: a learned embedding of each node's degree
    (:class:`~energy_transformer.models.features.DegreeEncoding`, Graphormer's centrality
    encoding) added to its token, a direct count of neighbours that the attention's softmax
    weights only blur. ``head="mlp"`` is another: a hidden layer between the final CLS token
    and the logits, where the paper and the released code read the class out linearly.
    ``readout="cls+sum"`` is a third: the head reads the final CLS token concatenated with the
    sum of the final node tokens (both through the last block's layer norm), as GIN and the
    sum-MLP read a graph. The CLS token's own query averages its keys (a softmax) and sees how
    many nodes there are only through their attention back to it; the sum counts outright.
    ``dropout > 0`` is a fourth: dropout on what the head reads, in training only. For the
    linear head it sits where GIN and the sum-MLP have theirs (0.5 there), before the last
    linear layer; the paper's model has none.

    Args:
        in_features: node feature size :math:`F`.
        num_classes: number of classes.
        dim, heads, head_dim, memories: block sizes :math:`D, H, Y, K`.
        pe_dim: number of Laplacian eigenvectors :math:`k` (the data must carry ``pe: (n, k)``,
            see :class:`LaplacianPE`).
        blocks: number of ET blocks (each with its own weights), run one after the other.
        steps: descent steps per block.
        alpha: step size.
        noise_std: :math:`\sigma` of the noise :math:`\sqrt{\alpha}\,\sigma\,\varepsilon` added
            to the tokens after each step, training only (see ``EnergyTransformer.forward``).
        adjacency: ``"hard"`` (mask: nodes attend neighbours and CLS), ``"soft"`` (a learned
            bias per head on edges) or ``"released"`` (the released code's weighting).
        attention: how the hard mask is computed: ``"edges"`` (an edge list over all the
            batch's tokens, no padding, O(edges); the default) or ``"dense"`` (padded
            ``(graphs, 1 + N, 1 + N)`` masks, O(N^2), per-graph energies in trajectories).
            Both give the same result; the soft adjacencies weight every pair, so they are
            dense.
        soft_init: initial per-head edge bias :math:`w_h` for ``adjacency="soft"``.
        exclude_self: remove a token from its own key set (default: allowed).
        learn_beta: learn the attention inverse temperature per head.
        hopfield: ``"relu"`` or ``"softmax"``.
        qk_init_std, xi_init_std: init scales of the block's ``wq``/``wk`` and memories (spec's
            image preset: 0.002, 0.02).
        max_degree: degrees embedded (``0..max_degree``, larger ones capped); 0: no degree
            encoding (the paper's form).
        head: ``"linear"`` (the paper's readout) or ``"mlp"`` (Linear-ReLU-Linear of width D).
        readout: ``"cls"`` (the paper's: the final CLS token) or ``"cls+sum"`` (the CLS token
            and the sum over the graph's nodes, side by side: the head's input is ``2 D``).
        dropout: probability of zeroing each entry of the head's input in training (0: none,
            the paper's form).

    Shapes:
        - input: a PyG ``Batch`` with ``x: (nodes, F)``, ``pe: (nodes, k)``, ``edge_index``,
          ``batch``
        - output: logits ``(graphs, num_classes)``
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        dim: int = 128,
        heads: int = 12,
        head_dim: int = 64,
        memories: int | None = 512,
        pe_dim: int = 15,
        blocks: int = 1,
        steps: int = 4,
        alpha: float = 0.1,
        noise_std: float = 0.0,
        adjacency: Literal["hard", "soft", "released"] = "hard",
        attention: Literal["edges", "dense"] = "edges",
        soft_init: float = 1.0,
        exclude_self: bool = False,
        learn_beta: bool = False,
        hopfield: str = "relu",
        qk_init_std: float = 0.002,
        xi_init_std: float = 0.02,
        max_degree: int = 0,
        head: Literal["linear", "mlp"] = "linear",
        readout: Literal["cls", "cls+sum"] = "cls",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if max_degree < 0:
            raise ValueError(f"max_degree must be >= 0, got {max_degree}")
        if adjacency not in ADJACENCIES:
            raise ValueError(f"adjacency must be one of {ADJACENCIES}, got {adjacency!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        sizes = {"in_features": in_features, "num_classes": num_classes, "dim": dim}
        for name, value in {**sizes, "pe_dim": pe_dim, "blocks": blocks}.items():
            check_positive_int(name, value)
        check_descent(steps, alpha, noise_std)
        check_dropout(dropout)
        self.pe_dim, self.steps, self.alpha = pe_dim, steps, alpha
        self.noise_std, self.adjacency, self.attention = noise_std, adjacency, attention
        self.readout = readout
        self.scaler = FeatureScaler(in_features)
        self.embed = nn.Linear(in_features, dim)
        self.pe_proj = nn.Linear(pe_dim, dim)
        self.degree = DegreeEncoding(max_degree, dim) if max_degree else None
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.002)
        self.blocks = nn.ModuleList(
            EnergyTransformer(
                dim,
                heads,
                head_dim,
                memories,
                hopfield=hopfield,
                exclude_self=exclude_self,
                learn_beta=learn_beta,
                qk_init_std=qk_init_std,
                xi_init_std=xi_init_std,
            )
            for _ in range(blocks)
        )
        self.edge_weight = (
            nn.Parameter(torch.full((blocks, heads), float(soft_init)))
            if adjacency == "soft"
            else None
        )
        if adjacency == "released":
            # Initialised as the released (flax) code: LeCun-normal kernels, zero bias, so that
            # at first non-edges (and each node's own key) weigh exactly 0 and are masked.
            self.adjacency_proj = nn.Linear(1, heads)
            _lecun_normal_(self.adjacency_proj.weight, fan_in=1)
            nn.init.zeros_(self.adjacency_proj.bias)
            self.gram_conv = nn.Conv2d(1, heads, 3, padding=1, bias=False)
            _lecun_normal_(self.gram_conv.weight, fan_in=9)
            self.head_mixing = nn.Parameter(torch.randn(blocks, heads, heads) * 0.002)
        read = dim * len(readout.split("+"))
        self.head = (
            nn.Linear(read, num_classes)
            if head == "linear"
            else nn.Sequential(nn.Linear(read, dim), nn.ReLU(), nn.Linear(dim, num_classes))
        )
        # Its own module, not inside head: the head's parameter names stay those of older runs.
        self.dropout = nn.Dropout(dropout)

    def _node_embeddings(self, batch: Batch) -> Tensor:
        """Embedded features plus projected (sign-flipped in training) PEs, ``(nodes, D)``."""
        pe = getattr(batch, "pe", None)
        if pe is None or pe.shape[-1] != self.pe_dim:
            got = None if pe is None else tuple(pe.shape)
            raise ValueError(
                f"the graphs need pe: (nodes, {self.pe_dim}) Laplacian eigenvectors, got {got};"
                f" apply LaplacianPE(k={self.pe_dim}) to the dataset first"
            )
        if batch.x.shape[0] == 0:
            raise ValueError("empty batch: no nodes")
        if batch.x.dim() != 2 or batch.x.shape[1] != self.embed.in_features:
            raise ValueError(
                f"node features have shape {tuple(batch.x.shape)} but the model expects"
                f" (nodes, {self.embed.in_features})"
            )
        # Checked before any shift by the CLS tokens: a negative id would land on one of them.
        check_edge_index(batch.edge_index, batch.x.shape[0])
        src, dst = batch.edge_index
        across = batch.batch[src] != batch.batch[dst]
        if across.any():
            i = int(across.nonzero()[0])
            raise ValueError(
                f"edge {int(src[i])} -> {int(dst[i])} joins graphs {int(batch.batch[src[i]])}"
                f" and {int(batch.batch[dst[i]])} of the batch: edges must stay within a graph"
            )
        if self.training:
            sign = torch.randint(0, 2, (int(batch.num_graphs), self.pe_dim), device=pe.device)
            pe = pe * (sign * 2 - 1)[batch.batch].to(pe.dtype)
        h = self.embed(self.scaler(batch.x)) + self.pe_proj(pe)
        if self.degree is not None:  # over both directions, as the hard mask
            h = h + self.degree(torch.cat([batch.edge_index, batch.edge_index.flip(0)], 1), len(h))
        return h

    def tokens(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Padded input tokens and attention structure of a batch (the dense layout).

        Returns:
            ``x: (graphs, 1 + N, D)`` (CLS first), ``allowed: (graphs, 1 + N, 1 + N)`` bool
            (``allowed[b, C, B]``: query ``C`` may attend key ``B``; CLS and every node see each
            other, nodes see their neighbours and themselves) and ``padding_mask: (graphs, 1 + N)``.
        """
        h = self._node_embeddings(batch)
        graph, num_graphs = batch.batch, int(batch.num_graphs)
        nodes, node_mask = to_dense_batch(h, graph, batch_size=num_graphs)
        n = nodes.shape[1]
        x = torch.cat([self.cls.expand(num_graphs, 1, -1), nodes], dim=1)
        adj = to_dense_adj(batch.edge_index, graph, max_num_nodes=n, batch_size=num_graphs) > 0
        eye = torch.eye(n, dtype=torch.bool, device=adj.device)
        allowed = torch.ones(num_graphs, n + 1, n + 1, dtype=torch.bool, device=adj.device)
        allowed[:, 1:, 1:] = adj | adj.transpose(1, 2) | eye
        cls_pad = torch.zeros(num_graphs, 1, dtype=torch.bool, device=adj.device)
        return x, allowed, torch.cat([cls_pad, ~node_mask], dim=1)

    def pair_weights(self, x: Tensor, allowed: Tensor) -> Tensor:
        r"""The released code's pair weights, computed once from the input tokens:

        .. math::
            W_{gCB} = (u_g\, a_{CB} + c_g)\; (\mathrm{conv}_{3 \times 3}(x x^\top))_{gCB}

        with :math:`a` the released code's adjacency (the graph's edges, no added self loops,
        and a CLS row and column of ones), :math:`u, c` a learned per-head scale and offset and
        a learned 3x3 convolution (one output channel per head) over the tokens' Gram matrix.
        So a node's own key weighs :math:`c_g` times the convolution: 0, hence masked, until
        the offset has learned otherwise. The convolution mixes neighbouring entries of the
        Gram matrix, so it depends on the node order, as in the released code. Padding tokens
        are zero, so the convolution sees the zero border it would see without them.

        Args:
            x: ``(graphs, 1 + N, D)`` input tokens (zero at padding).
            allowed: ``(graphs, 1 + N, 1 + N)`` bool, as :meth:`tokens` gives it (its node
                diagonal, which the hard mask adds, is dropped here).

        Returns:
            ``(graphs, heads, 1 + N, 1 + N)``
        """
        n = allowed.shape[-1]
        self_loops = torch.eye(n, dtype=torch.bool, device=allowed.device)
        self_loops[0, 0] = False  # CLS keeps its corner of ones
        adjacency = (allowed & ~self_loops).to(x.dtype).unsqueeze(-1)
        proj = self.adjacency_proj(adjacency).permute(0, 3, 1, 2)
        gram = torch.matmul(x, x.transpose(-1, -2)).unsqueeze(1)
        return proj * self.gram_conv(gram)

    def edge_tokens(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """All the batch's tokens as one unpadded set, and the edges between them.

        Returns:
            ``x: (1, graphs + nodes, D)`` (the graphs' CLS tokens first, then the nodes in batch
            order) and ``edge_index: (2, E)`` (key -> query): both directions of every graph edge
            and of every CLS-node pair; self loops are added by the key sets.
        """
        h = self._node_embeddings(batch)
        num_graphs = int(batch.num_graphs)
        nodes = torch.arange(h.shape[0], device=h.device) + num_graphs
        src, dst = batch.edge_index + num_graphs
        edge_index = torch.stack(
            [
                torch.cat([src, dst, nodes, batch.batch]),
                torch.cat([dst, src, batch.batch, nodes]),
            ]
        )
        x = torch.cat([self.cls[0].expand(num_graphs, -1), h]).unsqueeze(0)
        return x, edge_index

    def _dense_keysets(self, x: Tensor, allowed: Tensor, padding: Tensor) -> list[dict[str, Any]]:
        """Each block's attention structure in the dense layout, as keyword arguments of the
        block (a mask, or key sets for the soft and released adjacencies)."""
        if self.adjacency == "soft":
            return [
                dict(keysets=SoftAdjacencyKeySets(allowed, w, padding, b.exclude_self))
                for w, b in zip(self.edge_weight, self.blocks, strict=True)
            ]
        if self.adjacency == "released":
            weight = self.pair_weights(x, allowed)
            return [
                dict(keysets=ReleasedAdjacencyKeySets(weight, m, padding, b.exclude_self))
                for m, b in zip(self.head_mixing, self.blocks, strict=True)
            ]
        return [dict(mask=allowed)] * len(self.blocks)

    @contextmanager
    def dense_eval(self) -> Iterator[None]:
        """Inside the ``with`` statement: eval mode and the dense layout (the same result as the
        edge list, with one energy per graph and an ``(N, N)`` attention matrix); both restored
        after it."""
        layout, training = self.attention, self.training
        self.attention = "dense"
        self.eval()
        try:
            yield
        finally:
            self.attention = layout
            self.train(training)

    @torch.no_grad()
    def cls_attention(self, batch: Batch | Data) -> tuple[Tensor, Tensor]:
        """What the class is read from: the attention of the CLS query over the nodes at the
        end of the descent (the last block's final tokens, mean over heads), and the logits.

        Runs the dense layout (the same result as the edge list), in eval mode.

        Returns:
            ``(weights, logits)``: ``weights: (graphs, N)``, N the batch's largest graph, each
            graph's row summing to 1 over its nodes and CLS itself (so a row may sum to less
            than 1 over the nodes; 0 at padding), and ``logits: (graphs, num_classes)``.
        """
        if isinstance(batch, Data) and not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        # Eval mode: no sign flips nor noise, so that the two passes see the same tokens.
        with self.dense_eval():
            logits, trajectories = self(batch, return_trajectory=True)
            x, allowed, padding = self.tokens(batch)
            kw = self._dense_keysets(x, allowed, padding)[-1]
        final = trajectories[-1].tokens[-1]  # (graphs, 1 + N, D)
        omega = self.blocks[-1].attention_weights(final, padding_mask=padding, **kw)
        return omega[:, :, 0, 1:].mean(dim=1), logits

    def forward(
        self, batch: Batch, return_trajectory: bool = False
    ) -> Tensor | tuple[Tensor, list[Trajectory]]:
        """Logits ``(graphs, num_classes)``; with ``return_trajectory`` also each block's
        :class:`~energy_transformer.nn.Trajectory` (with ``attention="edges"`` its energies
        are summed over the batch's graphs: one column)."""
        if not isinstance(batch, Batch):
            if not isinstance(batch, Data):
                raise TypeError(f"expected a PyG Batch (or Data), got {type(batch).__name__}")
            batch = Batch.from_data_list([batch])  # one graph
        noise = self.noise_std if self.training else 0.0
        padding = None
        if self.adjacency == "hard" and self.attention == "edges":
            x, edge_index = self.edge_tokens(batch)
            keysets = [
                EdgeKeySets(edge_index, x.shape[1], self_loops=not block.exclude_self)
                for block in self.blocks
            ]
            kws = [dict(keysets=k) for k in keysets]
        else:
            x, allowed, padding = self.tokens(batch)
            kws = self._dense_keysets(x, allowed, padding)
        trajectories = []
        for block, kw in zip(self.blocks, kws, strict=True):
            out = block(
                x,
                steps=self.steps,
                alpha=self.alpha,
                padding_mask=padding,
                noise_std=noise,
                return_trajectory=return_trajectory,
                **kw,
            )
            if return_trajectory:
                x, trajectory = out
                trajectories.append(trajectory)
            else:
                x = out
        logits = self.head(self.dropout(self._read(x, batch, padding)))
        return (logits, trajectories) if return_trajectory else logits

    def _read(self, x: Tensor, batch: Batch, padding: Tensor | None) -> Tensor:
        """What the head sees, ``(graphs, D)`` or ``(graphs, 2 D)``, from the final tokens
        (``(1, graphs + nodes, D)`` edge layout, or ``(graphs, 1 + N, D)`` with ``padding``)."""
        num_graphs, norm = int(batch.num_graphs), self.blocks[-1].norm
        g = norm(x[0, :num_graphs] if padding is None else x[:, 0])
        if self.readout == "cls":
            return g
        if padding is None:
            nodes = norm(x[0, num_graphs:])
            total = nodes.new_zeros(num_graphs, nodes.shape[-1]).index_add_(0, batch.batch, nodes)
        else:
            total = (norm(x[:, 1:]) * (~padding[:, 1:]).unsqueeze(-1).to(x.dtype)).sum(1)
        return torch.cat([g, total], dim=-1)


def build_graph_et(
    in_features: int, num_classes: int, preset: str = "cpu", **overrides: Any
) -> GraphEnergyTransformer:
    """A :class:`GraphEnergyTransformer` from a preset in :data:`PRESETS` (``"released"``,
    ``"paper"``, ``"cpu"``), any constructor argument overridden by ``overrides``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return GraphEnergyTransformer(in_features, num_classes, **{**PRESETS[preset], **overrides})
