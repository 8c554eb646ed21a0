"""NodeEnergyTransformer: shapes, per-node energies, training signal, errors."""

import pytest
import torch
import torch.nn.functional as F

from energy_transformer.models.node import PRESETS, NodeEnergyTransformer, node_preset
from energy_transformer.nn.sparse_attention import EdgeKeySets


def toy_graph(n=20, e=60, f=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=g)
    edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    return torch.randn(n, f, generator=g), edge_index


@pytest.mark.parametrize("concat_input", [True, False])
def test_forward_shapes_and_trajectory(concat_input):
    x, ei = toy_graph()
    model = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4, steps=3, concat_input=concat_input)
    logits, traj = model(x, ei, return_trajectory=True)
    assert logits.shape == (20, 2)
    assert traj.tokens.shape == (4, 1, 20, 8)
    assert traj.energies.total.shape == (4, 1)
    torch.testing.assert_close(logits, model(x, ei))


def test_node_energies_sum_to_block_energy():
    torch.manual_seed(0)
    x, ei = toy_graph()
    model = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4, steps=2, qk_init_std=0.3).double()
    tokens = torch.randn(20, 8, dtype=torch.float64)
    parts = model.node_energies(tokens, ei)
    keysets = EdgeKeySets(ei, 20, self_loops=True)
    terms = model.block.energy_terms(tokens.unsqueeze(0), keysets=keysets)
    torch.testing.assert_close(parts["attention"].sum(), terms.attention[0])
    torch.testing.assert_close(parts["hopfield"].sum(), terms.hopfield[0])
    torch.testing.assert_close(parts["total"], parts["attention"] + parts["hopfield"])
    scores = model.energy_scores(x.double(), ei)
    assert scores.shape == (20,) and torch.isfinite(scores).all()


def test_each_node_energy_is_its_own_terms_written_out():
    # Node C's attention share: -sum_h (1/beta_h) log sum_{B -> C} exp(beta_h K_hB . Q_hC) over
    # its incoming edges and itself (self loops); its Hopfield share: -1/2 sum_m relu(xi_m g_C)^2.
    torch.manual_seed(0)
    x, ei = toy_graph(n=8, e=12)
    model = NodeEnergyTransformer(5, dim=6, heads=2, head_dim=3, qk_init_std=0.5).double()
    model.block.attention.beta = torch.tensor([0.7, 1.3], dtype=torch.float64)
    tokens = torch.randn(8, 6, dtype=torch.float64)
    parts = model.node_energies(tokens, ei)
    block = model.block
    g = block.norm(tokens)
    for c in range(8):
        keys = sorted({int(b) for b, t in ei.T if t == c} | {c})
        attention = 0.0
        for h in range(2):
            beta = block.attention.beta[h]
            q = block.attention.wq[h] @ g[c]
            scores = torch.stack([beta * (block.attention.wk[h] @ g[b]) @ q for b in keys])
            attention = attention - torch.logsumexp(scores, 0) / beta
        hopfield = -0.5 * (block.hopfield.xi @ g[c]).clamp_min(0).pow(2).sum()
        torch.testing.assert_close(parts["attention"][c], attention)
        torch.testing.assert_close(parts["hopfield"][c], hopfield)
    # The label-free score is the same shares at the descended tokens (eval: no noise).
    model.eval()
    _, final, _ = model.descend(x.double(), ei)
    scores = model.energy_scores(x.double(), ei)
    torch.testing.assert_close(scores, model.node_energies(final, ei)["total"])


def test_isolated_nodes_without_self_loops_stay_finite():
    x, _ = toy_graph()
    ei = torch.tensor([[0, 1], [1, 0]])  # 18 isolated nodes
    model = NodeEnergyTransformer(5, dim=8, heads=1, head_dim=4, self_loops=False)
    assert torch.isfinite(model(x, ei)).all()
    assert torch.isfinite(model.energy_scores(x, ei, term="attention")).all()
    assert torch.all(model.energy_scores(x, ei, term="attention")[2:] == 0)


def test_learns_a_graph_signal():
    # Label = whether a node's neighbours have positive mean feature: needs message passing.
    torch.manual_seed(0)
    n = 60
    x = torch.randn(n, 1)
    ring = torch.arange(n)
    ei = torch.stack([torch.cat([ring, (ring + 1) % n]), torch.cat([(ring + 1) % n, ring])])
    y = ((x.roll(1, 0) + x.roll(-1, 0)) > 0).long().squeeze(1)
    model = NodeEnergyTransformer(1, dim=16, heads=2, head_dim=8, steps=2, alpha=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    first = None
    for _ in range(50):
        loss = F.cross_entropy(model(x, ei), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_keysets_are_cached_per_edge_tensor():
    x, ei = toy_graph()
    model = NodeEnergyTransformer(5, dim=8, heads=1, head_dim=4)
    assert model.keysets(ei, 20) is model.keysets(ei, 20)
    assert model.keysets(ei.clone(), 20) is not model.keysets(ei, 20)
    # The same tensor edited in place is another graph: the cache must not serve the old one.
    before = model.keysets(ei, 20)
    ei[1, 0] = (ei[1, 0] + 1) % 20
    after = model.keysets(ei, 20)
    assert after is not before and not torch.equal(after.dst, before.dst)


def test_noise_only_in_training():
    torch.manual_seed(0)
    x, ei = toy_graph()
    sizes = dict(dim=8, heads=2, head_dim=4, steps=3, dropout=0.0)  # no other randomness
    noisy = NodeEnergyTransformer(5, noise_std=0.5, **sizes)
    quiet = NodeEnergyTransformer(5, **sizes)
    quiet.load_state_dict(noisy.state_dict())
    torch.manual_seed(1)
    trained = noisy(x, ei)
    torch.manual_seed(1)
    assert not torch.allclose(trained, quiet(x, ei))  # same seed: only the noise differs
    noisy.eval(), quiet.eval()
    torch.testing.assert_close(noisy(x, ei), quiet(x, ei))


def test_bad_inputs():
    model = NodeEnergyTransformer(5, dim=8, heads=1, head_dim=4)
    x, ei = toy_graph()
    with pytest.raises(ValueError, match="3 features but the model expects 5"):
        model(x[:, :3], ei)
    with pytest.raises(ValueError, match="floating-point"):
        model(x.long(), ei)
    with pytest.raises(ValueError, match="term must be one of"):
        model.energy_scores(x, ei, term="kinetic")
    with pytest.raises(ValueError, match="in_dim"):
        NodeEnergyTransformer(0)
    with pytest.raises(ValueError, match="degree_buckets must be an int >= 0, got -2"):
        NodeEnergyTransformer(3, degree_buckets=-2)


def test_degree_buckets_enter_the_input_tokens():
    # Identical features: hubs (8 neighbours, bucket 3) and leaves (1, bucket 1) differ in
    # their input tokens by exactly the two buckets' embeddings.
    hubs = torch.arange(4).repeat_interleave(8)
    leaves = torch.arange(4, 36)
    edge_index = torch.stack([torch.cat([hubs, leaves]), torch.cat([leaves, hubs])])
    x = torch.ones(36, 3)
    model = NodeEnergyTransformer(3, dim=8, heads=2, head_dim=4, steps=2, degree_buckets=4)
    x0, _, _ = model.descend(x, edge_index)
    weight = model.degree.embed.weight
    torch.testing.assert_close(x0[:4] - x0[4:8], (weight[3] - weight[1]).expand(4, -1))
    assert NodeEnergyTransformer(3, dim=8, heads=2, head_dim=4).degree is None


def test_presets_resolve_with_overrides():
    assert node_preset("small") == PRESETS["small"]
    released = node_preset("released", steps=3, alpha=None)
    assert released["steps"] == 3 and released["alpha"] == PRESETS["released"]["alpha"]
    assert node_preset("released") == PRESETS["released"]  # the preset itself is not changed
    model = NodeEnergyTransformer(5, dim=64, **released)
    assert model.block.attention.wq.shape == (2, 64, 64) and model.steps == 3
    with pytest.raises(ValueError, match="unknown node preset 'huge'"):
        node_preset("huge")


# -- mutation-audit additions: independent expectations ------------------------------------


def test_classifier_reads_the_normed_final_tokens_and_the_input_embedding():
    x, ei = toy_graph()
    model = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4, steps=2, dropout=0.3).eval()
    seen = []
    model.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    logits = model(x, ei)
    x0 = model.encoder(x)  # eval: no dropout on the input embedding
    final = model.block(x0.unsqueeze(0), steps=2, alpha=0.1, keysets=EdgeKeySets(ei, 20))[0]
    expected = torch.cat([model.block.norm(final), x0], dim=-1)  # [LN(x^T), x^0], that order
    torch.testing.assert_close(seen[0], expected)
    # The classifier is Linear-ReLU-Linear (the released code's MLP), written out.
    first, last = model.head[0], model.head[2]
    hidden = (expected @ first.weight.T + first.bias).clamp_min(0)
    torch.testing.assert_close(logits, hidden @ last.weight.T + last.bias)
    # Without concat_input the classifier reads LN(x^T) alone.
    plain = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4, steps=2, concat_input=False)
    plain.eval().block.load_state_dict(model.block.state_dict())
    plain.encoder.load_state_dict(model.encoder.state_dict())
    plain.head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    plain(x, ei)
    torch.testing.assert_close(seen[-1], model.block.norm(final))


def test_dropout_on_the_input_embedding_and_classifier_input_in_training_only():
    # Replays the forward with the same seed: dropout of (encoder + degree embedding), descent
    # (no noise: no draws), dropout of [LN(x^T), x^0], then the head.
    x, ei = toy_graph()
    model = NodeEnergyTransformer(
        5, dim=8, heads=2, head_dim=4, steps=2, dropout=0.5, degree_buckets=3
    ).train()
    torch.manual_seed(5)
    logits = model(x, ei)
    torch.manual_seed(5)
    buckets = model.degree.buckets(ei, 20)
    x0 = F.dropout(model.encoder(x) + model.degree.embed(buckets), p=0.5, training=True)
    final = model.block(x0.unsqueeze(0), steps=2, alpha=0.1, keysets=EdgeKeySets(ei, 20))[0]
    h = F.dropout(torch.cat([model.block.norm(final), x0], -1), p=0.5, training=True)
    torch.testing.assert_close(logits, model.head(h))
    assert (x0 == 0).float().mean() > 0.3  # the draw did drop entries
    # Eval: no dropout anywhere, the same as a model without any.
    model.eval()
    undropped = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4, steps=2, degree_buckets=3)
    undropped.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x, ei), undropped.eval()(x, ei))


def test_each_step_is_alpha_times_the_energy_gradient():
    x, ei = toy_graph()
    model = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4, steps=3, alpha=0.37).eval()
    _, traj = model(x, ei, return_trajectory=True)
    assert traj.tokens.shape[0] == 4
    keysets = EdgeKeySets(ei, 20)
    for t in range(3):
        grad = model.block.energy_grad(traj.tokens[t], keysets=keysets)
        torch.testing.assert_close(traj.tokens[t + 1], traj.tokens[t] - 0.37 * grad)


def test_block_options_reach_the_block():
    model = NodeEnergyTransformer(
        5, dim=8, heads=2, head_dim=4, memories=12, hopfield="softmax", learn_beta=True,
        qk_init_std=0.3,
    )  # fmt: skip
    assert isinstance(model.block.attention.beta, torch.nn.Parameter)
    assert model.block.hopfield.kind == "softmax" and model.block.hopfield.xi.shape == (12, 8)
    assert 0.2 < float(model.block.attention.wq.detach().std()) < 0.4
    default = NodeEnergyTransformer(5, dim=8, heads=2, head_dim=4)
    assert default.block.hopfield.xi.shape == (32, 8)  # 4 * dim
    assert not isinstance(default.block.attention.beta, torch.nn.Parameter)


def test_keysets_cache_is_per_node_count_too():
    _, ei = toy_graph()
    model = NodeEnergyTransformer(5, dim=8, heads=1, head_dim=4)
    assert model.keysets(ei, 20).num_nodes == 20
    assert model.keysets(ei, 25).num_nodes == 25  # same tensor, more (isolated) nodes


def test_presets_pin_their_documented_values():
    # "released": the authors' anomaly code: 2 heads of size hid_dim = 64, one step of size 1.
    assert PRESETS["released"] == dict(heads=2, head_dim=64, steps=1, alpha=1.0)
    assert PRESETS["small"] == dict(heads=2, head_dim=8, steps=2, alpha=0.1)


def test_gradient_option_reaches_the_descent_and_agrees_with_the_closed_form():
    x, ei = toy_graph()
    sizes = dict(dim=8, heads=2, head_dim=4, steps=2)
    auto = NodeEnergyTransformer(5, gradient="autograd", **sizes).eval()
    closed = NodeEnergyTransformer(5, **sizes).eval()
    closed.load_state_dict(auto.state_dict())
    seen = []
    auto.block.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["gradient"]), with_kwargs=True
    )
    torch.testing.assert_close(auto(x, ei), closed(x, ei))
    assert seen == ["autograd"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": -1}, "steps must be an int >= 0, got -1"),
        ({"steps": 2.0}, "steps must be an int >= 0, got 2.0"),
        ({"alpha": 0.0}, "alpha must be finite and > 0, got 0.0"),
        ({"noise_std": -0.1}, "noise_std must be finite and >= 0, got -0.1"),
    ],
)
def test_descent_settings_are_checked_when_the_model_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NodeEnergyTransformer(4, **kwargs)
    NodeEnergyTransformer(4, steps=0)  # no descent at all is allowed: the input embedding only
