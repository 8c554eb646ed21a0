"""The ``et`` command line: ``et train TASK``, ``et eval RUN``, ``et demo`` and task commands.

Each task lives in ``energy_transformer.tasks.<module>`` (``tasks.TASKS``) and plugs in through
its functions: ``add_train_arguments(parser)``, ``train(args)``, ``evaluate(run_dir, args)``,
``build_model(model_config)`` (for ``load_model``), ``select(args)`` for the tasks of ``et
select`` and, optionally, ``add_commands(subparsers)`` for commands of its own (``et
complete`` ...) and ``run_folder(args)`` where ``--out`` has a computed default (for
``--resume`` to find the run).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from energy_transformer import __version__
from energy_transformer.tasks import RUN_PLACE_OPTIONS, TASKS, recorded_task, task_module
from energy_transformer.train import read_run_config

TASK_HELP = {
    "image": "masked image completion (Fashion-MNIST, ImageNet-style folders)",
    "graph": "graph classification on TU datasets",
    "anomaly": "node-level graph anomaly detection (Tolokers, Reddit, YelpChi, Amazon)",
}


# Tasks that add top-level commands of their own (`add_commands`): imported for every command
# line, so keep them light. The others are imported only when a command line names them.
COMMAND_TASKS = ("image",)
# Tasks whose runs `et select` chooses among.
SELECT_TASKS = ("graph", "anomaly")


def _named_tasks(argv: Sequence[str] | None) -> list[str]:
    """The tasks whose training options a parse of ``argv`` needs: all when ``argv`` is None.

    Only the named task is imported, so ``et --help`` or ``et train image`` does not pay for
    PyG (a few seconds) and works where the graph extra is not installed.
    """
    if argv is None:
        return list(TASKS)
    if len(argv) > 1 and argv[0] == "train" and argv[1] in TASKS:
        return [argv[1]]
    return []


def _import_task(name: str, parser: argparse.ArgumentParser) -> ModuleType:
    try:
        return task_module(name)
    except ModuleNotFoundError as err:
        parser.error(
            f"task {name!r} needs the Python package {err.name!r}, which is not installed"
            " (pip install 'energy-transformer[image,graph]' brings every task's dependencies)"
        )


def run_task_of(run_dir: Path) -> str:
    """The task recorded in ``run_dir/config.json`` (or next to a checkpoint file).

    A cross-validation fold without weights (WL+SVM's) has no config of its own: its run's.
    """
    run_dir = Path(run_dir)
    if (run_dir / "split.json").is_file() and not (run_dir / "config.json").is_file():
        run_dir = run_dir.parent
    return recorded_task(*read_run_config(run_dir))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one: ``(default: None)`` and ``(default: False)``
    say nothing, and options whose help says what unset means would read it twice."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``et`` parser; with ``argv``, only the task that ``argv`` names gets its options."""
    parser = argparse.ArgumentParser(
        prog="et",
        description="Energy Transformer: train, evaluate and look at ET models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  et train image --preset fashion-mnist\n  et eval runs/image\n"
        "  et train graph --dataset PROTEINS\n"
        "  et select runs/graph-a runs/graph-b --out runs/graph-sel\n"
        "  et train anomaly --dataset tolokers",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"et (energy-transformer) {__version__}, torch {torch.__version__}",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a model for a task")
    train_tasks = train.add_subparsers(dest="task", required=True, metavar="TASK")
    named = _named_tasks(argv)
    for name in TASKS:
        p = train_tasks.add_parser(name, help=TASK_HELP[name], formatter_class=_HelpFormatter)
        if name in named:
            module = _import_task(name, parser)
            p.description = (module.__doc__ or "").strip().splitlines()[0]
            module.add_train_arguments(p)
            p.set_defaults(func=module.train)

    ev = commands.add_parser(
        "eval",
        help="evaluate a trained run (metrics and pictures)",
        description="Evaluate the run folder (or checkpoint file) written by `et train`.",
    )
    ev.add_argument("run", type=Path, help="run folder or checkpoint file")
    ev.add_argument("--out", type=Path, default=None, help="where to write results (default: RUN)")
    ev.add_argument("--data", type=Path, default=None, help="dataset folder (default: $ET_DATA)")
    ev.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    ev.set_defaults(func=_evaluate)

    sel = commands.add_parser(
        "select",
        help="model selection: per fold (graph) or seed (anomaly), the run with the best"
        " validation metric",
        description="Among `et train graph` runs on the same splits (other models or settings),"
        " keep on each fold the one with the best validation accuracy and report its test"
        " accuracy; among `et train anomaly` runs on the same splits, keep per model and seed"
        " the one with the best validation AUPRC (gadbench) or macro-F1 (bwgnn). The"
        " configuration is chosen without looking at the test data.",
    )
    sel.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="two or more run folders of one task (ties: graph runs go to the lower validation"
        " loss, else, like anomaly runs, to the first named)",
    )
    sel.add_argument("--out", type=Path, required=True, help="folder for the selection")
    sel.add_argument(
        "--partial",
        action="store_true",
        help="select over the folds (graph) or seeds (anomaly) every run holds (refused by"
        " default when some lack one)",
    )
    sel.add_argument(
        "--per",
        choices=("seed", "model"),
        default="seed",
        help="anomaly runs: choose per seed, or one run per model by its mean validation metric"
        " over the seeds (as GADBench's search keeps one configuration); graph runs are chosen"
        " per fold",
    )
    sel.set_defaults(func=_select)

    for name in COMMAND_TASKS:
        _import_task(name, parser).add_commands(commands)
    # Every command's help shows its defaults, as `et train TASK --help` does (et complete
    # writes into the current folder unless told otherwise).
    for command in commands.choices.values():
        command.formatter_class = _HelpFormatter
    return parser


def _evaluate(args: argparse.Namespace) -> None:
    task_module(run_task_of(args.run)).evaluate(args.run, args)


def _select(args: argparse.Namespace) -> None:
    tasks = {run: run_task_of(run) for run in args.runs}
    if len(set(tasks.values())) > 1:
        listed = ", ".join(f"{run}: {task}" for run, task in tasks.items())
        raise ValueError(f"the runs are of different tasks ({listed}): select among one task's")
    task = tasks[args.runs[0]]
    if task not in SELECT_TASKS:
        raise ValueError(
            f"{args.runs[0]} is a run of task {task!r}: et select takes graph or anomaly runs"
        )
    if task == "graph" and args.per != "seed":
        raise ValueError("--per model is for anomaly runs: graph runs are chosen per fold")
    task_module(task).select(args)


# What a user can fix (an option's value, a missing or malformed file): one line naming the
# problem and exit status 2, as for argparse's own errors; ET_DEBUG=1 keeps the traceback.
# A diverging run (FloatingPointError: the loss is NaN) is the user's settings, not a bug.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, FloatingPointError)


def _check_out(args: argparse.Namespace) -> None:
    """Every command's output folder (``--out``, or convert-official's OUT) may not be a file:
    refused before any work, where each command would fail its own way (``et demo`` with a
    traceback, others with ``[Errno 17] File exists`` after training or scoring)."""
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"{out} is a file: the output goes to a folder, give one")


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options ``argv`` gives explicitly (not left at their default)."""
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions})
    parser.parse_args(argv, namespace=namespace)
    return {dest for dest, value in vars(namespace).items() if value is not unset}


def _as_typed(action: argparse.Action, value: object) -> str:
    """The option ``action`` with ``value`` as one would type it: ``--no-exclude-self`` for a
    flag, ``--seeds 5,`` for the list ``[5]`` (``--seeds 5`` would be 5 seeds, 0..4)."""
    if action.nargs == 0:  # a flag: which of its spellings gives the value
        negated = isinstance(action, argparse.BooleanOptionalAction) and not value
        return action.option_strings[1 if negated else 0]
    if not isinstance(value, list):
        return f"{action.option_strings[0]} {shlex.quote(str(value))}"  # a path with a space
    text = ",".join(map(str, value))  # one word that the option's type reads as a list
    text += "" if action.type(text) == value else ","
    return f"{action.option_strings[0]} {shlex.quote(text)}"


def _resume_options(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """``et train TASK --resume``: each option not given takes the value the run was started
    with (its ``config.json`` records the command line), so that a resume needs only what
    changes (e.g. ``--epochs`` to train further). Runs recorded before that keep the defaults."""
    task = task_module(args.task)
    out = task.run_folder(args) if hasattr(task, "run_folder") else args.out
    try:
        config = read_run_config(out)[1]
    except (FileNotFoundError, ValueError):  # nothing to resume: the task says so
        return
    recorded = config.get("command")
    # Another task's run is refused by the task: its options are not this task's to take.
    if config.get("task") != args.task or not isinstance(recorded, dict):
        return
    options = argparse.ArgumentParser(add_help=False)  # the task's own options, alone
    task.add_train_arguments(options)
    given = _given(options, argv[2:])  # argv: train TASK OPTION...
    taken = []
    for action in options._actions:
        dest = action.dest
        if dest in given or dest in RUN_PLACE_OPTIONS or dest not in recorded:
            continue
        value = recorded[dest]
        if action.choices is not None and value not in action.choices:
            continue  # what the task derived (anomaly's --dataset of a graph file): not typable
        if action.type is Path and value is not None:
            value = Path(value)
        if value != getattr(args, dest):
            taken.append(_as_typed(action, value))
        setattr(args, dest, value)
    if taken and os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(f"resuming {out} with its own {' '.join(taken)}")  # as typed: "--seeds 5,"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        _check_out(args)  # before a resume reads the run: --out may name a checkpoint file
        if args.command == "train" and args.resume:
            _resume_options(args, argv)
        args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("ET_DEBUG"):
            raise
        print(f"et: error: {err} (ET_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("ET_DEBUG"):
            raise
        # Checkpoints are written atomically: whatever was saved is whole.
        print("et: interrupted; run the same command with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
