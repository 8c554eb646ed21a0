"""Task recipes: what to train, how to score it, what to draw; each plugs into the `et` CLI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
