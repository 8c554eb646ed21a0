import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from image_fixtures import fake_images, write_fake_mnist
from test_official import official_arrays, save

from energy_transformer.cli import build_parser, main
from energy_transformer.metrics import psnr
from energy_transformer.models.interpolation import PatchInterpolation
from energy_transformer.tasks import image, load_model
from energy_transformer.tasks.image import (
    apply_training_preset,
    fixed_masks,
    masked_mse,
)
from energy_transformer.train import load_checkpoint, read_run_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_mnist(tmp_path_factory.mktemp("data"), train=40, test=12)


def train_tiny(data, out, epochs: int, *extra: str) -> int:
    """`et train image` on 24 images, batch 8, 2 descent steps, on the CPU; its exit status."""
    args = ["train", "image", "--data", str(data), "--out", str(out), "--subset", "24"]
    args += ["--val-size", "8", "--epochs", str(epochs), "--batch-size", "8", "--steps", "2"]
    return main([*args, "--no-progress", "--device", "cpu", *extra])


def loop_masked_mse(prediction, images, mask, patch: int) -> tuple[float, list[float]]:
    """The masked MSE computed patch by patch: squared errors over the pixels of each image's
    masked patches (row-major grid), per image and pooled over all masked pixels."""
    grid = images.shape[-1] // patch
    per_image, total, count = [], 0.0, 0
    for i in range(images.shape[0]):
        err, pixels = 0.0, 0
        for j in range(mask.shape[1]):
            if mask[i, j]:
                row, col = divmod(j, grid)
                rows, cols = (
                    slice(row * patch, (row + 1) * patch),
                    slice(col * patch, (col + 1) * patch),
                )
                diff = prediction[i, :, rows, cols].double() - images[i, :, rows, cols].double()
                err += float(diff.pow(2).sum())
                pixels += diff.numel()
        per_image.append(err / pixels)
        total, count = total + err, count + pixels
    return total / count, per_image


class KnownCompletion:
    """A stand-in for a model: 7 px patches, a completion computed from the images alone."""

    patch_size = 7

    def __init__(self, predict):
        self.predict = predict

    def complete(self, images, mask):
        return SimpleNamespace(prediction=self.predict(images), mask=mask)


def hide(counts, patches: int = 16, seed: int = 0):
    """``(len(counts), patches)`` masks hiding ``counts[i]`` random patches of image ``i``."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.stack([torch.randperm(patches, generator=g) for _ in counts])
    return ranks < torch.tensor(counts)[:, None]


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
    model = load_model(run)
    assert model.steps == 2


def test_bf16_training_run(data, tmp_path):
    train_tiny(data, tmp_path / "bf16", 1, "--precision", "bf16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["train"]["precision"] == "bf16"
    # a resume without --precision continues in the run's own precision (it was refused)
    assert train_tiny(data, tmp_path / "bf16", 2, "--resume") == 0
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["train"]["precision"] == "bf16" and config["train"]["epochs"] == 2
    model = load_model(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in model.parameters())


def test_eval_metrics_and_pictures(run, data, tmp_path, capsys):
    main(["eval", str(run), "--data", str(data), "--out", str(tmp_path), "--device", "cpu"])
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert metrics["test_images"] == 12 and metrics["masked_patches_per_image"] == 20
    assert metrics["masked_psnr"] == pytest.approx(-10 * np.log10(metrics["masked_mse"]))
    for name in ("reconstructions", "energy", "descent", "memories", "updates", "positions"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert "| Energy Transformer |" in (tmp_path / "eval_metrics.md").read_text()
    printed = capsys.readouterr().out
    assert "eval_metrics.json" in printed and f"weights: {run / 'best.safetensors'}" in printed
    # fixed masks: every evaluation and every model sees the same hidden patches
    model = load_model(run)
    assert torch.equal(fixed_masks(model, 12)[1], fixed_masks(model, 12)[1])
    images = torch.from_numpy(fake_images(12, seed=1)).float()[:, None] / 255
    mask = fixed_masks(model, 12)[1]
    mse, _ = masked_mse(model, images, mask)
    assert mse == pytest.approx(metrics["masked_mse"], rel=1e-5)
    # The headline numbers, recomputed patch by patch from each model's own completion.
    p = model.patch_size  # 4: 49 patches
    expected, _ = loop_masked_mse(model.complete(images, mask).prediction, images, mask, p)
    assert metrics["masked_mse"] == pytest.approx(expected, rel=1e-5)
    interpolation = PatchInterpolation(p).complete(images, mask).prediction
    expected, _ = loop_masked_mse(interpolation, images, mask, p)
    assert metrics["interpolation_masked_mse"] == pytest.approx(expected, rel=1e-5)
    assert metrics["interpolation_masked_psnr"] == pytest.approx(-10 * np.log10(expected))


def test_masked_mse_scores_the_hidden_pixels_only():
    # Predicting 1 everywhere on black images: every hidden pixel is off by 1, so the masked
    # MSE is 1 whatever the share of hidden patches (4 of 16 here; over all pixels: 0.25).
    images = torch.zeros(5, 1, 28, 28)
    mask = hide([4] * 5)
    mse, per_image = masked_mse(KnownCompletion(torch.ones_like), images, mask, batch_size=2)
    assert mse == 1.0 and per_image.tolist() == [1.0] * 5
    assert psnr(mse) == 0.0
    # 0.1 off: MSE 0.01 and PSNR 10 log10(1 / 0.01) = 20 dB (pixels in [0, 1]).
    mse, _ = masked_mse(KnownCompletion(lambda x: torch.full_like(x, 0.1)), images, mask)
    assert mse == pytest.approx(0.01) and psnr(mse) == pytest.approx(20.0)


def test_masked_mse_matches_a_loop_over_the_hidden_patches():
    # Colour images, a different number of hidden patches per image, batches that split them.
    images = torch.rand(7, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    model = KnownCompletion(lambda x: x.flip(-1).mul(0.5).add(0.3))
    mask = hide([1, 2, 3, 5, 8, 13, 16], seed=1)
    mse, per_image = masked_mse(model, images, mask, batch_size=3)
    expected, expected_per_image = loop_masked_mse(model.predict(images), images, mask, 7)
    # Pooled: every hidden pixel weighs the same (not the mean of the per-image values).
    assert mse == pytest.approx(expected, rel=1e-6)
    assert mse != pytest.approx(float(np.mean(expected_per_image)), rel=1e-3)
    torch.testing.assert_close(per_image, torch.tensor(expected_per_image), rtol=1e-5, atol=0)


def test_masked_mse_refuses_masks_it_cannot_score():
    images, model = torch.zeros(3, 1, 28, 28), KnownCompletion(torch.ones_like)
    with pytest.raises(ValueError, match=r"the mask hides no patch of image 1 \(1 such image\)"):
        masked_mse(model, images, hide([4, 0, 4]))
    with pytest.raises(ValueError, match=r"one row of patch flags per image, .*got \(4, 16\)"):
        masked_mse(model, images, hide([4] * 4))


def test_complete_writes_side_by_side(run, tmp_path, capsys):
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
    assert (
        "the model takes 28x28 grey images: each image is converted to grey, its shorter side"
        " resized to 28, centre-cropped"
    ) in capsys.readouterr().out


def test_resume_continues_to_more_epochs(run, data, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)  # the module's run stays a straight 2-epoch run
    assert train_tiny(data, resumed, 3, "--resume") == 0
    rows = (resumed / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 2 earlier epochs + 1 new


def test_an_interrupted_run_resumed_ends_as_the_uninterrupted_one(
    run, data, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    steps = []  # 24 images in batches of 8: 3 steps an epoch

    def interrupted(model, batch):
        steps.append(1)
        if len(steps) == 4:  # the first step of epoch 2
            raise KeyboardInterrupt
        return masked_loss(model, batch)

    masked_loss = image.masked_loss
    monkeypatch.setattr(image, "masked_loss", interrupted)
    out = tmp_path / "interrupted"
    assert train_tiny(data, out, 2) == 130
    assert "run the same command with --resume to continue" in capsys.readouterr().err
    assert load_checkpoint(out / "last.safetensors").meta["epoch"] == 1
    assert train_tiny(data, out, 2, "--resume") == 0
    assert len(steps) == 4 + 3  # epoch 2 only, not the whole run again
    for name in ("last", "best"):
        straight = load_checkpoint(run / f"{name}.safetensors").model_state
        resumed = load_checkpoint(out / f"{name}.safetensors").model_state
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name
    column = [r.split(",")[:3] for r in (run / "metrics.csv").read_text().splitlines()]
    assert [r.split(",")[:3] for r in (out / "metrics.csv").read_text().splitlines()] == column


@pytest.mark.parametrize(
    "option, message",
    [
        (["--subset", "8"], "train_images 24 -> 8"),
        (["--val-size", "4"], "val_size 8 -> 4"),
        (["--seed", "1"], "seed 0 -> 1"),
        (["--dataset", "mnist"], "dataset 'fashion-mnist' -> 'mnist'"),
    ],
)
def test_resuming_on_other_data_is_refused(
    run, data, tmp_path, capsys, monkeypatch, option, message
):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    write_fake_mnist(tmp_path, "mnist", train=40, test=12)
    shutil.copytree(data / "fashion-mnist", tmp_path / "fashion-mnist")
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    before = {f: (resumed / f).read_bytes() for f in ("config.json", "last.safetensors")}
    args = ["train", "image", "--data", str(tmp_path), "--out", str(resumed), "--resume"]
    args += [
        "--subset",
        "24",
        "--val-size",
        "8",
        "--steps",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*args, *option]) == 2
    err = capsys.readouterr().err
    assert f"{resumed} holds a run on other data or settings ({message}): resume it" in err
    assert {f: (resumed / f).read_bytes() for f in before} == before


def test_convert_official(tmp_path):
    arrays = official_arrays()
    npz = save(tmp_path / "released.npz", arrays)
    main(["convert-official", str(npz), str(tmp_path / "conv"), "--steps", "3"])
    model, config = load_model(tmp_path / "conv"), read_run_config(tmp_path / "conv")[1]
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
    with pytest.raises(SystemExit) as exit_:
        main(["train", "image", "--preset", "cifar"])
    assert exit_.value.code == 2
    assert (
        "et train image: error: argument --preset: invalid choice: 'cifar'"
        in capsys.readouterr().err
    )
    base = ["train", "image", "--data", str(data), "--no-progress"]
    for extra, message in [
        (["--eval-size", "-5"], "--eval-size must be a positive int, got -5"),
        (["--arch", "vit-mae", "--alpha", "0.5"], "--alpha: the energy descent's options"),
        (
            ["--arch", "vit-mae", "--hopfield", "softmax", "--exclude-self"],
            "--exclude-self, --hopfield: the energy descent's options, not for vit-mae",
        ),
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
    printed = capsys.readouterr().out
    assert f"everything is in {out}" in printed
    assert "next: et eval" not in printed  # the demo evaluates the run itself
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
    # Not even one trained with the demo's own sizes: only the demo's mark counts.
    config = json.loads((trained / "config.json").read_text())
    config["extra"].update(train_images=image.DEMO["subset"], val_size=image.DEMO["val_size"])
    (trained / "config.json").write_text(json.dumps(config))
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
    assert "notes.txt is a file: the output goes to a folder" in capsys.readouterr().err


def test_every_training_option_reaches_the_trainer_the_model_and_the_records(
    data, tmp_path, monkeypatch
):
    # Each option away from its default and from the preset's value.
    loaders, initial = [], []
    real_loader, real_trainer = image.make_loader, image.Trainer

    def spy_loader(dataset, batch_size, **kwargs):
        loaders.append((len(dataset), batch_size, kwargs["seed"]))
        return real_loader(dataset, batch_size, **kwargs)

    def spy_trainer(model, *args, **kwargs):
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_trainer(model, *args, **kwargs)

    monkeypatch.setattr(image, "make_loader", spy_loader)
    monkeypatch.setattr(image, "Trainer", spy_trainer)
    out = tmp_path / "run"
    options = ["--lr", "0.002", "--warmup-epochs", "0.5", "--grad-clip", "2.5", "--seed", "3"]
    options += ["--weight-decay", "0.01", "--alpha", "0.05", "--ema", "0.9"]
    assert train_tiny(data, out, 1, *options, "--eval-size", "5", "--batch-size", "6") == 0
    config = json.loads((out / "config.json").read_text())
    train = config["train"]
    assert (train["epochs"], train["lr"], train["warmup_epochs"]) == (1, 0.002, 0.5)
    assert (train["grad_clip"], train["weight_decay"], train["seed"]) == (2.5, 0.01, 3)
    assert train["precision"] == "float32" and train["ema_decay"] == 0.9
    # The one epoch's average is what was selected, beside the live weights it averages.
    last = load_checkpoint(out / "last.safetensors")
    best = load_checkpoint(out / "best.safetensors").model_state
    assert all(torch.equal(best[k], v) for k, v in last.ema_state.items())
    assert not all(torch.equal(best[k], v) for k, v in last.model_state.items())
    assert config["extra"]["batch_size"] == 6 and config["extra"]["eval_size"] == 5
    assert config["extra"]["train_images"] == 24 and config["extra"]["val_size"] == 8
    model = config["model"]
    assert (model["steps"], model["alpha"], model["gradient"]) == (2, 0.05, "closed_form")
    assert loaders == [(24, 6, 3)]  # --subset images, in batches of --batch-size, seeded
    # The initial weights are drawn with --seed.
    torch.manual_seed(3)
    unset = dict.fromkeys(("exclude_self", "hopfield", "loss"))
    args = SimpleNamespace(preset="fashion-mnist", steps=2, alpha=0.05, arch="et", **unset)
    expected = image.make_model(SimpleNamespace(**vars(args), gradient="closed_form"))
    assert initial[0].keys() == expected.state_dict().keys()
    assert all(torch.equal(initial[0][k], v) for k, v in expected.state_dict().items())
    # --gradient reaches the model (autograd: the reference, too slow to train here)
    assert image.make_model(SimpleNamespace(**vars(args), gradient="autograd")).gradient == (
        "autograd"
    )


def test_best_weights_are_those_of_the_epoch_with_the_lowest_held_out_error(run, data):
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:]]
    val = [float(v["val_mse"]) for v in values]
    assert len(val) == 2 and val[0] != val[1]
    best = load_checkpoint(run / "best.safetensors")
    assert int(values[val.index(min(val))]["epoch"]) == best.meta["epoch"]
    # val_mse: the best weights on the LAST 8 training images (never trained on), fixed masks.
    model = load_model(run)
    train = image.load_split("fashion-mnist", "train", data, 28, 1)
    held_out = image.stack_images(torch.utils.data.Subset(train, range(32, 40)))
    _, mask = fixed_masks(model, 8, image.VAL_SEED)
    mse, _ = masked_mse(model, held_out, mask)
    assert mse == pytest.approx(min(val), rel=1e-5)


def test_the_demo_trains_with_its_own_settings(data, tmp_path, monkeypatch):
    tiny = {"epochs": 1, "subset": 16, "batch_size": 4, "lr": 2e-3, "warmup_epochs": 0.5}
    tiny |= {"val_size": 8, "eval_size": 8}
    monkeypatch.setattr(image, "DEMO", tiny)
    monkeypatch.setattr(image, "DEMO_MODEL", {"steps": 1})
    monkeypatch.setattr(image, "write_pictures", lambda *args: [])
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data), "--device", "cpu"]) == 0
    config = json.loads((out / "config.json").read_text())
    train, extra = config["train"], config["extra"]
    assert (train["epochs"], train["lr"], train["warmup_epochs"]) == (1, 2e-3, 0.5)
    assert extra["batch_size"] == 4 and extra["train_images"] == 16 and extra["val_size"] == 8
    assert extra["eval_size"] == 8 and extra["demo"] is True and config["model"]["steps"] == 1
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # header, 1 epoch


def test_eval_data_option_overrides_the_recorded_path(run, data, tmp_path, monkeypatch):
    monkeypatch.setattr(image, "write_pictures", lambda *args: [])
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    config = json.loads((moved / "config.json").read_text())
    config["extra"]["data"] = str(tmp_path / "gone")  # the data moved since training
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(moved), "--data", str(data), "--device", "cpu"]) == 0
    assert json.loads((moved / "eval_metrics.json").read_text())["test_images"] == 12


def test_vit_mae_arch_trains_the_baseline(data, tmp_path):
    assert train_tiny(data, tmp_path / "vit", 1, "--arch", "vit-mae") == 0
    model, config = load_model(tmp_path / "vit"), read_run_config(tmp_path / "vit")[1]
    assert config["model"]["arch"] == "vit-mae"
    assert type(model).__name__ == "ViTMaskedAutoencoder"


def test_the_spec_variants_reach_the_model_and_its_record(data, tmp_path, capsys):
    run = tmp_path / "paper"
    extra = ("--exclude-self", "--hopfield", "softmax", "--loss", "rmse")
    assert train_tiny(data, run, 1, *extra) == 0
    assert f"next: et eval {run}" in capsys.readouterr().out
    model, config = load_model(run), read_run_config(run)[1]
    assert config["model"]["exclude_self"] is True
    assert config["model"]["hopfield"] == "softmax" and config["model"]["loss"] == "rmse"
    assert model.block.exclude_self is True and model.block.hopfield.kind == "softmax"
    # rmse is the square root of the masked mse of the same prediction
    images = torch.rand(3, 1, 28, 28)
    selected, masked = model.sample_mask(3)
    prediction = model(images, masked)
    rmse = model.patch_loss(prediction, images, selected)
    model.loss_kind = "mse"
    assert torch.allclose(rmse**2, model.patch_loss(prediction, images, selected))
    plain = tmp_path / "plain"
    assert train_tiny(data, plain, 1) == 0
    defaults = read_run_config(plain)[1]["model"]
    assert (defaults["exclude_self"], defaults["hopfield"], defaults["loss"]) == (
        False,
        "relu",
        "mse",
    )


def test_complete_says_an_rgb_model_turns_each_image_rgb(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from energy_transformer.models.image import ImageEnergyTransformer

    rgb = ImageEnergyTransformer(
        image_size=8, patch_size=4, channels=3, dim=8, heads=1, head_dim=4, memories=4, steps=1,
        selected=4, masked=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    ).eval()  # fmt: skip
    monkeypatch.setattr(image, "load_model", lambda run, device="cpu", task=None: rgb)
    pixels = (np.random.default_rng(0).random((20, 12)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")  # a grey photo, for an RGB model
    out = tmp_path / "o"
    main(["complete", "rgb-run", str(tmp_path / "grey.png"), "--out", str(out), "--device", "cpu"])
    assert (
        "the model takes 8x8 RGB images: each image is converted to RGB, its shorter side"
        " resized to 8, centre-cropped\n"
    ) in capsys.readouterr().out
    assert (out / "grey_completed.png").is_file()


def test_eval_of_a_checkpoint_file_names_that_file(run, data, tmp_path, capsys):
    last = run / "last.safetensors"
    main(["eval", str(last), "--data", str(data), "--out", str(tmp_path), "--device", "cpu"])
    assert f"weights: {last}\n" in capsys.readouterr().out


def test_a_resume_may_change_how_many_test_images_et_eval_scores(data, tmp_path):
    out = tmp_path / "run"
    assert train_tiny(data, out, 1, "--eval-size", "5") == 0
    assert train_tiny(data, out, 1, "--resume", "--eval-size", "7") == 0
    assert json.loads((out / "config.json").read_text())["extra"]["eval_size"] == 7
    assert train_tiny(data, out, 1, "--resume", "--val-size", "4") == 2  # training data: no


def test_the_reconstructions_name_the_model_beside_the_interpolation(
    run, data, tmp_path, monkeypatch
):
    from energy_transformer import plots

    seen = []
    real = plots.plot_reconstructions

    def spy(masked, reconstructed, original, path, **kwargs):
        seen.append((kwargs["label"], sorted(kwargs["baselines"])))
        return real(masked, reconstructed, original, path, **kwargs)

    monkeypatch.setattr(plots, "plot_reconstructions", spy)
    main(["eval", str(run), "--data", str(data), "--out", str(tmp_path), "--device", "cpu"])
    assert seen == [("ET", ["interpolation"])]


def test_the_descent_picture_follows_the_completion_step_by_step(run, tmp_path, monkeypatch):
    from energy_transformer import plots

    drawn = {}
    monkeypatch.setattr(plots, "plot_descent", lambda *args, **kw: drawn.update(kw, args=args))
    model = load_model(run)
    images = torch.from_numpy(fake_images(10, seed=3)).float()[:, None] / 255
    mask = fixed_masks(model, 10)[1]
    image.plot_descent(
        model,
        images,
        mask,
        model.complete(images, mask, return_trajectory=True).trajectory,
        0.25,
        tmp_path / "d.png",
        rows=4,
    )
    frames, steps, originals, _ = drawn["args"]
    assert steps == [0, 1, 2] and frames.shape == (4, 3, 1, 28, 28)  # 2 steps: all of 0..T
    assert torch.equal(originals, images[:4])
    # the last column is the completion itself, the first one the MASK tokens decoded
    torch.testing.assert_close(frames[:, -1], model.complete(images[:4], mask[:4]).images)
    with torch.no_grad():
        start = model.fill(images, mask, model.embed(images, mask))[0]
    torch.testing.assert_close(frames[:, 0], start[:4])
    # the curve: the masked MSE of all 10 images at every step, the last one eval's number
    assert drawn["mse"].shape == (3,)
    assert drawn["mse"][-1].item() == pytest.approx(masked_mse(model, images, mask)[0], rel=1e-5)
    first, _ = loop_masked_mse(start, images, mask, model.patch_size)
    assert drawn["mse"][0].item() == pytest.approx(first, rel=1e-5)
    energies = model.complete(images, mask, return_trajectory=True).trajectory.energies.total
    torch.testing.assert_close(drawn["energy"], (energies - energies[0]).double().mean(1))
    assert drawn["energy"][0] == 0 and drawn["energy"][-1] < 0  # the descent goes down
    assert drawn["references"] == {"interpolation": 0.25}  # the baseline's, as given


def test_descent_columns_show_every_step_that_fits_and_spread_the_rest():
    assert image.descent_columns(12) == list(range(13))
    assert image.descent_columns(0) == [0]
    wide = image.descent_columns(100)
    assert len(wide) == 13 and wide[0] == 0 and wide[-1] == 100 and wide == sorted(set(wide))
    assert image.descent_columns(24, most=5) == [0, 6, 12, 18, 24]


def test_descent_columns_spread_by_rounding_and_never_exceed_most():
    # 100 steps over 13 columns: i * 100 / 12 rounded (8.33 -> 8, 16.67 -> 17, ...)
    assert image.descent_columns(100) == [0, 8, 17, 25, 33, 42, 50, 58, 67, 75, 83, 92, 100]
    # one step more than fits: spread, still 13 columns, first and last included
    thirteen = image.descent_columns(13)
    assert len(thirteen) == 13 and thirteen[0] == 0 and thirteen[-1] == 13
    assert image.descent_columns(5, most=3) == [0, 2, 5]  # 2.5 rounds to even; 5 / 2 * 2 = 5


def test_the_descent_picture_decodes_the_steps_it_shows_and_pools_the_error(
    run, tmp_path, monkeypatch
):
    from energy_transformer import plots

    drawn = {}
    monkeypatch.setattr(plots, "plot_descent", lambda *args, **kw: drawn.update(kw, args=args))
    model = load_model(run)
    model.steps = 14  # more steps than columns: 13 of 0..14 are shown
    images = torch.from_numpy(fake_images(6, seed=5)).float()[:, None] / 255
    mask = hide([1, 2, 4, 8, 12, 16], patches=model.patches)  # holes of unequal size
    trajectory = model.complete(images, mask, return_trajectory=True).trajectory
    image.plot_descent(model, images, mask, trajectory, 0.25, tmp_path / "d.png", rows=3)
    frames, steps, _, _ = drawn["args"]
    assert steps == image.descent_columns(14) and len(steps) == 13 and steps[-1] == 14
    with torch.no_grad():  # each column is the step it is labelled with
        for column, step in enumerate(steps):
            filled = model.fill(images, mask, trajectory.tokens[step])[0]
            torch.testing.assert_close(frames[:, column], filled[:3])
    torch.testing.assert_close(frames[:, -1], model.complete(images[:3], mask[:3]).images)
    # every step's error pools all masked pixels of the 6 images, as eval's masked MSE does
    assert drawn["mse"].shape == (15,)
    pooled, per_image = masked_mse(model, images, mask)
    assert pooled != pytest.approx(float(per_image.mean()), rel=1e-3)  # the two differ here
    assert drawn["mse"][-1].item() == pytest.approx(pooled, rel=1e-5)


def test_masked_errors_keep_the_first_completions_and_pool_any_prefix():
    interpolation = PatchInterpolation(7)
    images = torch.from_numpy(fake_images(7, seed=2)).float()[:, None] / 255
    mask = hide([1, 2, 3, 4, 5, 6, 7])
    errors = image.masked_errors(interpolation, images, mask, batch_size=3, keep=4)
    assert torch.equal(errors.kept, interpolation.complete(images[:4], mask[:4]).images)
    assert errors.pooled() == masked_mse(interpolation, images, mask, batch_size=3)[0]
    assert errors.pooled(5) == pytest.approx(masked_mse(interpolation, images[:5], mask[:5])[0])
    assert errors.pooled(5) != pytest.approx(errors.pooled(), rel=1e-3)
    assert image.masked_errors(interpolation, images, mask).kept.shape == (0, 1, 28, 28)


def test_eval_interpolates_each_test_image_once(run, data, tmp_path, monkeypatch):
    seen = []
    real = PatchInterpolation.complete

    def spy(self, images, mask):
        seen.append(len(images))
        return real(self, images, mask)

    monkeypatch.setattr(PatchInterpolation, "complete", spy)
    main(["eval", str(run), "--data", str(data), "--out", str(tmp_path), "--device", "cpu"])
    assert seen == [12]  # the 12 test images, for the metrics and every picture


def test_write_pictures_gives_each_picture_its_images_from_one_completion(
    run, tmp_path, monkeypatch
):
    from energy_transformer import plots

    seen = {}

    def spy(name):
        def record(*args, **kw):
            seen[name] = (args, kw)
            return tmp_path / f"{name}.png"

        return record

    for name in (
        "plot_reconstructions",
        "plot_energy_descent",
        "plot_memories",
        "plot_updates",
        "plot_position_similarity",
    ):
        monkeypatch.setattr(plots, name, spy(name))
    monkeypatch.setattr(image, "plot_descent", spy("plot_descent"))
    model = load_model(run)
    images = torch.from_numpy(fake_images(20, seed=4)).float()[:, None] / 255
    mask = hide([1 + i % 16 for i in range(20)], patches=model.patches)
    per_image = masked_mse(model, images, mask)[1]
    interpolation = PatchInterpolation(model.patch_size)
    errors = image.masked_errors(interpolation, images, mask, keep=image.GRID)
    image.write_pictures(model, images, mask, per_image, errors, tmp_path)
    # the grid: the first 12 images, completed with their own masks, beside the interpolation's
    (_, completed, originals, _), options = seen["plot_reconstructions"]
    assert completed.shape == (12, 1, 28, 28) and torch.equal(originals, images[:12])
    torch.testing.assert_close(completed, model.complete(images[:12], mask[:12]).images)
    baseline = interpolation.complete(images[:12], mask[:12]).images
    assert torch.equal(options["baselines"]["interpolation"], baseline)
    # the energy and the descent: all 20 images (up to 64), the energy per image
    (energies, path), options = seen["plot_energy_descent"]
    assert energies.total.shape == (model.steps + 1, 20) and options["unit"] == "images"
    _, shown, hidden, trajectory, reference, path = seen["plot_descent"][0]
    assert torch.equal(shown, images) and torch.equal(hidden, mask) and path.name == "descent.png"
    assert reference == masked_mse(interpolation, images, mask)[0]
    assert trajectory.tokens.shape[:2] == (model.steps + 1, 20)


def test_eval_scores_the_interpolation_on_every_test_image_not_the_grids_alone(run, tmp_path):
    # 20 test images: the grid shows 12, the metrics are those of all 20.
    more = write_fake_mnist(tmp_path / "data", train=8, test=20)
    main(["eval", str(run), "--data", str(more), "--out", str(tmp_path), "--device", "cpu"])
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert metrics["test_images"] == 20
    images = torch.from_numpy(fake_images(20, seed=1)).float()[:, None] / 255
    mask = fixed_masks(load_model(run), 20)[1]
    completed = PatchInterpolation(4).complete(images, mask).prediction
    expected, per_image = loop_masked_mse(completed, images, mask, 4)
    assert metrics["interpolation_masked_mse"] == pytest.approx(expected, rel=1e-5)
    grid, _ = loop_masked_mse(completed[:12], images[:12], mask[:12], 4)
    assert grid != pytest.approx(expected, rel=1e-3)  # the two differ here


def test_the_descent_pictures_baseline_is_scored_on_the_images_it_descends(
    run, tmp_path, monkeypatch
):
    # The descent follows the first 64 images: its interpolation level is theirs, not that of
    # every test image.
    from energy_transformer import plots

    for name in ("plot_reconstructions", "plot_energy_descent", "plot_memories"):
        monkeypatch.setattr(plots, name, lambda *args, **kw: tmp_path / "x.png")
    for name in ("plot_updates", "plot_position_similarity"):
        monkeypatch.setattr(plots, name, lambda *args, **kw: tmp_path / "x.png")
    seen = []
    monkeypatch.setattr(image, "plot_descent", lambda *args, **kw: seen.append(args))
    model = load_model(run)
    images = torch.from_numpy(fake_images(70, seed=4)).float()[:, None] / 255
    mask = hide([1 + i % 16 for i in range(70)], patches=model.patches)
    interpolation = PatchInterpolation(model.patch_size)
    errors = image.masked_errors(interpolation, images, mask, keep=image.GRID)
    image.write_pictures(model, images, mask, masked_mse(model, images, mask)[1], errors, tmp_path)
    ((_, shown, _, _, reference, _),) = seen
    assert len(shown) == 64
    first = masked_mse(interpolation, images[:64], mask[:64])[0]
    assert reference == pytest.approx(first, rel=1e-12)
    assert first != pytest.approx(errors.pooled(), rel=1e-3)  # the two differ here


def test_the_next_command_pastes_back_for_a_folder_with_a_space(data, tmp_path, capsys):
    import shlex

    run = tmp_path / "my run"
    assert train_tiny(data, run, 1) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("next: "))
    assert shlex.split(line.removeprefix("next: ")) == ["et", "eval", str(run)]
