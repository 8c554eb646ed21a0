"""benchmarks/bench_graph.py: its option parsing, a short MUTAG run, parallel folds and
reading runs back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import BENCHMARKS, load_script
from graph_fixtures import write_toy

from energy_transformer.tasks.graph import cross_validate


@pytest.fixture
def toy_root(tmp_path) -> Path:
    return write_toy(tmp_path / "data")


def _bench_graph():
    return load_script("bench_graph")


def test_benchmark_et_overrides_parse_values():
    parse = _bench_graph().parse_overrides
    assert parse(["qk_init_std=0.05", "steps=8", "adjacency=soft", "learn_beta=true"]) == {
        "qk_init_std": 0.05,
        "steps": 8,
        "adjacency": "soft",
        "learn_beta": True,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse(["qk_init_std"])


def test_benchmark_short_run_mutag(tmp_path, one_thread):
    root = os.environ.get("ET_DATA")
    if not root or not (Path(root) / "TUDataset" / "MUTAG.zip").is_file():
        pytest.skip("ET_DATA with TUDataset/MUTAG.zip not available")
    bench = _bench_graph()
    rows = bench.run(
        ["MUTAG"], bench.MODELS, folds=2, epochs=2, root=root, out=tmp_path, progress=False
    )
    assert {r["model"] for r in rows} == {"et", "gin", "mlp", "wl"}
    for row in rows:
        assert len(row["summary"].folds) == 2
        assert 0.3 <= row["summary"].mean <= 1.0  # MUTAG is 66% one class
    table = bench.markdown(rows, budget="2 folds, 2 epochs")
    assert "| MUTAG |" in table and "96.6" in table  # the paper's (training-set) number beside
    # The fold-by-fold line: 2 folds, each ahead, level or behind.
    line = next(x for x in table[table.index("ET - GIN") :].splitlines() if "| MUTAG |" in x)
    counts = [c.split("(")[1].rstrip(") ") for c in line.split("|")[2:-1]]
    assert len(counts) == 3 and all(sum(map(int, c.split("/"))) == 2 for c in counts)


def test_benchmark_parallel_folds_in_spawned_processes(toy_root, tmp_path):
    # Any device but "cpu" (here "auto", which is the CPU on this machine) spawns the fold
    # workers instead of forking them, as CUDA needs; each worker prepares the data itself.
    out = tmp_path / "runs"
    cmd = [sys.executable, str(BENCHMARKS / "bench_graph.py"), "--datasets", "TOY"]
    cmd += ["--models", "et", "mlp", "--folds", "2", "--epochs", "1", "--jobs", "2"]
    cmd += ["--device", "auto", "--threads", "1", "--data", str(toy_root), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prepared TOY" not in done.stdout  # not prepared in the parent: nothing to fork
    for model in ("et", "mlp"):
        summary = json.loads((out / f"TOY-{model}" / "summary.json").read_text())
        assert len(summary["folds"]) == 2
    assert "| TOY |" in (out / "results.md").read_text()


def test_benchmark_collect_reads_runs_back_and_refuses_a_cell_twice(toy_root, tmp_path, one_thread):
    bench = _bench_graph()
    a, b = tmp_path / "a", tmp_path / "b"
    summary = cross_validate("TOY", "mlp", folds=2, epochs=1, root=toy_root, out=a / "TOY-mlp")
    shutil.copytree(a, b)
    for fold in (b / "TOY-mlp").glob("fold-*"):  # as a device returns it: folds.csv only
        shutil.rmtree(fold)
    for out in (a, b):
        [row] = bench.collect([str(out)])
        assert (row["dataset"], row["model"], row["epochs"]) == ("TOY", "mlp", 1)
        assert row["summary"].mean == pytest.approx(summary.mean)
    with pytest.raises(ValueError, match=r"a/TOY-mlp and .*b/TOY-mlp both hold TOY mlp"):
        bench.collect([str(a), str(b)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished run .* under .*empty"):
        bench.collect([str(tmp_path / "empty")])


def test_markdown_puts_et_first_whichever_dataset_sorts_first(toy_root, tmp_path, one_thread):
    bench = _bench_graph()
    summary = cross_validate("TOY", "mlp", folds=2, epochs=1, root=toy_root, out=tmp_path / "m")

    def row(dataset: str, model: str) -> dict:
        return {"dataset": dataset, "model": model, "summary": summary, "k": 2, "epochs": 1}

    # Folders sort DD-gin first: the columns must not follow that.
    rows = [row("DD", "gin"), row("DD", "mlp"), row("MUTAG", "et"), row("MUTAG", "et:degree")]
    header = next(line for line in bench.markdown(rows, "toy").splitlines() if "| dataset" in line)
    labels = [cell.strip() for cell in header.split("|")[3:-2:2]]
    assert labels == ["ET", "ET (degree)", "GIN", "MLP (sum)"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "foo"], "bad model 'foo'"),
        (["--folds", "1"], "need --folds >= 2 and --jobs >= 1"),
        (["--et-set", "bogus=1"], "['bogus'] are not options of GraphEnergyTransformer"),
    ],
)
def test_bad_options_end_in_one_argparse_line(monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["bench_graph.py", *args])
    with pytest.raises(SystemExit):
        load_script("bench_graph").main()
    assert message in capsys.readouterr().err
