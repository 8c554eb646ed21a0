"""Task recipes: what to train, how to score it, what to draw; each plugs into the `et` CLI."""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from energy_transformer.files import recorded_path
from energy_transformer.text import counted
from energy_transformer.train import (
    check_run_task,
    load_checkpoint,
    read_run_config,
    resolve_device,
    run_weights,
)

# task name -> module; the name is what `et train NAME` takes and what config.json records.
# Each module gives `build_model(model_config)`: the model a run's config.json describes.
TASKS: dict[str, str] = {
    "image": "energy_transformer.tasks.image",
    "graph": "energy_transformer.tasks.graph",
    "anomaly": "energy_transformer.tasks.anomaly",
}


def task_module(name: str) -> ModuleType:
    """The module of task ``name`` (imported on demand: the graph tasks import PyG)."""
    return importlib.import_module(TASKS[name])


def recorded_task(folder: Path, config: dict[str, Any]) -> str:
    """The task that ``folder/config.json`` (read as ``config``) names: one of :data:`TASKS`,
    else ``ValueError``."""
    task = config.get("task")
    if task not in TASKS:
        raise ValueError(f"{folder / 'config.json'} names no known task ({task!r}; {list(TASKS)})")
    return task


# Options that say where or how a run is made, not what it trains: a resume does not take them
# from the run's record, and runs that differ only in them were trained alike.
RUN_PLACE_OPTIONS = frozenset({"out", "resume", "device", "no_progress"})


def command_record(args: argparse.Namespace) -> dict[str, Any]:
    """The options of an ``et train`` command line as ``config.json`` records them (paths as
    absolute strings, found again from another folder): what ``--resume`` reads back for the
    options it is not given."""
    return {
        k: recorded_path(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("func", "command", "task")
    }


def preset_values(
    presets: Mapping[str, Mapping[str, Any]], key: str, names: Iterable[str] | None = None
) -> str:
    """``"released: 300, paper: 300, cpu: 30"``: each preset's ``key``, for an option's help."""
    names = list(presets) if names is None else list(names)
    shown = [(n, presets[n][key]) for n in names]
    return ", ".join(f"{n}: {v:g}" if isinstance(v, float) else f"{n}: {v}" for n, v in shown)


def option_names(dests: Iterable[str]) -> str:
    """``"--max-folds, --val-fraction"``: the command-line names of argparse destinations."""
    return ", ".join("--" + dest.replace("_", "-") for dest in dests)


def add_ema_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--ema DECAY``, every task's and benchmark's: evaluate, select and save a moving average
    of the weights (:class:`~energy_transformer.train.WeightEMA`); ``help`` replaces the
    tasks' help text."""
    parser.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="DECAY",
        help=help
        or "evaluate, select and save a moving average of the weights with this decay per"
        " optimizer step, e.g. 0.99 (default: the last weights)",
    )


def resume_help(continues: str) -> str:
    """``--resume``'s help in every task: what it ``continues``, and where the options it is
    not given come from."""
    others = option_names(sorted(RUN_PLACE_OPTIONS - {"out", "resume"}))
    return (
        f"continue {continues}; options not given (but {others}) take the values it was started"
        " with (OUT/config.json)"
    )


def run_names(folders: Sequence[Path]) -> list[str]:
    """Each run folder of a selection by its name, with its parent's where two names are alike
    (``base/MUTAG-et`` and ``variant/MUTAG-et``); refused when that is not enough."""
    resolved = [f.resolve() for f in folders]
    pairs = zip(folders, resolved, strict=True)
    twice = sorted({str(f) for f, r in pairs if resolved.count(r) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice: each run is one candidate")
    names = [f.name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{r.parent.name}/{f.name}" for f, r in zip(folders, resolved, strict=True)]
    if len(set(names)) < len(names):
        raise ValueError(
            f"the candidates {names} have alike folder names: give each run a name of its own"
        )
    return names


def check_selection_out(out: Path) -> None:
    """A selection is written to a folder of its own, never over a run."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the selection")
    held = [name for name in ("config.json", "folds.csv", "results.json") if (out / name).exists()]
    if held:
        raise ValueError(f"{out} already holds a run ({', '.join(held)}): give another folder")


def refuse_selection(run_dir: Path, chose: str) -> None:
    """A folder written by a selection holds no weights: say where they are. ``chose`` says
    which of its files names each run's choice (``"its folds.csv names the run each fold
    chose"``)."""
    try:
        sources = json.loads((run_dir / "config.json").read_text())["extra"]["selected_from"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return
    raise ValueError(
        f"{run_dir} is a selection among runs ({', '.join(sources)}) and holds no weights:"
        f" evaluate those runs; {chose}"
    )


def load_model(
    run: str | os.PathLike, device: str | torch.device = "cpu", task: str | None = None
) -> nn.Module:
    """The trained model of a run of any task, in eval mode on ``device``, with the weights
    ``et eval`` scores: the epoch selected on validation, else the last (with ``--ema``, the
    moving average of the weights in either case); a checkpoint file's own weights when
    ``run`` is one. With ``task``, a run of another task is refused.

    ``run`` names ONE model: an image run (``runs/fmnist``), a fold of a graph run
    (``runs/graph/fold-00``), a model and seed of an anomaly run (``runs/tol/et/seed0``), or a
    checkpoint file in any of them. A folder of several models (a whole graph or anomaly run)
    is refused with the folders to choose from, a selection with the runs it chose among.

    What each model takes: the image model a batch of images ``(batch, C, H, W)``
    (``models.image``); the graph models a PyG ``Batch`` with the Laplacian encodings of
    ``models.graph.LaplacianPE`` (their feature scaler is part of the weights); the anomaly
    models ``(x, edge_index)`` of the graph as the run prepared it (``protocols.gad.prepare``
    and ``neural_input`` with the ``standardize``, ``input_hops`` and ``input_bins`` of its
    ``config.json``).

    Args:
        run: a run folder (or a checkpoint file in one) written by ``et train``.
        device: where to put the model: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``
            (the GPU when there is one).
        task: ``"image"``, ``"graph"`` or ``"anomaly"``; ``None`` accepts any.

    Returns:
        The model (an ``nn.Module`` in eval mode).

    Raises:
        FileNotFoundError: no run (or ``config.json``, or weights) at ``run``.
        ValueError: a run of another ``task``, an unknown task in ``config.json``, a folder of
            several models, a selection, or a device this machine lacks.
    """
    run = Path(run)
    folder, config = read_run_config(run)
    check_run_task(run, config, task)
    name = recorded_task(folder, config)
    if run.is_dir() and not run_weights(run).is_file():
        refuse_selection(run, "load a model of one of them")
        inner = sorted({p.parent.relative_to(run) for p in run.glob("**/*.safetensors")}, key=str)
        if not inner:
            raise FileNotFoundError(f"{run} holds no weights (best.safetensors, last.safetensors)")
        shown = ", ".join(map(str, inner[:3])) + (", ..." if len(inner) > 3 else "")
        raise ValueError(
            f"{run} holds {counted(len(inner), 'model')} ({shown}), each in a folder of its own:"
            f" load one, e.g. {run / inner[0]}"
        )
    model = task_module(name).build_model(config["model"])
    model.load_state_dict(load_checkpoint(run_weights(run)).model_state)
    return model.to(resolve_device(device)).eval()
