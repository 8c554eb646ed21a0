import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import beta as beta_fn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from energy_transformer.metrics import auroc
from energy_transformer.models.gad_baselines import (
    BWGNN,
    GAD_BASELINES,
    GAT,
    GCN,
    MLP,
    BetaWavelet,
    GBGraph,
    GraphSAGE,
    RFGraph,
    aggregate_neighbors,
    beta_wavelet_coefficients,
    is_neural,
)

NEURAL = [name for name in GAD_BASELINES if name not in ("rf-graph", "gb-graph")]
TREES = [RFGraph, GBGraph]
GRAPH_MODELS = [name for name in NEURAL if name != "mlp"]


def random_graph(n: int, k: int, seed: int) -> torch.Tensor:
    """Undirected graph (both directions, no duplicates): each node links to k random others."""
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(n).repeat_interleave(k)
    dst = (src + torch.randint(1, n, (n * k,), generator=g)) % n
    return torch.unique(torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1), dim=1)


def relabel(edge_index: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Edges of the graph whose node j is the old node perm[j]."""
    return torch.argsort(perm)[edge_index]


@pytest.fixture(scope="module", autouse=True)
def _module_on_one_thread(one_thread_module):
    """Every test here trains tiny models."""


@pytest.fixture(scope="module")
def neighbour_task():
    """Anomalies = top 20% of the closed-neighbourhood mean of feature 0; own features are noise
    otherwise, so a model must read the neighbours to generalise."""
    n, f = 160, 4
    edge_index = random_graph(n, 3, seed=0)
    x = torch.randn(n, f, generator=torch.Generator().manual_seed(0))
    deg = torch.bincount(edge_index[1], minlength=n).float()
    signal = (x[:, 0] + torch.zeros(n).index_add_(0, edge_index[1], x[edge_index[0], 0])) / (
        deg + 1
    )
    y = (signal > signal.quantile(0.8)).long()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    return x, edge_index, y, perm[:100], perm[100:]


def train_neural(name, x, edge_index, y, idx, steps=200):
    torch.manual_seed(0)
    model = GAD_BASELINES[name](x.shape[1], hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x, edge_index)[idx], y[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(x, edge_index).softmax(-1)[:, 1]


@pytest.fixture(scope="module")
def mlp_test_auroc(neighbour_task):
    x, edge_index, y, train, test = neighbour_task
    probs = train_neural("mlp", x, edge_index, y, train)
    assert auroc(probs[train], y[train]) > 0.95
    return auroc(probs[test], y[test])


def test_mlp_overfits_but_cannot_see_neighbours(mlp_test_auroc):
    assert mlp_test_auroc < 0.7


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_gnn_overfits_and_uses_neighbours(name, neighbour_task, mlp_test_auroc):
    x, edge_index, y, train, test = neighbour_task
    probs = train_neural(name, x, edge_index, y, train)
    assert auroc(probs[train], y[train]) > 0.95
    assert auroc(probs[test], y[test]) > mlp_test_auroc + 0.15


@pytest.mark.parametrize("trees", TREES)
def test_tree_ensembles_use_neighbours(trees, neighbour_task, mlp_test_auroc):
    x, edge_index, y, train, test = neighbour_task
    model = trees(n_estimators=30, seed=0).fit(x, edge_index, y, train)
    probs = model.predict_proba(x, edge_index)
    assert probs.shape == (x.shape[0],) and probs.dtype == torch.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    assert auroc(probs[train], y[train]) > 0.95
    assert auroc(probs[test], y[test]) > mlp_test_auroc + 0.15
    # A boolean mask selects the same training nodes as their sorted indices.
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    mask[train] = True
    again = trees(n_estimators=30, seed=0).fit(x, edge_index, y, mask)
    by_index = trees(n_estimators=30, seed=0).fit(x, edge_index, y, train.sort().values)
    torch.testing.assert_close(
        again.predict_proba(x, edge_index), by_index.predict_proba(x, edge_index)
    )


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("layers", [1, 3])
def test_shapes_and_every_parameter_learns(name, layers):
    x = torch.randn(9, 5)
    edge_index = random_graph(8, 2, seed=3)  # node 8 is isolated
    model = GAD_BASELINES[name](5, hidden=8, num_classes=3, layers=layers)
    out = model(x, edge_index)
    assert out.shape == (9, 3) and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("cls", [GCN, GraphSAGE, GAT, BWGNN])
def test_permutation_equivariance(cls):
    torch.manual_seed(0)
    n = 12
    x = torch.randn(n, 6, dtype=torch.float64)
    edge_index = random_graph(n - 1, 2, seed=4)
    model = cls(6, hidden=8).double().eval()
    perm = torch.randperm(n)
    torch.testing.assert_close(
        model(x[perm], relabel(edge_index, perm)), model(x, edge_index)[perm]
    )


@pytest.mark.parametrize(
    ("cls", "reference"),
    [(GCN, lambda a, b: GCNConv(a, b)), (GraphSAGE, lambda a, b: SAGEConv(a, b, aggr="mean"))],
)
@pytest.mark.parametrize("directed", [False, True])
def test_cached_sparse_path_equals_pyg_edge_list_path(cls, reference, directed):
    torch.manual_seed(0)
    n = 10
    # An existing self loop and an isolated node (9) are the edge cases of the normalisation.
    edge_index = torch.cat([random_graph(n - 1, 2, seed=6), torch.tensor([[3], [3]])], dim=1)
    if directed:  # one direction of each edge: in- and out-degrees now differ
        edge_index = edge_index[:, edge_index[0] <= edge_index[1]]
    x = torch.randn(n, 5, dtype=torch.float64)
    model = cls(5, hidden=8, layers=2).double().eval()
    h = x
    for layer in model.layers:
        conv = reference(layer.in_channels, layer.out_channels).double()
        conv.load_state_dict(layer.state_dict())
        h = torch.relu(conv(h, edge_index))
    torch.testing.assert_close(model(x, edge_index), model.head(h))


@pytest.mark.parametrize("cls", [GCN, GraphSAGE, BWGNN])
def test_adjacency_cache_follows_the_graph(cls):
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    first, second = random_graph(8, 2, seed=7), random_graph(8, 2, seed=8)
    model = cls(3, hidden=8).eval()
    fresh = [cls(3, hidden=8).eval() for _ in range(2)]
    for other in fresh:
        other.load_state_dict(model.state_dict())
    # The matrix built under inference_mode is reused by a training step on the same graph.
    with torch.inference_mode():
        model(x, first)
    model(x, first).sum().backward()
    torch.testing.assert_close(model(x, second), fresh[0](x, second))
    first[:, 0] = first[:, 0].flip(0)  # in-place edit of the same tensor
    torch.testing.assert_close(model(x, first), fresh[1](x, first.clone()))


def dense_laplacian(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    a[edge_index[1], edge_index[0]] = 1.0
    deg = a.sum(1)
    inv_sqrt = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return torch.eye(n, dtype=torch.float64) - inv_sqrt[:, None] * a * inv_sqrt[None, :]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_beta_wavelets_equal_spectral_definition(order):
    n = 9
    edge_index = random_graph(n - 1, 2, seed=5)  # plus one isolated node
    lam, u = torch.linalg.eigh(dense_laplacian(edge_index, n))
    lam = lam.clamp(0.0, 2.0)
    filters = BetaWavelet(order)(torch.eye(n, dtype=torch.float64), edge_index)
    assert filters.shape == (order + 1, n, n)
    for p in range(order + 1):
        q = order - p
        response = 0.5 * (lam / 2) ** p * (1 - lam / 2) ** q / beta_fn(p + 1, q + 1)
        torch.testing.assert_close(filters[p], u @ torch.diag(response) @ u.T, atol=1e-10, rtol=0)


def test_beta_wavelet_coefficients_by_hand():
    # C = 2, p = 0: (1 - l/2)^2 / (2 B(1, 3)) = 1.5 - 1.5 l + 0.375 l^2.
    assert beta_wavelet_coefficients(2)[0] == pytest.approx([1.5, -1.5, 0.375])
    # C = 2, p = 2: (l/2)^2 / (2 B(3, 1)) = 0.375 l^2.
    assert beta_wavelet_coefficients(2)[2] == pytest.approx([0.0, 0.0, 0.375])
    # Each beta*_{p,q} is a density on [0, 2]: the integral of sum_k theta_k l^k is 1.
    for row in beta_wavelet_coefficients(4):
        assert sum(t * 2 ** (k + 1) / (k + 1) for k, t in enumerate(row)) == pytest.approx(1.0)


def test_aggregate_neighbors_by_hand():
    # Path 0 - 1 - 2 and an isolated node 3; the second feature is negative to check max.
    x = torch.tensor([[1.0, -1.0], [2.0, -2.0], [4.0, -4.0], [8.0, -8.0]])
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    mean1 = [[2.0, -2.0], [2.5, -2.5], [2.0, -2.0], [0.0, 0.0]]
    max1 = [[2.0, -2.0], [4.0, -1.0], [2.0, -2.0], [0.0, 0.0]]
    mean2 = [[2.5, -2.5], [2.0, -2.0], [2.5, -2.5], [0.0, 0.0]]
    max2 = [[4.0, -1.0], [2.0, -2.0], [4.0, -1.0], [0.0, 0.0]]
    expected = torch.cat([x] + [torch.tensor(t) for t in (mean1, max1, mean2, max2)], dim=1)
    torch.testing.assert_close(aggregate_neighbors(x, edge_index), expected)
    summed = aggregate_neighbors(x, edge_index, hops=1, aggs=("sum",))
    torch.testing.assert_close(
        summed[:, 2:], torch.tensor(mean1) * torch.tensor([[1], [2], [1], [1.0]])
    )
    assert aggregate_neighbors(x, edge_index, hops=0).shape == (4, 2)


def test_registry():
    assert set(GAD_BASELINES) == {"mlp", "gcn", "sage", "gat", "bwgnn", "rf-graph", "gb-graph"}
    assert all(is_neural(name) for name in NEURAL)
    assert not is_neural("rf-graph") and not is_neural("gb-graph")
    with pytest.raises(ValueError, match="unknown baseline 'xgb'"):
        is_neural("xgb")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: GAT(4, hidden=10, heads=4), ValueError, "divisible by heads"),
        (lambda: GCN(4, layers=0), ValueError, "layers must be an int >= 1"),
        (lambda: MLP(4, dropout=1.0), ValueError, "dropout"),
        (lambda: BWGNN(4, order=0), ValueError, "order"),
        (lambda: GCN(3)(torch.randn(4, 3), torch.tensor([[0], [4]])), ValueError, "node ids"),
        (lambda: GCN(3)(torch.randn(4, 3), torch.zeros(2, 1)), TypeError, "integer"),
        (lambda: MLP(3)(torch.randn(3)), ValueError, "num_nodes, features"),
        (
            lambda: GCN(3)(torch.randn(0, 3), torch.zeros(2, 0, dtype=torch.long)),
            ValueError,
            "empty",
        ),
        (
            lambda: aggregate_neighbors(torch.randn(2, 1), torch.zeros(2, 0).long(), aggs=("min",)),
            ValueError,
            "aggs",
        ),
        (
            lambda: RFGraph().predict_proba(torch.randn(2, 1), torch.zeros(2, 0).long()),
            RuntimeError,
            "before fit",
        ),
        (
            lambda: RFGraph().fit(
                torch.randn(3, 1), torch.zeros(2, 0).long(), torch.tensor([0, 0, 1]), [0, 1]
            ),
            ValueError,
            "single class",
        ),
        (
            lambda: RFGraph().fit(
                torch.randn(3, 1), torch.zeros(2, 0).long(), torch.tensor([0, 2, 1])
            ),
            ValueError,
            "binary",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_isolated_nodes_are_finite():
    x = torch.randn(5, 3)
    empty = torch.zeros(2, 0, dtype=torch.long)
    for name in NEURAL:
        assert torch.isfinite(GAD_BASELINES[name](3)(x, empty)).all(), name
    np.testing.assert_array_equal(aggregate_neighbors(x, empty)[:, 3:].numpy(), 0.0)


# A directed 3-node graph (source -> target): 0 -> 1, 1 -> 0, 0 -> 2, 2 -> 0, 1 -> 2.
# In-degrees (1, 2 ... by target): d_0 = 2 (from 1, 2), d_1 = 1 (from 0), d_2 = 2 (from 0, 1);
# out-degrees differ (2, 2, 1), so a normalisation by the wrong end changes the numbers.
DIRECTED = torch.tensor([[0, 1, 0, 2, 1], [1, 0, 2, 0, 2]])
R = 2**-0.5
# D^{-1/2} A D^{-1/2} with in-degrees, entry [i, j] for the edge j -> i: 1 / sqrt(d_i d_j).
DIRECTED_NORM_ADJ = [[0.0, R, 0.5], [R, 0.0, 0.0], [0.5, R, 0.0]]


def test_beta_wavelets_by_hand_on_a_directed_graph():
    a = torch.tensor(DIRECTED_NORM_ADJ, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    lap = eye - a
    # C = 1: beta*_{0,1} = (1 - l/2) / (2 B(1, 2)) = 1 - l/2 and beta*_{1,0} = l/2, so
    # W_0 = I - L/2 = (I + A_hat) / 2 (low pass) and W_1 = L/2 = (I - A_hat) / 2 (high pass).
    filters = BetaWavelet(1)(eye, DIRECTED)
    torch.testing.assert_close(filters[0], 0.5 * (eye + a), atol=1e-12, rtol=0)
    torch.testing.assert_close(filters[1], 0.5 * (eye - a), atol=1e-12, rtol=0)
    # C = 2: 2 B(1, 3) = 2 B(3, 1) = 2/3 and 2 B(2, 2) = 1/3, so
    # W_0 = 1.5 (I - L/2)^2, W_1 = 3 (L/2)(I - L/2), W_2 = 1.5 (L/2)^2.
    half, rest = lap / 2, eye - lap / 2
    filters = BetaWavelet(2)(eye, DIRECTED)
    torch.testing.assert_close(filters[0], 1.5 * rest @ rest, atol=1e-12, rtol=0)
    torch.testing.assert_close(filters[1], 3.0 * half @ rest, atol=1e-12, rtol=0)
    torch.testing.assert_close(filters[2], 1.5 * half @ half, atol=1e-12, rtol=0)


def test_bwgnn_forward_is_mlp_then_wavelet_bank_then_mlp():
    torch.manual_seed(0)
    model = BWGNN(2, hidden=4, layers=2, order=2).double().eval()
    x = torch.randn(3, 2, dtype=torch.float64)
    a = torch.tensor(DIRECTED_NORM_ADJ, dtype=torch.float64)
    lap = torch.eye(3, dtype=torch.float64) - a
    half, rest = lap / 2, torch.eye(3, dtype=torch.float64) - lap / 2
    h = torch.relu(model.encoder[1](torch.relu(model.encoder[0](x))))
    bands = [1.5 * rest @ rest @ h, 3.0 * half @ rest @ h, 1.5 * half @ half @ h]
    # Node i's feature vector is [W_0 h_i, W_1 h_i, W_2 h_i], low pass first.
    z = torch.cat(bands, dim=1)
    expected = model.head(torch.relu(model.mix(z)))
    torch.testing.assert_close(model(x, DIRECTED), expected)


def test_aggregate_neighbors_by_hand_on_a_directed_graph():
    # 0 -> 1, 2 -> 1, 3 -> 1, 1 -> 0, 0 -> 3: in-neighbours 0: {1}, 1: {0, 2, 3}, 2: {}, 3: {0}.
    x = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    edge_index = torch.tensor([[0, 2, 3, 1, 0], [1, 1, 1, 0, 3]])
    mean1 = [2.0, 13 / 3, 0.0, 1.0]
    max1 = [2.0, 8.0, 0.0, 1.0]
    sum1 = [2.0, 13.0, 0.0, 1.0]
    mean2 = [13 / 3, (2.0 + 0.0 + 1.0) / 3, 0.0, 2.0]  # mean over in-neighbours of mean1
    max2 = [8.0, 2.0, 0.0, 2.0]
    sum2 = [13.0, 3.0, 0.0, 2.0]
    out = aggregate_neighbors(x, edge_index, hops=2, aggs=("mean", "max", "sum"))
    expected = torch.tensor([[1.0, 2.0, 4.0, 8.0], mean1, max1, sum1, mean2, max2, sum2]).T
    torch.testing.assert_close(out, expected)


def test_rf_graph_ignores_labels_outside_the_training_nodes():
    n = 60
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(2))
    edge_index = random_graph(n, 2, seed=2)
    y = (x[:, 0] > 0).long()
    train = torch.arange(0, n, 2)
    unlabelled = y.clone()
    unlabelled[1::2] = -1  # the nodes outside ``train`` carry no label at all
    flipped = y.clone()
    flipped[1::2] = 1 - flipped[1::2]
    probs = (
        RFGraph(n_estimators=10, seed=0).fit(x, edge_index, y, train).predict_proba(x, edge_index)
    )
    for other in (unlabelled, flipped):
        again = RFGraph(n_estimators=10, seed=0).fit(x, edge_index, other, train)
        torch.testing.assert_close(again.predict_proba(x, edge_index), probs)


def test_gat_heads_are_concatenated_to_the_hidden_width():
    torch.manual_seed(0)
    x = torch.randn(8, 5, dtype=torch.float64)
    edge_index = random_graph(8, 2, seed=9)
    model = GAT(5, hidden=8, layers=2, heads=4).double().eval()
    h = x
    for layer in model.layers:
        # 4 heads of width 2 each, concatenated: the same weights load into PyG's layer.
        conv = GATConv(layer.in_channels, 2, heads=4).double()
        conv.load_state_dict(layer.state_dict())
        h = torch.relu(conv(h, edge_index))
        assert h.shape == (8, 8)
    torch.testing.assert_close(model(x, edge_index), model.head(h))


def _noisy_task(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = ((x[:, 0] + torch.randn(n, generator=g)) > 0.8).long()
    return x, random_graph(n, 2, seed=seed), y


def test_gb_graph_is_histogram_boosting_of_a_fixed_number_of_trees_on_rf_graphs_features():
    from sklearn.ensemble import HistGradientBoostingClassifier

    # Over 10000 nodes, where scikit-learn's early_stopping="auto" would hold out a tenth.
    x, edge_index, y = _noisy_task(10_050, seed=4)
    model = GBGraph(n_estimators=6, seed=3, max_depth=2, learning_rate=0.3)
    probs = model.fit(x, edge_index, y).predict_proba(x, edge_index)
    features = aggregate_neighbors(x, edge_index, 2, ("mean", "max")).float().numpy()
    ref = HistGradientBoostingClassifier(
        max_iter=6, max_depth=2, learning_rate=0.3, early_stopping=False, random_state=3
    ).fit(features, y.numpy())
    assert model.trees.n_iter_ == 6 and model.trees.random_state == 3
    torch.testing.assert_close(probs, torch.from_numpy(ref.predict_proba(features)[:, 1]).float())


def test_tree_ensembles_defaults_and_max_depth():
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    x, edge_index, y = _noisy_task(200, seed=5)
    features = aggregate_neighbors(x, edge_index, 2, ("mean", "max")).float().numpy()
    gb = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, early_stopping=False, random_state=0
    ).fit(features, y.numpy())
    torch.testing.assert_close(
        GBGraph().fit(x, edge_index, y).predict_proba(x, edge_index),
        torch.from_numpy(gb.predict_proba(features)[:, 1]).float(),
    )
    rf = RandomForestClassifier(n_estimators=5, max_depth=1, random_state=2).fit(
        features, y.numpy()
    )
    torch.testing.assert_close(
        RFGraph(n_estimators=5, seed=2, max_depth=1)
        .fit(x, edge_index, y)
        .predict_proba(x, edge_index),
        torch.from_numpy(rf.predict_proba(features)[:, 1]).float(),
    )


@pytest.mark.parametrize("trees", TREES)
def test_a_tree_ensembles_errors_name_its_class(trees):
    name = trees.__name__
    x, edge_index = torch.randn(3, 1), torch.zeros(2, 0).long()
    with pytest.raises(RuntimeError, match=f"^{name}.predict_proba called before fit$"):
        trees().predict_proba(x, edge_index)
    with pytest.raises(ValueError, match=f"single class; {name} needs both$"):
        trees().fit(x, edge_index, torch.tensor([0, 0, 1]), [0, 1])


def test_every_baseline_is_exported():
    from energy_transformer.models import gad_baselines

    assert {cls.__name__ for cls in GAD_BASELINES.values()} <= set(gad_baselines.__all__)
