"""The authors' released ImageNet checkpoint layout (spec §2.1): read it into our model, write it.

The released ``.npz`` holds (JAX/flax conventions: a dense kernel is ``(in, out)``)::

    Wq, Wk        (H, Y, D)     query / key projections               -> block.attention.wq / wk
    Xi            (D, K)        Hopfield memories, one per column      -> block.hopfield.xi = Xi^T
    Wenc, Benc    (P, D), (D,)  patch encoder, P = C * p * p           -> encoder.weight = Wenc^T
    Wdec, Bdec    (D, P), (P,)  patch decoder                          -> decoder.weight = Wdec^T
    LNORM_gamma   ()            the energy layer norm's scalar gamma   -> log_gamma = log(gamma)
    LNORM_bias    (D,)          its bias delta                         -> block.norm.delta
    CLS_token     (D,)          (leading singleton axes allowed)
    MASK_token    (D,)
    POS_embed     (N + 1, D)    CLS first, then the patches row by row

Patches are flattened channel first (``C x p x p``), as :meth:`MaskedImageModel.patchify` does.
The configuration is inferred from the shapes: square images of ``sqrt(N)`` patches per side;
``P = C p^2`` with ``C = 3`` when ``P / 3`` is a perfect square, else ``C = 1`` (no ``P`` fits
both). The released weights were trained WITH self-attention (a token may attend to itself), so
the model is built with ``exclude_self=False``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from energy_transformer.files import read_npz
from energy_transformer.models.image import IMAGENET_MEAN, IMAGENET_STD, ImageEnergyTransformer
from energy_transformer.text import counted

OFFICIAL_KEYS = (
    "Wq",
    "Wk",
    "Xi",
    "Wenc",
    "Benc",
    "Wdec",
    "Bdec",
    "LNORM_gamma",
    "LNORM_bias",
    "CLS_token",
    "MASK_token",
    "POS_embed",
)
# The paper's masking: 100 of 196 patches in the loss, 90 of them masked.
_SELECTED_RATIO, _MASKED_RATIO = 100 / 196, 90 / 196


class OfficialFormatError(ValueError):
    """An ``.npz`` file does not follow the released checkpoint layout."""


def _squeeze_vector(name: str, array: np.ndarray, dim: int) -> np.ndarray:
    if array.size != dim or any(s not in (1, dim) for s in array.shape):
        raise OfficialFormatError(f"{name} must hold a ({dim},) vector, got shape {array.shape}")
    return array.reshape(dim)


def _expect(name: str, array: np.ndarray, shape: tuple[int, ...], meaning: str) -> None:
    if array.shape != shape:
        raise OfficialFormatError(f"{name} must have shape {shape} ({meaning}), got {array.shape}")


def _channels_and_patch(patch_dim: int) -> tuple[int, int]:
    for channels in (3, 1):
        side = math.isqrt(patch_dim // channels)
        if patch_dim % channels == 0 and side * side * channels == patch_dim:
            return channels, side
    raise OfficialFormatError(
        f"Wenc has {patch_dim} inputs per patch, which is neither 3 * p * p nor p * p"
    )


def read_official_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The twelve arrays of a released checkpoint, checked for presence, dtype and finiteness."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        arrays = read_npz(path)
    except ValueError as err:
        raise OfficialFormatError(str(err)) from err
    missing = [k for k in OFFICIAL_KEYS if k not in arrays]
    if missing:
        raise OfficialFormatError(
            f"{path} lacks {', '.join(missing)} of the released layout"
            f" ({', '.join(OFFICIAL_KEYS)}); it holds {', '.join(sorted(arrays)) or 'no arrays'}"
        )
    for key in OFFICIAL_KEYS:
        a = arrays[key]
        if not np.issubdtype(a.dtype, np.floating):
            raise OfficialFormatError(f"{key} must be floating point, got dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise OfficialFormatError(f"{key} contains NaN or inf")
    return arrays


def infer_official_config(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Model shape (``image_size``, ``patch_size``, ``channels``, ``dim``, ``heads``,
    ``head_dim``, ``memories``) from the arrays, checking every shape against the others."""
    wq = arrays["Wq"]
    if wq.ndim != 3:
        raise OfficialFormatError(f"Wq must be (heads, head_dim, dim), got shape {wq.shape}")
    heads, head_dim, dim = wq.shape
    _expect("Wk", arrays["Wk"], wq.shape, "heads, head_dim, dim: like Wq")
    xi = arrays["Xi"]
    if xi.ndim != 2 or xi.shape[0] != dim:
        raise OfficialFormatError(f"Xi must be (dim={dim}, memories), got shape {xi.shape}")
    wenc = arrays["Wenc"]
    if wenc.ndim != 2 or wenc.shape[1] != dim:
        raise OfficialFormatError(f"Wenc must be (patch pixels, dim={dim}), got {wenc.shape}")
    patch_dim = wenc.shape[0]
    channels, patch_size = _channels_and_patch(patch_dim)
    _expect("Wdec", arrays["Wdec"], (dim, patch_dim), "dim, patch pixels")
    _expect("Benc", arrays["Benc"], (dim,), "dim")
    _expect("Bdec", arrays["Bdec"], (patch_dim,), "patch pixels")
    _expect("LNORM_bias", arrays["LNORM_bias"], (dim,), "dim")
    if arrays["LNORM_gamma"].size != 1:
        raise OfficialFormatError(
            "LNORM_gamma must be a scalar (one gamma per layer norm),"
            f" got shape {arrays['LNORM_gamma'].shape}"
        )
    for key in ("CLS_token", "MASK_token"):
        _squeeze_vector(key, arrays[key], dim)
    pos = arrays["POS_embed"]
    pos = pos.reshape(pos.shape[-2:]) if pos.ndim == 3 and pos.shape[0] == 1 else pos
    if pos.ndim != 2 or pos.shape[1] != dim:
        raise OfficialFormatError(f"POS_embed must be (tokens, dim={dim}), got {pos.shape}")
    grid = math.isqrt(pos.shape[0] - 1)
    if grid < 1 or grid * grid + 1 != pos.shape[0]:
        raise OfficialFormatError(
            f"POS_embed has {counted(pos.shape[0], 'row')}; expected 1 CLS + a square number"
            " of patches"
        )
    return {
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "channels": channels,
        "dim": dim,
        "heads": heads,
        "head_dim": head_dim,
        "memories": xi.shape[1],
    }


def from_official_npz(
    path: str | os.PathLike,
    steps: int = 12,
    alpha: float = 0.1,
    beta: float | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    selected: int | None = None,
    masked: int | None = None,
) -> ImageEnergyTransformer:
    """Build an :class:`ImageEnergyTransformer` from the authors' released ``.npz`` layout.

    Args:
        path: the ``.npz`` file (read with ``allow_pickle=False``).
        steps, alpha: descent steps and step size (not stored in the file; paper: 12, 0.1).
        beta: attention inverse temperature (default ``1 / sqrt(head_dim)``: 1/8 for ImageNet).
        mean, std: pixel statistics the weights were trained with (default: ImageNet's for
            3 channels; required otherwise).
        selected, masked: masking for further training (default: the paper's 100/196 and
            90/196 of the patches).

    Raises:
        FileNotFoundError: no such file.
        OfficialFormatError: a missing key, a shape that disagrees with the others, a
            non-positive gamma, NaN/inf values.
    """
    arrays = read_official_arrays(path)
    shape = infer_official_config(arrays)
    gamma = float(arrays["LNORM_gamma"].reshape(()))
    if not gamma > 0:
        raise OfficialFormatError(
            f"LNORM_gamma is {gamma}; it must be > 0 (the energy is a Lyapunov function only then,"
            " and the model stores log(gamma))"
        )
    if mean is None or std is None:
        if shape["channels"] != 3:
            raise ValueError(
                f"pass mean and std for a {shape['channels']}-channel model"
                " (ImageNet's statistics are the default for 3 channels only)"
            )
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    patches = (shape["image_size"] // shape["patch_size"]) ** 2
    selected = round(_SELECTED_RATIO * patches) if selected is None else selected
    masked = min(round(_MASKED_RATIO * patches), selected) if masked is None else masked
    model = ImageEnergyTransformer(
        **shape,
        steps=steps,
        alpha=alpha,
        beta=beta,
        exclude_self=False,
        selected=selected,
        masked=masked,
        mean=tuple(mean),
        std=tuple(std),
    )
    dim = shape["dim"]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    state = {
        "block.attention.wq": t(arrays["Wq"]),
        "block.attention.wk": t(arrays["Wk"]),
        "block.hopfield.xi": t(arrays["Xi"].T),
        "block.norm.log_gamma": torch.tensor(math.log(gamma)),
        "block.norm.delta": t(arrays["LNORM_bias"]),
        "encoder.weight": t(arrays["Wenc"].T),
        "encoder.bias": t(arrays["Benc"]),
        "decoder.weight": t(arrays["Wdec"].T),
        "decoder.bias": t(arrays["Bdec"]),
        "cls_token": t(_squeeze_vector("CLS_token", arrays["CLS_token"], dim)),
        "mask_token": t(_squeeze_vector("MASK_token", arrays["MASK_token"], dim)),
        "pos_embed": t(arrays["POS_embed"].reshape(patches + 1, dim)),
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Buffers (pixel statistics, beta) come from the constructor, not from the file.
    left = [k for k in missing if k not in dict(model.named_buffers())]
    if left or unexpected:
        raise RuntimeError(f"internal mapping error: missing {left}, unexpected {unexpected}")
    return model


def to_official_npz(model: ImageEnergyTransformer, path: str | os.PathLike) -> Path:
    """Write ``model`` in the released layout (the inverse of :func:`from_official_npz`)."""
    block = model.block

    def a(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().float().numpy()

    arrays = {
        "Wq": a(block.attention.wq),
        "Wk": a(block.attention.wk),
        "Xi": a(block.hopfield.xi).T,
        "Wenc": a(model.encoder.weight).T,
        "Benc": a(model.encoder.bias),
        "Wdec": a(model.decoder.weight).T,
        "Bdec": a(model.decoder.bias),
        "LNORM_gamma": a(block.norm.gamma),
        "LNORM_bias": a(block.norm.delta),
        "CLS_token": a(model.cls_token),
        "MASK_token": a(model.mask_token),
        "POS_embed": a(model.pos_embed),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
