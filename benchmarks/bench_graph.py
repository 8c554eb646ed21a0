"""Graph classification benchmark: 10-fold CV accuracy of ET, GIN, the sum-MLP and WL+SVM.

Every model runs in the same harness (energy_transformer.protocols.kfold: stratified folds, a
validation split carved from each training fold for epoch / hyper-parameter selection, test
accuracy read once per fold) with the same epochs, batch size and optimiser for the neural
models. The paper's numbers are printed beside ours with their caveat: the released notebooks
train on every graph and score the same graphs, so they are training-set accuracies.

    python benchmarks/bench_graph.py                       # all six datasets, all four models
    python benchmarks/bench_graph.py --datasets MUTAG PROTEINS --epochs 30 --max-folds 3
    python benchmarks/bench_graph.py --models et:paper et:released gin mlp --jobs 16 \\
        --device cuda --deadline 400                       # folds spread over processes
    python benchmarks/bench_graph.py --collect runs/a runs/b   # table of finished runs only
    python benchmarks/bench_graph.py --select runs/s/MUTAG-et runs/a/MUTAG-et runs/b/MUTAG-et
                                    # per fold, the run with the best validation accuracy

A model is ``et``, ``et:PRESET`` (an ET preset of energy_transformer.models.graph.PRESETS),
``gin``, ``mlp`` or ``wl``. Prints a markdown table (and writes it to --out/results.md), then
ET against each baseline fold by fold: the splits are the same, so the folds pair up.
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from energy_transformer.data.tu import TUDataset, load_tu
from energy_transformer.models.graph import PRESETS
from energy_transformer.protocols.kfold import (
    load_results,
    majority_accuracy,
    paired,
    save_results,
    stratified_folds,
    summarize,
)
from energy_transformer.tasks import add_ema_argument
from energy_transformer.tasks.graph import (
    MODELS,
    NEURAL,
    PAPER_TRAIN_SET_ACC,
    cross_validate,
    prepare_dataset,
    select_runs,
    selection_table,
    training_settings,
)
from energy_transformer.text import counted
from energy_transformer.train.ema import check_ema_decay

DATASETS = ("MUTAG", "PROTEINS", "NCI1", "ENZYMES", "DD", "IMDB-BINARY")
NAMES = {"et": "ET", "gin": "GIN", "mlp": "MLP (sum)", "wl": "WL+SVM"}
# Dense N x N attention on DD (up to 5,748 nodes) does not fit a CPU budget: every model sees
# the first MAX_NODES nodes of each DD graph (one residue chain prefix), so all are compared on
# the same inputs.
MAX_NODES = {"DD": 200}


def parse_model(spec: str, preset: str) -> tuple[str, str]:
    """``"et:released"`` -> ``("et", "released")``; other models keep the default preset."""
    name, _, chosen = spec.partition(":")
    if name not in MODELS or (chosen and (name != "et" or chosen not in PRESETS)):
        raise ValueError(f"bad model {spec!r}: use et, et:PRESET ({sorted(PRESETS)}), gin, mlp, wl")
    return name, chosen or preset


def parse_overrides(items: list[str], option: str = "--et-set") -> dict[str, Any]:
    """``["qk_init_std=0.05", "adjacency=soft"]`` -> ``{"qk_init_std": 0.05, ...}``; values
    are read as JSON (numbers, booleans) and otherwise kept as strings."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def pe_dim(preset: str, et_overrides: dict[str, Any] | None) -> int:
    """Laplacian eigenvectors the ET variant reads (computed once per dataset, before the folds)."""
    return {**PRESETS[preset], **(et_overrides or {})}["pe_dim"]


_DATA: dict[str, TUDataset] = {}  # prepared datasets of this process, by name


def prepared(
    name: str,
    root: str | os.PathLike | None,
    max_nodes: int | None,
    preset: str,
    et_overrides: dict[str, Any] | None,
) -> TUDataset:
    """``name`` prepared once per process (Laplacian PEs included) and kept in :data:`_DATA`."""
    if name not in _DATA:
        _DATA[name] = prepare_dataset(name, root, "et", max_nodes, pe_dim(preset, et_overrides))
    return _DATA[name]


def label(spec: str) -> str:
    name, _, preset = spec.partition(":")
    return NAMES[name] + (f" ({preset})" if preset else "")


def run_dir(out: str | os.PathLike, dataset: str, spec: str) -> Path:
    return Path(out) / f"{dataset}-{spec.replace(':', '-')}"


def run(
    datasets: list[str] | tuple[str, ...] = DATASETS,
    models: list[str] | tuple[str, ...] = MODELS,
    folds: int = 10,
    max_folds: int | None = None,
    epochs: int = 30,
    preset: str = "cpu",
    root: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/bench_graph",
    progress: bool = False,
    seed: int = 0,
    max_nodes: dict[str, int] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    lr: float | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    ema: float | None = None,
) -> list[dict[str, Any]]:
    """Cross-validate every model on every dataset in this process; one row per pair.
    ``overrides``: model name (et, gin, mlp) -> its constructor overrides (a variant);
    ``ema``: every neural model's weight-average decay (``cross_validate``'s ``ema_decay``)."""
    caps = MAX_NODES if max_nodes is None else max_nodes
    overrides = overrides or {}
    rows = []
    for name in datasets:
        dataset = prepared(name, root, caps.get(name), preset, overrides.get("et"))
        for spec in models:
            model, model_preset = parse_model(spec, preset)
            summary = cross_validate(
                name,
                model,
                folds=folds,
                max_folds=max_folds,
                preset=model_preset,
                seed=seed,
                root=root,
                out=run_dir(out, name, spec),
                max_nodes=caps.get(name),
                device=device,
                progress=progress,
                resume=True,  # as in run_parallel: finished folds are read back, not refused
                dataset=dataset,
                overrides=overrides.get(model),
                **training_settings(
                    model, epochs=epochs, batch_size=batch_size, lr=lr, ema_decay=ema
                ),
            )
            rows.append({"dataset": name, "model": spec, "summary": summary})
            print(f"{name:12s} {spec:12s} {summary.describe()}", flush=True)
    return rows


# -- many processes: one (dataset, model, fold) per task ---------------------------------------


def _one_fold(task: dict[str, Any]) -> str:
    if time.time() > task["deadline"]:
        return f"skipped {task['dataset']} {task['spec']} fold {task['fold']} (deadline)"
    torch.set_num_threads(1)
    model, preset = parse_model(task["spec"], task["preset"])
    # Forked workers inherit the parent's datasets; a spawned one prepares each once.
    dataset = prepared(
        task["dataset"],
        task["root"],
        task["max_nodes"],
        task["preset"],
        task["overrides"].get("et"),
    )
    start = time.perf_counter()
    summary = cross_validate(
        task["dataset"],
        model,
        folds=task["folds"],
        only=[task["fold"]],
        resume=True,  # a fold already in `out` is read back, so a longer run extends a shorter one
        preset=preset,
        root=task["root"],
        out=run_dir(task["out"], task["dataset"], task["spec"]),
        max_nodes=task["max_nodes"],
        device=task["device"],
        progress=False,
        dataset=dataset,
        overrides=task["overrides"].get(model),
        **training_settings(
            model,
            epochs=task["epochs"],
            batch_size=task["batch_size"],
            lr=task["lr"],
            ema_decay=task["ema"],
        ),
    )
    acc = 100 * summary.folds[0].test_acc
    took = time.perf_counter() - start
    return f"{task['dataset']} {task['spec']} fold {task['fold']}: {acc:.1f}% ({took:.0f} s)"


def run_parallel(
    datasets: list[str],
    models: list[str],
    folds: int,
    epochs: int,
    preset: str,
    root: str | None,
    out: str,
    jobs: int,
    deadline: float,
    device: str,
    batch_size: int | None,
    max_nodes: dict[str, int],
    max_folds: int | None = None,
    lr: float | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    ema: float | None = None,
) -> None:
    """Spread every (dataset, model, fold) over ``jobs`` forked processes, fold 0 of every pair
    first, so a deadline leaves every cell with about as many folds. Folds not started
    ``deadline`` seconds from now are skipped; :func:`collect` reads what finished."""
    # CUDA does not survive a fork once anything has initialised it, and on a GPU machine the
    # optimiser's graph-capture check touches CUDA even in a CPU run: fork only where no GPU is.
    fork = device == "cpu" and not torch.cuda.is_available()
    overrides = overrides or {}
    if fork:  # prepared once, before forking
        for name in datasets:
            prepared(name, root, max_nodes.get(name), preset, overrides.get("et"))
            print(f"prepared {name}", flush=True)
    stop = time.time() + deadline
    tasks = [
        dict(
            dataset=d,
            spec=m,
            fold=f,
            folds=folds,
            epochs=epochs,
            preset=preset,
            root=root,
            out=out,
            device=device,
            deadline=stop,
            batch_size=batch_size,
            max_nodes=max_nodes.get(d),
            lr=lr,
            overrides=overrides,
            ema=ema,
        )
        for f in range(max_folds or folds)
        for d in datasets
        for m in models
    ]
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for message in pool.map(_one_fold, tasks):
            print(message, flush=True)


def collect(outs: list[str]) -> list[dict[str, Any]]:
    """Rows from every finished run folder under ``outs`` (as written by this script). One
    (dataset, model) cell per table: a second run of the same cell is an error, not a silent
    replacement (link it under another name, e.g. ``MUTAG-et-degree``, to show both)."""
    rows = []
    seen: dict[tuple[str, str], Path] = {}
    for out in outs:
        for folder in sorted(Path(out).iterdir()):
            config = folder / "config.json"
            results = load_results(folder) if folder.is_dir() else []
            if not config.is_file() or not results:
                continue
            meta = json.loads(config.read_text())["extra"]
            spec = folder.name[len(meta["dataset"]) + 1 :].replace("-", ":", 1)
            if not folder.name.startswith(f"{meta['dataset']}-") or spec.split(":")[0] not in (
                MODELS
            ):
                raise ValueError(
                    f"{folder} holds a {meta['dataset']} run but is not named"
                    f" {meta['dataset']}-MODEL[-VARIANT] with MODEL one of {', '.join(MODELS)}:"
                    " the table reads the column from the name (link it under such a name)"
                )
            cell = (meta["dataset"], spec)
            if cell in seen:
                raise ValueError(
                    f"{seen[cell]} and {folder} both hold {cell[0]} {cell[1]}: collect them"
                    " separately, or link one under another name (e.g. DATASET-et-variant)"
                )
            seen[cell] = folder
            summary = summarize(results, meta["protocol"])
            save_results(folder, summary, meta)  # folds run by several processes: one summary
            rows.append(
                {
                    "dataset": meta["dataset"],
                    "model": spec,
                    "summary": summary,
                    "k": meta["k"],
                    "epochs": (meta.get("train") or {}).get("epochs"),
                    "max_nodes": meta.get("max_nodes"),
                }
            )
    if not rows:
        raise ValueError(f"no finished run (DATASET-model/ with folds) under {', '.join(outs)}")
    return rows


def _budget(rows: list[dict[str, Any]]) -> str:
    """``"3 of 10 folds, 20 epochs"`` from the most-trained neural row of one dataset."""
    neural = [r for r in rows if r.get("epochs")] or rows
    best = max(neural, key=lambda r: len(r["summary"].folds))
    k = best.get("k")
    folds = len(best["summary"].folds)
    text = f"{folds} of {k} folds" if k and k != folds else counted(folds, "fold")
    return text + (f", {counted(best['epochs'], 'epoch')}" if best.get("epochs") else "")


def _majority(rows: Iterable[dict[str, Any]]) -> str:
    """The majority-class accuracy of one dataset's folds (%), from its row with most folds."""
    best = max(rows, key=lambda r: len(r["summary"].folds))["summary"].majority
    return "-" if best is None else f"{100 * best:.1f}"


def markdown(rows: list[dict[str, Any]], budget: str) -> str:
    """One line per dataset: accuracy and seconds per fold of each model, the paper beside."""
    # Columns in MODELS' order (ET's forms, e.g. et:degree, with et), whichever dataset sorts first.
    models = sorted(
        dict.fromkeys(r["model"] for r in rows), key=lambda m: MODELS.index(m.partition(":")[0])
    )
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    datasets += [d for d in dict.fromkeys(r["dataset"] for r in rows) if d not in datasets]
    header = " | ".join(f"{label(m)} | s/fold" for m in models)
    lines = [
        f"Budget: {budget}. Test accuracy mean +- std over folds (%); wall seconds per fold;"
        " [n] = folds finished when fewer than planned; majority = always answering each"
        " training fold's commonest class.",
        "",
        f"| dataset | budget | majority | {header} | paper ET (train-set acc!) |",
        "|---|---|---|" + "---|---|" * len(models) + "---|",
    ]
    ets = [m for m in models if m.split(":")[0] == "et"]
    wins, compared = dict.fromkeys(ets, 0), dict.fromkeys(ets, 0)
    for name in datasets:
        by_model = {r["model"]: r for r in rows if r["dataset"] == name}
        cells = []
        for m in models:
            if m not in by_model:
                cells.append("- | -")
                continue
            s = by_model[m]["summary"]
            planned = by_model[m].get("k")
            done = f" [{len(s.folds)}]" if planned and len(s.folds) < planned else ""
            cells.append(f"{s.describe()}{done} | {s.seconds_per_fold:.0f}")
        caps = [r.get("max_nodes", MAX_NODES.get(name)) for r in by_model.values()]
        cap = caps[0] if caps else None
        shown = f"{name} (first {cap} nodes)" if cap else name
        paper = PAPER_TRAIN_SET_ACC.get(name)
        lines.append(
            f"| {shown} | {_budget(list(by_model.values()))} | {_majority(by_model.values())} | "
            + " | ".join(cells)
            + f" | {paper or '-'} |"
        )
        for et in ets:
            if {et, "gin", "mlp"} <= set(by_model):
                acc = by_model[et]["summary"].mean
                compared[et] += 1
                wins[et] += all(acc > by_model[b]["summary"].mean for b in ("gin", "mlp"))
    if {"gin", "mlp"} <= set(models):
        lines.append("")
        for et in ets:
            missing = len(datasets) - compared[et]
            unscored = f"; {missing} without all three rows not counted" if missing else ""
            lines.append(
                f"{label(et)} ahead of both GIN and the MLP on {wins[et]} of"
                f" {counted(compared[et], 'dataset')}{unscored} (issue goal: at least 4 of 6)."
            )
    lines += _paired_table(rows, datasets, ets)
    lines += _optimism_table(rows, datasets, models)
    lines += [
        "",
        "Paper column: the released notebooks train on every graph and score the same graphs,"
        " so those are training-set accuracies, not comparable with cross-validation"
        " (`et train graph --protocol train-on-all` reproduces that evaluation).",
    ]
    return "\n".join(lines)


def _optimism_table(
    rows: list[dict[str, Any]], datasets: list[str], models: list[str]
) -> list[str]:
    """Validation minus test accuracy of what each fold selected: the selection's optimism."""
    lines = [
        "",
        "Validation minus test accuracy of what each fold selected (epoch, or WL's h and C),"
        " mean over folds, in points: the best of many noisy validation scores overstates the"
        " test score, more so the noisier the validation curve.",
        "",
        "| dataset | " + " | ".join(label(m) for m in models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for name in datasets:
        folds = {r["model"]: r["summary"].folds for r in rows if r["dataset"] == name}
        cells = [
            f"{100 * statistics.fmean(f.val_acc - f.test_acc for f in folds[m]):+.1f}"
            if m in folds
            else "-"
            for m in models
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _paired_table(rows: list[dict[str, Any]], datasets: list[str], ets: list[str]) -> list[str]:
    """ET against each baseline fold by fold: the same splits, so the folds pair up."""
    bases = [m for m in ("gin", "mlp", "wl") if any(r["model"] == m for r in rows)]
    pairs = [(et, b) for et in ets for b in bases]
    if not pairs:
        return []
    lines = [
        "",
        "Fold by fold (the same splits): mean of ET's test accuracy minus the baseline's, in"
        " points, then (folds ET is ahead / level / behind).",
        "",
        "| dataset | " + " | ".join(f"{label(et)} - {label(b)}" for et, b in pairs) + " |",
        "|---|" + "---|" * len(pairs),
    ]
    for name in datasets:
        folds = {r["model"]: r["summary"].folds for r in rows if r["dataset"] == name}
        fold_ids = {m: {r.fold for r in results} for m, results in folds.items()}
        cells = [
            paired(folds[et], folds[b]).describe()
            if fold_ids.get(et, set()) & fold_ids.get(b, set())
            else "-"
            for et, b in pairs
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def floors(datasets: list[str], folds: int, root: str | None) -> str:
    """The majority-class floor of each dataset on the benchmark's splits (seed 0, 10% of each
    training fold held out), from the labels alone: no model is trained."""
    lines = [
        f"| dataset | graphs | classes | majority class %, mean over {folds} folds |",
        "|---|---|---|---|",
    ]
    for name in datasets:
        labels = load_tu(name, root).labels.numpy()
        rounds = stratified_folds(labels, folds, 0.1, seed=0)
        floor = 100 * sum(majority_accuracy(labels, f) for f in rounds) / len(rounds)
        lines.append(f"| {name} | {labels.size} | {len(set(labels.tolist()))} | {floor:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--max-folds", type=int, default=None, help="run the first N folds only")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak lr of every neural model")
    add_ema_argument(
        parser,
        help="every neural model selects and scores a moving average of its weights (et train"
        " graph --ema)",
    )
    parser.add_argument(
        "--et-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="ET constructor overrides, e.g. qk_init_std=0.05 steps=8 (a variant of the preset)",
    )
    for name in ("gin", "mlp"):
        parser.add_argument(
            f"--{name}-set",
            nargs="+",
            default=[],
            metavar="KEY=VALUE",
            help=f"{NEURAL[name].__name__} overrides, e.g. hidden=32 (a variant of the baseline)",
        )
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--data", default=None, help="data root (default $ET_DATA)")
    parser.add_argument("--out", default="runs/bench_graph")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dd-max-nodes", type=int, default=MAX_NODES["DD"])
    parser.add_argument("--jobs", type=int, default=1, help="processes, one fold per task")
    parser.add_argument("--deadline", type=float, default=1e9, help="seconds (with --jobs)")
    parser.add_argument(
        "--collect",
        nargs="+",
        default=None,
        help="train nothing: tabulate the DATASET-MODEL run folders under these outs (their"
        " summary.json is rewritten, the table written to --out/results.md)",
    )
    parser.add_argument("--budget", default=None, help="budget text for the table header")
    parser.add_argument(
        "--floors", action="store_true", help="only print each dataset's majority-class floor"
    )
    parser.add_argument(
        "--select",
        nargs="+",
        default=None,
        metavar="PATH",
        help="OUT RUN RUN...: fold by fold, keep the run with the best validation accuracy"
        " (ties: the lower validation loss, else the first named) and write the selection to"
        " OUT; name OUT DATASET-MODEL (e.g. sel/MUTAG-et) for --collect to put it in MODEL's"
        " column",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="with --select: over the folds every run finished (refused by default)",
    )
    args = parser.parse_args()
    if args.floors:
        print(floors(args.datasets, args.folds, args.data))
        return
    if args.select is not None:
        if len(args.select) < 3:
            parser.error("--select needs OUT and at least two runs to select among")
        try:
            summary = select_runs(args.select[0], args.select[1:], args.partial)
        except ValueError as err:
            parser.error(f"--select: {err}")
        print(selection_table(summary))
        return
    torch.set_num_threads(args.threads)
    try:
        for spec in args.models:
            parse_model(spec, args.preset)
        overrides = {
            name: parse_overrides(getattr(args, f"{name}_set"), f"--{name}-set") for name in NEURAL
        }
    except ValueError as err:
        parser.error(str(err))
    for name, cls in NEURAL.items():
        # The input and class counts are the dataset's, not options.
        options = set(inspect.signature(cls).parameters) - {"in_features", "num_classes"}
        if unknown := sorted(set(overrides[name]) - options):
            parser.error(f"--{name}-set: {unknown} are not options of {cls.__name__}")
        if overrides[name] and not any(parse_model(m, args.preset)[0] == name for m in args.models):
            parser.error(f"--{name}-set is given but --models has no {name}")
        if overrides[name]:
            try:  # a bad value fails here, not folds into the run
                cls(**{"in_features": 1, "num_classes": 2, **overrides[name]})
            except (TypeError, ValueError, RuntimeError) as err:
                parser.error(f"--{name}-set: {err}")
    if args.folds < 2 or args.jobs < 1:
        parser.error(f"need --folds >= 2 and --jobs >= 1, got {args.folds} and {args.jobs}")
    try:  # here, not in every fold's process
        check_ema_decay(args.ema)
    except ValueError as err:
        parser.error(f"--ema: {err}")
    MAX_NODES["DD"] = args.dd_max_nodes
    start = time.perf_counter()
    if args.collect is None:
        if args.jobs > 1:
            run_parallel(
                args.datasets, args.models, args.folds, args.epochs, args.preset, args.data,
                args.out, args.jobs, args.deadline, args.device, args.batch_size,
                {"DD": args.dd_max_nodes}, args.max_folds, args.lr, overrides, args.ema,
            )  # fmt: skip
        else:
            run(
                args.datasets, args.models, args.folds, args.max_folds, args.epochs, args.preset,
                args.data, args.out, max_nodes={"DD": args.dd_max_nodes}, device=args.device,
                batch_size=args.batch_size, lr=args.lr, overrides=overrides, ema=args.ema,
            )  # fmt: skip
    try:
        rows = collect(args.collect or [args.out])
    except ValueError as err:
        parser.error(str(err))
    folds = f"{args.max_folds} of {args.folds}" if args.max_folds else f"{args.folds}"
    variant = "".join(
        f", {NAMES[name]} {k}={v}" for name, items in overrides.items() for k, v in items.items()
    )
    training = f", lr {args.lr:g}" if args.lr else ""
    training += f", weight average (EMA) {args.ema:g}" if args.ema else ""
    budget = args.budget or (
        f"{folds} folds, {counted(args.epochs, 'epoch')}{training}, ET preset {args.preset}"
        f"{variant}"
        if args.collect is None
        else "the runs collected (folds and epochs per row)"
    )
    table = markdown(rows, budget)
    if args.collect is None:
        minutes = (time.perf_counter() - start) / 60
        table += f"\n\nTotal wall time {minutes:.1f} min on {args.device}, {args.jobs} process(es)."
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
