from bench_scripts import load_script
from image_fixtures import write_fake_mnist


def test_benchmark_harness_end_to_end(tmp_path):
    data = write_fake_mnist(tmp_path / "data", train=24, test=8)
    bench = load_script("bench_image")
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
