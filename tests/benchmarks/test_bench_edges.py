"""The sparse-attention benchmark's harness end to end on a small random graph."""

import pytest
from bench_scripts import load_script, ratio_cell_matches


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
