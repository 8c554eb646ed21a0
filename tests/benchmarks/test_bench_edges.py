"""The sparse-attention benchmark's harness end to end on a small random graph."""

import numpy as np
import pytest
import torch
from bench_scripts import load_script, ratio_cell_matches
from graph_fixtures import write_toy

from energy_transformer import EnergyTransformer


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_edges")


def test_small_run_prints_every_path_and_skips_missing_data(bench, tmp_path, capsys, one_thread):
    report = bench.main(
        ["--cases", "random", "tolokers", "--nodes", "300", "--edges", "1500"]
        + ["--repeats", "1", "--warmup", "0", "--threads", "1", "--data", str(tmp_path)]
    )
    assert report in capsys.readouterr().out
    assert "- tolokers: skipped, data not found" in report
    rows = [line for line in report.splitlines() if line.startswith("| random")]
    assert [row.split("|")[4].strip() for row in rows] == ["inference", "training"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert cells[0] == "300" and int(cells[1]) > 1500  # the self loops are counted
        csr, gather, autograd = (float(c) for c in cells[3:6])
        assert min(csr, gather, autograd) > 0
        assert ratio_cell_matches(cells[6], gather, csr)
        assert ratio_cell_matches(cells[7], autograd, csr)
        assert all(float(c) > 0 for c in cells[8:11])  # the memory probe saw the allocations


def test_bad_sizes_end_in_one_argparse_line(capsys):
    with pytest.raises(SystemExit):
        load_script("bench_edges").parse_args(["--nodes", "0"])
    assert "need --graphs, --nodes, --edges, --repeats >= 1" in capsys.readouterr().err


# -- the numbers of the table, from fixed inputs ------------------------------------------------


def test_format_table_cells(bench):
    row = bench.Row(
        case="random (3 nodes, 4 edges)",
        mode="training",
        nodes=3,
        edges=7,
        ms={"csr": 2.0, "gather": 3.0, "autograd": 5.0},
        mib={"csr": 1.0, "gather": 1.5, "autograd": 4.5},
    )
    assert bench.format_table([row]).splitlines()[2] == (
        "| random (3 nodes, 4 edges) | 3 | 7 | training | 2.0 | 3.0 | 5.0 | 1.50x | 2.50x"
        " | 1.0 | 1.5 | 4.5 |"
    )


def tiny_case(bench):
    # Edges 0->1, 1->2 twice and the self loop 2->2: the key sets hold 0->1, 1->2 and the 4
    # nodes' self loops, 6 pairs.
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 2, 2, 2]])
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    return bench.Case("tiny", x, edge_index, heads=2, head_dim=4, steps=2, alpha=0.1)


def test_each_path_runs_its_kernel_and_gradient(bench, monkeypatch):
    seen = []

    class Recording(EnergyTransformer):
        def forward(self, x, *args, keysets=None, gradient="closed_form", **kwargs):
            seen.append((keysets.kernel, gradient, torch.is_grad_enabled()))
            return super().forward(x, *args, keysets=keysets, gradient=gradient, **kwargs)

    monkeypatch.setattr(bench, "EnergyTransformer", Recording)
    edges, modes = bench.calls(tiny_case(bench), torch.device("cpu"))
    assert edges == 6
    expected = {"csr": ("csr", "closed_form"), "gather": ("gather", "closed_form")}
    expected["autograd"] = ("gather", "autograd")  # autograd of the energy uses gathers
    assert list(modes) == ["inference", "training"]
    for mode, fns in modes.items():
        assert list(fns) == ["csr", "gather", "autograd"]
        for path, fn in fns.items():
            fn()
            assert seen.pop() == (*expected[path], mode == "training")


def test_bench_case_keeps_the_best_time_and_peak_in_mib(bench, monkeypatch):
    times = {"csr": [0.003, 0.002], "gather": [0.004, 0.005], "autograd": [0.009, 0.008]}
    peaks = {"csr": 2**20, "gather": 3 * 2**19, "autograd": 2**22}
    monkeypatch.setattr(bench, "time_calls", lambda fns, repeats, warmup, device: times)
    path_of = {}
    monkeypatch.setattr(bench, "peak_memory", lambda fn, device: peaks[path_of[id(fn)]])

    def calls(case, device):
        fns = {p: (lambda: None) for p in bench.PATHS}
        path_of.update({id(fn): p for p, fn in fns.items()})
        return 6, {"inference": fns, "training": fns}

    monkeypatch.setattr(bench, "calls", calls)
    rows = bench.bench_case(tiny_case(bench), repeats=2, warmup=0, device=torch.device("cpu"))
    assert [(r.case, r.mode, r.nodes, r.edges) for r in rows] == [
        ("tiny", "inference", 4, 6), ("tiny", "training", 4, 6)
    ]  # fmt: skip
    for row in rows:
        assert row.ms == pytest.approx({"csr": 2.0, "gather": 4.0, "autograd": 8.0})
        assert row.mib == {"csr": 1.0, "gather": 1.5, "autograd": 4.0}


def test_the_graph_cases_run_on_their_data(bench, tmp_path, capsys, one_thread):
    # The short version of the two cases read from data: PROTEINS graphs batched as the graph
    # classifier batches them, and the whole Tolokers graph (both tiny stand-ins here).
    root = write_toy(tmp_path, "PROTEINS")
    rng = np.random.default_rng(0)
    (root / "gad").mkdir()
    np.savez(
        root / "gad" / "tolokers.npz",
        node_features=rng.normal(size=(40, 3)),
        node_labels=(rng.random(40) < 0.2).astype(np.int64),
        edges=rng.integers(0, 40, size=(120, 2)),
    )
    report = bench.main(
        ["--cases", "graph-batch", "tolokers", "--graphs", "3", "--repeats", "1", "--warmup", "0"]
        + ["--threads", "1", "--data", str(root)]
    )
    assert "skipped" not in report
    rows = [line.split("|")[1:5] for line in report.splitlines() if line.startswith("| ")][1:]
    cases = [(name.strip(), mode.strip()) for name, _, _, mode in rows]
    assert cases == [
        ("graph-batch (3 PROTEINS graphs)", "inference"),
        ("graph-batch (3 PROTEINS graphs)", "training"),
        ("tolokers", "inference"),
        ("tolokers", "training"),
    ]
    # 3 graphs of 4-6 nodes (15 nodes) and a CLS token each; Tolokers' 40 nodes.
    assert [int(tokens) for _, tokens, _, _ in rows] == [18, 18, 40, 40]


def test_the_header_says_how_the_device_measures_memory(bench, monkeypatch, capsys):
    # On CUDA peak_memory reads torch.cuda's allocator; the header said "replayed from
    # torch.profiler" on every device (the H100 table of RESULTS.md repeated it).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    monkeypatch.setattr(bench, "bench_case", lambda case, repeats, warmup, device: [])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    args = ["--cases", "random", "--nodes", "3", "--edges", "4", "--repeats", "1"]
    cuda = bench.main([*args, "--device", "cuda"])
    assert "device cuda (a GPU)" in cuda
    assert "- peak MiB: torch.cuda.max_memory_allocated above the allocation before" in cuda
    assert "profiler" not in cuda
    cpu = bench.main([*args, "--device", "cpu"])
    assert "- peak MiB: tensor allocations replayed from torch.profiler" in cpu
