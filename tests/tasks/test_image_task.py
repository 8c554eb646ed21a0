import json
import shutil

import numpy as np
import pytest
import torch
from image_fixtures import fake_images, write_fake_mnist
from test_official import official_arrays, save

from energy_transformer.cli import build_parser, main
from energy_transformer.tasks.image import (
    apply_training_preset,
    fixed_masks,
    load_model,
    masked_mse,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_mnist(tmp_path_factory.mktemp("data"), train=40, test=12)


def train_tiny(data, out, epochs: int, *extra: str) -> None:
    """`et train image` on 24 images, batch 8, 2 descent steps, on the CPU."""
    args = ["train", "image", "--data", str(data), "--out", str(out), "--subset", "24"]
    args += ["--val-size", "8", "--epochs", str(epochs), "--batch-size", "8", "--steps", "2"]
    main([*args, "--no-progress", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train_tiny(data, out, 2)
    return out


def test_unset_training_options_take_the_presets_and_flags_override_them(run):
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["epochs"] == 2 and train["lr"] == 3e-3 and train["warmup_epochs"] == 1.0
    # The paper's ImageNet settings (spec §2.1), without building or training the model.
    args = build_parser().parse_args(["train", "image", "--preset", "imagenet", "--lr", "1e-4"])
    apply_training_preset(args)
    assert (args.epochs, args.batch_size, args.warmup_epochs) == (100, 768, 2.0)
    assert args.lr == 1e-4
    # Resumed, a run continues with its own settings (batch 8 here), not the preset's (128).
    args = build_parser().parse_args(["train", "image", "--out", str(run), "--resume"])
    apply_training_preset(args)
    assert args.batch_size == 8 and args.lr == 3e-3


def test_train_writes_a_run(run):
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "image" and config["model"]["arch"] == "et"
    assert config["model"]["steps"] == 2 and config["extra"]["train_images"] == 24
    assert (run / "best.safetensors").is_file() and (run / "last.safetensors").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_mse" in rows[0]
    model, _ = load_model(run)
    assert model.steps == 2


def test_bf16_training_run(data, tmp_path):
    train_tiny(data, tmp_path / "bf16", 1, "--precision", "bf16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["train"]["precision"] == "bf16"
    model, _ = load_model(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in model.parameters())


def test_eval_metrics_and_pictures(run, data, tmp_path, capsys):
    main(["eval", str(run), "--data", str(data), "--out", str(tmp_path), "--device", "cpu"])
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert metrics["test_images"] == 12 and metrics["masked_patches_per_image"] == 20
    assert metrics["masked_psnr"] == pytest.approx(-10 * np.log10(metrics["masked_mse"]))
    for name in ("reconstructions", "energy", "memories", "updates", "positions"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert "| Energy Transformer |" in (tmp_path / "eval_metrics.md").read_text()
    assert "eval_metrics.json" in capsys.readouterr().out
    # fixed masks: every evaluation and every model sees the same hidden patches
    model, _ = load_model(run)
    assert torch.equal(fixed_masks(model, 12)[1], fixed_masks(model, 12)[1])
    images = torch.from_numpy(fake_images(12, seed=1)).float()[:, None] / 255
    mse, _ = masked_mse(model, images, fixed_masks(model, 12)[1])
    assert mse == pytest.approx(metrics["masked_mse"], rel=1e-5)


def test_complete_writes_side_by_side(run, tmp_path):
    from PIL import Image

    pixels = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    (tmp_path / "b").mkdir()
    Image.fromarray(pixels).save(tmp_path / "shirt.png")
    Image.fromarray(pixels[::-1].copy()).save(tmp_path / "b" / "shirt.png")
    Image.fromarray(pixels[:, ::-1].copy()).save(tmp_path / "shirt-2.png")
    images = [tmp_path / "shirt.png", tmp_path / "b" / "shirt.png", tmp_path / "shirt-2.png"]
    out = tmp_path / "o"
    main(["complete", str(run), *map(str, images), "--out", str(out), "--device", "cpu"])
    # Two images of one name, and one named like the second's renamed picture: three pictures.
    pictures = sorted(out.glob("*_completed.png"))
    assert [p.name for p in pictures] == [
        "shirt-2-2_completed.png", "shirt-2_completed.png", "shirt_completed.png"
    ]  # fmt: skip
    assert len({p.read_bytes() for p in pictures}) == 3


def test_resume_continues_to_more_epochs(run, data, capsys):
    train_tiny(data, run, 3, "--resume")
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 2 earlier epochs + 1 new


def test_convert_official(tmp_path):
    arrays = official_arrays()
    npz = save(tmp_path / "released.npz", arrays)
    main(["convert-official", str(npz), str(tmp_path / "conv"), "--steps", "3"])
    model, config = load_model(tmp_path / "conv")
    assert config["model"]["exclude_self"] is False and model.steps == 3
    torch.testing.assert_close(model.block.hopfield.xi, torch.from_numpy(arrays["Xi"].T).float())
    torch.testing.assert_close(model.encoder.weight, torch.from_numpy(arrays["Wenc"].T).float())


def test_convert_official_never_overwrites_a_run(run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    trained = tmp_path / "trained"
    shutil.copytree(run, trained)
    before = (trained / "last.safetensors").read_bytes()
    npz = save(tmp_path / "released.npz", official_arrays())
    assert main(["convert-official", str(npz), str(trained)]) == 2
    err = capsys.readouterr().err
    assert "already holds a trained run: convert into another folder (or delete it)" in err
    assert (trained / "last.safetensors").read_bytes() == before


def test_bad_arguments(data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    assert (
        main(
            [
                "train",
                "image",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "x"),
                "--val-size",
                "40",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "et: error: --val-size must be in [0, 39], got 40" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "image", "--preset", "cifar"])
    base = ["train", "image", "--data", str(data), "--no-progress"]
    for extra, message in [
        (["--eval-size", "-5"], "--eval-size must be a positive int, got -5"),
        (["--arch", "vit-mae", "--alpha", "0.5"], "--alpha and --gradient are the energy"),
    ]:
        assert main([*base, "--out", str(tmp_path / "y"), *extra]) == 2
        assert message in capsys.readouterr().err


def test_demo_runs_twice_into_the_same_folder(data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    from energy_transformer.tasks import image

    tiny = {**image.DEMO, "epochs": 1, "subset": 16, "batch_size": 8, "val_size": 8, "eval_size": 8}
    monkeypatch.setattr(image, "DEMO", tiny)
    monkeypatch.setattr(image, "DEMO_MODEL", {"steps": 1})
    out = tmp_path / "demo"
    for _ in range(2):
        main(["demo", "--out", str(out), "--data", str(data), "--device", "cpu"])
        assert json.loads((out / "eval_metrics.json").read_text())["test_images"] == 8
    assert f"everything is in {out}" in capsys.readouterr().out
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path / "mine"), "--data", str(data)]) == 2
    assert "exists and is not a run folder; choose another --out" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").is_file()


def test_demo_never_deletes_a_run_it_did_not_make(run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    trained = tmp_path / "trained"
    shutil.copytree(run, trained)
    assert main(["demo", "--out", str(trained), "--device", "bogus"]) == 2  # checked first
    assert "unknown device 'bogus': use cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    assert main(["demo", "--out", str(trained), "--device", "cpu"]) == 2
    assert "holds a run that et demo did not make" in capsys.readouterr().err
    assert (trained / "best.safetensors").is_file()


def test_a_diverging_run_ends_with_one_line_naming_it(data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    train_tiny(data, tmp_path / "r", 1, "--lr", "1e10", "--grad-clip", "1e10")
    err = capsys.readouterr().err
    assert err.startswith("et: error: training diverged: the loss is") and err.count("\n") == 1


def test_a_relative_data_path_is_recorded_absolute(data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    monkeypatch.chdir(data.parent)
    out = tmp_path / "rel"
    main(["train", "image", "--data", data.name, "--out", str(out), "--subset", "16"]
         + ["--val-size", "8", "--epochs", "1", "--batch-size", "8", "--steps", "1"]
         + ["--eval-size", "4", "--no-progress", "--device", "cpu"])  # fmt: skip
    assert json.loads((out / "config.json").read_text())["extra"]["data"] == str(data.resolve())
    monkeypatch.chdir(tmp_path)  # et eval from elsewhere still finds the data
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["eval", str(out), "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is a file: give a folder" in capsys.readouterr().err
