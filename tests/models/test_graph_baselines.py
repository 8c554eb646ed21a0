"""Graph baselines: GIN invariances, the MLP ignores edges, WL kernel properties, WL+SVM."""

from __future__ import annotations

import numpy as np
import pytest
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


def cycles_and_stars(count: int = 24) -> tuple[list[Data], np.ndarray]:
    graphs, labels = [], []
    for i in range(count):  # cycles (class 0) vs stars (class 1), sizes 4..9
        n = 4 + i % 6
        if i % 2 == 0:
            edges = undirected(cycle_pairs(n))
        else:
            edges = undirected([(0, j) for j in range(1, n)])
        graphs.append(labelled(edges, n, i % 2))
        labels.append(i % 2)
    return graphs, np.array(labels)


def test_wl_svm_selects_on_validation():
    graphs, labels = cycles_and_stars()
    train, val, test = np.arange(0, 12), np.arange(12, 18), np.arange(18, 24)
    wl = WLSubtreeSVM(iterations=(1, 2), cs=(0.1, 1.0)).precompute(graphs)
    chosen = wl.fit(labels, train, val)
    assert chosen["val_acc"] == 1.0 and chosen["h"] in (1, 2) and chosen["C"] in (0.1, 1.0)
    assert (wl.predict(test) == labels[test]).all()


def test_wl_kernel_value_by_hand():
    # All labels 0. One WL iteration: every node of the 6-cycle gets label A = (0, {0, 0}); the
    # 6-path has 4 such nodes and 2 ends B = (0, {0}). Feature vectors over (0, A, B):
    # cycle (6, 6, 0), path (6, 4, 2): k = 36 + 24 = 60, |cycle|^2 = 72, |path|^2 = 56.
    zeros = [0] * 6
    c6 = labelled(undirected(cycle_pairs(6)), 6, labels=zeros)
    p6 = labelled(undirected([(i, i + 1) for i in range(5)]), 6, labels=zeros)
    expected = 60 / np.sqrt(72 * 56)
    assert np.isclose(wl_kernel([c6, p6], iterations=1)[0, 1], expected)
    # The SVM's kernel for h = 1 is that same one-iteration kernel (h counts refinements).
    wl = WLSubtreeSVM(iterations=(1, 2)).precompute([c6, p6])
    assert np.isclose(wl.kernels[1][0, 1], expected)
    # Two iterations: the path splits further (ends' neighbours), the cycle does not.
    assert wl.kernels[2][0, 1] < expected - 0.05


def test_wl_kernel_ignores_self_loops():
    # Degree labels (no node labels): a self loop must not count as a neighbour.
    pairs = [(0, 1), (1, 2), (2, 3), (1, 3)]
    plain = labelled(undirected(pairs), 4)
    looped = labelled(torch.cat([undirected(pairs), torch.tensor([[2], [2]])], dim=1), 4)
    assert np.isclose(wl_kernel([plain, looped], iterations=2)[0, 1], 1.0)


def test_wl_svm_ties_go_to_the_smallest_h_then_c():
    graphs, labels = cycles_and_stars()
    wl = WLSubtreeSVM(iterations=(1, 2), cs=(0.1, 1.0)).precompute(graphs)
    # Every (h, C) separates cycles from stars perfectly (checked below), so it is a tie.
    chosen = wl.fit(labels, np.arange(0, 12), np.arange(12, 18))
    assert (chosen["h"], chosen["C"]) == (1, 0.1)
    assert chosen["val_acc"] == 1.0


def test_wl_svm_selects_by_validation_not_training_accuracy():
    graphs, labels = cycles_and_stars()
    train, val = np.arange(0, 12), np.arange(12, 18)
    labels = labels.copy()
    labels[val] = 1 - labels[val]  # validation contradicts training
    wl = WLSubtreeSVM(iterations=(1, 2), cs=(0.1, 1.0)).precompute(graphs)
    chosen = wl.fit(labels, train, val)
    # The reported accuracies are those of the kept SVM on the two splits: it fits training
    # perfectly and so gets every (contradicting) validation graph wrong.
    assert chosen["val_acc"] == (wl.predict(val) == labels[val]).mean() == 0.0
    assert chosen["train_acc"] == (wl.predict(train) == labels[train]).mean() == 1.0


def test_gin_and_sum_mlp_standardise_inputs_with_the_fitted_scaler():
    torch.manual_seed(0)
    x = torch.randn(5, 3) * torch.tensor([10.0, 0.1, 3.0]) + torch.tensor([5.0, -2.0, 0.0])
    edges = undirected([(0, 1), (1, 2), (2, 3), (3, 4)])
    for cls in (GINClassifier, SumMLP):
        model = cls(3, 2, hidden=8).eval()
        model.scaler.fit(x)
        unscaled = cls(3, 2, hidden=8).eval()
        unscaled.load_state_dict(model.state_dict())
        unscaled.scaler.mean.zero_()
        unscaled.scaler.std.fill_(1.0)
        z = (x - x.mean(0)) / x.std(0, correction=0)
        out = model(Batch.from_data_list([Data(x=x, edge_index=edges, num_nodes=5)]))
        ref = unscaled(Batch.from_data_list([Data(x=z, edge_index=edges, num_nodes=5)]))
        torch.testing.assert_close(out, ref, msg=cls.__name__)
        assert not torch.allclose(
            out, unscaled(Batch.from_data_list([Data(x=x, edge_index=edges)]))
        )


def test_gin_readout_sums_so_graph_size_counts():
    # Two disjoint copies of a graph: every node embedding is unchanged (GIN is local and the
    # batch norm is per node in eval mode), so a sum readout doubles; a mean would not move.
    torch.manual_seed(0)
    model = GINClassifier(2, 3, hidden=8, layers=2).eval()
    x = torch.randn(4, 2)
    edges = undirected([(0, 1), (1, 2), (2, 3)])
    one = Data(x=x, edge_index=edges, num_nodes=4)
    two = Data(x=torch.cat([x, x]), edge_index=torch.cat([edges, edges + 4], 1), num_nodes=8)
    h = model.encoder(x, edges)  # identity scaler: not fitted
    torch.testing.assert_close(model(Batch.from_data_list([one])), model.head(h.sum(0))[None])
    torch.testing.assert_close(
        model(Batch.from_data_list([two])), model.head(2 * h.sum(0))[None], atol=1e-5, rtol=1e-5
    )


def batch_norm_by_hand(norm: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm written out: batch mean and biased variance, then the affine."""
    bn = norm.module  # PyG's BatchNorm wraps torch's BatchNorm1d
    mean, var = h.mean(0), h.var(0, correction=0)
    return (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def two_graphs(in_features: int) -> Batch:
    torch.manual_seed(3)
    x = torch.randn(9, in_features, dtype=torch.float64)
    a = Data(x=x[:5], edge_index=undirected(cycle_pairs(5)), num_nodes=5)
    b = Data(x=x[5:], edge_index=undirected([(0, 1), (0, 2), (0, 3)]), num_nodes=4)
    return Batch.from_data_list([a, b])


def test_gin_eps_is_a_learned_parameter_starting_at_zero():
    torch.manual_seed(0)
    model = GINClassifier(3, 2, hidden=8, layers=3)
    params = {id(p) for p in model.parameters()}
    assert len(model.encoder.convs) == 3
    for conv in model.encoder.convs:
        assert isinstance(conv.eps, torch.nn.Parameter) and id(conv.eps) in params
        assert conv.eps.requires_grad and conv.eps.item() == 0.0
    model.double().eval()
    model(two_graphs(3)).sum().backward()
    assert all(
        conv.eps.grad is not None and conv.eps.grad.abs() > 0 for conv in model.encoder.convs
    )


def test_gin_replayed_by_hand_in_training_mode():
    # Every layer's output (conv, batch norm on the batch's statistics, ReLU) is concatenated
    # ("jumping knowledge": all layers, not only the last), mapped by one linear layer, summed
    # per graph; the head drops out (p = 0.5) after its ReLU only. The encoder itself drops
    # nothing, so the one random draw is the head's.
    torch.manual_seed(0)
    model = GINClassifier(3, 4, hidden=8, layers=3).double().train()
    batch = two_graphs(3)
    torch.manual_seed(1)
    out = model(batch)
    enc = model.encoder
    assert enc.lin.in_features == 3 * 8
    h, layers = batch.x, []
    for conv, norm in zip(enc.convs, enc.norms, strict=True):
        h = torch.relu(batch_norm_by_hand(norm, conv(h, batch.edge_index)))
        layers.append(h)
    nodes = enc.lin(torch.cat(layers, dim=-1))
    pooled = torch.stack([nodes[:5].sum(0), nodes[5:].sum(0)])
    torch.manual_seed(1)
    z = torch.nn.functional.dropout(torch.relu(model.head[0](pooled)), 0.5, training=True)
    torch.testing.assert_close(out, model.head[3](z))
    assert (z == 0).any()  # the draw did drop units: the check above saw the dropout


def test_sum_mlp_replayed_by_hand_in_training_mode():
    torch.manual_seed(0)
    model = SumMLP(3, 4, hidden=16).double().train()
    batch = two_graphs(3)
    torch.manual_seed(1)
    out = model(batch)
    pooled = torch.stack([batch.x[:5].sum(0), batch.x[5:].sum(0)])
    torch.manual_seed(1)
    z = torch.nn.functional.dropout(torch.relu(model.mlp[0](pooled)), 0.5, training=True)
    torch.testing.assert_close(out, model.mlp[3](z))
    assert (z == 0).any()


def test_baseline_defaults():
    gin = GINClassifier(3, 2)
    assert len(gin.encoder.convs) == 3 and gin.encoder.lin.out_features == 64
    assert [m.p for m in gin.modules() if isinstance(m, torch.nn.Dropout)] == [0.0, 0.5]
    mlp = SumMLP(3, 2)
    assert mlp.mlp[0].out_features == 64
    assert [m.p for m in mlp.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]
    wl = WLSubtreeSVM()
    assert wl.iterations == (1, 2, 3, 4, 5) and wl.cs == (0.01, 0.1, 1.0, 10.0, 100.0)


def test_wl_kernel_uses_degrees_when_there_are_no_node_labels():
    # Path 0-1-2 (degrees 1, 2, 1) against a triangle (2, 2, 2), one iteration. Degree labels:
    # iteration 0 shares only label 2 (1 * 3); the refined labels (1,{2}) x2, (2,{1,1}) against
    # (2,{2,2}) x3 share nothing: k = 3 / sqrt((4 + 1 + 4 + 1) * (9 + 9)). All-zero labels would
    # give 12 / sqrt(14 * 18).
    path = labelled(undirected([(0, 1), (1, 2)]), 3)
    triangle = labelled(undirected(cycle_pairs(3)), 3)
    assert np.isclose(wl_kernel([path, triangle], iterations=1)[0, 1], 3 / np.sqrt(180))


def test_wl_svm_picks_the_iterations_that_separate_validation():
    # P4 + P2 against P3 + P3 (all labels 0): the same degrees, so one WL iteration sees the
    # same graph (kernel 1, validation at chance); the second tells the ends apart.
    p4_p2, p3_p3 = [(0, 1), (1, 2), (2, 3), (4, 5)], [(0, 1), (1, 2), (3, 4), (4, 5)]
    graphs = [
        labelled(undirected(p4_p2 if i % 2 == 0 else p3_p3), 6, labels=[0] * 6) for i in range(16)
    ]
    labels = np.arange(16) % 2
    wl = WLSubtreeSVM(iterations=(1, 2), cs=(0.1, 1.0)).precompute(graphs)
    assert np.allclose(wl.kernels[1], 1.0) and wl.kernels[2][0, 1] < 0.95
    chosen = wl.fit(labels, np.arange(8), np.arange(8, 16))
    assert chosen["h"] == 2 and chosen["val_acc"] == 1.0
    # Predictions use the selected iterations' kernel.
    assert (wl.predict(np.arange(8, 16)) == labels[8:]).all()


def ring_or_star_graphs(count: int = 40) -> tuple[list[Data], np.ndarray]:
    graphs, labels = [], []
    for i in range(count):  # one star (class 1) in four
        n, star = 4 + i % 5, i % 4 == 0
        edges = undirected([(0, j) for j in range(1, n)]) if star else undirected(cycle_pairs(n))
        graphs.append(labelled(edges, n, int(star)))
        labels.append(int(star))
    return graphs, np.array(labels)


def test_wl_svm_picks_c_on_validation():
    # Three cycles to a star: a tiny C (0.01, 0.1) leaves the majority answer, right on the 15
    # cycles of the 20 validation graphs only; C = 1 separates them and is the first to do so.
    graphs, labels = ring_or_star_graphs()
    train, val = np.arange(20), np.arange(20, 40)
    small = WLSubtreeSVM(iterations=(1,), cs=(0.01, 0.1)).precompute(graphs)
    assert small.fit(labels, train, val)["val_acc"] == 15 / 20
    wl = WLSubtreeSVM(iterations=(1,), cs=(0.01, 0.1, 1.0, 10.0)).precompute(graphs)
    chosen = wl.fit(labels, train, val)
    assert (chosen["C"], chosen["val_acc"]) == (1.0, 1.0)
    assert (wl.predict(val) == labels[val]).all()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(hidden=0), "hidden must be an int >= 1, got 0"),
        (dict(layers=0), "layers must be an int >= 1, got 0"),
        (dict(dropout=1.0), r"dropout must lie in \[0, 1\), got 1.0"),
        (dict(hidden="8"), "hidden must be an int >= 1, got '8'"),
        (dict(in_features=0), "in_features must be an int >= 1, got 0"),
    ],
)
def test_baselines_refuse_sizes_they_cannot_be_built_with(kw, message):
    sizes = {"in_features": 3, "num_classes": 2, **kw}
    with pytest.raises(ValueError, match=message):
        GINClassifier(**sizes)
    if "layers" not in kw:
        with pytest.raises(ValueError, match=message):
            SumMLP(**sizes)


def test_wl_predict_before_fit_says_so():
    graphs = [labelled(undirected([(0, 1), (1, 2)]), 3) for _ in range(2)]
    wl = WLSubtreeSVM(iterations=(1,)).precompute(graphs)
    with pytest.raises(RuntimeError, match="call fit"):
        wl.predict(np.array([0]))
