"""The same computations on every device this machine has: the CPU always, CUDA when present.

CI has no GPU, so there only the CPU cases run (which checks the tests themselves); on a lent
GPU machine ``pytest tests/test_devices.py`` checks the paths a GPU takes and a CPU cannot show
(cuSPARSE's products in the CSR kernel, CUDA's autocast, the trainer moving a graph and its
checkpoint between devices) against the CPU's float64 results.
"""

from __future__ import annotations

import pytest
import torch
from core_factory import make_block, make_inputs
from test_gad_protocol import small_graph
from test_graph import cycle, graph, path
from test_sparse_attention import EDGES, dense_mask, random_graph
from torch_geometric.data import Batch

from energy_transformer import DenseKeySets
from energy_transformer.models.graph import GraphEnergyTransformer, LaplacianPE
from energy_transformer.models.image import ImageEnergyTransformer
from energy_transformer.models.node import NodeEnergyTransformer
from energy_transformer.nn.sparse_attention import EdgeKeySets
from energy_transformer.protocols.gad import (
    HarnessConfig,
    anomaly_scores,
    prepare,
    rebuild_model,
    run_protocols,
)
from energy_transformer.train import load_run

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = {"rtol": 1e-10, "atol": 1e-12}

pytestmark = pytest.mark.parametrize("device", DEVICES)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().cpu() - b.detach()).norm() / b.detach().norm().clamp_min(1e-300))


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_block_gradients_and_descent_equal_the_cpus(device, hopfield):
    """Closed form == autograd on the device, and both == the CPU's, with masks and padding."""
    block = make_block(6, 2, 3, 8, hopfield, exclude_self=True, learn_beta=True, seed=2)
    x, mask, padding = make_inputs(3, 7, 6, seed=2, mask=True, padding=True)
    ref = block.energy_grad(x, mask, padding)
    ref_tokens = block(x, steps=3, alpha=0.05, mask=mask, padding_mask=padding)
    on = block.to(device)
    args = [t.to(device) for t in (x, mask, padding)]
    for gradient in ("closed_form", "autograd"):
        assert rel_err(on.energy_grad(*args, gradient=gradient), ref) < 1e-10, gradient
        tokens = on(
            args[0], steps=3, alpha=0.05, mask=args[1], padding_mask=args[2], gradient=gradient
        )
        assert rel_err(tokens, ref_tokens) < 1e-10, gradient


@pytest.mark.parametrize("self_loops", [True, False])
def test_edge_kernels_and_the_csr_backward_equal_the_cpus(device, self_loops):
    """The CSR and gather kernels == the dense mask on the device (isolated nodes included),
    and the CSR kernel's hand-written backward == autograd through the CPU's gather kernel."""
    g = torch.Generator().manual_seed(7)
    q, k = (torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64) for _ in "qk")
    beta = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    w = [torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64) for _ in "qk"]

    def run(kernel: str, on: str) -> list[torch.Tensor]:
        inputs = [t.to(on).requires_grad_() for t in (q, k, beta)]
        keysets = EdgeKeySets(EDGES.to(on), 9, self_loops=self_loops, kernel=kernel)
        out = keysets.neg_grad(*inputs)
        loss = sum((o * wi.to(on)).sum() for o, wi in zip(out, w, strict=True))
        return [keysets.energy(*inputs).detach(), *out, *torch.autograd.grad(loss, inputs)]

    ref = run("gather", "cpu")
    dense = DenseKeySets(9, dense_mask(EDGES, 9, self_loops), dtype=torch.float64)
    torch.testing.assert_close(ref[0], dense.energy(q, k, beta), **F64)
    for kernel in ("csr", "gather"):
        for a, b in zip(run(kernel, device), ref, strict=True):
            torch.testing.assert_close(a.cpu(), b, **F64)


def test_sparse_descent_trains_and_descends_as_on_the_cpu(device):
    """Parameter gradients through 4 sparse steps, and the energy going down, on the device."""
    edges = random_graph(40, 160, seed=3)
    block = make_block(8, 2, 4, 16, seed=3, std=0.3)
    x = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def run(on: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        b = block.to(on)
        b.zero_grad()
        keysets = EdgeKeySets(edges.to(on), 40)
        out, traj = b(x.to(on), steps=4, alpha=0.05, keysets=keysets, return_trajectory=True)
        out.square().sum().backward()
        return [p.grad.cpu().clone() for p in b.parameters()], traj.energies.total.cpu()

    ref_grads, ref_energy = run("cpu")
    grads, energy = run(device)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **F64)
    torch.testing.assert_close(energy, ref_energy, **F64)
    assert torch.all(energy.diff(dim=0) <= 1e-9)


@pytest.mark.parametrize("attention", ["edges", "dense"])
def test_graph_classifier_equals_the_cpus(device, attention):
    """A batch of graphs of different sizes (one isolated node among them) through the graph
    model: logits and parameter gradients on the device == the CPU's, float64."""
    isolated = graph(torch.empty(2, 0, dtype=torch.long), 1, seed=3)
    batch = Batch.from_data_list(
        [graph(cycle(5), 5), graph(path(7), 7, label=1, seed=1), isolated, graph(cycle(3), 3)]
    )
    batch.x, batch.pe = batch.x.double(), batch.pe.double()
    torch.manual_seed(0)
    model = GraphEnergyTransformer(
        3, 2, dim=16, heads=2, head_dim=8, memories=32, pe_dim=4, attention=attention
    ).double()
    model.eval()

    def run(on: str) -> list[torch.Tensor]:
        m = model.to(on)
        m.zero_grad()
        logits = m(batch.to(on))
        logits.logsumexp(-1).sum().backward()
        return [logits.detach().cpu(), *(p.grad.cpu().clone() for p in m.parameters())]

    ref = run("cpu")
    for a, b in zip(run(device), ref, strict=True):
        torch.testing.assert_close(a, b, **F64)
    assert LaplacianPE(4)(isolated).pe.shape == (1, 4)


def test_masked_image_model_loss_and_gradients_equal_the_cpus(device):
    """The image task's model: its masked-patch loss and every parameter gradient through the
    12-step descent on the device == the CPU's, float64 (the same mask on both)."""
    torch.manual_seed(4)
    model = ImageEnergyTransformer(
        image_size=8, patch_size=2, channels=1, dim=16, heads=2, head_dim=4, memories=32,
        steps=12, selected=9, masked=6, mean=(0.5,), std=(0.25,),
    ).double()  # fmt: skip
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    selected, mask = model.sample_mask(3, generator=torch.Generator().manual_seed(4))

    def run(on: str) -> list[torch.Tensor]:
        m = model.to(on)
        m.zero_grad()
        loss = m.loss(images.to(on), selected.to(on), mask.to(on))
        loss.backward()
        return [loss.detach().cpu(), *(p.grad.cpu().clone() for p in m.parameters())]

    ref = run("cpu")
    for a, b in zip(run(device), ref, strict=True):
        torch.testing.assert_close(a, b, **F64)


def test_autocast_bfloat16_keeps_the_descent_close_to_float32(device):
    """Under the device's bf16 autocast (softmax and energies in float32) the sparse node model
    stays within bf16's precision of its float32 result, and its gradients are finite."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200, 6, generator=g, device="cpu").to(device)
    edges = random_graph(200, 1200, seed=5).to(device)
    torch.manual_seed(5)
    model = NodeEnergyTransformer(6, dim=32, heads=2, head_dim=16, steps=3).to(device)
    ref = model(x, edges)
    with torch.autocast(device, dtype=torch.bfloat16):
        low = model(x, edges)
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    low.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_anomaly_harness_trains_on_the_device_and_its_checkpoint_loads_on_the_cpu(device, tmp_path):
    """The trainer moves the graph to the device, selects on validation, and writes weights a
    CPU-only machine reloads into the same model (scores equal to float32 precision)."""
    data = small_graph()
    cfg = HarnessConfig(
        epochs=3, hidden=8, lr=0.02, device=device, et={"heads": 1, "head_dim": 4, "steps": 2}
    )
    (result,) = run_protocols(data, "gadbench", ["et"], seeds=[0], cfg=cfg, run_root=tmp_path)
    assert 0.7 < result.metrics["gadbench"]["auroc"] <= 1.0  # shifted features are easy
    state, config = load_run(tmp_path / "et" / "seed0")
    model = rebuild_model(config["model"])
    model.load_state_dict(state)
    assert isinstance(model, NodeEnergyTransformer)
    graph_in = prepare(data)
    on_cpu = anomaly_scores(model.eval(), graph_in)
    on_device = anomaly_scores(model.to(device), graph_in.to(device))
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
