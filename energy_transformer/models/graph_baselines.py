r"""Baselines for graph classification, run in the same harness as the Energy Transformer.

- :class:`GINClassifier`: the Graph Isomorphism Network (Xu et al., 2019) from PyG, sum readout.
- :class:`SumMLP`: the structure-agnostic baseline of Errica et al. (2020): node features summed
  over the graph, then an MLP. It sees no edges: a model that cannot beat it has not used the
  structure.
- :class:`WLSubtreeSVM`: the Weisfeiler-Lehman subtree kernel (Shervashidze et al., 2011, via
  ``grakel``) with a support vector machine; the number of WL iterations and ``C`` are chosen on
  the validation split.

The neural models standardise continuous node features as ET does
(:class:`~energy_transformer.models.features.FeatureScaler`, fitted on training graphs).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GIN, global_add_pool

from energy_transformer.models.features import FeatureScaler
from energy_transformer.nn.checks import check_sizes


class GINClassifier(nn.Module):
    r"""GIN node encoder (layers concatenated, "jumping knowledge"), sum pooling, MLP head.

    .. math::
        h_v^{(l)} = \mathrm{MLP}^{(l)}\big((1 + \epsilon) h_v^{(l-1)} + \sum_{u \in N(v)}
            h_u^{(l-1)}\big), \qquad \hat y = \mathrm{MLP}\big(\sum_v h_v\big)

    Args:
        in_features: node feature size.
        num_classes: number of classes.
        hidden: hidden size.
        layers: number of GIN layers.
        dropout: dropout before the last linear layer.

    Shapes:
        - input: a PyG ``Batch`` (``x: (nodes, in_features)``, ``edge_index``, ``batch``)
        - output: ``(graphs, num_classes)``
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        layers: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_sizes(in_features, hidden, num_classes, layers, dropout, "in_features")
        self.scaler = FeatureScaler(in_features)
        self.encoder = GIN(in_features, hidden, layers, norm="batch_norm", jk="cat", train_eps=True)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, batch: Batch) -> Tensor:
        """Logits ``(graphs, num_classes)`` of a PyG ``Batch``."""
        h = self.encoder(self.scaler(batch.x), batch.edge_index)
        return self.head(global_add_pool(h, batch.batch, size=batch.num_graphs))


class SumMLP(nn.Module):
    r"""Structure-agnostic baseline: :math:`\hat y = \mathrm{MLP}(\sum_v x_v)`.

    Args:
        in_features: node feature size.
        num_classes: number of classes.
        hidden: hidden size.
        dropout: dropout before the last linear layer.

    Shapes:
        - input: a PyG ``Batch`` (``x: (nodes, in_features)``, ``batch``); edges are ignored
        - output: ``(graphs, num_classes)``
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5
    ) -> None:
        super().__init__()
        check_sizes(in_features, hidden, num_classes, 1, dropout, "in_features")
        self.scaler = FeatureScaler(in_features)
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, batch: Batch) -> Tensor:
        """Logits ``(graphs, num_classes)`` of a PyG ``Batch``."""
        return self.mlp(global_add_pool(self.scaler(batch.x), batch.batch, size=batch.num_graphs))


# -- Weisfeiler-Lehman subtree kernel + SVM -------------------------------------------------


def wl_kernel(graphs: Sequence[Data], iterations: int) -> np.ndarray:
    """Normalised WL subtree kernel matrix ``(graphs, graphs)`` (grakel).

    The WL relabelling is unsupervised and each entry depends on its two graphs only, so the
    matrix over all graphs can be computed once and indexed per fold without leaking labels.
    """
    from grakel import Graph
    from grakel.kernels import VertexHistogram, WeisfeilerLehman

    converted = []
    for data in graphs:
        neighbours: dict[int, set[int]] = {v: set() for v in range(data.num_nodes)}
        for s, t in data.edge_index.t().tolist():
            if s != t:
                neighbours[s].add(t)
                neighbours[t].add(s)
        # Discrete node labels when the dataset has them, else degrees (IMDB-BINARY).
        node_label = getattr(data, "node_label", None)
        labels = (
            node_label.tolist()
            if node_label is not None
            else [len(neighbours[v]) for v in neighbours]
        )
        adjacency = {v: sorted(n) for v, n in neighbours.items()}
        converted.append(Graph(adjacency, node_labels=dict(enumerate(labels))))
    kernel = WeisfeilerLehman(n_iter=iterations, base_graph_kernel=VertexHistogram, normalize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(kernel.fit_transform(converted), dtype=np.float64)


class WLSubtreeSVM:
    r"""WL subtree kernel + SVM with the iterations :math:`h` and :math:`C` chosen on validation.

    Args:
        iterations: candidate numbers of WL iterations :math:`h`.
        cs: candidate SVM :math:`C` values.
    """

    def __init__(
        self,
        iterations: Sequence[int] = (1, 2, 3, 4, 5),
        cs: Sequence[float] = (1e-2, 1e-1, 1.0, 10.0, 100.0),
    ) -> None:
        self.iterations, self.cs = tuple(iterations), tuple(cs)
        self.kernels: dict[int, np.ndarray] = {}
        self.selected: dict[str, float] = {}

    def precompute(self, graphs: Sequence[Data]) -> WLSubtreeSVM:
        """Kernel matrices over all graphs, one per candidate ``h``."""
        self.kernels = {h: wl_kernel(graphs, h) for h in self.iterations}
        return self

    def fit(self, labels: np.ndarray, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
        """Pick ``(h, C)`` by validation accuracy (ties: the first in the candidates' order,
        so with the ascending defaults smaller ``h``, then smaller ``C``) and keep the SVM
        trained on ``train`` with them. Returns ``{"h", "C", "val_acc", "train_acc"}``.

        ``labels``: ``(graphs,)`` class of every precomputed graph; ``train``, ``val``: indices
        into them. Raises ``RuntimeError`` before :meth:`precompute`.
        """
        from sklearn.svm import SVC

        if not self.kernels:
            raise RuntimeError("call precompute(graphs) before fit")
        best = None
        for h in self.iterations:
            k = self.kernels[h]
            for c in self.cs:
                svm = SVC(C=c, kernel="precomputed").fit(k[np.ix_(train, train)], labels[train])
                acc = float((svm.predict(k[np.ix_(val, train)]) == labels[val]).mean())
                if best is None or acc > best[0]:
                    best = (acc, h, c, svm)
        acc, h, c, svm = best
        self.svm, self.h, self.train_index = svm, h, np.asarray(train)
        train_acc = float(
            (svm.predict(self.kernels[h][np.ix_(train, train)]) == labels[train]).mean()
        )
        self.selected = {"h": h, "C": c, "val_acc": acc, "train_acc": train_acc}
        return self.selected

    def predict(self, index: np.ndarray) -> np.ndarray:
        """Predicted class of the graphs at ``index`` (into the precomputed graphs). Raises
        ``RuntimeError`` before :meth:`fit`."""
        if not self.selected:
            raise RuntimeError("call fit(labels, train, val) before predict")
        return self.svm.predict(self.kernels[self.h][np.ix_(index, self.train_index)])
