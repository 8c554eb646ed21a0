"""Graph baselines: GIN invariances, the MLP ignores edges, WL kernel properties, WL+SVM."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from energy_transformer.models.graph_baselines import GINClassifier, SumMLP, WLSubtreeSVM, wl_kernel


def undirected(pairs: list[tuple[int, int]]) -> torch.Tensor:
    s, t = zip(*pairs, strict=True)
    return torch.tensor([list(s) + list(t), list(t) + list(s)])


def cycle_pairs(n: int, start: int = 0) -> list[tuple[int, int]]:
    return [(start + i, start + (i + 1) % n) for i in range(n)]


def labelled(edges: torch.Tensor, n: int, y: int = 0, labels=None) -> Data:
    data = Data(x=torch.ones(n, 2), edge_index=edges, y=torch.tensor([y]), num_nodes=n)
    if labels is not None:
        data.node_label = torch.tensor(labels)
    return data


def test_gin_permutation_invariant_and_batch_independent():
    torch.manual_seed(0)
    model = GINClassifier(3, 4, hidden=16, layers=2).eval()
    x = torch.randn(5, 3)
    edges = undirected([(0, 1), (1, 2), (2, 3), (3, 4), (1, 4)])
    perm = torch.tensor([3, 0, 4, 1, 2])  # new node i is old node perm[i]
    inverse = torch.argsort(perm)
    a = Data(x=x, edge_index=edges, num_nodes=5)
    b = Data(x=x[perm], edge_index=inverse[edges], num_nodes=5)
    out_a = model(Batch.from_data_list([a]))
    assert torch.allclose(out_a, model(Batch.from_data_list([b])), atol=1e-5)
    other = Data(x=torch.randn(3, 3), edge_index=undirected([(0, 1)]), num_nodes=3)
    assert torch.allclose(out_a[0], model(Batch.from_data_list([other, a]))[1], atol=1e-5)


def test_sum_mlp_sees_no_edges():
    torch.manual_seed(0)
    model = SumMLP(3, 2, hidden=8).eval()
    x = torch.randn(4, 3)
    ring = Data(x=x, edge_index=undirected(cycle_pairs(4)), num_nodes=4)
    star = Data(x=x, edge_index=undirected([(0, 1), (0, 2), (0, 3)]), num_nodes=4)
    out = model(Batch.from_data_list([ring, star]))
    assert torch.allclose(out[0], out[1])
    expected = model.mlp(x.sum(0, keepdim=True))
    assert torch.allclose(out[:1], expected)


def test_wl_kernel_properties():
    c6 = labelled(undirected(cycle_pairs(6)), 6)
    two_triangles = labelled(undirected(cycle_pairs(3) + cycle_pairs(3, 3)), 6)
    path = labelled(undirected([(i, i + 1) for i in range(5)]), 6)
    k = wl_kernel([c6, two_triangles, path], iterations=3)
    assert np.allclose(np.diag(k), 1.0)  # normalised
    assert np.allclose(k, k.T)
    assert np.linalg.eigvalsh(k).min() > -1e-9
    # 1-WL cannot tell a 6-cycle from two triangles (both 2-regular): the classic blind spot.
    assert np.isclose(k[0, 1], 1.0)
    assert k[0, 2] < 0.99
    # Node labels matter: the same ring with different labels is a different graph.
    relabelled = labelled(undirected(cycle_pairs(6)), 6, labels=[0, 1, 0, 1, 0, 1])
    assert wl_kernel([c6, relabelled], iterations=1)[0, 1] < 1.0


def test_wl_svm_selects_on_validation():
    graphs, labels = [], []
    for i in range(24):  # cycles (class 0) vs stars (class 1), sizes 4..9
        n = 4 + i % 6
        if i % 2 == 0:
            edges = undirected(cycle_pairs(n))
        else:
            edges = undirected([(0, j) for j in range(1, n)])
        graphs.append(labelled(edges, n, i % 2))
        labels.append(i % 2)
    labels = np.array(labels)
    train, val, test = np.arange(0, 12), np.arange(12, 18), np.arange(18, 24)
    wl = WLSubtreeSVM(iterations=(1, 2), cs=(0.1, 1.0)).precompute(graphs)
    chosen = wl.fit(labels, train, val)
    assert chosen["val_acc"] == 1.0 and chosen["h"] in (1, 2) and chosen["C"] in (0.1, 1.0)
    assert (wl.predict(test) == labels[test]).all()
