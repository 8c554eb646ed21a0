"""The core benchmark's harness end to end at a toy size (timings themselves are not checked)."""

import argparse

import pytest
import torch
from bench_scripts import load_script, ratio_cell_matches
from torch.utils.flop_counter import FlopCounterMode


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_core")


def test_flop_formula(bench):
    # Image preset, one step: 4*8*197*768*(2*12*64 + 3072) + 6*8*12*197^2*64.
    assert bench.step_flops(8, 197, 768, 12, 64, 3072) == 22_309_502_976 + 1_430_654_976


@pytest.mark.parametrize("clock", ["wall", "process"])
def test_main_prints_a_full_table(bench, capsys, clock):
    report = bench.main(
        ["--preset", "small", "--batch", "2", "--steps", "2", "--repeats", "1", "--warmup", "0"]
        + ["--matmul-size", "128", "--clock", clock]
    )
    assert report in capsys.readouterr().out
    rows = [line for line in report.splitlines() if line.startswith("| small")]
    assert [row.split("|")[2].strip() for row in rows] == ["inference", "training"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:-1]]
        assert len(cells) == 8
        closed_ms, autograd_ms, speedup = float(cells[0]), float(cells[1]), cells[2]
        assert closed_ms > 0 and autograd_ms > 0
        assert ratio_cell_matches(speedup, autograd_ms, closed_ms)
        closed_mib, autograd_mib = float(cells[5]), float(cells[6])
        assert closed_mib > 0 and autograd_mib > 0  # the memory probe saw the allocations


def test_bfloat16_autocast_short_run(bench, capsys, one_thread):
    # The short version of the H100's bf16 table (--dtype bfloat16): both paths under autocast,
    # the matmul rate read in bf16, the precision named in the header.
    report = bench.main(
        ["--preset", "small", "--batch", "2", "--steps", "2", "--repeats", "1", "--warmup", "0"]
        + ["--matmul-size", "128", "--dtype", "bfloat16", "--threads", "1"]
    )
    assert "bfloat16 autocast (float32 weights and tokens; energies reduced in float32)" in report
    assert "(128^3 bfloat16 product," in report
    rows = [line for line in report.splitlines() if line.startswith("| small")]
    assert [row.split("|")[2].strip() for row in rows] == ["inference", "training"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:-1]]
        assert float(cells[0]) > 0 and float(cells[1]) > 0
        assert float(cells[5]) > 0 and float(cells[6]) > 0


def test_breakdown_splits_operator_time(bench, capsys):
    report = bench.main(
        ["--preset", "small", "--batch", "2", "--steps", "2", "--repeats", "1", "--warmup", "0"]
        + ["--matmul-size", "128", "--breakdown"]
    )
    table = report.split("Operator self time")[1]
    rows = [line for line in table.splitlines() if line.startswith("| small")]
    assert [row.split("|")[2].strip() for row in rows] == ["inference", "training"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:-1]]
        cf_products, cf_other = map(float, cells[0].split(" / "))
        ag_products, ag_other = map(float, cells[1].split(" / "))
        # Both paths run matrix products and something else (layer norm, softmax, ...).
        assert cf_products > 0 and cf_other > 0 and ag_products > 0 and ag_other > 0
        # Share and ceiling are computed before the times are rounded to 0.1 ms; a sum of two
        # rounded cells is off by up to 0.1, hence step 0.2. The share is printed to 1%.
        share = f"{float(cells[2].rstrip('%')) / 100}"
        assert ratio_cell_matches(share, cf_products, cf_products + cf_other, step=0.2)
        assert ratio_cell_matches(cells[3], ag_products + ag_other, cf_products, step=0.2)


def test_op_breakdown_counts_matrix_products(bench):
    import torch

    a = torch.randn(64, 64)
    total, products = bench.op_breakdown(lambda: (a @ a).relu())
    assert 0 < products < total
    total, products = bench.op_breakdown(lambda: a.relu().exp())
    assert products == 0 and total > 0


def test_bad_options_end_in_one_argparse_line(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])
    assert "need --repeats >= 1" in capsys.readouterr().err


# -- the numbers of the table, from fixed inputs ------------------------------------------------


def count_flops(fn) -> int:
    """Matrix-product FLOPs of one call of ``fn`` as torch's FlopCounterMode counts them (2 m n k
    per product), the closed form's fused in-place back-projection (``addmm_``) included."""

    def addmm_(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    mapping = {torch.ops.aten.addmm_: addmm_}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def test_flop_formula_by_hand_and_as_printed(bench):
    # B=1, N=2, D=3, H=Y=K=1: stacked projection (2x3)@(3x3) 36, back-projection 36, then the
    # scores, Omega K and Omega^T Q, (2x1)@(1x2) and twice (2x2)@(2x1): 8 each.
    assert bench.step_flops(1, 2, 3, 1, 1, 1) == 36 + 36 + 3 * 8
    # The formula the report prints is the one computed.
    sizes = {"B": 2, "N": 5, "D": 8, "H": 2, "Y": 3, "K": 7}
    assert eval(bench.FLOP_FORMULA.replace("^", "**"), {}, sizes) == bench.step_flops(
        2, 5, 8, 2, 3, 7
    )


@pytest.mark.parametrize("batch", [None, 3])
def test_rows_hold_the_best_times_and_the_flops_of_the_timed_calls(bench, monkeypatch, batch):
    timed = []  # per mode: {path: FLOPs counted in the call that was timed}

    def fake_time_calls(fns, repeats, warmup, device, clock="wall"):
        timed.append({path: count_flops(fn) for path, fn in fns.items()})
        return {"closed_form": [3.0, 1.0, 2.0], "autograd": [5.0, 4.0, 6.0]}

    peaks = iter(range(1, 100))
    monkeypatch.setattr(bench, "time_calls", fake_time_calls)
    monkeypatch.setattr(bench, "peak_memory", lambda fn, device: next(peaks))
    args = argparse.Namespace(batch=batch, steps=2, repeats=3, warmup=0, clock="wall")
    args.breakdown = False
    # (tokens, dim, heads, head_dim, memories, batch)
    rows = bench.bench_preset("tiny", (5, 8, 2, 3, 7, 2), args, torch.device("cpu"), torch.float32)
    step = bench.step_flops(batch or 2, 5, 8, 2, 3, 7)
    assert [(r.preset, r.mode) for r in rows] == [("tiny", "inference"), ("tiny", "training")]
    # Inference: `steps` steps; training: forward + backward = 3x, both as counted by torch.
    assert rows[0].flops == timed[0]["closed_form"] == timed[0]["autograd"] == 2 * step
    assert rows[1].flops == timed[1]["closed_form"] == 3 * 2 * step
    for row in rows:
        assert row.seconds == {"closed_form": 1.0, "autograd": 4.0}  # the best of the repeats
    assert rows[0].peak_bytes == {"closed_form": 1, "autograd": 2}
    assert rows[1].peak_bytes == {"closed_form": 3, "autograd": 4}


def test_format_table_cells(bench):
    row = bench.Row(
        preset="small",
        mode="inference",
        seconds={"closed_form": 0.002, "autograd": 0.005},
        peak_bytes={"closed_form": 3 * 2**20, "autograd": 12 * 2**20},
        flops=4e9,
    )
    # 4e9 FLOPs in 2 ms = 2000 GFLOP/s = 50% of 4e12; in 5 ms: 800 GFLOP/s = 20%.
    line = bench.format_table([row], rate=4e12).splitlines()[2]
    assert line == (
        "| small | inference | 2.0 | 5.0 | 2.50x | 2000.0 (50%) | 800.0 (20%) | 3.0 | 12.0 | 0.25 |"
    )


def test_format_breakdown_cells(bench):
    row = bench.Row("small", "training", {}, {}, 1.0)
    # (all ops, matrix products) seconds per path.
    row.breakdown = {"closed_form": (0.010, 0.004), "autograd": (0.030, 0.006)}
    line = bench.format_breakdown([row]).splitlines()[2]
    assert line == "| small | training | 4.0 / 6.0 | 6.0 / 24.0 | 40% | 7.50x |"


def test_peak_memory_replays_allocations_and_frees(bench):
    def allocate():
        first = torch.empty(2**18)  # 1 MiB of float32
        kept = torch.empty(2**18)  # 2 MiB live: the peak
        del first
        half = torch.empty(2**17)  # 1.5 MiB live
        return kept, half

    assert bench.peak_memory(allocate, torch.device("cpu")) == 2 * 2**20


def test_time_calls_interleaves_and_times_each_call(bench, monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0, 6.0, 10.0])
    monkeypatch.setitem(bench.CLOCKS, "wall", lambda: next(ticks))
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = bench.time_calls(fns, repeats=2, warmup=1, device=torch.device("cpu"))
    assert order == ["a", "b"] * 3  # one warm-up round, untimed, then two timed rounds
    assert times == {"a": [1.0, 2.0], "b": [3.0, 4.0]}


def test_matmul_rate_is_two_n_cubed_over_the_best_time(bench, monkeypatch):
    monkeypatch.setattr(bench, "time_calls", lambda *args: {"mm": [0.5, 0.25, 1.0]})
    rate = bench.matmul_rate(4, torch.float32, torch.device("cpu"), 3)
    assert rate == 2 * 4**3 / 0.25


def test_main_reports_the_best_matmul_rate_of_both_readings(bench, monkeypatch, one_thread):
    readings = iter([2e12, 4e12])
    row = bench.Row("small", "inference", {"closed_form": 0.002, "autograd": 0.005}, {}, 4e9)
    row.peak_bytes = {"closed_form": 2**20, "autograd": 2**21}
    monkeypatch.setattr(bench, "matmul_rate", lambda *args: next(readings))
    monkeypatch.setattr(bench, "bench_preset", lambda *args: [row])
    report = bench.main(["--preset", "small", "--steps", "3"])
    assert "- matmul rate: 4000.0 GFLOP/s (2048^3 float32 product" in report
    assert f"- FLOPs per step: {bench.FLOP_FORMULA}; training counted as 3x" in report
    assert "| small | inference | 2.0 | 5.0 | 2.50x | 2000.0 (50%) | 800.0 (20%) |" in report
