"""Graph classification on TU datasets: the Energy Transformer against GIN, an MLP and WL+SVM.

Plugs into the ``et`` command line: ``et train graph --dataset PROTEINS [--model et|gin|mlp|wl]``
runs stratified k-fold cross-validation (validation split carved from every training fold,
epoch selected on it, test accuracy read once per fold) and ``et eval RUN`` re-scores the saved
folds. ``--protocol train-on-all`` reproduces the released notebooks' evaluation (train on every
graph, score the same graphs): NOT a generalisation measure.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader as TorchDataLoader
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.loader.dataloader import Collater

from energy_transformer.data.tu import TUDataset, keep_first_nodes, load_tu
from energy_transformer.files import recorded_path, write_text_atomic
from energy_transformer.models.graph import (
    ADJACENCIES,
    HEADS,
    PRESETS,
    READOUTS,
    TRAIN_PRESETS,
    GraphEnergyTransformer,
    LaplacianPE,
)
from energy_transformer.models.graph_baselines import GINClassifier, SumMLP, WLSubtreeSVM
from energy_transformer.nn.hopfield import HOPFIELD_KINDS
from energy_transformer.protocols.kfold import (
    NOT_GENERALISATION,
    PROTOCOLS,
    CVSummary,
    Fold,
    FoldResult,
    load_results,
    run_kfold,
    save_results,
    select_on_validation,
    summarize,
)
from energy_transformer.tasks import (
    add_ema_argument,
    check_selection_out,
    command_record,
    load_model,
    option_names,
    preset_values,
    refuse_selection,
    resume_help,
    run_names,
)
from energy_transformer.text import counted
from energy_transformer.train import (
    NO_PROGRESS,
    TrainConfig,
    Trainer,
    check_new_run,
    check_not_part_of_run,
    config_changes,
    describe_changes,
    launched_world_size,
    make_loader,
    resolve_device,
    run_weights,
    world,
)

MODELS = ("et", "gin", "mlp", "wl")
NEURAL: dict[str, type[nn.Module]] = {
    "et": GraphEnergyTransformer,
    "gin": GINClassifier,
    "mlp": SumMLP,
}
BASELINE_CONFIG: dict[str, dict[str, Any]] = {
    "gin": dict(hidden=64, layers=3, dropout=0.5),
    "mlp": dict(hidden=64, dropout=0.5),
}
# The paper's table (spec §2.3): accuracies of models trained on every graph and scored on the
# same graphs, i.e. training-set accuracies, not comparable with cross-validation.
PAPER_TRAIN_SET_ACC = {
    "PROTEINS": 90.3,
    "NCI1": 90.1,
    "NCI109": 90.5,
    "DD": 95.9,
    "ENZYMES": 99.8,
    "MUTAG": 96.6,
    "Mutagenicity": 98.7,
    "FRANKENSTEIN": 99.8,
}


# -- data -------------------------------------------------------------------------------------


def prepare_dataset(
    name: str,
    root: str | Path | None = None,
    model: str = "et",
    max_nodes: int | None = None,
    pe_dim: int = 15,
) -> TUDataset:
    """Load ``name``, cap graph sizes when asked, and add Laplacian PEs for ET (computed once)."""
    dataset = load_tu(name, root)
    if max_nodes is not None:
        dataset = dataset.map(lambda g: keep_first_nodes(g, max_nodes))
    if model == "et":
        dataset = dataset.map(LaplacianPE(pe_dim))
    return dataset


class SizeBuckets:
    """Batches of graphs of similar size, in random order: far less padding for dense attention.

    Each epoch shuffles the graphs (global torch RNG, which the Trainer seeds per epoch), cuts the
    permutation into pools of ``pool`` batches, sorts each pool by size, slices it into batches
    and shuffles the batch order. Usable as a DataLoader ``batch_sampler``.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, pool: int = 20) -> None:
        self.sizes = torch.as_tensor(list(sizes))
        self.batch_size, self.pool = batch_size, pool

    def __len__(self) -> int:
        return -(-len(self.sizes) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.sizes))
        batches = []
        for chunk in order.split(self.batch_size * self.pool):
            chunk = chunk[torch.argsort(self.sizes[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i].tolist()


def train_loader(
    graphs: Sequence[Data],
    batch_size: int,
    buckets: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> TorchDataLoader:
    """Shuffled batches; with ``buckets`` (padded dense attention) of similar-size graphs.

    Under ``torchrun`` ``batch_size`` is the global batch: each process gets its share of every
    batch (:func:`~energy_transformer.train.make_loader`'s sampler, seeded by ``seed``). Size
    buckets are not split across processes: there each process pads its share of a shuffled
    batch (the same results, more padding)."""
    graphs = list(graphs)
    if launched_world_size() > 1:
        collate = Collater(graphs)
        return make_loader(graphs, batch_size, seed=seed, collate_fn=collate, device=device)
    if not buckets:
        return DataLoader(graphs, batch_size=batch_size, shuffle=True)
    sampler = SizeBuckets([g.num_nodes for g in graphs], batch_size)
    return DataLoader(graphs, batch_sampler=sampler)


def eval_loader(graphs: Sequence[Data], indices: Sequence[int], batch_size: int = 64) -> DataLoader:
    """``graphs[indices]`` in size order (fixed), so each batch pads little."""
    ordered = sorted((graphs[i] for i in indices), key=lambda g: g.num_nodes)
    return DataLoader(ordered, batch_size=batch_size, shuffle=False)


@torch.no_grad()
def score(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Accuracy and mean cross-entropy over ``loader`` (model in eval mode), and the selection
    score: accuracy with ties broken by lower loss (``acc - 1e-4 * loss``; an accuracy step of
    one graph in up to 1,000 always wins over the loss term)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss = 0.0
    for batch in loader:
        batch = batch.to(device)
        logits = model(batch)
        correct += int((logits.argmax(-1) == batch.y).sum())
        loss += float(F.cross_entropy(logits, batch.y, reduction="sum"))
        total += batch.num_graphs
    model.train(was_training)
    acc, loss = correct / max(total, 1), loss / max(total, 1)
    return {"acc": acc, "loss": loss, "select": acc - 1e-4 * min(loss, 10.0)}


def accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Share of graphs whose argmax logit is their label."""
    return score(model, loader, device)["acc"]


# -- one fold -----------------------------------------------------------------------------------


def build_model(model_config: dict[str, Any]) -> nn.Module:
    """Rebuild a neural model from the ``model`` section of a fold's ``config.json``: its
    ``name`` and constructor kwargs."""
    config = dict(model_config)
    name = config.pop("name")
    if name not in NEURAL:
        raise ValueError(f"unknown neural graph model {name!r}; choose from {sorted(NEURAL)}")
    return NEURAL[name](**config)


def model_config(
    name: str, in_features: int, num_classes: int, preset: str, overrides: dict | None = None
) -> dict[str, Any]:
    base = PRESETS[preset] if name == "et" else BASELINE_CONFIG[name]
    return {"in_features": in_features, "num_classes": num_classes, **base, **(overrides or {})}


def make_fit_neural(
    dataset: TUDataset,
    name: str,
    config: dict[str, Any],
    train_cfg: TrainConfig,
    batch_size: int,
    label_smoothing: float,
    out: Path | None,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
):
    """``fit_fold(fold) -> FoldResult`` training ``name`` through the shared Trainer."""
    graphs = dataset.graphs
    # Padded dense attention: batch graphs of similar size. Edge lists and GNNs need no padding.
    padded = name == "et" and (
        config.get("adjacency", "hard") != "hard" or config.get("attention") == "dense"
    )

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch)
        loss = F.cross_entropy(logits, batch.y, label_smoothing=label_smoothing)
        return loss, {"acc": float((logits.argmax(-1) == batch.y).float().mean())}

    def fit_fold(fold: Fold) -> FoldResult:
        torch.manual_seed(train_cfg.seed + fold.index)
        model = build_model({"name": name, **config})
        # Feature statistics from this fold's training graphs only, saved with the weights.
        model.scaler.fit(torch.cat([graphs[i].x for i in fold.train]))
        device = resolve_device(train_cfg.device)
        val = eval_loader(graphs, fold.val)
        trainer = Trainer(
            model,
            loss_fn,
            train_cfg,
            run_dir=None if out is None else out / f"fold-{fold.index:02d}",
            task="graph",
            model_config={"name": name, **config},
            extra_config={"dataset": dataset.name, "fold": fold.index, **(extra or {})},
        )
        result = trainer.fit(
            train_loader(
                [graphs[i] for i in fold.train],
                batch_size,
                padded,
                seed=train_cfg.seed + fold.index,
                device=train_cfg.device,
            ),
            evaluate=lambda m: {f"val_{k}": v for k, v in score(m, val, device).items()},
            select="val_select",
            resume=resume,
        )
        scoring = time.perf_counter()
        model.load_state_dict(result.best_state)
        test_acc = accuracy(model, eval_loader(graphs, fold.test), device)
        train_acc = accuracy(model, eval_loader(graphs, fold.train), device)
        recorded = {"best_epoch": result.best_epoch, "epochs": train_cfg.epochs}
        if "val_loss" in result.best_metrics:  # breaks ties of val_acc in a model selection
            recorded["val_loss"] = float(result.best_metrics["val_loss"])
        return FoldResult(
            fold.index,
            test_acc,
            float(result.best_metrics["val_acc"]),
            train_acc,
            result.seconds + time.perf_counter() - scoring,  # a resumed fold: every session's
            recorded,
        )

    return fit_fold


def make_fit_wl(dataset: TUDataset, rounds: int):
    """``fit_fold`` for WL+SVM: kernels computed once for all ``rounds``, ``(h, C)`` chosen on
    validation. A fold's ``seconds`` include an equal share of the kernel computation."""
    start = time.perf_counter()
    wl = WLSubtreeSVM().precompute(dataset.graphs)
    kernel_seconds = time.perf_counter() - start
    labels = dataset.labels.numpy()

    def fit_fold(fold: Fold) -> FoldResult:
        start = time.perf_counter()
        chosen = wl.fit(labels, fold.train, fold.val)
        test_acc = float((wl.predict(fold.test) == labels[fold.test]).mean())
        return FoldResult(
            fold.index,
            test_acc,
            chosen["val_acc"],
            chosen["train_acc"],
            time.perf_counter() - start + kernel_seconds / rounds,
            {"h": chosen["h"], "C": chosen["C"], "kernel_seconds": kernel_seconds},
        )

    return fit_fold


def training_settings(model: str, **settings: Any) -> dict[str, Any]:
    """The training settings (``epochs``, ``lr`` ...) that :func:`cross_validate` takes for
    ``model``: all of them for a network, none for WL+SVM, which has no training loop. For
    callers that use one set of settings for every model."""
    return {} if model == "wl" else settings


def cross_validate(
    dataset_name: str,
    model: str = "et",
    folds: int = 10,
    max_folds: int | None = None,
    only: Sequence[int] | None = None,
    epochs: int | None = None,
    preset: str = "cpu",
    protocol: str = "cv",
    seed: int = 0,
    root: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    ema_decay: float | None = None,
    max_nodes: int | None = None,
    val_fraction: float = 0.1,
    device: str = "auto",
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    dataset: TUDataset | None = None,
    command: dict[str, Any] | None = None,
) -> CVSummary:
    """k-fold cross-validation of one model on one TU dataset (the Python face of the CLI).

    Args:
        dataset_name: TU dataset name (``"PROTEINS"`` ...).
        model: ``"et"``, ``"gin"``, ``"mlp"`` or ``"wl"``.
        folds: ``k`` of the stratified k-fold split.
        max_folds: run only the first rounds of that split (smaller budget, same splits).
        only: run only these rounds (to spread the folds of one run over processes).
        epochs, batch_size, lr, weight_decay: override the preset's training settings
            (neural models; refused for ``"wl"``, see :func:`training_settings`).
        ema_decay: select and score a moving average of the weights (``TrainConfig``) instead
            of the last ones (neural models; default off).
        preset: ET preset (:data:`~energy_transformer.models.graph.PRESETS`); its training
            settings are used for every neural model, so baselines get the same budget.
        protocol: ``"cv"`` or ``"train-on-all"`` (NOT a generalisation measure).
        seed: fixes splits, initialisations and batches.
        root: data folder (default ``$ET_DATA``, then the cache / download).
        out: run folder (``config.json``, ``fold-XX/``, ``folds.csv``, ``summary.json``).
        resume: skip finished folds and resume an interrupted one.
        max_nodes: keep only the first ``max_nodes`` nodes of larger graphs (dense attention
            on DD); recorded in the results.
        val_fraction: validation share of each training fold.
        overrides: constructor overrides of the neural model (ET: ``blocks``, ``adjacency``
            ...; GIN: ``hidden``, ``layers`` ...), e.g. to cross-validate a variant.
        dataset: an already prepared dataset (:func:`prepare_dataset`), to share across models.
        command: the ``et train graph`` options, recorded in ``config.json`` for ``--resume``
            to take the ones it is not given.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    hp = TRAIN_PRESETS[preset]
    if model == "wl" and overrides:
        raise ValueError(f"wl takes no constructor overrides, got {sorted(overrides)}")
    if model == "wl":
        settings = dict(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            ema_decay=ema_decay,
        )
        if given := [name for name, value in settings.items() if value is not None]:
            raise ValueError(
                f"wl has no training loop (h and C are chosen on validation), so"
                f" {', '.join(given)} do not apply to it"
            )
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:  # before the data are read: a refused folder costs nothing
        check_not_part_of_run(out_dir, "graph")
        check_new_run(out_dir, resume, task="graph")
    if dataset is None:
        pe_dim = {**PRESETS[preset], **((overrides or {}) if model == "et" else {})}["pe_dim"]
        dataset = prepare_dataset(dataset_name, root, model, max_nodes, pe_dim)
    meta: dict[str, Any] = {
        "dataset": dataset.name,
        "model": model,
        "preset": preset,
        "protocol": protocol,
        "k": folds,
        "max_nodes": max_nodes,
        "features": dataset.feature_names,
        "data": recorded_path(root),
        "seed": seed,
        "val_fraction": val_fraction,
    }
    if model == "wl":
        rounds = 1 if protocol == "train-on-all" else len(only or []) or max_folds or folds
        fit_fold = make_fit_wl(dataset, rounds)
    else:
        config = model_config(model, dataset.num_features, dataset.num_classes, preset, overrides)
        # `None` means the preset's value; 0 is passed on, for TrainConfig to reject.
        n_epochs = hp["epochs"] if epochs is None else epochs
        n_batch = hp["batch_size"] if batch_size is None else batch_size
        if n_batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {n_batch}")
        train_cfg = TrainConfig(
            epochs=n_epochs,
            lr=hp["lr"] if lr is None else lr,
            weight_decay=hp["weight_decay"] if weight_decay is None else weight_decay,
            warmup_epochs=min(2.0, n_epochs / 10),
            seed=seed,
            device=device,
            progress=progress,
            ema_decay=ema_decay,
        )
        meta["model_config"] = config
        meta["train"] = {
            "epochs": n_epochs,
            "lr": train_cfg.lr,
            "weight_decay": train_cfg.weight_decay,
            "batch_size": n_batch,
            "label_smoothing": hp["label_smoothing"],
        }
        if ema_decay is not None:  # absent when off, as in the runs recorded before it existed
            meta["train"]["ema_decay"] = ema_decay
        fit_fold = make_fit_neural(
            dataset,
            model,
            config,
            train_cfg,
            n_batch,
            hp["label_smoothing"],
            out_dir,
            resume,
            {"protocol": protocol, "preset": preset, "seed": seed},
        )
    if out_dir is not None:
        if resume:
            _check_same_setting(out_dir, meta)
        run_config = {"task": "graph", "model": {"name": model}, "extra": meta}
        if command is not None:
            run_config["command"] = command
        write_text_atomic(out_dir / "config.json", json.dumps(run_config, indent=2, default=str))
    labels = dataset.labels.numpy()
    return run_kfold(
        labels,
        fit_fold,
        folds,
        val_fraction,
        seed,
        protocol,
        out_dir,
        resume,
        meta,
        max_folds,
        only,
    )


# Settings that change a fold's result; the data's path may differ between machines.
_SETTING_KEYS = (
    "dataset", "model", "preset", "protocol", "k", "max_nodes", "model_config", "train", "seed",
    "val_fraction",
)  # fmt: skip


def _check_same_setting(out_dir: Path, meta: dict[str, Any]) -> None:
    """Resuming reads finished folds back: refuse a folder whose run had other settings (a
    60-epoch fold must not stand in a 300-epoch table)."""
    saved = out_dir / "config.json"
    if not saved.is_file():
        return
    try:
        before = json.loads(saved.read_text())["extra"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{saved} is not a run config ({err}); cannot resume from it") from None
    changed = config_changes(before, meta, _SETTING_KEYS)
    if changed:
        raise ValueError(
            f"{out_dir} holds a run with other settings ({describe_changes(changed)}): resume it"
            " with the same settings, or give another out folder"
        )


# What fixes a run's splits: runs that agree on these can be compared, or selected among, fold
# by fold.
_SPLIT_KEYS = ("dataset", "protocol", "k", "max_nodes", "seed", "val_fraction")


def select_runs(
    out: str | Path, candidates: Sequence[str | Path], partial: bool = False
) -> CVSummary:
    """Model selection across finished cross-validation runs: fold by fold, the run with the
    best validation accuracy (:func:`~energy_transformer.protocols.kfold.select_on_validation`),
    written to ``out`` as a run of its own (``config.json``, ``folds.csv``, ``summary.json``).

    The candidates must share their splits (dataset, k, seed, validation share, node cap).
    Ties go to the lower validation loss, else to the candidate named first. A fold that some
    candidate has not finished is refused, unless ``partial``: then the selection covers the
    folds every candidate finished (and says how many).
    """
    out, folders = Path(out), [Path(c) for c in candidates]
    check_selection_out(out)
    names = run_names(folders)
    metas, results = {}, {}
    for name, folder in zip(names, folders, strict=True):
        config = folder / "config.json"
        try:
            saved = json.loads(config.read_text())
            meta = saved["extra"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{folder} is not a graph run folder ({config}: {err})") from None
        if saved.get("task") != "graph":
            raise ValueError(f"{folder} is not a graph run (task {saved.get('task')!r})")
        if meta.get("protocol") != "cv":
            raise ValueError(f"{folder} is a {meta.get('protocol')} run: select among cv runs")
        metas[name], results[name] = meta, load_results(folder)
    first, *others = metas
    for name in others:
        changed = config_changes(metas[first], metas[name], _SPLIT_KEYS)
        if changed:
            values = ", ".join(f"{k} {a!r} in {first}, {b!r} in {name}" for k, a, b in changed)
            raise ValueError(f"{first} and {name} were not run on the same splits: {values}")
    finished = {name: {r.fold for r in folds} for name, folds in results.items()}
    every = set.union(*finished.values())
    lacking = {name: sorted(every - done) for name, done in finished.items() if every - done}
    if lacking and not partial:
        missing = "; ".join(f"{name} lacks fold(s) {folds}" for name, folds in lacking.items())
        raise ValueError(
            f"{missing}: finish them (the same training command with --resume), or select over"
            " the folds every run finished (--partial)"
        )
    selected = select_on_validation(results)
    meta = {key: metas[first].get(key) for key in _SPLIT_KEYS}
    trains = [m.get("train") for m in metas.values()]
    meta |= {
        "model": "selected",
        "train": trains[0] if all(t == trains[0] for t in trains) else None,
        "selected_from": {
            name: {
                "path": str(c.resolve()),
                "model": m.get("model"),
                "model_config": m.get("model_config"),
            }
            for (name, m), c in zip(metas.items(), folders, strict=True)
        },
    }
    summary = summarize(selected)
    out.mkdir(parents=True, exist_ok=True)
    run_config = {"task": "graph", "model": {"name": "selected"}, "extra": meta}
    write_text_atomic(out / "config.json", json.dumps(run_config, indent=2, default=str))
    save_results(out, summary, meta)
    return summary


# How a selection table names the way a tie of validation accuracy was broken.
_TIES = {"loss": " (tie: lower val loss)", "order": " (tie: named first)"}


def selection_table(summary: CVSummary) -> str:
    """Which run each fold selected (and how a tie was broken), with every candidate's
    validation and the chosen test accuracy, then the selection's mean."""
    names = list(summary.folds[0].extra["val_accs"])
    lines = [
        "| fold | selected | " + " | ".join(f"val {n}" for n in names) + " | test |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in summary.folds:
        vals = " | ".join(f"{100 * float(r.extra['val_accs'][n]):.1f}" for n in names)
        chosen = r.extra["selected"] + _TIES.get(r.extra.get("tie"), "")
        lines.append(f"| {r.fold} | {chosen} | {vals} | {100 * r.test_acc:.1f} |")
    lines += ["", f"selected: {summary.describe()} over {counted(len(summary.folds), 'fold')}"]
    return "\n".join(lines)


def select(args: argparse.Namespace) -> CVSummary:
    """``et select RUN RUN ... --out OUT``: :func:`select_runs`, and which run each fold chose."""
    summary = select_runs(args.out, args.runs, args.partial)
    print(selection_table(summary))
    print(f"selection written to {args.out} (folds.csv, summary.json)")
    return summary


# -- reporting --------------------------------------------------------------------------------


def results_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of cross-validation summaries.

    Each row: ``dataset, model, summary (CVSummary), budget (str)``.
    """
    lines = [
        "| dataset | model | test acc % (mean +- std) | val acc % | s / fold | budget"
        " | majority class % |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s: CVSummary = row["summary"]
        val = 100 * float(np.mean([f.val_acc for f in s.folds]))
        floor = "-" if s.majority is None else f"{100 * s.majority:.1f}"
        lines.append(
            f"| {row['dataset']} | {row['model']} | {s.describe()} | {val:.1f} |"
            f" {s.seconds_per_fold:.1f} | {row.get('budget', '')} | {floor} |"
        )
    if any(row["summary"].protocol == "train-on-all" for row in rows):
        lines.append(f"\n{NOT_GENERALISATION}.")
    return "\n".join(lines)


def plot_energy(
    model: GraphEnergyTransformer, graphs: Sequence[Data], out: Path, what: str = "graphs"
) -> list[Path]:
    """Energy descent of each ET block on a batch of graphs (eval mode), one PNG per block;
    ``what`` names the graphs in the title (``"test graphs of PROTEINS, fold 0"``).

    Runs the dense layout (same result as the edge list) so each graph's energy is its own.
    """
    from energy_transformer.plots import plot_energy_descent

    device = next(model.parameters()).device
    with model.dense_eval(), torch.no_grad():
        batch = Batch.from_data_list(list(graphs)).to(device)
        _, trajectories = model(batch, return_trajectory=True)
    paths = []
    for i, trajectory in enumerate(trajectories):
        name = (
            "energy_descent.png" if len(trajectories) == 1 else f"energy_descent_block{i + 1}.png"
        )
        block = f", block {i + 1} of {len(trajectories)}" if len(trajectories) > 1 else ""
        steps = counted(model.steps, "step")
        title = f"graph ET{block} (alpha {model.alpha:g}, {steps}): {len(graphs)} {what}"
        paths.append(plot_energy_descent(trajectory.energies, out / name, title, unit="graphs"))
    return paths


def plot_attention(
    model: GraphEnergyTransformer,
    graphs: Sequence[Data],
    out: Path,
    what: str = "graphs",
    shown: int = 6,
) -> Path:
    """``attention.png``: ``shown`` graphs (the first of each class in turn) drawn with every
    node coloured by the CLS token's attention to it at the end of the descent (what the class
    is read from) over the graph's mean (1: an average node; a graph's size would otherwise set
    its colour), each with its true and predicted class; ``what`` names the graphs."""
    from energy_transformer.plots import plot_graph_attention

    # Every class in turn, so that the picture is not six graphs of the commonest class.
    queues: dict[int, list[Data]] = {}
    for graph in graphs:
        queues.setdefault(int(graph.y.view(-1)[0]), []).append(graph)
    order = [
        queue[i]
        for i in range(len(graphs))
        for _, queue in sorted(queues.items())
        if i < len(queue)
    ]
    graphs = order[:shown]
    device = next(model.parameters()).device
    weights, logits = model.cls_attention(Batch.from_data_list(graphs).to(device))
    probs = logits.softmax(dim=-1).cpu()
    panels, rows, titles = [], [], []
    for i, graph in enumerate(graphs):
        panels.append((graph.edge_index, graph.num_nodes))
        share = weights[i, : graph.num_nodes].cpu()
        rows.append(share / share.mean())  # 1 = the graph's mean: size drops out
        guess = int(probs[i].argmax())
        truth = int(graph.y.view(-1)[0])
        titles.append(f"true {truth}, predicted {guess} (prob. {float(probs[i, guess]):.2f})")
    title = f"Where the CLS token looks after the descent: {len(graphs)} {what}"
    label = "CLS attention to the node / the graph's mean\n(mean over heads; red: more)"
    return plot_graph_attention(panels, rows, out / "attention.png", titles, title, label, 1.0)


def pictures(
    model: GraphEnergyTransformer, graphs: Sequence[Data], out: Path, what: str
) -> list[Path]:
    """The energy descent on up to 32 of ``graphs`` and the CLS attention on 6 of them."""
    return [*plot_energy(model, graphs[:32], out, what), plot_attention(model, graphs, out, what)]


# -- CLI ----------------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="TU dataset name, e.g. PROTEINS, MUTAG")
    parser.add_argument("--model", choices=MODELS, default="et", help="model to cross-validate")
    parser.add_argument(
        "--folds", type=int, default=None, help="k of stratified k-fold CV (default 10)"
    )
    parser.add_argument(
        "--max-folds", type=int, default=None, help="run only the first N rounds of the k folds"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs ({preset_values(TRAIN_PRESETS, 'epochs')})",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="ET sizes and training settings: released (authors' code), paper, cpu (small)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="cv",
        help="cv (honest) or train-on-all (released notebooks; NOT a generalisation measure)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default runs/graph-DATASET-MODEL)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="data folder (default $ET_DATA, then the cache)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the splits, initialisations and batches"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=resume_help("the run in OUT (default: the folder that --dataset and --model name)"),
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"graphs per batch ({preset_values(TRAIN_PRESETS, 'batch_size')})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate, AdamW ({preset_values(TRAIN_PRESETS, 'lr')})",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"AdamW weight decay ({preset_values(TRAIN_PRESETS, 'weight_decay')})",
    )
    add_ema_argument(parser)
    parser.add_argument(
        "--max-nodes", type=int, default=None, help="keep the first N nodes of larger graphs"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of each training fold held out to pick the epoch (default 0.1)",
    )
    parser.add_argument(
        "--blocks", type=int, default=None, help=f"ET blocks ({preset_values(PRESETS, 'blocks')})"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"descent steps per ET block ({preset_values(PRESETS, 'steps')})",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"ET step size ({preset_values(PRESETS, 'alpha')})",
    )
    parser.add_argument(
        "--adjacency",
        choices=ADJACENCIES,
        default=None,
        help="hard mask, a learned bias per head on edges (soft) or the released code's"
        f" weighting ({preset_values(PRESETS, 'adjacency')})",
    )
    parser.add_argument(
        "--attention", choices=("edges", "dense"), default=None, help="edge list or padded masks"
    )
    parser.add_argument(
        "--noise-std",
        type=float,
        default=None,
        help="sigma of the Langevin-like noise sqrt(alpha) * sigma * N(0, I) of each training"
        f" step ({preset_values(PRESETS, 'noise_std')})",
    )
    parser.add_argument(
        "--max-degree",
        type=int,
        default=None,
        help="embed node degrees up to this (Graphormer's centrality encoding; 0, every"
        " preset: off)",
    )
    parser.add_argument("--head", choices=HEADS, default=None, help="CLS readout (paper: linear)")
    parser.add_argument(
        "--readout",
        choices=READOUTS,
        default=None,
        help="what the head reads: the final CLS token (the paper's) or it and the sum of the"
        " final node tokens (a departure: the sum counts what the CLS query's softmax averages)",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=None,
        metavar="P",
        help="dropout on what the head reads, in training (a departure; every preset: 0;"
        " GIN's and the MLP's heads: 0.5)",
    )
    parser.add_argument(
        "--exclude-self",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a node does not attend to itself, as in the paper's S(C) (preset: it does)",
    )
    parser.add_argument(
        "--learn-beta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one learned beta per head, as the released code (preset released: on; else off)",
    )
    parser.add_argument(
        "--hopfield",
        choices=HOPFIELD_KINDS,
        default=None,
        help="Hopfield energy: relu (the paper's, every preset) or softmax",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def run_folder(args: argparse.Namespace) -> Path:
    """``--out``, else ``runs/graph-DATASET-MODEL``."""
    return args.out or Path("runs") / f"graph-{args.dataset}-{args.model}"


def train(args: argparse.Namespace) -> Path:
    """``et train graph``: cross-validate, write the table and the energy-descent plot."""
    out = run_folder(args)
    # The split options given (cross_validate's own defaults stand for the rest).
    given = {
        key: value
        for key, value in (
            ("folds", args.folds),
            ("max_folds", args.max_folds),
            ("val_fraction", args.val_fraction),
        )
        if value is not None
    }
    if args.protocol == "train-on-all" and given:
        options = option_names(given)
        raise ValueError(
            f"{options}: not used by --protocol train-on-all, which trains one round on every"
            " graph and scores the same graphs"
        )
    overrides = {
        key: value
        for key, value in (
            ("blocks", args.blocks),
            ("steps", args.steps),
            ("adjacency", args.adjacency),
            ("attention", args.attention),
            ("noise_std", args.noise_std),
            ("max_degree", args.max_degree),
            ("head", args.head),
            ("readout", args.readout),
            ("dropout", args.dropout),
            ("alpha", args.alpha),
            ("exclude_self", args.exclude_self),
            ("learn_beta", args.learn_beta),
            ("hopfield", args.hopfield),
        )
        if value is not None
    }
    # Unused options are named, not refused: one command line may serve every --model.
    if args.model != "et" and overrides:
        options = option_names(overrides)
        print(f"note: {options} not used: options of the Energy Transformer, not of {args.model}")
        overrides = {}
    if args.model == "wl":
        if launched_world_size() > 1:
            raise ValueError(
                "WL+SVM is fitted by scikit-learn in one process, so torchrun would only repeat"
                " it in every process: run it without torchrun"
            )
        training = ("epochs", "batch_size", "lr", "weight_decay", "ema")
        if unused := [k for k in training if getattr(args, k) is not None]:
            options = option_names(unused)
            print(f"note: {options} not used: WL+SVM has no training loop (h, C chosen on val)")
    summary = cross_validate(
        args.dataset,
        args.model,
        preset=args.preset,
        protocol=args.protocol,
        seed=args.seed,
        root=args.data,
        out=out,
        resume=args.resume,
        max_nodes=args.max_nodes,
        device=args.device,
        progress=not args.no_progress,
        overrides=overrides,
        command=command_record(args),
        **given,
        **training_settings(
            args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            ema_decay=args.ema,
        ),
    )
    if world()[0] != 0:  # under torchrun every process trained; one reports
        return out
    table = results_table([_row(out, summary)])
    (out / "results.md").write_text(table + "\n")
    print(table)
    if args.model == "et" and (paths := _plot_run(out, args.data, args.device)):
        print("pictures: " + ", ".join(str(p) for p in paths))
    print(f"run folder: {out}")
    return out


def _row(out: Path, summary: CVSummary) -> dict[str, Any]:
    meta = json.loads((out / "config.json").read_text())["extra"]
    epochs = meta.get("train", {}).get("epochs")
    budget = f"{len(summary.folds)} of {meta['k']} folds"
    if summary.protocol == "train-on-all":
        budget = "1 round, train = test"
    if epochs:
        budget += f", {counted(epochs, 'epoch')}"
    return {
        "dataset": meta["dataset"],
        "model": meta["model"],
        "summary": summary,
        "budget": budget,
    }


def run_dataset(
    out: str | Path, data: str | Path | None = None
) -> tuple[TUDataset, dict[str, Any]]:
    """The dataset of the cross-validation run ``out``, prepared as it was for training
    (Laplacian encodings, node cap), and the run's record; ``data``: where the files are, if
    not where the run read them."""
    meta = json.loads((Path(out) / "config.json").read_text())["extra"]
    root = data if data is not None else meta.get("data")
    pe_dim = meta.get("model_config", {}).get("pe_dim", 15)
    dataset = prepare_dataset(meta["dataset"], root, meta["model"], meta["max_nodes"], pe_dim)
    return dataset, meta


def _plot_run(out: Path, data: Path | None, device: str = "auto", graphs: int = 32) -> list[Path]:
    """Pictures of fold 0's selected model on (up to) ``graphs`` of its test graphs."""
    fold_dir = out / "fold-00"
    if not (fold_dir / "split.json").is_file():
        return []
    dataset, meta = run_dataset(out, data)
    model = load_model(fold_dir, device, task="graph")
    test = json.loads((fold_dir / "split.json").read_text())["test"][:graphs]
    what = f"test graphs of {meta['dataset']}, fold 0"
    return pictures(model, [dataset[i] for i in test], out, what)


def evaluate(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``et eval RUN``: re-score every saved fold's selected model on its test split.

    ``RUN`` is the folder written by ``et train graph``, one ``fold-XX`` inside it, or a
    checkpoint file of a fold (its weights instead of the selected ones). Writes
    ``RUN/eval.json`` (or ``--out``) and, for ET, the energy-descent plot.
    """
    run_dir, weights = Path(run_dir), None
    if run_dir.is_file():
        run_dir, weights = run_dir.parent, run_dir
    if (run_dir / "split.json").is_file() and not (run_dir / "summary.json").is_file():
        fold_dirs, out = [run_dir], run_dir.parent
    else:
        out = run_dir
        fold_dirs = sorted(p for p in run_dir.glob("fold-*") if (p / "split.json").is_file())
    if not fold_dirs:
        refuse_selection(run_dir, "its folds.csv names the run each fold chose")
        raise FileNotFoundError(f"no finished folds (fold-XX/split.json) under {run_dir}")
    dataset, meta = run_dataset(out, args.data)
    device = resolve_device(args.device)
    results = []
    rescored = meta["model"] != "wl"
    if not rescored:
        print(
            "wl keeps no weights (its SVM is refitted by et train): the test accuracies below"
            " are the ones et train recorded, not re-scored"
        )
    for fold_dir in fold_dirs:
        saved = FoldResult(**json.loads((fold_dir / "result.json").read_text()))
        split = json.loads((fold_dir / "split.json").read_text())
        if not rescored:
            results.append(saved)
            continue
        model = load_model(weights or fold_dir, device, task="graph")
        saved.test_acc = accuracy(model, eval_loader(dataset.graphs, split["test"]), device)
        if weights is not None:  # the saved val acc is the selected epoch's, not these weights'
            saved.val_acc = accuracy(model, eval_loader(dataset.graphs, split["val"]), device)
        results.append(saved)
        scored = run_weights(weights or fold_dir).name
        print(f"{fold_dir.name}: test acc {100 * saved.test_acc:.2f}% ({scored})")
    summary = summarize(results, meta["protocol"])
    table = results_table([_row(out, summary)])
    print(table)
    dest = args.out or run_dir
    dest.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": meta["dataset"],
        "model": meta["model"],
        "protocol": summary.protocol,
        "note": summary.note,
        "rescored": rescored,
        "test_acc_mean": summary.mean,
        "test_acc_std": summary.std,
        "folds": {r.fold: r.test_acc for r in results},
        "val_folds": {r.fold: r.val_acc for r in results},
    }
    (dest / "eval.json").write_text(json.dumps(report, indent=2))
    print(f"metrics: {dest / 'eval.json'}")
    if meta["model"] == "et":
        model = load_model(weights or fold_dirs[0], device, task="graph")
        split = json.loads((fold_dirs[0] / "split.json").read_text())
        what = f"test graphs of {meta['dataset']}, {fold_dirs[0].name}"
        paths = pictures(model, [dataset[i] for i in split["test"][:32]], dest, what)
        print("pictures: " + ", ".join(str(p) for p in paths))
    return report
