"""Load a script of ``benchmarks/`` as a module, for the tests of its harness; check recorded
command lines against the scripts' current parsers."""

import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import torch

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


# -- recorded commands: what a shell line runs, and whether the current scripts accept it ----

# One write per call: the suite starts some runs side by side.
STUB = """#!/usr/bin/env bash
line=$(printf '%s\\037' PREFIX "$@")
printf '%s\\036' "$line" >> "$BENCH_CALLS"
"""


def stub_commands(folder: Path) -> dict[str, str]:
    """Stand-ins in ``folder`` for ``python``, ``python3``, ``et`` (and a GPU machine's
    ``nvidia-smi``, ``tar`` and ``pkill``) that only record their arguments; the environment
    that puts them first on the PATH (read the calls back with :func:`recorded_calls`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3", "et", "nvidia-smi", "tar", "pkill"):
        prefix = "et" if name == "et" else ""
        if name in ("nvidia-smi", "tar", "pkill"):  # nothing to record, nothing to touch
            text = "#!/usr/bin/env bash\nexit 0\n"
        else:
            text = STUB.replace("PREFIX", prefix)
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    calls = folder / "calls"
    calls.write_text("")
    return {
        "PATH": f"{folder}:{os.environ['PATH']}",
        "PYTHON": str(folder / "python"),
        "BENCH_CALLS": str(calls),
    }


def recorded_calls(env: dict[str, str]) -> list[list[str]]:
    """The argument lists the stand-ins of :func:`stub_commands` recorded, in order."""
    text = Path(env["BENCH_CALLS"]).read_text()
    return [record.split("\037")[:-1] for record in text.split("\036")[:-1]]


class _Parsed(Exception):
    """The command line parsed; the script was stopped before any work."""


def _stop(*args, **kwargs):
    raise _Parsed


_SCRIPTS: dict[str, ModuleType] = {}


def parse_error(argv: list[str]) -> str | None:
    """Parse ``argv`` (``[.../benchmarks/NAME.py, ARG...]`` or ``["et", ARG...]``) with the
    current script's own parser, as on a machine with CUDA, and stop before any data is read;
    None when it parses, else the parser's message."""
    from energy_transformer import cli  # noqa: PLC0415

    name = Path(argv[0]).stem
    if name != "et" and name not in _SCRIPTS:
        _SCRIPTS[name] = load_script(name)
    module, rest = _SCRIPTS.get(name), argv[1:]
    err = io.StringIO()
    patches = [mock.patch.object(torch.cuda, "is_available", lambda: True)]
    patches.append(mock.patch.object(torch, "set_num_threads", lambda n: None))
    if name == "bench_graph":
        stops = ("run", "run_parallel", "collect", "floors", "select_runs")
        patches += [mock.patch.object(module, s, _stop) for s in stops]
        patches.append(mock.patch.object(sys, "argv", argv))
    elif name == "bench_anomaly":
        stops = ("load_gad", "selection_report", "parse_log")
        patches += [mock.patch.object(module, s, _stop) for s in stops]
    try:
        with contextlib.ExitStack() as stack, contextlib.redirect_stderr(err):
            for patch in patches:
                stack.enter_context(patch)
            with contextlib.redirect_stdout(io.StringIO()):
                if name == "et":
                    cli.build_parser(rest).parse_args(rest)
                elif name == "bench_graph":
                    module.main()
                elif name == "bench_anomaly":
                    module.main(rest)
                else:  # bench_core, bench_edges, bench_image
                    module.parse_args(rest)
    except _Parsed:
        pass
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return (err.getvalue().strip().splitlines() or [str(exit_)])[-1]
    return None
