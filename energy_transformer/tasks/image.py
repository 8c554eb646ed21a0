"""Masked image completion: train an Energy Transformer to fill in hidden patches of images.

Plugs into the ``et`` command line: ``et train image``, ``et eval RUN``, and the commands
``et demo``, ``et complete`` and ``et convert-official``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

from energy_transformer.data.images import (
    ImageFolder,
    load_fashion_mnist,
    load_image_file,
    load_mnist,
)
from energy_transformer.files import recorded_path, write_text_atomic
from energy_transformer.metrics import psnr
from energy_transformer.models.image import (
    LOSSES,
    TRAIN_PRESETS,
    ImageEnergyTransformer,
    MaskedImageModel,
    image_preset,
    list_presets,
    patch_mask_to_pixels,
)
from energy_transformer.models.interpolation import PatchInterpolation
from energy_transformer.models.vit_mae import ViTMaskedAutoencoder, matching_vit_config
from energy_transformer.nn.block import GRADIENTS, Trajectory
from energy_transformer.nn.checks import check_positive_int
from energy_transformer.nn.hopfield import HOPFIELD_KINDS
from energy_transformer.tasks import (
    add_ema_argument,
    command_record,
    load_model,
    preset_values,
    resume_help,
)
from energy_transformer.text import counted
from energy_transformer.train import (
    NO_PROGRESS,
    PRECISIONS,
    TrainConfig,
    Trainer,
    check_new_run,
    make_loader,
    read_run_config,
    resolve_device,
    run_weights,
)
from energy_transformer.train.checkpoint import save_checkpoint

ARCHS: dict[str, type[MaskedImageModel]] = {
    "et": ImageEnergyTransformer,
    "vit-mae": ViTMaskedAutoencoder,
}
DATASETS = ("fashion-mnist", "mnist", "folder")
PRESET_DATASET = {"fashion-mnist": "fashion-mnist", "mnist": "mnist", "imagenet": "folder"}
# Fixed masks for evaluation: the same patches are hidden in every evaluation of every model.
EVAL_SEED = 1234
VAL_SEED = 4321
# Test images in the reconstruction grid of et eval.
GRID = 12


# -- models -----------------------------------------------------------------------------------


def build_model(model_config: dict[str, Any]) -> MaskedImageModel:
    """Rebuild a model from the ``model`` section of a run's ``config.json``."""
    config = dict(model_config)
    arch = config.pop("arch", "et")
    if arch not in ARCHS:
        raise ValueError(f"unknown image model arch {arch!r}; choose one of {sorted(ARCHS)}")
    for key in ("mean", "std"):
        if key in config:
            config[key] = tuple(config[key])
    return ARCHS[arch](**config)


def model_config_of(model: MaskedImageModel) -> dict[str, Any]:
    """JSON-able ``{"arch": ..., **constructor kwargs}`` that :func:`build_model` inverts."""
    arch = next(name for name, cls in ARCHS.items() if type(model) is cls)
    return {"arch": arch, **model.config}


def unwrap(model: nn.Module) -> MaskedImageModel:
    """The bare model inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def as_float_images(images: Tensor) -> Tensor:
    """uint8 pixels (IDX files) to floats in [0, 1]; float images pass through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def masked_loss(model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
    """The trainer's loss: draw masks, call the (possibly DDP-wrapped) model, patch MSE."""
    images = as_float_images(batch[0] if isinstance(batch, (tuple, list)) else batch)
    bare = unwrap(model)
    selected, mask = bare.sample_mask(images.shape[0], device=images.device)
    loss = bare.patch_loss(model(images, mask), images, selected)
    return loss, {}


# -- data -------------------------------------------------------------------------------------


def load_split(
    dataset: str, split: str, data: Path | None, image_size: int, channels: int
) -> Dataset:
    """``(images,)`` items of a split: uint8 tensors for IDX data, floats for folders.

    For ``folder`` data, ``data`` is an ImageNet-style root with ``train/`` and ``val/``
    sub-folders, each holding one sub-folder per class.
    """
    if dataset in ("fashion-mnist", "mnist"):
        loader = load_fashion_mnist if dataset == "fashion-mnist" else load_mnist
        images, _ = loader(split, data)
        return TensorDataset(images)
    if dataset == "folder":
        if data is None:
            raise ValueError("--dataset folder needs --data ROOT (with train/ and val/ folders)")
        folder = Path(data) / ("train" if split == "train" else "val")
        return ImageFolder(folder, image_size, channels)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def stack_images(dataset: Dataset, limit: int | None = None) -> Tensor:
    """The first ``limit`` images of a dataset as one float tensor ``(n, C, H, W)``."""
    if limit is not None:  # images[:-5] would quietly drop the last five
        check_positive_int("limit (images to score)", limit)
    if isinstance(dataset, TensorDataset):
        images = dataset.tensors[0]
        return as_float_images(images[:limit] if limit is not None else images)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return as_float_images(torch.stack([dataset[i][0] for i in range(n)]))


def fixed_masks(model: MaskedImageModel, n: int, seed: int = EVAL_SEED) -> tuple[Tensor, Tensor]:
    """``(selected, masked)`` for ``n`` images, the same for every model with this masking."""
    return model.sample_mask(n, torch.Generator().manual_seed(seed))


@torch.no_grad()
def masked_mse(
    model: Any, images: Tensor, mask: Tensor, batch_size: int = 500, device: Any = "cpu"
) -> tuple[float, Tensor]:
    """Mean squared error in pixel units ([0, 1]) over the masked pixels.

    Each image's MSE is the mean of the squared errors of its ``model.complete(...).prediction``
    over the pixels of its masked patches only (the visible ones are given to the model).

    Returns:
        The MSE over all masked pixels of all images (pooled: each masked pixel weighs the same),
        and each image's own ``(n,)``.

    Raises:
        ValueError: when ``mask`` has not one row per image, or hides no patch of some image
            (its masked MSE would be 0 / 0).
    """
    errors = masked_errors(model, images, mask, batch_size, device)
    return errors.pooled(), (errors.total / errors.count).float()


class MaskedErrors(NamedTuple):
    """A completion's errors: each image's squared error summed over its masked pixels and the
    number of those pixels (``(n,)`` float64), and the completed first images (``kept``)."""

    total: Tensor
    count: Tensor
    kept: Tensor

    def pooled(self, n: int | None = None) -> float:
        """The MSE over all masked pixels of the first ``n`` images (of all by default)."""
        return float(self.total[:n].sum() / self.count[:n].sum())


@torch.no_grad()
def masked_errors(
    model: Any,
    images: Tensor,
    mask: Tensor,
    batch_size: int = 500,
    device: Any = "cpu",
    keep: int = 0,
) -> MaskedErrors:
    """:func:`masked_mse`'s errors, image by image, keeping the completions of the first
    ``keep`` images (on the CPU): one completion pass serves the metrics and the pictures."""
    if mask.dim() != 2 or mask.shape[0] != images.shape[0]:
        raise ValueError(
            f"mask must have one row of patch flags per image, shape ({images.shape[0]}, patches),"
            f" got {tuple(mask.shape)}"
        )
    empty = (~mask.bool().any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"the mask hides no patch of image {int(empty[0])}"
            f" ({counted(len(empty), 'such image')}): the masked-pixel MSE is undefined"
        )
    # images[:0]: keep=0 keeps an empty tensor, on the CPU as the kept ones are.
    sums, counts, kept = [], [], [images[:0].cpu()]
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        m = mask[start : start + batch_size].to(device)
        completion = model.complete(x, m)
        total, count = _masked_error(completion.prediction, x, m, model.patch_size)
        sums.append(total)
        counts.append(count)
        if start < keep:
            kept.append(completion.images[: keep - start].cpu())
    return MaskedErrors(torch.cat(sums), torch.cat(counts), torch.cat(kept))


def _masked_error(
    prediction: Tensor, images: Tensor, mask: Tensor, patch_size: int
) -> tuple[Tensor, Tensor]:
    """Each image's sum of squared errors over its masked pixels and their count, float64."""
    hidden = patch_mask_to_pixels(mask, patch_size, images.shape[1]).to(images.dtype)
    err = (prediction - images).pow(2) * hidden
    return err.sum(dim=(1, 2, 3)).double().cpu(), hidden.sum(dim=(1, 2, 3)).double().cpu()


# -- et train image ---------------------------------------------------------------------------


# The presets whose training settings the help lists (mnist trains as fashion-mnist).
PRESETS_SHOWN = ("imagenet", "fashion-mnist")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="fashion-mnist",
        choices=list_presets(),
        help="model size and masking (imagenet = the paper's 4.87 M-parameter model)",
    )
    parser.add_argument(
        "--arch",
        default="et",
        choices=sorted(ARCHS),
        help="et = Energy Transformer; vit-mae = the ViT baseline with `steps` separate layers",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="default: the preset's (fashion-mnist, mnist, or folder for imagenet)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder holding fashion-mnist/ or mnist/ (default $ET_DATA, else the cache),"
        " or the train/ + val/ root of a folder dataset",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/image"), help="run folder")

    def preset_default(key: str) -> str:
        return f" ({preset_values(TRAIN_PRESETS, key, PRESETS_SHOWN)})"

    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the training images" + preset_default("epochs"),
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="global batch size" + preset_default("batch_size"),
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate, AdamW" + preset_default("lr")
    )
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="linear warm-up, then cosine decay" + preset_default("warmup_epochs"),
    )
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm")
    add_ema_argument(parser)
    parser.add_argument(
        "--gradient",
        default="closed_form",
        choices=GRADIENTS,
        help="how each descent step gets dE/dg: closed form (fast) or autograd (reference)",
    )
    parser.add_argument("--steps", type=int, default=None, help="descent steps T (preset: 12)")
    parser.add_argument("--alpha", type=float, default=None, help="step size (preset: 0.1)")
    parser.add_argument(
        "--exclude-self",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a token does not attend to itself: the paper's choice (preset: allowed, as the"
        " released ImageNet weights)",
    )
    parser.add_argument(
        "--hopfield",
        choices=HOPFIELD_KINDS,
        default=None,
        help="Hopfield energy: relu (the paper's, preset) or softmax (dense associative memory)",
    )
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default=None,
        help="over the selected patches' pixels: mse (preset) or rmse (its square root)",
    )
    parser.add_argument("--subset", type=int, default=None, help="train on the first N images")
    parser.add_argument(
        "--val-size",
        type=int,
        default=1000,
        help="training images held out to pick the best epoch (0: keep the last epoch)",
    )
    parser.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="test images `et eval` scores (default: the whole test split)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, order, masks")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16: training steps under bfloat16 autocast (fast on recent GPUs); default"
        " float32, or a resumed run's own",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=resume_help("the run in OUT (last.safetensors)") + ": give only what changes,"
        " e.g. a larger --epochs",
    )
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def make_model(args: argparse.Namespace) -> MaskedImageModel:
    """The model that ``et train image`` args describe."""
    config = image_preset(args.preset)
    for key in ("steps", "alpha", "exclude_self", "hopfield", "loss"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.arch == "vit-mae":
        energy_only = {
            "--alpha": args.alpha is not None,
            "--gradient": args.gradient != "closed_form",
            "--exclude-self": args.exclude_self is not None,
            "--hopfield": args.hopfield is not None,
        }
        if any(energy_only.values()):
            given = ", ".join(name for name, used in energy_only.items() if used)
            raise ValueError(f"{given}: the energy descent's options, not for vit-mae")
        return ViTMaskedAutoencoder(**matching_vit_config(config))
    return ImageEnergyTransformer(**config, gradient=args.gradient)


def apply_training_preset(args: argparse.Namespace) -> None:
    """Options left unset take the run's own settings when it is resumed (so that it continues
    as it started), else the preset's (:data:`TRAIN_PRESETS`; float32 precision)."""
    saved: dict[str, Any] = {}
    if args.resume and (Path(args.out) / "config.json").is_file():
        config = read_run_config(args.out)[1]
        saved = {**config.get("train", {}), "batch_size": config.get("extra", {}).get("batch_size")}
    for key, value in {**TRAIN_PRESETS[args.preset], "precision": "float32"}.items():
        if getattr(args, key) is None:
            setattr(args, key, value if saved.get(key) is None else saved[key])


def train(args: argparse.Namespace) -> Path:
    """``et train image``: train, keep the best epoch on held-out images, save the run."""
    check_new_run(args.out, args.resume, task="image")
    apply_training_preset(args)
    if args.eval_size is not None:
        check_positive_int("--eval-size", args.eval_size)
    torch.manual_seed(args.seed)
    model = make_model(args)
    dataset = args.dataset or PRESET_DATASET[args.preset]
    data = load_split(dataset, "train", args.data, model.image_size, model.channels)
    n = len(data)
    if args.val_size < 0 or args.val_size >= n:
        raise ValueError(f"--val-size must be in [0, {n - 1}], got {args.val_size}")
    # Held-out images are the last ones, so --subset never overlaps them.
    train_indices = list(range(n - args.val_size))
    if args.subset is not None:
        if args.subset < 1:
            raise ValueError(f"--subset must be >= 1, got {args.subset}")
        train_indices = train_indices[: args.subset]
    loader = make_loader(
        Subset(data, train_indices),
        args.batch_size,
        shuffle=True,
        seed=args.seed,
        device=args.device,
    )
    config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        grad_clip=args.grad_clip,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        precision=args.precision,
        ema_decay=args.ema,
    )
    extra = {
        "preset": args.preset,
        "dataset": dataset,
        "data": recorded_path(args.data),
        "train_images": len(train_indices),
        "val_size": args.val_size,
        "eval_size": args.eval_size,
        "batch_size": args.batch_size,
    }
    if getattr(args, "demo", False):
        extra["demo"] = True
    trainer = Trainer(
        model,
        masked_loss,
        config,
        run_dir=args.out,
        task="image",
        model_config=model_config_of(model),
        extra_config=extra,
        may_change=("eval_size",),  # read by et eval only
        command=command_record(args),
    )
    evaluate = None
    if args.val_size:
        val_images = stack_images(Subset(data, range(n - args.val_size, n)))
        _, val_mask = fixed_masks(model, len(val_images), VAL_SEED)

        def evaluate(m: nn.Module) -> dict[str, float]:
            mse, _ = masked_mse(unwrap(m), val_images, val_mask, device=trainer.device)
            return {"val_mse": mse, "val_psnr": psnr(mse)}

    start = time.perf_counter()
    result = trainer.fit(
        loader,
        evaluate=evaluate,
        select="val_mse" if evaluate else None,
        mode="min",
        resume=args.resume,
    )
    if trainer.is_main:
        minutes = (time.perf_counter() - start) / 60
        best = f" (best epoch {result.best_epoch})" if result.best_epoch else ""
        print(f"trained in {minutes:.1f} min{best}; run saved to {args.out}")
        if not getattr(args, "demo", False):  # et demo evaluates it next itself
            print(f"next: et eval {shlex.quote(str(args.out))}")  # pastes back, spaces too
    return Path(args.out)


# -- et eval ----------------------------------------------------------------------------------


def evaluate(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``et eval RUN``: test-set masked-patch MSE and PSNR with fixed masks, and pictures."""
    device = resolve_device(getattr(args, "device", "auto"))
    model = load_model(run_dir, device, task="image")
    config = read_run_config(run_dir)[1]
    extra = config.get("extra", {})
    out = Path(args.out) if getattr(args, "out", None) else Path(run_dir)
    if out.is_file():  # RUN was a checkpoint file: write beside it
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    data_root = getattr(args, "data", None) or extra.get("data")
    dataset = extra.get("dataset", "fashion-mnist")
    limit = getattr(args, "limit", None) or extra.get("eval_size")
    test = load_split(
        dataset, "test", Path(data_root) if data_root else None, model.image_size, model.channels
    )
    images = stack_images(test, limit)
    _, mask = fixed_masks(model, len(images))

    start = time.perf_counter()
    mse, per_image = masked_mse(model, images, mask, device=device)
    seconds = time.perf_counter() - start
    # The baseline, interpolated once: its MSE here, and the pictures' images and MSE.
    interpolation = masked_errors(PatchInterpolation(model.patch_size), images, mask, keep=GRID)
    interp_mse = interpolation.pooled()
    metrics = {
        "test_images": len(images),
        "masked_patches_per_image": int(mask[0].sum()),
        "patches_per_image": model.patches,
        "mask_seed": EVAL_SEED,
        "masked_mse": mse,
        "masked_psnr": psnr(mse),
        "interpolation_masked_mse": interp_mse,
        "interpolation_masked_psnr": psnr(interp_mse),
        "parameters": sum(p.numel() for p in model.parameters()),
        "eval_seconds": seconds,
    }
    (out / "eval_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table = metrics_table(metrics, config)
    (out / "eval_metrics.md").write_text(table)
    pictures = write_pictures(model, images, mask, per_image, interpolation, out)
    print(table)
    print(f"weights: {run_weights(run_dir)}")
    print(f"metrics: {out / 'eval_metrics.json'}")
    print("pictures: " + ", ".join(str(p) for p in pictures))
    return metrics


# Each arch's name in tables and its short name in pictures.
ARCH_NAMES = {"et": ("Energy Transformer", "ET"), "vit-mae": ("ViT masked autoencoder", "ViT-MAE")}


def metrics_table(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    name = ARCH_NAMES[config["model"].get("arch", "et")][0]
    rows = [
        ("model", "masked-patch MSE", "PSNR (dB)", "parameters"),
        (
            name,
            f"{metrics['masked_mse']:.5f}",
            f"{metrics['masked_psnr']:.2f}",
            f"{metrics['parameters']:,}",
        ),
        (
            "interpolation (harmonic)",
            f"{metrics['interpolation_masked_mse']:.5f}",
            f"{metrics['interpolation_masked_psnr']:.2f}",
            "0",
        ),
    ]
    lines = [
        f"{counted(metrics['test_images'], 'test image')}, {metrics['masked_patches_per_image']} of"
        f" {metrics['patches_per_image']} patches masked (seed {metrics['mask_seed']});"
        " MSE over masked pixels in [0, 1] units.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join("---" for _ in rows[0]) + "|",
        *("| " + " | ".join(r) + " |" for r in rows[1:]),
    ]
    return "\n".join(lines) + "\n"


def write_pictures(
    model: MaskedImageModel,
    images: Tensor,
    mask: Tensor,
    per_image: Tensor,
    interpolation: MaskedErrors,
    out: Path,
) -> list[Path]:
    """Reconstruction grid; for ET also the energy descent, the completion along the descent
    (``descent.png``), memories, updates and positions. ``interpolation``: the baseline's
    errors on ``images``, keeping its completion of the grid's images."""
    from energy_transformer import plots

    device = next(model.parameters()).device
    n = min(GRID, len(images))
    energy_model = isinstance(model, ImageEnergyTransformer)
    # One completion serves every picture: ET's 64 images carry the trajectory of the descent.
    batch = images[: 64 if energy_model else n].to(device)
    batch_mask = mask[: len(batch)].to(device)
    options = {"return_trajectory": True} if energy_model else {}
    completion = model.complete(batch, batch_mask, **options)
    x, m = batch[:n].cpu(), batch_mask[:n].cpu()
    paths = [
        plots.plot_reconstructions(
            plots.masked_view(x, m, model.patch_size),
            completion.images[:n].cpu(),
            x,
            out / "reconstructions.png",
            title=f"{int(m[0].sum())} of {model.patches} patches masked"
            " (numbers: the model's masked-pixel MSE)",
            errors=per_image[:n],
            baselines={"interpolation": interpolation.kept[:n]},
            label=ARCH_NAMES[model_config_of(model)["arch"]][1],
        )
    ]
    if not energy_model:
        return paths
    trajectory = completion.trajectory
    paths.append(
        plots.plot_energy_descent(
            trajectory.energies,
            out / "energy.png",
            title=f"Energy descent over {counted(model.steps, 'step')} (alpha = {model.alpha}),"
            f" {counted(len(batch), 'masked test image')}",
            unit="images",
        )
    )
    paths.append(
        plot_descent(
            model,
            batch,
            batch_mask,
            trajectory,
            interpolation.pooled(len(batch)),
            out / "descent.png",
        )
    )
    xi_patches = model.memory_patches()
    order = xi_patches.flatten(1).norm(dim=1).argsort(descending=True)[:144]
    paths.append(
        plots.plot_memories(
            xi_patches[order].cpu(),
            out / "memories.png",
            title=f"Hopfield memories through the decoder (144 of {len(xi_patches)}, by norm)",
        )
    )
    steps = sorted({0, 1, 2, model.steps // 2, model.steps - 1} & set(range(model.steps)))
    if steps:
        tokens = trajectory.tokens[steps, 0]  # (len(steps), N + 1, D) of the first image
        updates = model.module_updates(tokens)
        states = model.denormalize(model.unpatchify(model.decode(tokens)))
        paths.append(
            plots.plot_updates(
                {k: v.cpu() for k, v in updates.items()},
                steps,
                out / "updates.png",
                title="Each module's update x(t) \u2192 x(t + 1), decoded to pixels"
                " (red: brighter, blue: darker)",
                states=states.cpu(),
            )
        )
    paths.append(
        plots.plot_position_similarity(
            model.pos_embed[1:].detach().cpu(),
            model.grid,
            out / "positions.png",
            title="Positional embeddings:\ncosine similarity of each patch with every other",
        )
    )
    return paths


def descent_columns(steps: int, most: int = 13) -> list[int]:
    """The steps a picture shows: every one of ``0..steps`` when they fit, else ``most`` spread
    evenly, first and last included."""
    if steps + 1 <= most:
        return list(range(steps + 1))
    return sorted({round(i * steps / (most - 1)) for i in range(most)})


@torch.no_grad()
def plot_descent(
    model: ImageEnergyTransformer,
    images: Tensor,
    mask: Tensor,
    trajectory: Trajectory,
    interpolation: float,
    path: Path,
    rows: int = 6,
) -> Path:
    """``descent.png``: the first ``rows`` images completed from the tokens of each step, and the
    masked-pixel MSE and the energy of all ``images`` at every step, beside ``interpolation``
    (the baseline's masked-pixel MSE on the same images)."""
    from energy_transformer import plots

    errors, frames = [], []
    for tokens in trajectory.tokens:  # (batch, N + 1, dim) at steps 0..T
        filled, prediction = model.fill(images, mask, tokens)
        total, count = _masked_error(prediction, images, mask, model.patch_size)
        errors.append(total.sum() / count.sum())
        frames.append(filled[:rows].cpu())
    shown = descent_columns(model.steps)
    energy = trajectory.energies.total.double()
    return plots.plot_descent(
        torch.stack([frames[t] for t in shown], dim=1),
        shown,
        images[:rows].cpu(),
        path,
        title=f"Completion along the descent (alpha = {model.alpha}); curves: mean over"
        f" {counted(len(images), 'masked test image')}",
        mse=torch.stack(errors),
        energy=(energy - energy[:1]).mean(dim=1).cpu(),
        references={"interpolation": interpolation},
        masked=plots.masked_view(images[:rows].cpu(), mask[:rows].cpu(), model.patch_size),
    )


# -- et demo / et complete / et convert-official -----------------------------------------------


# 8,000 image passes: ~3 min on 2 free CPU cores (~25 img/s was measured on
# 2 cores shared with other jobs). Enough to see ET work, not to beat interpolation.
DEMO = {
    "epochs": 2,
    "subset": 4000,
    "batch_size": 64,
    "lr": 3e-3,
    "warmup_epochs": 0.3,
    "val_size": 300,
    "eval_size": 1000,
}
# Model overrides of the demo (none: the fashion-mnist preset as is).
DEMO_MODEL: dict[str, Any] = {}


def demo(args: argparse.Namespace) -> None:
    """``et demo``: train the fashion-mnist preset briefly, evaluate, write pictures."""
    out = Path(args.out)
    resolve_device(args.device)  # a bad option must fail before anything is deleted
    if (out / "config.json").is_file():
        # Only a run marked as the demo's is started over: a user's run trained with the same
        # sizes is theirs, and is never deleted.
        if not read_run_config(out)[1].get("extra", {}).get("demo"):
            raise FileExistsError(
                f"{out} holds a run that et demo did not make; choose another --out"
            )
        shutil.rmtree(out)  # a previous demo run: start over
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a run folder; choose another --out")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    train_args = parser.parse_args(
        [
            "--preset",
            "fashion-mnist",
            "--out",
            str(out),
            "--epochs",
            str(DEMO["epochs"]),
            "--subset",
            str(DEMO["subset"]),
            "--batch-size",
            str(DEMO["batch_size"]),
            "--lr",
            str(DEMO["lr"]),
            "--warmup-epochs",
            str(DEMO["warmup_epochs"]),
            "--val-size",
            str(DEMO["val_size"]),
            "--eval-size",
            str(DEMO["eval_size"]),
            "--device",
            args.device,
            *(["--data", str(args.data)] if args.data else []),
            *(["--steps", str(DEMO_MODEL["steps"])] if "steps" in DEMO_MODEL else []),
        ]
    )
    print(
        f"et demo: training the fashion-mnist preset on {DEMO['subset']} images for"
        f" {DEMO['epochs']} epochs, then scoring {DEMO['eval_size']} test images"
    )
    train_args.demo = True  # recorded in config.json: the next et demo may start it over
    start = time.perf_counter()
    train(train_args)
    evaluate(out, argparse.Namespace(out=out, data=args.data, device=args.device))
    print(f"demo done in {(time.perf_counter() - start) / 60:.1f} min; everything is in {out}/")


def _completion_targets(images: list[Path], out: Path) -> list[Path]:
    """``out/STEM_completed.png`` per image; a name already taken gets ``-2``, ``-3`` ... so
    that images of one name from different folders do not overwrite each other's picture."""
    used: set[Path] = set()
    targets = []
    for path in images:
        stem, n = Path(path).stem, 1
        target = out / f"{stem}_completed.png"
        while target in used:
            n += 1
            target = out / f"{stem}-{n}_completed.png"
        used.add(target)
        targets.append(target)
    return targets


def complete(args: argparse.Namespace) -> None:
    """``et complete CHECKPOINT IMAGE...``: hide patches of each image and fill them in."""
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device, task="image")
    from energy_transformer import plots

    masked = model.masked if args.masked is None else args.masked
    if not 0 <= masked <= model.patches:
        raise ValueError(f"--masked must be in [0, {model.patches}], got {masked}")
    out = Path(args.out)
    generator = torch.Generator().manual_seed(args.seed)
    kwargs = {}
    if isinstance(model, ImageEnergyTransformer):
        kwargs = {"steps": args.steps, "alpha": args.alpha}
    elif args.steps is not None or args.alpha is not None:
        raise ValueError("--steps and --alpha are the energy descent's: this run is not an ET")
    colour = "grey" if model.channels == 1 else "RGB"
    print(
        f"the model takes {model.image_size}x{model.image_size} {colour} images: each image is"
        f" converted to {colour}, its shorter side resized to {model.image_size}, centre-cropped"
    )
    for path, target in zip(args.images, _completion_targets(args.images, out), strict=True):
        image = load_image_file(path, model.image_size, model.channels)[None].to(device)
        ranks = torch.rand(model.patches, generator=generator).argsort().argsort()
        mask = (ranks < masked)[None].to(device)
        result = model.complete(image, mask, **kwargs)
        plots.plot_completion(
            plots.masked_view(image.cpu(), mask.cpu(), model.patch_size)[0],
            result.images[0].cpu(),
            image[0].cpu(),
            target,
            title=f"{Path(path).name}: {masked} of {model.patches} patches masked",
        )
        print(target)


def convert_official(args: argparse.Namespace) -> None:
    """``et convert-official NPZ OUT``: the released .npz layout to a run folder of ours."""
    from energy_transformer.official import from_official_npz

    check_new_run(args.out, resume=False, remedy="convert into another folder (or delete it)")
    model = from_official_npz(
        args.npz,
        steps=args.steps,
        alpha=args.alpha,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "task": "image",
        "model": model_config_of(model),
        "train": {},
        "extra": {"source": str(args.npz), "dataset": args.dataset, "data": None},
    }
    write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    save_checkpoint(out / "last.safetensors", model.state_dict(), meta={"source": str(args.npz)})
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    print(
        f"converted {args.npz}: {c['image_size']} px, {c['patch_size']} px patches,"
        f" D {c['dim']}, H {c['heads']}, Y {c['head_dim']}, K {c['memories']}; {n:,} parameters"
    )
    print(f"wrote {out / 'config.json'} and {out / 'last.safetensors'}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train a small Energy Transformer on Fashion-MNIST and show what it does",
        description="Train the fashion-mnist preset for a few minutes on the CPU, evaluate it"
        " on test images with fixed masks, and write pictures and a metrics table.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where everything goes")
    p.add_argument("--data", type=Path, default=None, help="folder holding fashion-mnist/")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.set_defaults(func=demo)

    p = subparsers.add_parser(
        "complete",
        help="fill in hidden patches of your own images with a trained model",
        description="Hide random patches of each IMAGE, let the model fill them in, and write"
        " IMAGE_completed.png (masked | reconstructed | original side by side).",
    )
    p.add_argument("checkpoint", type=Path, help="run folder or checkpoint file of et train")
    p.add_argument("images", type=Path, nargs="+", help="image files (png, jpg, ...)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the pictures")
    p.add_argument("--masked", type=int, default=None, help="patches to hide (default: model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random patch choice")
    p.add_argument("--steps", type=int, default=None, help="descent steps (default: model's)")
    p.add_argument("--alpha", type=float, default=None, help="step size (default: model's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.set_defaults(func=complete)

    p = subparsers.add_parser(
        "convert-official",
        help="convert the authors' released ImageNet .npz weights to a run folder",
        description="Read an .npz in the authors' released layout (Wq, Wk, Xi, Wenc, Benc,"
        " Wdec, Bdec, LNORM_gamma, LNORM_bias, CLS_token, MASK_token, POS_embed), infer the"
        " model size from the shapes, and write OUT/config.json + OUT/last.safetensors for"
        " `et eval` and `et complete`. The released weights allow self-attention.",
    )
    p.add_argument("npz", type=Path, help="the released .npz file")
    p.add_argument("out", type=Path, help="run folder to write")
    p.add_argument("--steps", type=int, default=12, help="descent steps T")
    p.add_argument("--alpha", type=float, default=0.1, help="step size")
    statistics = "(default: ImageNet's for 3 channels; needed for any other number)"
    p.add_argument(
        "--mean", type=float, nargs="+", default=None, help=f"pixel mean per channel {statistics}"
    )
    p.add_argument(
        "--std", type=float, nargs="+", default=None, help=f"pixel std per channel {statistics}"
    )
    p.add_argument(
        "--dataset", default="folder", choices=DATASETS, help="what `et eval` should score on"
    )
    p.set_defaults(func=convert_official)


__all__ = [
    "ARCHS",
    "add_commands",
    "add_train_arguments",
    "build_model",
    "evaluate",
    "masked_loss",
    "masked_mse",
    "train",
]
