"""Masked image completion on Fashion-MNIST: ET vs a ViT masked autoencoder vs interpolation.

All learned models are trained in the same harness (the library's Trainer, same data, same
epochs, same optimiser and schedule) and scored on the test set with the same fixed masks
(seed ``EVAL_SEED``). Also measures training throughput of ET with closed-form vs autograd
gradients in the same process.

    nice python benchmarks/bench_image.py --time-budget 600 --out runs/bench_image.md

``--time-budget`` (seconds of training for ET and ViT together) picks the epochs (and, when even
one epoch of the full training set does not fit, a subset) from a throughput measurement, so
both models get exactly the same number of steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from energy_transformer.metrics import psnr
from energy_transformer.models.image import ImageEnergyTransformer, MaskedImageModel, image_preset
from energy_transformer.models.interpolation import PatchInterpolation
from energy_transformer.models.vit_mae import ViTMaskedAutoencoder, matching_vit_config
from energy_transformer.tasks.image import (
    EVAL_SEED,
    as_float_images,
    fixed_masks,
    load_split,
    masked_loss,
    masked_mse,
    stack_images,
)
from energy_transformer.text import counted
from energy_transformer.train import TrainConfig, Trainer, make_loader, resolve_device


def build(arch: str, preset: str, gradient: str = "closed_form") -> MaskedImageModel:
    config = image_preset(preset)
    if arch == "vit-mae":
        return ViTMaskedAutoencoder(**matching_vit_config(config))
    return ImageEnergyTransformer(**config, gradient=gradient)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(
    model: MaskedImageModel, images: torch.Tensor, batch_size: int, batches: int, device
) -> float:
    """Training images per second (forward, backward, AdamW step), after one warm-up step."""
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = as_float_images(images[:batch_size]).to(device)

    def step() -> None:
        loss, _ = masked_loss(model, (x,))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        step()
    _sync(device)
    return batches * batch_size / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    train_set = load_split("fashion-mnist", "train", args.data, 28, 1)
    test_images = stack_images(load_split("fashion-mnist", "test", args.data, 28, 1))
    test_images = test_images[: args.test_size]
    all_train = train_set.tensors[0]

    # Throughput, both gradient paths of ET and the ViT, on the same batch.
    speed = {
        "et (closed form)": train_throughput(
            build("et", args.preset, "closed_form"),
            all_train,
            args.batch_size,
            args.speed_batches,
            device,
        ),
        "et (autograd)": train_throughput(
            build("et", args.preset, "autograd"),
            all_train,
            args.batch_size,
            args.speed_batches,
            device,
        ),
        "vit-mae": train_throughput(
            build("vit-mae", args.preset), all_train, args.batch_size, args.speed_batches, device
        ),
    }
    if args.subset is not None and args.subset < 1:
        raise SystemExit(f"bench_image.py: --subset must be >= 1, got {args.subset}")
    subset, epochs = args.subset or len(all_train), args.epochs
    if args.time_budget:
        per_image = 1 / speed["et (closed form)"] + 1 / speed["vit-mae"]
        images_in_budget = args.time_budget / per_image
        subset = min(subset, max(args.batch_size, int(images_in_budget)))
        epochs = max(1, math.floor(images_in_budget / subset))
    train_subset = Subset(train_set, range(subset))

    rows = []
    for arch in ("et", "vit-mae"):
        torch.manual_seed(args.seed)
        model = build(arch, args.preset)
        loader = make_loader(train_subset, args.batch_size, seed=args.seed, device=args.device)
        config = TrainConfig(
            epochs=epochs,
            lr=args.lr,
            warmup_epochs=min(1.0, 0.1 * epochs),
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            log_every=5,
        )
        trainer = Trainer(model, masked_loss, config, run_dir=None, task="image")
        start = time.perf_counter()
        result = trainer.fit(loader)
        train_seconds = time.perf_counter() - start
        model = result.model.eval()
        _, mask = fixed_masks(model, len(test_images))
        start = time.perf_counter()
        mse, _ = masked_mse(model, test_images, mask, device=device)
        rows.append(
            {
                "model": "Energy Transformer" if arch == "et" else "ViT masked autoencoder",
                "parameters": sum(p.numel() for p in model.parameters()),
                "masked_mse": mse,
                "psnr": psnr(mse),
                "train_seconds": train_seconds,
                "eval_seconds": time.perf_counter() - start,
                "final_train_loss": result.history[-1]["train_loss"],
            }
        )
    start = time.perf_counter()
    reference = build("et", args.preset)
    _, mask = fixed_masks(reference, len(test_images))
    interp = PatchInterpolation(reference.patch_size)
    mse, _ = masked_mse(interp, test_images, mask, device="cpu")
    rows.append(
        {
            "model": "interpolation (harmonic, non-learned)",
            "parameters": 0,
            "masked_mse": mse,
            "psnr": psnr(mse),
            "train_seconds": 0.0,
            "eval_seconds": time.perf_counter() - start,
            "final_train_loss": float("nan"),
        }
    )
    return {
        "rows": rows,
        "speed": speed,
        "epochs": epochs,
        "train_images": subset,
        "test_images": len(test_images),
        "masked": reference.masked,
        "patches": reference.patches,
        "device": str(device),
    }


def markdown(results: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    rows = results["rows"]
    et, vit = rows[0], rows[1]
    ratio = et["masked_mse"] / vit["masked_mse"]
    # "Far ahead" of interpolation: at least 20% lower masked MSE.
    met = ratio <= 1.10 and et["masked_mse"] <= 0.8 * rows[2]["masked_mse"]
    machine = args.machine or f"{platform.processor() or platform.machine()}, {results['device']}"
    lines = [
        "## Masked image completion (Fashion-MNIST)",
        "",
        f"- machine: {machine}; torch {torch.__version__}, {counted(args.threads, 'thread')}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command: `{command}`",
        f"- protocol: preset `{args.preset}`; both learned models trained by the library's"
        f" Trainer on the first {results['train_images']:,} training images for"
        f" {results['epochs']} epoch(s), batch {args.batch_size}, AdamW lr {args.lr}"
        " (warm-up + cosine, clip 1.0), seed"
        f" {args.seed}; scored on {results['test_images']:,} test images with fixed masks"
        f" (seed {EVAL_SEED}): {results['masked']} of {results['patches']} patches masked per"
        " image; MSE over the masked pixels in [0, 1] units, PSNR = 10 log10(1 / MSE).",
        "",
        "| model | parameters | masked-patch MSE | PSNR (dB) | train time (s) | eval time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['masked_mse']:.5f} | {r['psnr']:.2f} |"
            f" {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |"
        )
    lines += [
        "",
        "Training throughput, same process, same batch:",
        "",
        "| model | images/s |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in results["speed"].items()),
        "",
        f"ET / ViT masked MSE = {ratio:.3f} (goal: <= 1.10) with"
        f" {et['parameters'] / vit['parameters']:.3f} of its parameters"
        f" (1/T = {1 / image_preset(args.preset)['steps']:.3f});"
        f" ET / interpolation MSE = {et['masked_mse'] / rows[2]['masked_mse']:.3f}."
        " Goal (ET within 10% of ViT, and at least 20% below interpolation):"
        f" {'met' if met else 'NOT met'} in this run.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--data", type=Path, default=None, help="folder holding fashion-mnist/")
    p.add_argument("--epochs", type=int, default=1, help="used when --time-budget is 0")
    p.add_argument("--subset", type=int, default=None, help="first N training images")
    p.add_argument("--time-budget", type=float, default=0.0, help="training seconds, both models")
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--speed-batches", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--machine", default=None, help="machine description for the table")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--json", type=Path, default=None, help="write raw results here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = "python benchmarks/bench_image.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    results = run(args)
    table = markdown(results, args, command)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    if args.json is not None:
        args.json.write_text(json.dumps({**results, "table": table}, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
