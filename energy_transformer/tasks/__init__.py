"""Task recipes: what to train, how to score it, what to draw; each plugs into the `et` CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


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
