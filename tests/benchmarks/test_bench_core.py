"""The core benchmark's harness end to end at a toy size (timings themselves are not checked)."""

import pytest
from bench_scripts import load_script, ratio_cell_matches


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
