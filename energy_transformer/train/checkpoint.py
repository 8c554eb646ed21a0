"""Checkpoints in safetensors, written atomically (temp file + rename), never pickled.

One file holds everything needed to continue: tensors under ``model/``, ``optim/``, ``rng/`` and
``ema/`` (a moving average of the weights), and JSON metadata (epoch, step, optimizer
hyper-parameters, RNG states that are not tensors).
A SHA-256 of the tensors and the metadata is stored with them: safetensors checks a file's
layout, not its bytes, and a damaged byte would otherwise load as a wrong weight.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from energy_transformer.files import atomic_path

MODEL_PREFIX = "model/"
EMA_PREFIX = "ema/"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not one of ours."""


def _cpu_tensors(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    # clone(): safetensors refuses tensors that share storage (tied weights, views).
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    path: str | os.PathLike,
    model_state: dict[str, Tensor],
    optimizer_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    rng: bool = False,
    ema_state: dict[str, Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact.

    Args:
        path: destination ``.safetensors`` file.
        model_state: ``model.state_dict()``.
        optimizer_state: ``optimizer.state_dict()`` (tensors per parameter, groups as JSON).
        meta: JSON-able training metadata (epoch, step, history ...).
        rng: also store the torch / numpy / python RNG states, for an exact resume.
        ema_state: the moving average of the weights (``WeightEMA.state_dict()``), if any.
    """
    path = Path(path)
    tensors = _cpu_tensors(model_state, MODEL_PREFIX)
    if ema_state is not None:
        tensors |= _cpu_tensors(ema_state, EMA_PREFIX)
    metadata: dict[str, str] = {"format": "energy-transformer/1", "meta": _json("meta", meta or {})}
    if optimizer_state is not None:
        for pid, pstate in optimizer_state["state"].items():
            for name, value in pstate.items():
                try:
                    tensor = torch.as_tensor(value)
                except (TypeError, RuntimeError, ValueError) as err:
                    raise ValueError(
                        f"optimizer state {pid}/{name} ({type(value).__name__}) cannot be"
                        " stored as a tensor: this optimizer is not supported by checkpoints"
                    ) from err
                tensors[f"optim/{pid}/{name}"] = tensor.detach().cpu().clone()
        metadata["optim_groups"] = _json("optimizer param_groups", optimizer_state["param_groups"])
    if rng:
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_initialized():  # a CPU run on a GPU machine leaves CUDA untouched
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng/cuda/{i}"] = state
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
        metadata["rng_numpy"] = json.dumps([kind, int(pos), int(has_gauss), float(gauss)])
        metadata["rng_python"] = json.dumps(random.getstate(), default=list)
    metadata[_DIGEST] = _digest(tensors, metadata)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


_DIGEST = "sha256"


def _digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes) and every metadata entry but itself."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        sha.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for key in sorted(k for k in metadata if k != _DIGEST):
        sha.update(f"{key}={metadata[key]}|".encode())
    return sha.hexdigest()


def _json(what: str, value: Any) -> str:
    """``json.dumps(value)``, or a ValueError naming ``what`` holds something JSON cannot."""
    try:
        return json.dumps(value)
    except TypeError as err:
        raise ValueError(f"{what} must be JSON-serialisable for a checkpoint: {err}") from err


class Checkpoint:
    """A loaded checkpoint: ``model_state``, ``meta`` and (if saved) optimizer and RNG state
    and the moving average of the weights (``ema_state``, else ``None``)."""

    def __init__(self, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
        self.model_state = _under(tensors, MODEL_PREFIX)
        self.ema_state = _under(tensors, EMA_PREFIX) or None
        self.meta: dict[str, Any] = json.loads(metadata.get("meta", "{}"))
        self._tensors = tensors
        self._metadata = metadata
        self._optimizer_state: dict[str, Any] | None = None
        if "optim_groups" in metadata:
            state: dict[int, dict[str, Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith("optim/"):
                    _, pid, name = key.split("/", 2)
                    state.setdefault(int(pid), {})[name] = value
            groups = json.loads(metadata["optim_groups"])
            self._optimizer_state = {"state": state, "param_groups": groups}

    def optimizer_state(self) -> dict[str, Any] | None:
        """``optimizer.load_state_dict``'s input, or ``None`` if none was saved."""
        return self._optimizer_state

    def restore_rng(self) -> None:
        """Put the torch / numpy / python RNGs back where they were when this was saved."""
        if "rng/torch" not in self._tensors:
            raise CheckpointError("this checkpoint holds no RNG state")
        torch.set_rng_state(self._tensors["rng/torch"])
        cuda = sorted(k for k in self._tensors if k.startswith("rng/cuda/"))
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([self._tensors[k] for k in cuda])
        kind, pos, has_gauss, gauss = json.loads(self._metadata["rng_numpy"])
        keys = self._tensors["rng/numpy"].numpy().astype(np.uint32)
        np.random.set_state((kind, keys, pos, has_gauss, gauss))
        version, internal, gauss_next = json.loads(self._metadata["rng_python"])
        random.setstate((version, tuple(internal), gauss_next))


def _under(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {err}") from err
    if metadata.get("format") != "energy-transformer/1":
        raise CheckpointError(
            f"{path} is a safetensors file but not an energy-transformer checkpoint"
        )
    # Files saved before checksums were stored have none: they load as they always did.
    if _DIGEST in metadata and metadata[_DIGEST] != _digest(tensors, metadata):
        raise CheckpointError(
            f"corrupt checkpoint {path}: its contents do not match the checksum saved with them"
            " (the file was damaged after it was written)"
        )
    # Parse every JSON field and the optimizer's keys now: a damaged header must fail here,
    # naming the file, not later as a JSON or int() error in the middle of a resume.
    try:
        checkpoint = Checkpoint(tensors, metadata)
        for key in ("rng_numpy", "rng_python"):
            if key in metadata:
                json.loads(metadata[key])
    except ValueError as err:  # JSONDecodeError and int() of a damaged key are ValueErrors
        raise CheckpointError(f"corrupt checkpoint {path}: damaged metadata ({err})") from err
    if not isinstance(checkpoint.meta, dict):
        raise CheckpointError(f"corrupt checkpoint {path}: its meta is not a JSON object")
    return checkpoint
