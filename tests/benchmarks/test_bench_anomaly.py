"""The anomaly benchmark script end to end on a tiny graph in the public ``.npz`` layout."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_anomaly.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_anomaly", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_tolokers(root: Path, n: int = 150) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(n) < 0.2).astype(np.int64)
    features = rng.normal(size=(n, 4)) + 1.5 * labels[:, None]
    edges = rng.integers(0, n, size=(4 * n, 2))
    (root / "gad").mkdir(parents=True)
    np.savez(root / "gad" / "tolokers.npz", node_features=features, node_labels=labels, edges=edges)


@pytest.mark.parametrize("ratio", [0.4, 0.1])
def test_short_run_prints_both_protocols(bench, tmp_path, one_thread, ratio):
    write_tolokers(tmp_path)
    out = tmp_path / "report.md"
    report = bench.main(
        ["--datasets", "tolokers", "--models", "et,mlp,rf-graph", "--seeds", "1"]
        + ["--epochs", "2", "--hidden", "8", "--rf-trees", "5", "--threads", "1"]
        + ["--train-ratio", str(ratio), "--data", str(tmp_path), "--out", str(out)]
    )
    assert out.read_text() == report
    train = f"{100 * ratio:g}%"
    assert f"one {train} / " in report
    for table in ("GADBench protocol", "BWGNN protocol"):
        assert table in report
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert {r.split("|")[1].strip() for r in rows} >= {"et", "et-energy", "mlp", "rf-graph"}
