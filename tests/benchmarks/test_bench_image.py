import math
from types import SimpleNamespace

import pytest
import torch
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


def _psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse)


def test_time_budget_gives_both_models_the_same_images(tmp_path, monkeypatch):
    data = write_fake_mnist(tmp_path / "data", train=24, test=8)
    bench = load_script("bench_image")
    # 100 images/s for ET and for the ViT: 0.02 s per image for the pair, so a 0.5 s budget
    # is 25 images: all 24 training images, one whole epoch (a second would not fit).
    monkeypatch.setattr(bench, "train_throughput", lambda *args: 100.0)
    results = bench.main(
        ["--data", str(data), "--time-budget", "0.5", "--test-size", "8", "--batch-size", "8"]
        + ["--threads", "1", "--no-progress"]
    )
    assert (results["train_images"], results["epochs"]) == (24, 1)
    for row in results["rows"]:
        assert row["psnr"] == pytest.approx(_psnr(row["masked_mse"]))


def test_train_throughput_is_images_over_the_timed_steps(monkeypatch):
    bench = load_script("bench_image")
    steps = []

    def loss(model, batch):
        steps.append(batch[0].shape[0])
        return (model(batch[0].flatten(1)) ** 2).mean(), {}

    ticks = iter([10.0, 14.0])
    monkeypatch.setattr(bench, "masked_loss", loss)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    images = torch.zeros(20, 1, 2, 2, dtype=torch.uint8)
    rate = bench.train_throughput(torch.nn.Linear(4, 1), images, 8, 3, torch.device("cpu"))
    assert steps == [8] * 4  # one warm-up step, then 3 timed ones
    assert rate == 3 * 8 / 4.0


@pytest.mark.parametrize(
    ("et_mse", "vit_mse", "interp_mse", "ratios", "verdict"),
    [
        (0.010, 0.0125, 0.020, ("0.800", "0.500"), "met"),
        (0.012, 0.010, 0.020, ("1.200", "0.600"), "NOT met"),  # not within 10% of the ViT
        (0.010, 0.010, 0.01125, ("1.000", "0.889"), "NOT met"),  # not 20% below interpolation
    ],
)
def test_markdown_cells_and_goal(et_mse, vit_mse, interp_mse, ratios, verdict):
    bench = load_script("bench_image")

    def row(model, parameters, mse, train, evaluate):
        return {
            "model": model,
            "parameters": parameters,
            "masked_mse": mse,
            "psnr": _psnr(mse),
            "train_seconds": train,
            "eval_seconds": evaluate,
            "final_train_loss": 0.1,
        }

    results = {
        "rows": [
            row("Energy Transformer", 100_000, et_mse, 12.4, 0.6),
            row("ViT masked autoencoder", 400_000, vit_mse, 30.0, 2.4),
            row("interpolation (harmonic, non-learned)", 0, interp_mse, 0.0, 1.2),
        ],
        "speed": {"et (closed form)": 120.0, "et (autograd)": 30.0, "vit-mae": 60.5},
        "epochs": 2,
        "train_images": 1000,
        "test_images": 500,
        "masked": 50,
        "patches": 196,
        "device": "cpu",
    }
    args = bench.parse_args(["--machine", "test box", "--threads", "1"])
    lines = bench.markdown(results, args, "python benchmarks/bench_image.py").splitlines()
    assert lines[-1] == (
        f"ET / ViT masked MSE = {ratios[0]} (goal: <= 1.10) with 0.250 of its parameters"
        f" (1/T = 0.083); ET / interpolation MSE = {ratios[1]}. Goal (ET within 10% of ViT,"
        f" and at least 20% below interpolation): {verdict} in this run."
    )
    assert "- machine: test box; torch " in lines[2]
    assert "on the first 1,000 training images for 2 epoch(s), batch 128" in lines[5]
    assert "on 500 test images with fixed masks (seed " in lines[5]
    assert ": 50 of 196 patches masked per image" in lines[5]
    if et_mse == 0.010 and vit_mse == 0.0125:
        start = lines.index("| model | parameters | masked-patch MSE | PSNR (dB) | train time (s)"
                            " | eval time (s) |")  # fmt: skip
        assert lines[start + 2 : start + 5] == [
            "| Energy Transformer | 100,000 | 0.01000 | 20.00 | 12 | 1 |",
            "| ViT masked autoencoder | 400,000 | 0.01250 | 19.03 | 30 | 2 |",
            "| interpolation (harmonic, non-learned) | 0 | 0.02000 | 16.99 | 0 | 1 |",
        ]
        start = lines.index("| model | images/s |")
        assert lines[start + 2 : start + 5] == [
            "| et (closed form) | 120.0 |",
            "| et (autograd) | 30.0 |",
            "| vit-mae | 60.5 |",
        ]
