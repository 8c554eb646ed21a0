"""Load a script of ``benchmarks/`` as a module, for the tests of its harness."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``name``, registered in ``sys.modules`` (where
    dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ratio_cell_matches(cell: str, num: float, den: float, step: float = 0.1) -> bool:
    """Whether a printed ratio such as ``"1.23x"`` agrees with ``num / den``, two cells printed to
    ``step``: the ratio must lie in the interval the rounded cells allow, widened by its own
    rounding to two decimals (tiny timings make a fixed relative tolerance flaky)."""
    half = step / 2
    low = (num - half) / (den + half) - 0.005
    high = (num + half) / max(den - half, 1e-9) + 0.005
    return low <= float(cell.rstrip("x")) <= high
