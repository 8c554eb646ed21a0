"""Sparse (edge-list) energy attention: the CSR kernel against the gather kernel and autograd.

Energy attention over a graph's edges (``EdgeKeySets``) has two kernels for its closed-form
gradient: ``csr`` (SDDMM for the scores, SpMM for the sums over each node's edges, with a
hand-written backward) and ``gather`` (gathered ``(edges, heads, head_dim)`` queries and keys,
products and ``index_add``, differentiated by autograd). The reference path is autograd of the
energy (``gradient="autograd"``, computed with gathers). All three run the same block on the
same graph, in one run, interleaved:

- inference: ``steps`` descent steps under ``torch.no_grad``;
- training step: the same steps with grad, then ``backward`` of a scalar loss to the parameters.

Graphs (each case is skipped, and says so, when its data is not found):

- ``graph-batch``: 32 PROTEINS graphs as ``GraphEnergyTransformer`` batches them (one token per
  node plus one CLS token per graph, CLS-node edges both ways), block of the ``cpu`` preset;
- ``tolokers``: the whole Tolokers graph, block of the anomaly task's ``small`` preset;
- ``random``: a random graph (``--nodes``, ``--edges``), same block as ``tolokers``.

``--device cuda`` runs the same on a GPU (peak memory from ``torch.cuda``).

Run ``python benchmarks/bench_edges.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from energy_transformer import EnergyTransformer
from energy_transformer.nn.sparse_attention import EdgeKeySets
from energy_transformer.text import counted

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import peak_memory, peak_memory_how, time_calls  # noqa: E402

PATHS = ("csr", "gather", "autograd")
CASES = ("graph-batch", "tolokers", "random")


@dataclass
class Case:
    """One graph and the block run over it: tokens ``x: (1, N, dim)``, ``edge_index: (2, E)``."""

    name: str
    x: torch.Tensor
    edge_index: torch.Tensor
    heads: int
    head_dim: int
    steps: int
    alpha: float


def graph_batch(data: str | None, graphs: int) -> Case:
    """The first ``graphs`` PROTEINS graphs, tokenised as the graph-classification model does."""
    from torch_geometric.data import Batch

    from energy_transformer.models.graph import PRESETS, build_graph_et
    from energy_transformer.tasks.graph import prepare_dataset

    preset = PRESETS["cpu"]
    dataset = prepare_dataset("PROTEINS", data, "et", None, preset["pe_dim"])
    batch = Batch.from_data_list([dataset[i] for i in range(graphs)])
    model = build_graph_et(batch.x.shape[1], 2, "cpu").eval()
    with torch.no_grad():
        x, edge_index = model.edge_tokens(batch)
    return Case(
        f"graph-batch ({graphs} PROTEINS graphs)",
        x,
        edge_index,
        preset["heads"],
        preset["head_dim"],
        preset["steps"],
        preset["alpha"],
    )


def node_case(name: str, x_dim: int, edge_index: torch.Tensor, num_nodes: int) -> Case:
    """A whole graph with the anomaly task's ``small`` block (dim 64)."""
    from energy_transformer.models.node import PRESETS

    small = PRESETS["small"]
    x = torch.randn(1, num_nodes, x_dim, generator=torch.Generator().manual_seed(0))
    return Case(name, x, edge_index, small["heads"], small["head_dim"], small["steps"], 0.1)


def tolokers(data: str | None) -> Case:
    from energy_transformer.data.gad import load_gad

    graph = load_gad("tolokers", root=data)
    return node_case("tolokers", 64, graph.edge_index, graph.num_nodes)


def random_graph(nodes: int, edges: int) -> Case:
    edge_index = torch.randint(0, nodes, (2, edges), generator=torch.Generator().manual_seed(1))
    return node_case(f"random ({nodes} nodes, {edges} edges)", 64, edge_index, nodes)


def calls(
    case: Case, device: torch.device
) -> tuple[int, dict[str, dict[str, Callable[[], object]]]]:
    """The key sets' edge count (self loops included) and ``{mode: {path: fn}}`` for the
    inference and training-step calls of every path."""
    torch.manual_seed(0)
    block = EnergyTransformer(case.x.shape[-1], case.heads, case.head_dim, qk_init_std=0.02)
    block = block.to(device)
    x, edge_index = case.x.to(device), case.edge_index.to(device)
    keysets = {
        kernel: EdgeKeySets(edge_index, x.shape[1], kernel=kernel) for kernel in ("csr", "gather")
    }
    # The autograd path differentiates the energy, which always uses gathers.
    keysets["autograd"] = keysets["gather"]
    x_train = x.clone().requires_grad_()

    def run(path: str, tokens: torch.Tensor) -> torch.Tensor:
        gradient = "autograd" if path == "autograd" else "closed_form"
        return block(
            tokens, steps=case.steps, alpha=case.alpha, keysets=keysets[path], gradient=gradient
        )

    def infer(path: str) -> None:
        with torch.no_grad():
            run(path, x)

    def train(path: str) -> None:
        block.zero_grad(set_to_none=True)
        run(path, x_train).square().mean().backward()

    return keysets["csr"].num_edges, {
        "inference": {p: (lambda p=p: infer(p)) for p in PATHS},
        "training": {p: (lambda p=p: train(p)) for p in PATHS},
    }


@dataclass
class Row:
    case: str
    mode: str
    nodes: int
    edges: int
    ms: dict[str, float]
    mib: dict[str, float]


def bench_case(case: Case, repeats: int, warmup: int, device: torch.device) -> list[Row]:
    edges, modes = calls(case, device)
    rows = []
    for mode, fns in modes.items():
        times = time_calls(fns, repeats, warmup, device)
        mib = {p: peak_memory(fn, device) / 2**20 for p, fn in fns.items()}
        ms = {p: 1e3 * min(t) for p, t in times.items()}
        rows.append(Row(case.name, mode, case.x.shape[1], edges, ms, mib))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    head = (
        "| graph | tokens | edges (self loops incl.) | mode | csr ms | gather ms | autograd ms"
        " | gather / csr | autograd / csr | csr MiB | gather MiB | autograd MiB |"
    )
    lines = [head, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.nodes} | {r.edges} | {r.mode} | {r.ms['csr']:.1f}"
            f" | {r.ms['gather']:.1f} | {r.ms['autograd']:.1f}"
            f" | {r.ms['gather'] / r.ms['csr']:.2f}x | {r.ms['autograd'] / r.ms['csr']:.2f}x"
            f" | {r.mib['csr']:.1f} | {r.mib['gather']:.1f} | {r.mib['autograd']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--data", default=None, help="data root (default: $ET_DATA or cache)")
    parser.add_argument("--graphs", type=int, default=32, help="graphs in the PROTEINS batch")
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    if min(args.graphs, args.nodes, args.edges, args.repeats) < 1 or args.warmup < 0:
        parser.error("need --graphs, --nodes, --edges, --repeats >= 1 and --warmup >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    builders: dict[str, Callable[[], Case]] = {
        "graph-batch": lambda: graph_batch(args.data, args.graphs),
        "tolokers": lambda: tolokers(args.data),
        "random": lambda: random_graph(args.nodes, args.edges),
    }
    rows, skipped = [], []
    for name in args.cases:
        try:
            case = builders[name]()
        except FileNotFoundError as err:
            skipped.append(f"- {name}: skipped, data not found ({err})")
            continue
        rows.extend(bench_case(case, args.repeats, args.warmup, device))
    header = [
        f"- torch {torch.__version__}, {platform.machine()}, device {device}"
        f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''},"
        f" {counted(args.threads, 'torch thread')},"
        f" float32, best of {counted(args.repeats, 'call')} per path (interleaved) after"
        f" {args.warmup} warm-up, wall clock",
        "- paths: closed form with the csr kernel, closed form with the gather kernel, autograd"
        " of the energy (reference); training = forward + backward to the parameters",
        # On CUDA, peak_memory reads torch.cuda's allocator, not the profiler.
        f"- peak MiB: {peak_memory_how(device)}, inputs and weights excluded",
        *skipped,
    ]
    report = "\n".join(header) + "\n\n" + format_table(rows)
    print(report)
    return report


if __name__ == "__main__":
    main()
