import importlib.util
from pathlib import Path

from image_fixtures import write_fake_mnist

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_harness_end_to_end(tmp_path):
    data = write_fake_mnist(tmp_path / "data", train=24, test=8)
    spec = importlib.util.spec_from_file_location(
        "bench_image", ROOT / "benchmarks" / "bench_image.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "image.md"
    results = bench.main(
        [
            "--data",
            str(data),
            "--subset",
            "16",
            "--test-size",
            "8",
            "--batch-size",
            "8",
            "--speed-batches",
            "1",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    names = [r["model"] for r in results["rows"]]
    assert names[0] == "Energy Transformer" and names[1] == "ViT masked autoencoder"
    assert results["rows"][0]["parameters"] * 10 < results["rows"][1]["parameters"]
    assert set(results["speed"]) == {"et (closed form)", "et (autograd)", "vit-mae"}
    assert all(r["masked_mse"] > 0 for r in results["rows"])
    table = out.read_text()
    assert "| Energy Transformer | 109,329 |" in table and "command: `python benchmarks" in table
