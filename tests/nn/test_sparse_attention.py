"""EdgeKeySets: sparse energy attention equals the dense masked one, handles isolated nodes."""

import time

import pytest
import torch

from energy_transformer import DenseKeySets, EnergyTransformer
from energy_transformer.nn.sparse_attention import KERNELS, EdgeKeySets, _BlockCSR, _index_dtype


def random_graph(n: int, e: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (2, e), generator=g)


def dense_mask(edge_index: torch.Tensor, n: int, self_loops: bool) -> torch.Tensor:
    """mask[C, B] = edge B -> C, with the diagonal set or cleared."""
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    mask.fill_diagonal_(self_loops)
    return mask


def qkb(batch=2, heads=3, n=9, y=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, y, generator=g, dtype=torch.float64)
    k = torch.randn(batch, heads, n, y, generator=g, dtype=torch.float64)
    beta = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[:heads]
    return q, k, beta


# Node 7 has no edge at all, node 8 only sends: without self loops both have empty key sets.
EDGES = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0, 8, 1, 1], [1, 2, 3, 4, 5, 6, 0, 3, 2, 0, 0]])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("self_loops", [True, False])
def test_energy_and_grad_equal_dense(self_loops, kernel):
    q, k, beta = qkb()
    sparse = EdgeKeySets(EDGES, 9, self_loops=self_loops, kernel=kernel)
    dense = DenseKeySets(9, dense_mask(EDGES, 9, self_loops), dtype=torch.float64)
    torch.testing.assert_close(sparse.energy(q, k, beta), dense.energy(q, k, beta))
    for a, b in zip(sparse.neg_grad(q, k, beta), dense.neg_grad(q, k, beta), strict=True):
        torch.testing.assert_close(a, b)
    assert sparse.num_edges == 10 + (9 if self_loops else 0)  # the duplicate 1 -> 0 counts once


@pytest.mark.parametrize("kernel", KERNELS)
def test_node_energy_sums_to_energy_and_isolated_nodes_are_zero(kernel):
    q, k, beta = qkb()
    sparse = EdgeKeySets(EDGES, 9, self_loops=False, kernel=kernel)
    per_node = sparse.node_energy(q, k, beta)
    assert per_node.shape == (2, 9)
    torch.testing.assert_close(per_node.sum(-1), sparse.energy(q, k, beta))
    assert torch.all(per_node[:, 7] == 0) and torch.all(per_node[:, 8] == 0)
    dq, dk = sparse.neg_grad(q, k, beta)
    assert torch.isfinite(dq).all() and torch.isfinite(dk).all()
    assert torch.all(dq[:, :, 7:] == 0) and torch.all(dk[:, :, 7] == 0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("self_loops", [True, False])
def test_closed_form_equals_autograd(self_loops, kernel):
    q, k, beta = qkb(seed=3)
    q.requires_grad_(True)
    k.requires_grad_(True)
    sparse = EdgeKeySets(EDGES, 9, self_loops=self_loops, kernel=kernel)
    gq, gk = torch.autograd.grad(sparse.energy(q, k, beta).sum(), (q, k))
    dq, dk = sparse.neg_grad(q.detach(), k.detach(), beta)
    torch.testing.assert_close(dq, -gq)
    torch.testing.assert_close(dk, -gk)
    assert not torch.isnan(gq).any()


@pytest.mark.parametrize("kernel", KERNELS)
def test_graph_without_edges_has_zero_energy(kernel):
    q, k, beta = qkb()
    sparse = EdgeKeySets(torch.empty(2, 0, dtype=torch.long), 9, self_loops=False, kernel=kernel)
    assert torch.all(sparse.energy(q, k, beta) == 0)
    assert all(torch.all(t == 0) for t in sparse.neg_grad(q, k, beta))


@pytest.mark.parametrize("self_loops", [True, False, None])
@pytest.mark.parametrize("dedupe", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 9), (1, 2, 16), (3, 1, 5)])
def test_csr_kernel_and_its_backward_equal_the_gather_kernel(shape, dedupe, self_loops, one_thread):
    """The CSR kernel's hand-written backward (to q, k and a learned beta) against autograd
    through the gather kernel, on graphs with repeated edges, self loops and isolated nodes;
    and against finite differences (gradcheck), all in float64."""
    batch, heads, n = shape
    g = torch.Generator().manual_seed(n)
    q, k = (torch.randn(batch, heads, n, 4, generator=g, dtype=torch.float64) for _ in "qk")
    beta = torch.rand(heads, generator=g, dtype=torch.float64) + 0.3
    inputs = tuple(t.requires_grad_() for t in (q, k, beta))
    edges = random_graph(n, 3 * n, seed=n)
    csr, gather = (
        EdgeKeySets(edges, n, self_loops=self_loops, dedupe=dedupe, kernel=kernel)
        for kernel in ("csr", "gather")
    )
    out, ref = csr.neg_grad(*inputs), gather.neg_grad(*inputs)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in ref]
    grads = [
        torch.autograd.grad(sum((t * w).sum() for t, w in zip(o, weights, strict=True)), inputs)
        for o in (out, ref)
    ]
    for a, b in zip((*out, *grads[0]), (*ref, *grads[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(csr.neg_grad, inputs)


def test_csr_indices_are_int32_unless_an_offset_would_overflow():
    csr = _BlockCSR(EDGES[0], EDGES[1], 9, blocks=6)
    assert all(t.dtype == torch.int32 for t in (*csr.rows, *csr.cols))
    assert _index_dtype(2**31 - 1, 2**31 - 1) == torch.int32
    assert _index_dtype(10, 2**31) == _index_dtype(2**31, 10) == torch.int64


def test_csr_kernel_under_autocast_computes_in_float32():
    q, k, beta = (t.float() for t in qkb(n=9))
    sparse = EdgeKeySets(EDGES, 9)
    ref = sparse.neg_grad(q, k, beta)
    low = q.bfloat16().requires_grad_(), k.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse.neg_grad(*low, beta)
    assert all(t.dtype == torch.bfloat16 for t in out)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(out[0].float().sum() + out[1].float().sum(), low)
    assert all(t.dtype == torch.bfloat16 and torch.isfinite(t).all() for t in grads)


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
@pytest.mark.parametrize("self_loops", [True, False])
def test_block_descent_matches_dense_mask(gradient, self_loops):
    torch.manual_seed(0)
    n = 12
    edges = random_graph(n, 30, seed=4)
    block = EnergyTransformer(8, 2, 4, memories=16, qk_init_std=0.3).double()
    x = torch.randn(2, n, 8, dtype=torch.float64, requires_grad=True)
    keysets = EdgeKeySets(edges, n, self_loops=self_loops)
    out_s, traj_s = block(
        x, steps=4, alpha=0.1, keysets=keysets, gradient=gradient, return_trajectory=True
    )
    mask = dense_mask(edges, n, self_loops)
    out_d, traj_d = block(x, steps=4, alpha=0.1, mask=mask, return_trajectory=True)
    torch.testing.assert_close(out_s, out_d)
    torch.testing.assert_close(traj_s.energies.total, traj_d.energies.total)
    # Training back-propagates through the unrolled sparse steps.
    (gx,) = torch.autograd.grad(out_s.square().sum(), x)
    (gx_d,) = torch.autograd.grad(out_d.square().sum(), x)
    torch.testing.assert_close(gx, gx_d)


def test_energy_decreases_over_sparse_descent():
    torch.manual_seed(1)
    n = 50
    block = EnergyTransformer(16, 2, 8, qk_init_std=0.2).double()
    x = torch.randn(1, n, 16, dtype=torch.float64)
    keysets = EdgeKeySets(random_graph(n, 200, seed=2), n)
    _, traj = block(x, steps=10, alpha=0.05, keysets=keysets, return_trajectory=True)
    assert torch.all(traj.energies.total.diff(dim=0) <= 1e-9)


def test_large_graph_one_step_on_cpu():
    n, e = 100_000, 1_000_000
    edges = random_graph(n, e, seed=5)
    block = EnergyTransformer(8, 1, 4, memories=16)
    x = torch.randn(1, n, 8)
    start = time.perf_counter()
    keysets = EdgeKeySets(edges, n)
    with torch.no_grad():
        out = block(x, steps=1, keysets=keysets)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert time.perf_counter() - start < 15


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        EdgeKeySets(torch.zeros(3, 4, dtype=torch.long), 5)
    with pytest.raises(TypeError, match="integer"):
        EdgeKeySets(torch.zeros(2, 4), 5)
    with pytest.raises(ValueError, match="num_nodes is 5"):
        EdgeKeySets(torch.tensor([[0, 5], [1, 2]]), 5)
    q, k, beta = qkb(n=9)
    with pytest.raises(ValueError, match="9 tokens but the graph has 10"):
        EdgeKeySets(EDGES, 10).energy(q, k, beta)
    with pytest.raises(ValueError, match="9 tokens but the graph has 10"):
        EdgeKeySets(EDGES, 10).neg_grad(q, k, beta)
    with pytest.raises(ValueError, match="kernel must be one of"):
        EdgeKeySets(EDGES, 9, kernel="coo")
