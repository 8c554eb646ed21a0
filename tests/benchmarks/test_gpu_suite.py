"""benchmarks/gpu_suite.sh: its short version. A lease is minutes long, so a suite line that the
scripts no longer accept costs a lease; here every part runs with stand-ins that record what the
suite would run, and each command line goes through the current script's own parser."""

import subprocess
from pathlib import Path

import pytest
from bench_scripts import BENCHMARKS, parse_error, recorded_calls, stub_commands

SUITE = BENCHMARKS / "gpu_suite.sh"
PARTS = "tests edges core graph anomaly select"


def test_the_suite_is_valid_bash():
    subprocess.run(["bash", "-n", str(SUITE)], check=True)


def run_suite(tmp_path: Path, *args: str, **env: str) -> list[list[str]]:
    stubs = stub_commands(tmp_path / "bin")
    subprocess.run(
        ["bash", str(SUITE), *args],
        cwd=BENCHMARKS.parent,
        env={**stubs, "OUT": str(tmp_path / "out"), "HOME": str(tmp_path), **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    return recorded_calls(stubs)


@pytest.mark.parametrize(("device", "scale"), [("cuda", "full"), ("cpu", "tiny")])
def test_every_part_runs_commands_the_scripts_accept(tmp_path, device, scale):
    calls = run_suite(tmp_path, device, scale, PARTS)
    scripts = [c for c in calls if c[0].startswith("benchmarks/")]
    assert ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py"] in calls
    assert (BENCHMARKS.parent / "tests" / "test_devices.py").is_file()
    ran = {Path(c[0]).name for c in scripts}
    assert ran == {"bench_edges.py", "bench_core.py", "bench_graph.py", "bench_anomaly.py"}
    # core: float32 and bf16; graph: the device's run and --collect; select: 4 runs and --select.
    assert len(scripts) == 1 + 2 + (3 if scale == "tiny" else 2) + 1 + 5
    failures = {" ".join(c): error for c in scripts if (error := parse_error(c))}
    assert not failures
    for c in scripts:
        if "--device" in c:
            assert c[c.index("--device") + 1] in (device, "cpu")


def test_the_graph_and_select_settings_from_the_environment_reach_the_scripts(tmp_path):
    # As RESULTS.md's H100 selection ran it: SELECT replaces the select part's flags.
    select = "--datasets tolokers --models et,mlp --first-seed 10 --seeds 10 --epochs 200"
    graph = "--preset cpu --epochs 300 --models et --et-set max_degree=32"
    calls = run_suite(
        tmp_path, "cuda", "full", "graph select", SELECT=select, GRAPH=graph,
        GRAPH_GPU="--datasets IMDB-BINARY --max-folds 6 --jobs 6",
        GRAPH_CPU="--datasets PROTEINS --jobs 10",
    )  # fmt: skip
    scripts = [c for c in calls if c[0].startswith("benchmarks/")]
    assert not {" ".join(c): error for c in scripts if (error := parse_error(c))}
    graph_runs = [c for c in scripts if c[0].endswith("bench_graph.py") and "--collect" not in c]
    assert sorted(c[c.index("--device") + 1] for c in graph_runs) == ["cpu", "cuda"]
    runs = [c for c in scripts if c[0].endswith("bench_anomaly.py") and "--select" not in c]
    assert len(runs) == 4 and all(" ".join(c).count(select) == 1 for c in runs)
