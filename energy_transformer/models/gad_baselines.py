r"""Graph anomaly detection baselines: MLP, GCN, GraphSAGE, GAT, BWGNN, RF-Graph and GB-Graph.

The neural models share one interface, so one harness trains them all::

    model = GAD_BASELINES[name](in_dim, hidden=64, num_classes=2, layers=2, dropout=0.0)
    logits = model(x, edge_index)          # x: (N, in_dim), edge_index: (2, E) -> (N, num_classes)

Edges follow PyG's source-to-target convention (``edge_index[0] -> edge_index[1]``); give both
directions for an undirected graph. Only PyG's pure-torch code paths are used (no torch-scatter
or pyg-lib). The tree ensembles GADBench found hard to beat, :class:`RFGraph` and
:class:`GBGraph`, have a scikit-learn style interface instead: ``fit(x, edge_index, y, idx)``
and ``predict_proba(x, edge_index)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from energy_transformer.nn.checks import check_sizes
from energy_transformer.nn.sparse_attention import check_edge_index

__all__ = [
    "BWGNN",
    "GAD_BASELINES",
    "GAT",
    "GCN",
    "MLP",
    "BetaWavelet",
    "GBGraph",
    "GraphSAGE",
    "RFGraph",
    "TreeGraph",
    "aggregate_neighbors",
    "beta_wavelet_coefficients",
    "gcn_norm_adjacency",
    "is_neural",
    "mean_adjacency",
    "sym_norm_adjacency",
]


def _check_graph(x: Tensor, edge_index: Tensor | None) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (num_nodes, features), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("the graph is empty (x has 0 nodes)")
    if edge_index is None:
        return
    check_edge_index(edge_index, x.shape[0])


def _widths(in_dim: int, hidden: int, layers: int) -> list[tuple[int, int]]:
    """(input, output) sizes of ``layers`` stacked hidden layers."""
    return [(in_dim, hidden)] + [(hidden, hidden)] * (layers - 1)


def _sparse(dst: Tensor, src: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    """``(N, N)`` CSR matrix with ``weight`` at ``[dst, src]``, repeated edges summed."""
    coo = torch.sparse_coo_tensor(
        torch.stack([dst, src]), weight, (num_nodes, num_nodes), check_invariants=False
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


def sym_norm_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
    r""":math:`D^{-1/2} A D^{-1/2}` with :math:`A_{ij}` = number of edges :math:`j \to i` and
    :math:`D` the in-degrees; a node without incoming edges has a zero row (BWGNN).

    Shapes:
        - edge_index: ``(2, E)``
        - output: ``(N, N)`` sparse CSR, row = target
    """
    src, dst = edge_index
    deg = torch.bincount(dst, minlength=num_nodes).to(dtype)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    return _sparse(dst, src, inv_sqrt[src] * inv_sqrt[dst], num_nodes)


def gcn_norm_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
    r""":math:`\hat D^{-1/2} (A + I) \hat D^{-1/2}`, any existing self loop replaced by one of
    weight 1 (what PyG's ``GCNConv`` computes from an edge list on every call).

    Shapes:
        - edge_index: ``(2, E)``
        - output: ``(N, N)`` sparse CSR, row = target
    """
    src, dst = edge_index[:, edge_index[0] != edge_index[1]]
    loop = torch.arange(num_nodes, device=edge_index.device)
    return sym_norm_adjacency(
        torch.stack([torch.cat([src, loop]), torch.cat([dst, loop])]), num_nodes, dtype
    )


def mean_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
    r""":math:`D^{-1} A`: the product with it averages over each node's incoming edges.

    Shapes:
        - edge_index: ``(2, E)``
        - output: ``(N, N)`` sparse CSR, row = target
    """
    src, dst = edge_index
    deg = torch.bincount(dst, minlength=num_nodes).clamp(min=1).to(dtype)
    return _sparse(dst, src, deg.reciprocal()[dst], num_nodes)


class _CachedAdjacency:
    """The sparse matrix ``build(edge_index, N, dtype)`` of the last graph seen.

    Full-batch training passes the same ``edge_index`` every step, and on CPU one product with a
    CSR matrix is several times faster than a gather and a scatter over the edges. The matrix is
    rebuilt when ``edge_index`` is another tensor, was modified in place, or N or the dtype change.
    """

    def __init__(self, build: Callable[[Tensor, int, torch.dtype], Tensor]) -> None:
        self.build = build
        self._edge_index: Tensor | None = None
        self._key: tuple | None = None
        self._matrix: Tensor | None = None

    def __call__(self, edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
        version = -1 if edge_index.is_inference() else edge_index._version
        key = (version, num_nodes, dtype)
        if edge_index is not self._edge_index or key != self._key or self._matrix is None:
            # A matrix first built under inference_mode must still serve training later.
            with torch.inference_mode(False):
                self._matrix = self.build(edge_index.long(), num_nodes, dtype)
            self._edge_index, self._key = edge_index, key
        return self._matrix


class _NodeClassifier(nn.Module):
    """``layers`` feature layers (each followed by ReLU and dropout), then a linear head.

    Layers built by ``make_layer(in_dim, out_dim)`` are called as ``layer(h, graph)`` unless they
    are plain :class:`~torch.nn.Linear` layers; ``graph`` is ``edge_index``, or the cached sparse
    matrix ``adjacency(edge_index, N, dtype)`` when ``adjacency`` is given.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_classes: int,
        layers: int,
        dropout: float,
        make_layer: Callable[[int, int], nn.Module],
        adjacency: Callable[[Tensor, int, torch.dtype], Tensor] | None = None,
    ) -> None:
        super().__init__()
        check_sizes(in_dim, hidden, num_classes, layers, dropout)
        self.layers = nn.ModuleList(make_layer(a, b) for a, b in _widths(in_dim, hidden, layers))
        self.head = nn.Linear(hidden, num_classes)
        self.dropout = dropout
        self.adjacency = None if adjacency is None else _CachedAdjacency(adjacency)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        _check_graph(x, edge_index)
        graph = edge_index
        if self.adjacency is not None:
            graph = self.adjacency(edge_index, x.shape[0], x.dtype)
        h = x
        for layer in self.layers:
            h = layer(h) if isinstance(layer, nn.Linear) else layer(h, graph)
            h = F.dropout(F.relu(h), p=self.dropout, training=self.training)
        return self.head(h)


class MLP(_NodeClassifier):
    r"""Multi-layer perceptron on node features alone; the graph is ignored.

    .. math::
        h^{(l+1)} = \mathrm{ReLU}(W^{(l)} h^{(l)} + b^{(l)}), \qquad
        \mathrm{logits} = W_{out} h^{(L)} + b_{out}

    Args:
        in_dim: node feature size.
        hidden: width of the hidden layers.
        num_classes: output classes (2 for normal / anomaly).
        layers: number of hidden layers.
        dropout: dropout after each hidden layer.

    Shapes:
        - x: ``(N, in_dim)``; edge_index: ``(2, E)`` or ``None`` (unused)
        - output: ``(N, num_classes)`` logits
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        num_classes: int = 2,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_dim, hidden, num_classes, layers, dropout, nn.Linear)

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        """Logits ``(N, num_classes)``; ``edge_index``, when given, is only checked."""
        return super().forward(x, edge_index)


class GCN(_NodeClassifier):
    r"""Graph convolutional network (Kipf & Welling, 2017) with self loops.

    .. math::
        h^{(l+1)} = \mathrm{ReLU}\big(\hat D^{-1/2} \hat A \hat D^{-1/2} h^{(l)} W^{(l)}\big),
        \qquad \hat A = A + I

    Args:
        in_dim: node feature size.
        hidden: width of the graph-convolution layers.
        num_classes: output classes.
        layers: number of graph-convolution layers.
        dropout: dropout after each layer.

    Shapes:
        - x: ``(N, in_dim)``; edge_index: ``(2, E)``
        - output: ``(N, num_classes)`` logits
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        num_classes: int = 2,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            in_dim,
            hidden,
            num_classes,
            layers,
            dropout,
            lambda a, b: GCNConv(a, b, normalize=False),
            adjacency=gcn_norm_adjacency,
        )


class GraphSAGE(_NodeClassifier):
    r"""GraphSAGE (Hamilton et al., 2017) with mean aggregation, on the full graph.

    .. math::
        h_i^{(l+1)} = \mathrm{ReLU}\Big(W_1^{(l)} h_i^{(l)} + W_2^{(l)}
            \tfrac{1}{|\mathcal N(i)|} \textstyle\sum_{j \in \mathcal N(i)} h_j^{(l)}\Big)

    Args:
        in_dim: node feature size.
        hidden: width of the SAGE layers.
        num_classes: output classes.
        layers: number of SAGE layers.
        dropout: dropout after each layer.

    Shapes:
        - x: ``(N, in_dim)``; edge_index: ``(2, E)``
        - output: ``(N, num_classes)`` logits
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        num_classes: int = 2,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        # A sum over the row-normalised adjacency is the mean over neighbours.
        super().__init__(
            in_dim,
            hidden,
            num_classes,
            layers,
            dropout,
            lambda a, b: SAGEConv(a, b, aggr="sum"),
            adjacency=mean_adjacency,
        )


class GAT(_NodeClassifier):
    r"""Graph attention network (Velickovic et al., 2018); heads concatenated to ``hidden``.

    .. math::
        h_i^{(l+1)} = \big\Vert_{k=1}^{K} \mathrm{ReLU}\Big(\textstyle\sum_{j \in
            \mathcal N(i) \cup \{i\}} \alpha_{ij}^{k} W^{k} h_j^{(l)}\Big), \qquad
        \alpha_{ij}^{k} = \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(a^{k\top}
            [W^k h_i \Vert W^k h_j])\big)

    Args:
        in_dim: node feature size.
        hidden: width of each layer's output, split evenly over the heads.
        num_classes: output classes.
        layers: number of attention layers.
        dropout: dropout after each layer.
        heads: attention heads :math:`K`; must divide ``hidden``.

    Shapes:
        - x: ``(N, in_dim)``; edge_index: ``(2, E)``
        - output: ``(N, num_classes)`` logits
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        num_classes: int = 2,
        layers: int = 2,
        dropout: float = 0.0,
        heads: int = 4,
    ) -> None:
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive int, got {heads!r}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        super().__init__(
            in_dim,
            hidden,
            num_classes,
            layers,
            dropout,
            lambda a, b: GATConv(a, b // heads, heads=heads),
        )


def beta_wavelet_coefficients(order: int) -> list[list[float]]:
    r"""Coefficients :math:`\theta_{p,k}` of the Beta wavelets as polynomials in the Laplacian.

    .. math::
        \beta^*_{p,q}(\lambda) = \frac{(\lambda/2)^p (1 - \lambda/2)^q}{2\,B(p+1, q+1)}
            = \sum_{k=p}^{C} \theta_{p,k} \lambda^k, \qquad
        \theta_{p,k} = \frac{(-1)^{k-p} \binom{q}{k-p}}{2^{k+1} B(p+1, q+1)}

    with :math:`q = C - p` and :math:`B(p+1, q+1) = p!\,q!/(C+1)!`.

    Args:
        order: :math:`C = p + q`, giving :math:`C + 1` filters.

    Returns:
        ``theta`` as nested lists, ``theta[p][k]`` for ``p, k`` in ``0..C``.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    theta = [[0.0] * (order + 1) for _ in range(order + 1)]
    for p in range(order + 1):
        q = order - p
        beta_fn = math.factorial(p) * math.factorial(q) / math.factorial(order + 1)
        for k in range(p, order + 1):
            theta[p][k] = (-1) ** (k - p) * math.comb(q, k - p) / (2 ** (k + 1) * beta_fn)
    return theta


class BetaWavelet(nn.Module):
    r"""The parameter-free Beta wavelet filter bank of BWGNN on the normalised Laplacian.

    .. math::
        \mathcal W_{p,q} = U \beta^*_{p,q}(\Lambda) U^\top
            = \frac{(L/2)^p (I - L/2)^q}{2\,B(p+1, q+1)}, \qquad
        L = I - D^{-1/2} A D^{-1/2} = U \Lambda U^\top, \quad p + q = C

    Each filter is applied as the polynomial :math:`\sum_k \theta_{p,k} L^k` (see
    :func:`beta_wavelet_coefficients`), so only the :math:`C` products :math:`L^k h` are computed,
    each one sparse product with :math:`D^{-1/2} A D^{-1/2}` (:func:`sym_norm_adjacency`, built
    once per graph): no eigendecomposition and no dense matrix. :math:`D` holds in-degrees; a node
    without incoming edges has a zero row in :math:`D^{-1/2} A D^{-1/2}`.

    Args:
        order: :math:`C`; the bank has :math:`C + 1` filters, from low-pass (:math:`p = 0`) to
            high-pass (:math:`p = C`).

    Shapes:
        - h: ``(N, F)``; edge_index: ``(2, E)``
        - output: ``(C + 1, N, F)``, filter :math:`p` at index ``p``
    """

    def __init__(self, order: int = 2) -> None:
        super().__init__()
        self.order = order
        # Python floats, not a buffer, so .double() keeps them exact.
        self.theta = beta_wavelet_coefficients(order)
        self.adjacency = _CachedAdjacency(sym_norm_adjacency)

    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        """Every filter of the bank applied to ``h: (N, F)``: ``(C + 1, N, F)``."""
        _check_graph(h, edge_index)
        norm_adj = self.adjacency(edge_index, h.shape[0], h.dtype)
        powers = [h]
        for _ in range(self.order):
            powers.append(powers[-1] - torch.sparse.mm(norm_adj, powers[-1]))  # L^k h
        theta = torch.tensor(self.theta, dtype=h.dtype, device=h.device)
        return torch.einsum("pk,knf->pnf", theta, torch.stack(powers))


class BWGNN(nn.Module):
    r"""Beta Wavelet Graph Neural Network (Tang et al., ICML 2022).

    Anomalies shift spectral energy towards high frequencies, so BWGNN reads the graph through
    band-pass Beta wavelets rather than one low-pass filter:

    .. math::
        h = \mathrm{MLP}(x), \qquad
        z = \big\Vert_{p=0}^{C} \mathcal W_{p, C-p}\, h, \qquad
        \mathrm{logits} = W_2\, \mathrm{ReLU}(W_1 z + b_1) + b_2

    with the filters :math:`\mathcal W_{p,q}` of :class:`BetaWavelet`.

    Args:
        in_dim: node feature size.
        hidden: width of the feature MLP and of each filter's output.
        num_classes: output classes.
        layers: number of layers of the feature MLP.
        dropout: dropout after each hidden layer.
        order: :math:`C`, the Beta wavelet order (:math:`C + 1` filters); the paper uses 2.

    Shapes:
        - x: ``(N, in_dim)``; edge_index: ``(2, E)``
        - output: ``(N, num_classes)`` logits
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        num_classes: int = 2,
        layers: int = 2,
        dropout: float = 0.0,
        order: int = 2,
    ) -> None:
        super().__init__()
        check_sizes(in_dim, hidden, num_classes, layers, dropout)
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in _widths(in_dim, hidden, layers))
        self.wavelets = BetaWavelet(order)
        self.mix = nn.Linear((order + 1) * hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.dropout = dropout

    def _act(self, h: Tensor) -> Tensor:
        return F.dropout(F.relu(h), p=self.dropout, training=self.training)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of the nodes of ``x: (N, in_dim)``."""
        _check_graph(x, edge_index)
        h = x
        for layer in self.encoder:
            h = self._act(layer(h))
        bands = self.wavelets(h, edge_index)  # (C + 1, N, hidden)
        z = bands.permute(1, 0, 2).reshape(x.shape[0], -1)
        return self.head(self._act(self.mix(z)))


_AGGREGATIONS = ("mean", "max", "sum")


def aggregate_neighbors(
    x: Tensor, edge_index: Tensor, hops: int = 2, aggs: Sequence[str] = ("mean", "max")
) -> Tensor:
    r"""Node features concatenated with neighbour aggregates over 1..``hops`` hops (RF-Graph).

    For each aggregator :math:`a` the hop-:math:`k` feature repeats it :math:`k` times:

    .. math::
        a^{(0)} = x, \qquad a^{(k)}_i = a\big(\{a^{(k-1)}_j : j \to i\}\big), \qquad
        \mathrm{out} = [x, a_1^{(1)}, a_2^{(1)}, \dots, a_1^{(2)}, a_2^{(2)}, \dots]

    hop-major, aggregators in the order given. A node without incoming edges gets 0.

    Args:
        x: node features.
        edge_index: ``(2, E)`` edges ``source -> target``.
        hops: number of hops, >= 0.
        aggs: aggregators among ``"mean"``, ``"max"``, ``"sum"``.

    Shapes:
        - x: ``(N, F)``; edge_index: ``(2, E)``
        - output: ``(N, F * (1 + hops * len(aggs)))``
    """
    _check_graph(x, edge_index)
    if isinstance(hops, bool) or not isinstance(hops, int) or hops < 0:
        raise ValueError(f"hops must be a non-negative int, got {hops!r}")
    unknown = [a for a in aggs if a not in _AGGREGATIONS]
    if unknown or not aggs:
        raise ValueError(f"aggs must be a non-empty subset of {_AGGREGATIONS}, got {list(aggs)}")
    src, dst = edge_index
    deg = torch.bincount(dst, minlength=x.shape[0]).clamp(min=1).to(x.dtype).unsqueeze(-1)
    index = dst.unsqueeze(-1).expand(-1, x.shape[1])

    def step(h: Tensor, agg: str) -> Tensor:
        if agg == "max":
            # include_self=False leaves rows without incoming edges at their initial 0.
            return torch.zeros_like(h).scatter_reduce(0, index, h[src], "amax", include_self=False)
        total = torch.zeros_like(h).index_add_(0, dst, h[src])
        return total / deg if agg == "mean" else total

    out, current = [x], dict.fromkeys(aggs, x)
    for _ in range(hops):
        for agg in aggs:
            current[agg] = step(current[agg], agg)
            out.append(current[agg])
    return torch.cat(out, dim=1)


class TreeGraph:
    r"""A tree ensemble on node features and neighbour aggregates (GADBench's "-Graph" models).

    Features are :func:`aggregate_neighbors` (default: mean and max over 1 and 2 hops), fed to
    the scikit-learn classifier a subclass puts in ``self.trees``.

    Shapes:
        - x: ``(N, F)``; edge_index: ``(2, E)``; y: ``(N,)`` in ``{0, 1}``
        - :meth:`predict_proba`: ``(N,)`` anomaly probability
    """

    trees: Any

    def __init__(self, hops: int, aggs: Sequence[str]) -> None:
        self.hops, self.aggs = hops, tuple(aggs)

    def features(self, x: Tensor, edge_index: Tensor) -> np.ndarray:
        """The aggregated features as a float32 array for scikit-learn."""
        return aggregate_neighbors(x, edge_index, self.hops, self.aggs).float().cpu().numpy()

    def fit(self, x: Tensor, edge_index: Tensor, y: Tensor, idx: Tensor | None = None) -> TreeGraph:
        """Fit on the nodes ``idx`` (indices or a boolean mask; all nodes when ``None``).

        Neighbour features use the whole graph, as in transductive node classification.
        """
        feats = self.features(x, edge_index)
        labels = torch.as_tensor(y).cpu().numpy()
        if labels.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {labels.shape}")
        if idx is not None:
            idx = torch.as_tensor(idx).cpu().numpy()
            if idx.dtype == bool and idx.shape != labels.shape:
                raise ValueError(f"boolean idx must have shape {labels.shape}, got {idx.shape}")
            feats, labels = feats[idx], labels[idx]
        if labels.size == 0:
            raise ValueError("idx selects no training nodes")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("y must be binary (0 = normal, 1 = anomaly)")
        if np.unique(labels).size < 2:
            raise ValueError(
                f"the training nodes hold a single class; {type(self).__name__} needs both"
            )
        self.trees.fit(feats, labels)
        return self

    def predict_proba(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Anomaly probability of every node, ``(N,)`` float32 on ``x``'s device."""
        if not hasattr(self.trees, "classes_"):  # scikit-learn's mark of a fitted model
            raise RuntimeError(f"{type(self).__name__}.predict_proba called before fit")
        proba = self.trees.predict_proba(self.features(x, edge_index))
        column = list(self.trees.classes_).index(1)
        return torch.from_numpy(proba[:, column]).float().to(x.device)


class RFGraph(TreeGraph):
    r"""GADBench's RF-Graph: a random forest on node features and neighbour aggregates
    (scikit-learn's :class:`~sklearn.ensemble.RandomForestClassifier`).

    Args:
        n_estimators: number of trees.
        seed: random state of the forest.
        hops: neighbourhood depth of the aggregated features.
        aggs: aggregators, see :func:`aggregate_neighbors`.
        max_depth: maximum tree depth (``None``: grow until pure).
        n_jobs: parallel workers for scikit-learn (``None``: one).
    """

    def __init__(
        self,
        n_estimators: int = 100,
        seed: int = 0,
        hops: int = 2,
        aggs: Sequence[str] = ("mean", "max"),
        max_depth: int | None = None,
        n_jobs: int | None = None,
    ) -> None:
        from sklearn.ensemble import RandomForestClassifier

        super().__init__(hops, aggs)
        self.trees = RandomForestClassifier(
            n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=n_jobs
        )


class GBGraph(TreeGraph):
    r"""GADBench's XGB-Graph with scikit-learn's gradient boosting
    (:class:`~sklearn.ensemble.HistGradientBoostingClassifier`, no XGBoost dependency) on the
    same features as :class:`RFGraph`.

    Args:
        n_estimators: boosting iterations (trees).
        seed: random state of the boosting; without early stopping or subsampling the boosting
            is deterministic, so it changes nothing (it is taken so that both ensembles have
            one interface).
        hops: neighbourhood depth of the aggregated features.
        aggs: aggregators, see :func:`aggregate_neighbors`.
        max_depth: maximum tree depth (``None``: limited by the leaves only).
        learning_rate: shrinkage of each tree's contribution.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        seed: int = 0,
        hops: int = 2,
        aggs: Sequence[str] = ("mean", "max"),
        max_depth: int | None = None,
        learning_rate: float = 0.1,
    ) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        super().__init__(hops, aggs)
        # A fixed number of trees: no internal validation split, the harness selects nothing.
        self.trees = HistGradientBoostingClassifier(
            max_iter=n_estimators,
            max_depth=max_depth,
            learning_rate=learning_rate,
            early_stopping=False,
            random_state=seed,
        )


GAD_BASELINES: dict[str, type] = {
    "mlp": MLP,
    "gcn": GCN,
    "sage": GraphSAGE,
    "gat": GAT,
    "bwgnn": BWGNN,
    "rf-graph": RFGraph,
    "gb-graph": GBGraph,
}


def is_neural(name: str) -> bool:
    """``True`` for baselines trained by gradient descent, ``False`` for the tree ensembles."""
    if name not in GAD_BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(GAD_BASELINES)}")
    return issubclass(GAD_BASELINES[name], nn.Module)
