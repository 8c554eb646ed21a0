"""Graph ET: Laplacian PEs, sign flips, padding invariance, the attention structure, soft keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from energy_transformer.models.graph import (
    PRESETS,
    TRAIN_PRESETS,
    GraphEnergyTransformer,
    LaplacianPE,
    ReleasedAdjacencyKeySets,
    SoftAdjacencyKeySets,
    build_graph_et,
    laplacian_eigenvectors,
    normalized_laplacian,
)
from energy_transformer.nn import EnergyTransformer


def cycle(n: int) -> torch.Tensor:
    s = torch.arange(n)
    t = (s + 1) % n
    return torch.stack([torch.cat([s, t]), torch.cat([t, s])])


def path(n: int) -> torch.Tensor:
    s = torch.arange(n - 1)
    return torch.stack([torch.cat([s, s + 1]), torch.cat([s + 1, s])])


def graph(edge_index: torch.Tensor, n: int, features: int = 3, label: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = Data(x=torch.randn(n, features, generator=g), edge_index=edge_index, num_nodes=n)
    data.y = torch.tensor([label])
    return LaplacianPE(4)(data)


def small_model(**kw) -> GraphEnergyTransformer:
    torch.manual_seed(0)
    base = dict(dim=16, heads=2, head_dim=8, memories=32, pe_dim=4, steps=3, alpha=0.1)
    return GraphEnergyTransformer(3, 2, **{**base, **kw})


# -- Laplacian positional encodings ---------------------------------------------------------


def test_cycle_eigenpairs():
    n, k = 10, 6
    vals, vecs = laplacian_eigenvectors(cycle(n), n, k)
    # The normalised Laplacian of C_n has eigenvalues 1 - cos(2 pi j / n), j = 0..n-1.
    expected = np.sort(1 - np.cos(2 * np.pi * np.arange(n) / n))[1 : k + 1]
    assert np.allclose(vals.numpy(), expected, atol=1e-10)
    assert torch.allclose(vecs.T @ vecs, torch.eye(k, dtype=torch.float64), atol=1e-10)
    lap = torch.from_numpy(normalized_laplacian(cycle(n), n).toarray())
    assert torch.allclose(lap @ vecs, vecs * vals, atol=1e-10)
    # Non-trivial: orthogonal to the trivial eigenvector D^{1/2} 1 (constant on a cycle).
    assert torch.allclose(vecs.sum(0), torch.zeros(k, dtype=torch.float64), atol=1e-10)


def test_small_graphs_zero_padded_and_isolated_nodes():
    vals, vecs = laplacian_eigenvectors(path(3), 3, 15)
    assert vecs.shape == (3, 15) and vals.shape == (15,)
    assert torch.allclose(vals[:2], torch.tensor([1.0, 2.0], dtype=torch.float64))  # P3: 0, 1, 2
    assert (vecs[:, 2:] == 0).all() and (vals[2:] == 0).all()
    single = laplacian_eigenvectors(torch.zeros(2, 0, dtype=torch.long), 1, 5)[1]
    assert single.shape == (1, 5) and (single == 0).all()
    isolated = laplacian_eigenvectors(torch.tensor([[0, 1], [1, 0]]), 3, 2)  # node 2 isolated
    assert torch.isfinite(isolated[1]).all()
    with pytest.raises(ValueError, match="empty graph"):
        laplacian_eigenvectors(torch.zeros(2, 0, dtype=torch.long), 0, 3)


def test_sparse_path_matches_dense(monkeypatch):
    import energy_transformer.models.graph as graph_module

    g = torch.Generator().manual_seed(0)
    edges = torch.randint(0, 60, (2, 200), generator=g)
    dense_vals, _ = laplacian_eigenvectors(edges, 60, 5)
    monkeypatch.setattr(graph_module, "_DENSE_EIGH_MAX", 10)
    sparse_vals, sparse_vecs = laplacian_eigenvectors(edges, 60, 5)
    assert torch.allclose(dense_vals, sparse_vals, atol=1e-8)
    lap = torch.from_numpy(normalized_laplacian(edges, 60).toarray())
    assert torch.allclose(lap @ sparse_vecs, sparse_vecs * sparse_vals, atol=1e-6)


def test_sign_flips_only_in_training():
    model = small_model()
    batch = Batch.from_data_list([graph(cycle(6), 6), graph(path(5), 5, seed=1)])
    seen = []
    model.pe_proj.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    model.eval()
    model(batch)
    assert torch.equal(seen[-1], batch.pe)
    model.train()
    torch.manual_seed(1)
    flips = []
    for _ in range(4):
        model(batch)
        ratio = seen[-1] / torch.where(batch.pe == 0, torch.ones_like(batch.pe), batch.pe)
        ratio = torch.where(batch.pe == 0, torch.ones_like(ratio), ratio)
        assert torch.allclose(ratio.abs(), torch.ones_like(ratio))
        # One sign per graph and eigenvector: constant over a graph's nodes.
        for b in range(2):
            rows = ratio[batch.batch == b]
            nonzero = batch.pe[batch.batch == b] != 0
            assert all(rows[nonzero[:, j], j].unique().numel() <= 1 for j in range(ratio.shape[1]))
        flips.append(ratio)
    assert any(not torch.equal(flips[0], f) for f in flips[1:])


# -- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(attention="dense"),
        dict(adjacency="soft"),
        dict(adjacency="released", blocks=2, steps=2),
        dict(blocks=2, steps=1, exclude_self=True, learn_beta=True),
        dict(blocks=2, steps=1, exclude_self=True, learn_beta=True, attention="dense"),
    ],
)
def test_padding_invariance(kw):
    model = small_model(**kw).eval()
    small, big = graph(cycle(5), 5), graph(path(11), 11, seed=3)
    alone = model(Batch.from_data_list([small]))
    together = model(Batch.from_data_list([small, big]))
    flipped = model(Batch.from_data_list([big, small]))
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    assert torch.allclose(alone[0], flipped[1], atol=1e-5)
    assert torch.allclose(model(Batch.from_data_list([big]))[0], together[1], atol=1e-5)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_edge_list_equals_dense_masks(exclude_self):
    edges = small_model(exclude_self=exclude_self, blocks=2, steps=2).eval()
    dense = small_model(exclude_self=exclude_self, blocks=2, steps=2, attention="dense").eval()
    batch = Batch.from_data_list([graph(path(4), 4), graph(cycle(9), 9, seed=2)])
    assert torch.allclose(edges(batch), dense(batch), atol=1e-5)
    # Training: same sign flips (same seed), same gradients.
    edges.train(), dense.train()
    torch.manual_seed(0)
    edges(batch).sum().backward()
    torch.manual_seed(0)
    dense(batch).sum().backward()
    for (name, a), b in zip(edges.named_parameters(), dense.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def test_edge_tokens_structure():
    model = small_model()
    a, b = graph(path(3), 3), graph(cycle(4), 4)
    x, edge_index = model.edge_tokens(Batch.from_data_list([a, b]))
    assert x.shape == (1, 2 + 7, 16)
    pairs = set(map(tuple, edge_index.t().tolist()))
    # Tokens: CLS of graph 0 and 1, then path nodes 2..4, then cycle nodes 5..8.
    for cls, nodes in ((0, range(2, 5)), (1, range(5, 9))):
        assert all((cls, v) in pairs and (v, cls) in pairs for v in nodes)
    assert (2, 3) in pairs and (3, 2) in pairs and (2, 4) not in pairs
    assert (0, 5) not in pairs and (4, 5) not in pairs  # nothing crosses graphs


def test_attention_structure_cls_sees_all_nodes_see_neighbours():
    model = small_model()
    a, b = graph(path(4), 4), graph(cycle(6), 6)
    _, allowed, padding = model.tokens(Batch.from_data_list([a, b]))
    assert allowed.shape == (2, 7, 7) and padding.shape == (2, 7)
    assert padding.tolist()[0] == [False] * 5 + [True] * 2
    assert not padding[1].any()
    for i, g in enumerate((a, b)):
        n = g.num_nodes
        assert allowed[i, 0, : n + 1].all() and allowed[i, : n + 1, 0].all()  # CLS <-> nodes
        adj = torch.zeros(n, n, dtype=torch.bool)
        adj[g.edge_index[0], g.edge_index[1]] = True
        assert torch.equal(allowed[i, 1 : n + 1, 1 : n + 1], adj | torch.eye(n, dtype=torch.bool))
    # Path 0-1-2-3: node 0 attends CLS, itself and node 1 only.
    assert allowed[0, 1, :5].tolist() == [True, True, True, False, False]


def test_non_neighbour_keys_get_zero_attention():
    model = small_model()
    batch = Batch.from_data_list([graph(path(4), 4)])
    x, allowed, padding = model.tokens(batch)
    block = model.blocks[0]
    from energy_transformer.nn import DenseKeySets

    keys = DenseKeySets(5, allowed, padding, False)
    q, k = block.attention.project(block.norm(x))
    omega = torch.softmax(keys._scores(q, k, block.attention.beta), dim=-1)
    assert (omega[0, :, ~allowed[0]] == 0).all()
    assert (omega[0, :, allowed[0]] > 0).all()


def test_soft_adjacency_keysets_gradient_matches_autograd():
    torch.manual_seed(0)
    block = EnergyTransformer(8, 2, 4, 16, learn_beta=True).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    adjacency = torch.rand(2, 5, 5) > 0.5
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    weight = torch.tensor([0.7, -1.3], dtype=torch.float64)
    keys = SoftAdjacencyKeySets(adjacency, weight, padding)
    closed = block.energy_grad(x, padding_mask=padding, keysets=keys)
    auto = block.energy_grad(x, padding_mask=padding, keysets=keys, gradient="autograd")
    assert torch.allclose(closed, auto, atol=1e-10)
    # The bias is w_h on edges, 0 off edges, -inf on padding keys.
    bias = keys.bias
    assert bias.shape == (2, 2, 5, 5)
    assert torch.isneginf(bias[1, :, :3, 3:]).all()
    real = bias[0]
    assert torch.equal(real[0], 0.7 * adjacency[0].double())
    assert torch.equal(real[1], -1.3 * adjacency[0].double())


def test_soft_adjacency_energy_is_its_formula_with_one_beta_per_head():
    # E = -sum_h 1/beta_h sum_C log sum_B exp(beta_h A_hBC + w_h adj_CB), written out.
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    adjacency = torch.rand(1, 4, 4, generator=g) > 0.5
    beta = torch.tensor([0.4, 1.7], dtype=torch.float64)
    weight = torch.tensor([0.7, -1.3], dtype=torch.float64)
    expected = -sum(
        torch.logsumexp(beta[h] * k[0, h] @ q[0, h, c] + weight[h] * adjacency[0, c], 0) / beta[h]
        for h in range(2)
        for c in range(4)
    )
    got = SoftAdjacencyKeySets(adjacency, weight).energy(q, k, beta)
    torch.testing.assert_close(got, expected.reshape(1), rtol=1e-12, atol=0)


def released_keys(exclude_self: bool = False) -> tuple:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    weight[torch.rand(2, 3, 5, 5, generator=g) < 0.4] = 0.0  # pairs out of the key sets
    weight[0, :, 4] = 0.0  # query 4 of sample 0 has no key at all
    mixing = torch.randn(3, 3, generator=g, dtype=torch.float64)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    q, k = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    beta = torch.tensor([0.5, 0.8, 1.3], dtype=torch.float64)
    keys = ReleasedAdjacencyKeySets(weight, mixing, padding, exclude_self)
    return keys, weight, mixing, padding, q, k, beta


@pytest.mark.parametrize("exclude_self", [False, True])
def test_released_adjacency_energy_is_the_formula(exclude_self):
    keys, weight, mixing, padding, q, k, beta = released_keys(exclude_self)
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for out in range(3):
            for c in range(5):
                if padding[b, c]:
                    continue
                logits = [
                    weight[b, out, c, key]
                    * sum(mixing[h, out] * beta[h] * q[b, h, c] @ k[b, h, key] for h in range(3))
                    for key in range(5)
                    if weight[b, out, c, key] != 0
                    and not padding[b, key]
                    and not (exclude_self and key == c)
                ]
                if logits:
                    expected[b] -= torch.logsumexp(torch.stack(logits), 0) / beta[out]
    torch.testing.assert_close(keys.energy(q, k, beta), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_released_adjacency_closed_form_and_its_backward_match_autograd(exclude_self):
    _, weight, mixing, padding, q, k, beta = released_keys(exclude_self)
    g = torch.Generator().manual_seed(3)
    inputs = [t.clone().requires_grad_() for t in (q, k, beta, weight, mixing)]
    upstream = [torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(2)]

    def pulls(closed_form: bool) -> list[torch.Tensor]:
        q_, k_, beta_, weight_, mixing_ = inputs
        keysets = ReleasedAdjacencyKeySets(weight_, mixing_, padding, exclude_self)
        if closed_form:
            dq, dk = keysets.neg_grad(q_, k_, beta_)
        else:
            gq, gk = torch.autograd.grad(
                keysets.energy(q_, k_, beta_).sum(), (q_, k_), create_graph=True
            )
            dq, dk = -gq, -gk
        loss = (dq * upstream[0]).sum() + (dk * upstream[1]).sum()
        return [dq, dk, *torch.autograd.grad(loss, inputs)]

    for closed, auto in zip(pulls(True), pulls(False), strict=True):
        torch.testing.assert_close(closed, auto, rtol=1e-10, atol=1e-12)
    dq = pulls(True)[0]
    assert (dq[1, :, 3:] == 0).all() and (dq[0, :, 4] == 0).all()  # padding, empty key set


def test_released_adjacency_masks_non_edges_at_first_and_learns():
    model = small_model(adjacency="released", blocks=2, steps=1)
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(4), 4, label=1)])
    x, allowed, _ = model.tokens(batch)
    weight = model.pair_weights(x, allowed)
    assert weight.shape == (2, 2, 6, 6)
    # Zero offset at init (the released code's): non-edges and each node's own key weigh
    # exactly 0, so are masked; edges and CLS (its own corner included) are not.
    edges = allowed.clone()
    edges[:, 1:, 1:] &= ~torch.eye(5, dtype=torch.bool)
    assert (weight[~edges[:, None].expand_as(weight)] == 0).all()
    assert (weight[edges[:, None].expand_as(weight)] != 0).float().mean() > 0.9
    assert (weight[:, :, 0, 0] != 0).all()
    torch.nn.functional.cross_entropy(model(batch), batch.y).backward()
    for p in (model.head_mixing, model.adjacency_proj.weight, model.gram_conv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.adjacency_proj.bias.grad.abs().sum() > 0  # how non-edges come to be attended


def test_released_pair_weights_are_the_adjacency_term_times_the_gram_convolution():
    # W_gCB = (u_g a_CB + c_g) conv3x3(x x^T)_gCB, a the edges (no self loops) plus a CLS row
    # and column of ones, here on a path 0 - 1 - 2 plus CLS, computed by hand in float64.
    model = small_model(adjacency="released", heads=2)
    _, allowed, _ = model.tokens(Batch.from_data_list([graph(path(3), 3)]))
    model.double()
    with torch.no_grad():  # an offset as training would give, so that c_g counts too
        model.adjacency_proj.bias.copy_(torch.tensor([0.3, -0.7]))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 16, generator=g, dtype=torch.float64)
    a = torch.tensor(
        [[1, 1, 1, 1], [1, 0, 1, 0], [1, 1, 0, 1], [1, 0, 1, 0]], dtype=torch.float64
    )  # token 0 = CLS, tokens 1-3 = path nodes 0-2
    u = model.adjacency_proj.weight[:, 0].detach()
    c = model.adjacency_proj.bias.detach()
    kernel = model.gram_conv.weight.detach()  # (heads, 1, 3, 3)

    def by_hand(x: torch.Tensor) -> torch.Tensor:
        conv = torch.nn.functional.conv2d((x[0] @ x[0].T)[None, None], kernel, padding=1)[0]
        return (u[:, None, None] * a + c[:, None, None]) * conv

    with torch.no_grad():
        weight = model.pair_weights(x, allowed)
        assert weight.shape == (1, 2, 4, 4)
        torch.testing.assert_close(weight[0], by_hand(x), rtol=1e-12, atol=1e-12)
        # Quadratic in the tokens (through the Gram matrix), and moved by one token alone.
        torch.testing.assert_close(model.pair_weights(2 * x, allowed), 4 * weight)
        moved = x.clone()
        moved[0, 2] += 1.0
        changed = model.pair_weights(moved, allowed)
        torch.testing.assert_close(changed[0], by_hand(moved), rtol=1e-12, atol=1e-12)
        assert (changed - weight).abs().max() > 1e-3


def test_soft_edge_weight_is_learned():
    model = small_model(adjacency="soft")
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(4), 4, label=1)])
    torch.nn.functional.cross_entropy(model(batch), batch.y).backward()
    assert model.edge_weight.grad is not None and model.edge_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("adjacency", ["hard", "released"])
def test_energy_descends_in_eval(adjacency):
    model = small_model(alpha=0.02, steps=6, attention="dense", adjacency=adjacency).eval()
    batch = Batch.from_data_list([graph(cycle(6), 6), graph(path(7), 7, seed=1)])
    logits, trajectories = model(batch, return_trajectory=True)
    assert logits.shape == (2, 2) and len(trajectories) == 1
    total = trajectories[0].energies.total
    assert total.shape == (7, 2)
    assert (total[1:] <= total[:-1] + 1e-5).all()


def test_learns_structure_features_cannot_show(one_thread):
    # Cycles vs paths with identical node features: the label is in the structure only.
    graphs = []
    for i, n in enumerate([5, 6, 7, 8, 5, 6, 7, 8]):
        edges = cycle(n) if i % 2 == 0 else path(n)
        data = Data(x=torch.ones(n, 3), edge_index=edges, y=torch.tensor([i % 2]), num_nodes=n)
        graphs.append(LaplacianPE(4)(data))
    batch = Batch.from_data_list(graphs)
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), batch.y).backward()
        opt.step()
    model.eval()
    assert (model(batch).argmax(-1) == batch.y).all()


def test_rescaled_features_give_the_same_logits_after_refitting_the_scaler():
    batch = Batch.from_data_list([graph(cycle(6), 6), graph(path(7), 7, seed=1)])
    model = small_model().eval()
    model.scaler.fit(batch.x)
    logits = model(batch)
    shifted = batch.clone()
    shifted.x = batch.x * torch.tensor([1000.0, 0.01, 3.0]) + torch.tensor([-50.0, 7.0, 0.0])
    model.scaler.fit(shifted.x)
    torch.testing.assert_close(model(shifted), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", ["edges", "dense"])
def test_edges_outside_the_batch_or_across_graphs_are_errors(attention):
    model = small_model(attention=attention).eval()
    batch = Batch.from_data_list([graph(path(4), 4), graph(cycle(5), 5)])
    negative = batch.clone()
    negative.edge_index = negative.edge_index.clone()
    negative.edge_index[0, 0] = -1  # once read as a CLS token by the edge list
    with pytest.raises(ValueError, match=r"node ids in \[-1, 8\] but num_nodes is 9"):
        model(negative)
    across = batch.clone()
    across.edge_index = torch.cat([batch.edge_index, torch.tensor([[0], [6]])], dim=1)
    with pytest.raises(ValueError, match="edge 0 -> 6 joins graphs 0 and 1 of the batch"):
        model(across)
    one = graph(path(4), 4)  # a lone Data is a batch of one graph
    torch.testing.assert_close(model(one), model(Batch.from_data_list([one])))
    with pytest.raises(ValueError, match="k must be a positive int, got 2.5"):
        LaplacianPE(2.5)


def test_errors_and_presets():
    model = small_model()
    batch = Batch.from_data_list([Data(x=torch.ones(3, 3), edge_index=path(3), num_nodes=3)])
    with pytest.raises(ValueError, match="apply LaplacianPE"):
        model(batch)
    with pytest.raises(ValueError, match=r"node ids in \[0, 7\] but num_nodes is 5"):
        LaplacianPE(4)(Data(x=torch.ones(5, 3), edge_index=torch.tensor([[0, 7], [7, 0]])))
    wide = LaplacianPE(model.pe_dim)(Data(x=torch.ones(3, 4), edge_index=path(3), num_nodes=3))
    with pytest.raises(ValueError, match=r"shape \(3, 4\) but the model expects \(nodes, 3\)"):
        model(Batch.from_data_list([wide]))
    with pytest.raises(ValueError, match="adjacency must be one of"):
        small_model(adjacency="fuzzy")
    with pytest.raises(ValueError, match="attention must be one of"):
        small_model(attention="sparse")
    with pytest.raises(ValueError, match="unknown preset"):
        build_graph_et(3, 2, "huge")
    released = build_graph_et(7, 2, "released")
    assert len(released.blocks) == 4 and released.steps == 1 and released.noise_std == 0.02
    block = released.blocks[0]
    assert block.attention.wq.shape == (12, 64, 128) and block.hopfield.xi.shape == (512, 128)
    assert released.adjacency == "released" and released.head_mixing.shape == (4, 12, 12)
    assert set(PRESETS) >= {"released", "paper", "cpu"}
    wide = small_model(qk_init_std=0.05, xi_init_std=0.1, dim=64, memories=256)
    assert 0.04 < float(wide.blocks[0].attention.wq.detach().std()) < 0.06
    assert 0.08 < float(wide.blocks[0].hopfield.xi.detach().std()) < 0.12
    assert math.isclose(released.alpha, 0.1)


def test_noise_only_in_training():
    model = small_model(noise_std=0.5).eval()
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(4), 4, seed=1)])
    assert torch.equal(model(batch), model(batch))

    def run(noise_std: float, training: bool) -> torch.Tensor:
        model.noise_std = noise_std
        model.train(training)
        torch.manual_seed(7)  # the same PE sign flips in training
        return model(batch)

    # Eval: sigma is ignored, the noiseless output exactly.
    assert torch.equal(run(0.5, training=False), run(0.0, training=False))
    # Training: same sign flips, so without noise the output repeats; with noise it moves.
    quiet = run(0.0, training=True)
    assert torch.equal(run(0.0, training=True), quiet)
    assert (run(0.5, training=True) - quiet).abs().max() > 1e-3


def test_training_noise_is_sqrt_alpha_sigma_per_step():
    # One block of one step: the tokens it returns are the noiseless step plus
    # sqrt(alpha) * sigma * eps, eps ~ N(0, I), so the difference is linear in sigma.
    model = small_model(steps=1, alpha=0.09).train()
    batch = Batch.from_data_list([graph(cycle(6), 6), graph(path(5), 5, seed=1)])
    seen = []
    model.blocks[0].register_forward_hook(lambda m, inp, out: seen.append(out.detach()))
    for sigma in (0.0, 0.5, 1.0):
        model.noise_std = sigma
        torch.manual_seed(3)  # the same sign flips and the same eps
        model(batch)
    quiet, half, full = seen
    assert quiet.shape == (1, 2 + 11, 16)  # the edge layout: 2 CLS + 11 nodes, no padding
    torch.testing.assert_close(full - quiet, 2 * (half - quiet), rtol=0, atol=1e-5)
    eps = (full - quiet) / (0.09**0.5 * 1.0)
    assert abs(float(eps.mean())) < 0.25 and 0.8 < float(eps.std()) < 1.2  # 208 draws


def test_degree_encoding_adds_the_capped_degree_embedding():
    # A star given one way only, with a duplicate edge and a self loop: the hub has 4
    # neighbours in the symmetrised simple graph the mask uses, capped to 3; leaves have 1.
    edges = torch.tensor([[0, 0, 0, 0, 0, 2], [1, 2, 3, 4, 1, 2]])
    batch = Batch.from_data_list([graph(edges, 5), graph(cycle(4), 4, seed=1)])
    plain, model = small_model().eval(), small_model(max_degree=3).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    added = model._node_embeddings(batch) - plain._node_embeddings(batch)
    expected = model.degree.embed(torch.tensor([3, 1, 1, 1, 1, 2, 2, 2, 2]))
    torch.testing.assert_close(added, expected)
    assert small_model().degree is None  # the paper's form has none
    with pytest.raises(ValueError, match="max_degree must be >= 0"):
        small_model(max_degree=-1)


def test_mlp_head_reads_the_same_cls_token():
    # Same block weights: the two heads see the same final CLS token, only the readout differs.
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(4), 4, seed=1)])
    plain, model = small_model().eval(), small_model(head="mlp").eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    assert isinstance(plain.head, torch.nn.Linear) and len(model.head) == 3
    seen = {}
    for name, m in (("linear", plain.head), ("mlp", model.head)):
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.update({name: inp[0]}))
    logits = model(batch)
    plain(batch)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(seen["mlp"], seen["linear"])
    with pytest.raises(ValueError, match="head must be one of"):
        small_model(head="attention")


def test_autograd_path_trains_a_soft_adjacency_when_nothing_else_learns():
    # Frozen block, tokens that need no grad: only the key sets' edge weights learn, and the
    # autograd path must still keep each step's graph for them.
    torch.manual_seed(0)
    block = EnergyTransformer(8, 2, 4, 16).double().requires_grad_(False)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    adjacency = torch.rand(2, 5, 5) > 0.5
    grads = {}
    for gradient in ("closed_form", "autograd"):
        weight = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
        keysets = SoftAdjacencyKeySets(adjacency, weight)
        block(x, 3, 0.1, keysets=keysets, gradient=gradient).pow(2).sum().backward()
        grads[gradient] = weight.grad
    assert grads["autograd"] is not None and grads["autograd"].abs().min() > 0
    torch.testing.assert_close(grads["autograd"], grads["closed_form"], rtol=1e-10, atol=0)


def test_sum_readout_reads_the_cls_token_and_the_nodes_sum():
    # Same block weights: the CLS half is what the paper's readout sees; the other half is the
    # sum over each graph's nodes (not its padding) of the final tokens through the last norm.
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(3), 3, seed=1)])
    batch.x, batch.pe = batch.x.double(), batch.pe.double()
    plain = small_model().double().eval()
    summed = small_model(readout="cls+sum").double().eval()
    block = {k: v for k, v in plain.state_dict().items() if not k.startswith("head.")}
    summed.load_state_dict(block, strict=False)
    seen = []
    for m in (plain, summed):
        m.head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
        m(batch)
    cls_read, read = seen  # (graphs, D) and (graphs, 2 D)
    assert read.shape == (2, 32)
    torch.testing.assert_close(read[:, :16], cls_read, rtol=1e-10, atol=1e-12)
    with summed.dense_eval():
        final = summed(batch, return_trajectory=True)[1][-1].tokens[-1]  # (2, 1 + 5, D)
    g = summed.blocks[-1].norm(final)
    expected = torch.stack([g[0, 1:6].sum(0), g[1, 1:4].sum(0)])  # graph 1: 3 nodes, 2 padding
    torch.testing.assert_close(read[:, 16:], expected, rtol=1e-10, atol=1e-12)


def test_sum_readout_same_in_both_layouts_and_alone():
    graphs = [graph(cycle(5), 5), graph(path(3), 3, seed=1), graph(cycle(7), 7, seed=2)]
    batch = Batch.from_data_list(graphs)
    model = small_model(readout="cls+sum").double().eval()
    for data in [batch, *graphs]:
        data.x, data.pe = data.x.double(), data.pe.double()
    edges = model(batch)
    with model.dense_eval():
        dense = model(batch)
        alone = torch.cat([model(g) for g in graphs])
    torch.testing.assert_close(edges, dense, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(edges, alone, rtol=1e-10, atol=1e-12)  # padding adds nothing
    assert isinstance(model.head, torch.nn.Linear) and model.head.in_features == 32
    assert small_model(readout="cls+sum", head="mlp").head[0].in_features == 32
    with pytest.raises(ValueError, match="readout must be one of"):
        small_model(readout="sum")


def test_dropout_zeroes_and_rescales_the_head_input_in_training_only():
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(4), 4, seed=1)])
    plain, model = small_model(), small_model(dropout=0.5)
    assert model.state_dict().keys() == plain.state_dict().keys()  # older runs still load
    model.load_state_dict(plain.state_dict())
    seen = {}
    for name, m in (("plain", plain), ("dropped", model)):
        m.head.register_forward_hook(lambda mod, inp, out, name=name: seen.update({name: inp[0]}))
    torch.manual_seed(1)  # the Laplacian signs are drawn first, so both see the same ones
    plain.train()(batch)
    torch.manual_seed(1)
    model.train()(batch)
    kept = seen["dropped"] != 0
    assert 0 < int(kept.sum()) < kept.numel()  # 32 entries, p = 0.5
    torch.testing.assert_close(seen["dropped"][kept], 2 * seen["plain"][kept])
    torch.testing.assert_close(model.eval()(batch), plain.eval()(batch))  # off in evaluation
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\), got 1.0"):
        small_model(dropout=1.0)


# -- mutation-audit additions: independent expectations ------------------------------------


def test_path_eigenvectors_match_the_normalised_laplacian_written_out():
    # P5 as a 0/1 matrix, L = I - D^-1/2 A D^-1/2 by hand; its spectrum is 1 - cos(pi j / 4).
    n, k = 5, 3
    adj = np.zeros((n, n))
    for i in range(n - 1):
        adj[i, i + 1] = adj[i + 1, i] = 1.0
    deg = adj.sum(1)
    lap = np.eye(n) - adj / np.sqrt(np.outer(deg, deg))
    ref_vals, ref_vecs = np.linalg.eigh(lap)
    assert np.allclose(ref_vals, 1 - np.cos(np.pi * np.arange(n) / (n - 1)), atol=1e-12)
    # Given one direction only, with a duplicate edge and a self loop: the same simple graph.
    edges = torch.tensor([[0, 1, 2, 3, 0, 2], [1, 2, 3, 4, 1, 2]])
    data = LaplacianPE(k)(Data(x=torch.ones(n, 3), edge_index=edges, num_nodes=n))
    assert data.pe.dtype == torch.float32 and data.pe.shape == (n, k)
    np.testing.assert_allclose(data.pe_eigenvalues[0].numpy(), ref_vals[1 : k + 1], atol=1e-6)
    for j in range(k):  # the spectrum is simple: each vector is fixed up to its sign
        ref = ref_vecs[:, j + 1]
        got = data.pe[:, j].double().numpy()
        assert min(np.abs(got - ref).max(), np.abs(got + ref).max()) < 1e-6
    # The skipped trivial vector is D^{1/2} 1 (not constant on a path): orthogonal to all kept.
    trivial = torch.from_numpy(np.sqrt(deg)).float()
    torch.testing.assert_close(trivial @ data.pe, torch.zeros(k), atol=1e-6, rtol=0)


def test_components_keep_extra_null_vectors_and_isolated_nodes_have_eigenvalue_one():
    # Two P3 components: spectrum 0, 0, 1, 1, 2, 2; only the first 0 is skipped.
    two = torch.tensor([[0, 1, 3, 4], [1, 2, 4, 5]])
    vals, vecs = laplacian_eigenvectors(two, 6, 4)
    torch.testing.assert_close(vals, torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64))
    # The kept null vector lies in span(D^{1/2} 1 on each component), and is not the first.
    null = vecs[:, 0]
    sqrt_deg = torch.tensor([1.0, 2.0, 1.0, 1.0, 2.0, 1.0], dtype=torch.float64).sqrt()
    a, b = sqrt_deg * (torch.arange(6) < 3), sqrt_deg * (torch.arange(6) >= 3)
    span = torch.stack([a / a.norm(), b / b.norm()], 1)
    torch.testing.assert_close(span @ (span.T @ null), null)
    assert torch.isclose(null.norm(), torch.tensor(1.0, dtype=torch.float64))
    # P3 plus an isolated node: L_33 = 1, so the spectrum is 0, 1, 1, 2.
    vals, vecs = laplacian_eigenvectors(torch.tensor([[0, 1], [1, 2]]), 4, 3)
    torch.testing.assert_close(vals, torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    lap = torch.from_numpy(normalized_laplacian(torch.tensor([[0, 1], [1, 2]]), 4).toarray())
    assert lap[3, 3] == 1.0
    torch.testing.assert_close(lap @ vecs, vecs * vals)


def test_sign_flips_are_independent_per_graph_and_per_eigenvector():
    model = small_model().train()
    graphs = [graph(cycle(6), 6, seed=s) for s in range(16)]
    batch = Batch.from_data_list(graphs)
    seen = []
    model.pe_proj.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    torch.manual_seed(0)
    model(batch)
    # The sign of each (graph, eigenvector), read off the largest entry of its column.
    signs = torch.zeros(16, 4)
    for b in range(16):
        rows = batch.batch == b
        pe, flipped = batch.pe[rows], seen[-1][rows]
        top = pe.abs().argmax(0)
        signs[b] = torch.sign(flipped[top, range(4)] / pe[top, range(4)])
        torch.testing.assert_close(flipped, pe * signs[b])
    # 64 fair coins: P(all graphs share one sign pattern) = 2^-60, P(one sign per graph for
    # all its eigenvectors) = 2^-48, P(no flips at all) = 2^-64.
    assert (signs != signs[:1]).any(), "every graph got the same signs"
    assert (signs != signs[:, :1]).any(), "one sign for all of a graph's eigenvectors"
    assert (signs == -1).any() and (signs == 1).any()


@pytest.mark.parametrize("attention", ["edges", "dense"])
def test_one_direction_edges_give_the_same_model_as_both(attention):
    # The graph is undirected: a path given one way must attend exactly as given both ways.
    model = small_model(attention=attention).eval()
    one_way = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    both = LaplacianPE(4)(Data(x=x, edge_index=path(5), num_nodes=5))
    single = both.clone()
    single.edge_index = one_way
    other = graph(cycle(4), 4, seed=1)
    torch.testing.assert_close(
        model(Batch.from_data_list([single, other])), model(Batch.from_data_list([both, other]))
    )
    _, allowed, _ = model.tokens(Batch.from_data_list([single]))
    assert torch.equal(allowed[0], allowed[0].T)  # symmetric with one-way edges too


def test_dense_tokens_cls_row_and_column_by_hand():
    model = small_model()
    batch = Batch.from_data_list([graph(path(3), 3), graph(cycle(4), 4, seed=1)])
    x, allowed, padding = model.tokens(batch)
    t, f = True, False
    # Graph 0 (token 0 = CLS, 1-3 = path 0-1-2, 4 = padding).
    expected = [[t, t, t, t, t], [t, t, t, f, f], [t, t, t, t, f], [t, f, t, t, f]]
    assert allowed[0, :4].tolist() == expected  # row 4 is padding: removed as a key anyway
    assert padding.tolist() == [[f, f, f, f, t], [f] * 5]
    torch.testing.assert_close(x[:, 0], model.cls[0].expand(2, -1))  # CLS first, both graphs
    assert (x[0, 4] == 0).all()  # the padding token


@pytest.mark.parametrize(
    "kw", [dict(), dict(attention="dense"), dict(adjacency="soft"), dict(adjacency="released")]
)
def test_logits_are_the_head_of_the_normed_final_cls_token(kw):
    model = small_model(blocks=2, steps=2, **kw).eval()
    batch = Batch.from_data_list([graph(path(4), 4), graph(cycle(6), 6, seed=1)])
    calls = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(
            lambda m, inp, out, i=i: calls.append((i, inp[0].detach(), out.detach()))
        )
    logits = model(batch)
    assert [c[0] for c in calls] == [0, 1]  # each block once, in order
    assert torch.equal(calls[1][1], calls[0][2])  # block 1 starts where block 0 ended
    final = calls[1][2]
    edge_layout = not kw  # the default: one unpadded set, the graphs' CLS tokens first
    assert final.shape == ((1, 2 + 10, 16) if edge_layout else (2, 1 + 6, 16))
    cls = final[0, :2] if edge_layout else final[:, 0]
    expected = model.head(model.blocks[-1].norm(cls))
    torch.testing.assert_close(logits, expected)
    # The readout sees neither the raw token nor any node token.
    assert (model.head(cls) - logits).abs().max() > 1e-4
    node = final[0, 2:4] if edge_layout else final[:, 1]
    assert (model.head(model.blocks[-1].norm(node)) - logits).abs().max() > 1e-4


def test_block_options_reach_every_block():
    model = small_model(
        blocks=2, exclude_self=True, learn_beta=True, hopfield="softmax", memories=24
    )
    for block in model.blocks:
        assert block.exclude_self
        assert isinstance(block.attention.beta, torch.nn.Parameter)
        assert block.hopfield.kind == "softmax" and block.hopfield.xi.shape == (24, 16)
    assert model.blocks[0].attention.wq.data_ptr() != model.blocks[1].attention.wq.data_ptr()


def test_soft_adjacency_with_a_large_edge_bias_is_the_hard_mask():
    # exp(beta A + w) with w = 60 on allowed pairs: every other key weighs ~e^-60, so the soft
    # model (initial w_h = soft_init) reproduces the hard-masked model with the same weights.
    hard = small_model(attention="dense").eval()
    soft = small_model(adjacency="soft", soft_init=60.0).eval()
    soft.load_state_dict(hard.state_dict(), strict=False)
    assert torch.equal(soft.edge_weight, torch.full((1, 2), 60.0))
    batch = Batch.from_data_list([graph(path(5), 5), graph(cycle(4), 4, seed=1)])
    torch.testing.assert_close(soft(batch), hard(batch), rtol=1e-4, atol=1e-5)
    plain = small_model(adjacency="soft", soft_init=0.0).eval()  # w = 0: no graph at all
    plain.load_state_dict(hard.state_dict(), strict=False)
    assert (plain(batch) - hard(batch)).abs().max() > 1e-4


@pytest.mark.parametrize("adjacency", ["soft", "released"])
def test_each_block_learns_its_own_adjacency_parameters(adjacency):
    model = small_model(adjacency=adjacency, blocks=2, steps=1)
    batch = Batch.from_data_list([graph(cycle(5), 5), graph(path(4), 4, label=1)])
    torch.nn.functional.cross_entropy(model(batch), batch.y).backward()
    param = model.edge_weight if adjacency == "soft" else model.head_mixing
    assert (param.grad.flatten(1).abs().sum(1) > 0).all()


def test_presets_are_the_specs():
    released, paper = PRESETS["released"], PRESETS["paper"]
    # Spec §2.3, released hyper-parameters: D 128, H 12, Y 64, K 512, alpha 0.1, 4 blocks x 1
    # step, noise 0.02; k = 15 eigenvectors; learned soft adjacency, learned beta per head.
    assert released == dict(
        dim=128, heads=12, head_dim=64, memories=512, alpha=0.1, blocks=4, steps=1,
        noise_std=0.02, adjacency="released", learn_beta=True, pe_dim=15,
    )  # fmt: skip
    # The paper's form: one block, hard mask, fixed beta, no noise.
    assert paper["blocks"] == 1 and paper["adjacency"] == "hard" and paper["pe_dim"] == 15
    assert paper["learn_beta"] is False and paper["noise_std"] == 0.0
    assert PRESETS["cpu"]["adjacency"] == "hard" and PRESETS["cpu"]["blocks"] == 1
    train = TRAIN_PRESETS["released"]
    assert (train["batch_size"], train["epochs"], train["lr"]) == (64, 300, 1e-3)
    assert train["label_smoothing"] == 0.05
    model = build_graph_et(3, 2, "cpu", dim=32, heads=2, head_dim=8)
    assert model.embed.out_features == 32 and model.blocks[0].attention.wq.shape == (2, 8, 32)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(exclude_self=True),
        dict(adjacency="soft"),
        dict(adjacency="released", blocks=2, steps=2),
    ],
)
def test_cls_attention_is_the_last_blocks_cls_row_after_the_descent(kw):
    model = small_model(qk_init_std=0.3, **kw).train()  # cls_attention runs in eval mode
    small, big = graph(cycle(5), 5), graph(path(11), 11, seed=3)
    weights, logits = model.cls_attention(Batch.from_data_list([small, big]))
    assert model.training and model.attention == "edges"  # left as they were
    assert weights.shape == (2, 11) and (weights[0, 5:] == 0).all()  # padding gets nothing
    model.eval()
    torch.testing.assert_close(logits, model(Batch.from_data_list([small, big])))
    # by hand: the last block's attention matrix of the final tokens, CLS row, mean over heads
    dense = small_model(qk_init_std=0.3, attention="dense", **kw).eval()
    batch = Batch.from_data_list([small])
    _, trajectories = dense(batch, return_trajectory=True)
    x, allowed, padding = dense.tokens(batch)
    block, final = dense.blocks[-1], trajectories[-1].tokens[-1]
    kws = dense._dense_keysets(x, allowed, padding)[-1]
    omega = block.attention_weights(final, padding_mask=padding, **kws)  # (1, heads, 6, 6)
    torch.testing.assert_close(weights[0, :5], omega[0, :, 0, 1:].mean(0))
    alone, _ = model.cls_attention(small)  # one Data, batched alone: the same weights
    torch.testing.assert_close(alone[0], weights[0, :5])
    # CLS attends to every node and (unless excluded) itself: its row sums to 1
    cls_self = omega[0, :, 0, 0].mean().detach()
    assert float(weights[0].sum() + cls_self) == pytest.approx(1.0, abs=1e-5)
    if kw.get("exclude_self"):
        assert float(cls_self) == 0.0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(dim=-1), "dim must be"),
        (dict(pe_dim=0), "pe_dim must be"),
        (dict(blocks=0), "blocks must be"),
        (dict(steps=1.5), "steps must be an int >= 0, got 1.5"),
        (dict(alpha=0.0), "alpha must be"),
        (dict(noise_std=-0.1), "noise_std must be"),
    ],
)
def test_graph_model_refuses_sizes_and_descent_settings_at_construction(kw, message):
    with pytest.raises(ValueError, match=message):
        small_model(**kw)
