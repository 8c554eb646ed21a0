"""Graph anomaly detection protocols: splits, training, model selection and scoring.

Two protocols, one harness, the same budget for every model:

- ``"bwgnn"`` (the ET paper's, from BWGNN, Tang et al. 2022): stratified train split of 1% or
  40%, the rest split 1:2 into validation and test; class-weighted cross-entropy; the macro-F1
  threshold is tuned on validation over 0.05..0.95; test macro-F1 and AUROC are read at the epoch
  of best validation macro-F1.
- ``"gadbench"`` (Tang et al., NeurIPS 2023): stratified 40% train, the rest 1:2 val:test;
  AUROC, AUPRC and Rec@K (K = number of true anomalies); test scores at the epoch of best
  validation AUPRC; 10 seeds.

Neural models (ET and the PyG baselines) train full-batch through
:class:`~energy_transformer.train.Trainer`, evaluated on validation after every epoch;
RF-Graph is fitted once with scikit-learn. Results are mean :math:`\\pm` std over seeds.

Where the harness departs from GADBench's own code, every model alike: the split is a stratified
40/20/40 on every dataset (GADBench's Tolokers split is 50/25/25: ``et train anomaly --splits
file`` uses the masks shipped with the data); a fixed budget of ``epochs`` (default 100) with no
early stopping (GADBench: up to 200, patience 50); the optimiser is the shared Trainer's AdamW
with weight decay 0 (Adam), betas (0.9, 0.99) and gradient clipping at 1.0 (GADBench: Adam's
default betas, no clipping); no semi-supervised (20 + 80 labels) setting.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from energy_transformer.data.gad import SPLIT_MASKS, check_split_masks
from energy_transformer.metrics import auprc, auroc, macro_f1, recall_at_k, tune_threshold_macro_f1
from energy_transformer.models.features import piecewise_linear_encoding
from energy_transformer.models.gad_baselines import (
    GAD_BASELINES,
    aggregate_neighbors,
    is_neural,
)
from energy_transformer.models.node import NodeEnergyTransformer
from energy_transformer.nn.checks import check_count, check_positive_int, check_real
from energy_transformer.text import counted
from energy_transformer.train import TrainConfig, Trainer, seed_everything
from energy_transformer.train.ema import check_ema_decay


@dataclass(frozen=True)
class Protocol:
    """A protocol: default train ratio, the validation metric that selects the epoch, and the
    test metrics reported (keys of :func:`score_split`)."""

    name: str
    train_ratio: float
    select: str
    metrics: tuple[str, ...]


PROTOCOLS: dict[str, Protocol] = {
    "bwgnn": Protocol("bwgnn", 0.4, "val_macro_f1", ("macro_f1", "auroc")),
    "gadbench": Protocol("gadbench", 0.4, "val_auprc", ("auroc", "auprc", "rec_at_k")),
}
MODELS: tuple[str, ...] = ("et", *GAD_BASELINES)
# Where a seed's split comes from: a fresh stratified draw, or the dataset's own masks.
SPLITS = ("random", "file")


def get_protocol(name: str) -> Protocol:
    """The :class:`Protocol` named ``name`` (``"bwgnn"`` or ``"gadbench"``)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


# -- splits ---------------------------------------------------------------------------------


@dataclass
class Split:
    """Node indices (int64, sorted) of one train / validation / test split."""

    train: Tensor
    val: Tensor
    test: Tensor

    def fingerprint(self) -> str:
        """Eight hex digits that differ between splits: runs compared for model selection
        must share theirs (logs and results carry it)."""
        digest = hashlib.sha1()
        for part in (self.train, self.val, self.test):
            digest.update(part.cpu().to(torch.int64).numpy().tobytes())
            digest.update(b"|")
        return digest.hexdigest()[:8]


def stratified_split(
    y: Tensor, train_ratio: float, seed: int = 0, label_mask: Tensor | None = None
) -> Split:
    """Stratified split: ``train_ratio`` of each class to train, the rest 1:2 into val:test.

    Args:
        y: ``(N,)`` labels in {0, 1}.
        train_ratio: fraction of the labelled nodes used for training, in (0, 1).
        seed: the permutation's seed.
        label_mask: ``(N,)`` bool; nodes with False (e.g. Amazon's unlabeled users) are left out.

    Every class gets at least one node in each part, so ratios as small as 1% still give a
    training set with both classes.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must lie in (0, 1), got {train_ratio}")
    labelled = torch.ones_like(y, dtype=torch.bool) if label_mask is None else label_mask
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[], [], []]
    for c in (0, 1):
        idx = torch.nonzero((y == c) & labelled).flatten()
        if idx.numel() < 3:
            raise ValueError(
                f"class {c} has {counted(idx.numel(), 'labelled node')}; a split needs >= 3"
            )
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_train = min(max(1, round(train_ratio * idx.numel())), idx.numel() - 2)
        n_val = max(1, round((idx.numel() - n_train) / 3))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return Split(*(torch.cat(p).sort().values for p in parts))


def file_splits(data: Any, indices: list[int]) -> list[Split]:
    """The ``indices``-th splits shipped with a dataset (``train_masks`` ... of the .npz layout).

    The masks are checked once, here too (all three, bool or 0/1, disjoint): ``data`` may not
    come from :func:`~energy_transformer.data.gad.load_npz_graph`. Every index is checked
    before any split is returned.
    """
    found = {k: getattr(data, k, None) for k in SPLIT_MASKS}
    masks = check_split_masks(found, getattr(data, "num_nodes", None), "this dataset")
    if not masks:
        raise ValueError("this dataset ships no split masks (train_masks/val_masks/test_masks)")
    splits = masks["train_masks"].shape[0]
    for index in indices:
        if not 0 <= index < splits:
            raise ValueError(
                f"split {index} asked for (seed {index} of --splits file), but the dataset ships"
                f" {splits}: use seeds in [0, {splits})"
            )
    return [
        Split(*(torch.nonzero(masks[k][index]).flatten() for k in SPLIT_MASKS)) for index in indices
    ]


def file_split(data: Any, index: int = 0) -> Split:
    """The ``index``-th split shipped with a dataset (see :func:`file_splits`)."""
    return file_splits(data, [index])[0]


def train_ratio_of(protocol: Protocol, train_ratio: float | None, splits: str) -> float | None:
    """The training share random splits draw (``train_ratio``, default the protocol's); ``None``
    for the dataset's own splits."""
    if splits == "file":
        return None
    return protocol.train_ratio if train_ratio is None else train_ratio


def seed_splits(data: Any, seeds: list[int], splits: str, ratio: float | None) -> dict[int, Split]:
    """Each seed's split: the dataset's own split number ``seed`` (``splits="file"``, every one
    checked before any is returned) or a stratified draw of ``ratio`` (``"random"``)."""
    if splits not in SPLITS:
        raise ValueError(f"splits must be one of {SPLITS}, got {splits!r}")
    if splits == "file":
        return dict(zip(seeds, file_splits(data, list(seeds)), strict=True))
    mask = getattr(data, "label_mask", None)
    return {seed: stratified_split(data.y, ratio, seed, mask) for seed in seeds}


# -- scoring --------------------------------------------------------------------------------

RANKING = ("auroc", "auprc", "rec_at_k")


def score_split(scores: Tensor, y: Tensor, split: Split) -> dict[str, float]:
    """Validation and test metrics of anomaly scores ``(N,)`` (higher = more anomalous).

    Keys ``val_<m>`` and ``test_<m>`` for ``m`` in ``macro_f1``, ``auroc``, ``auprc``,
    ``rec_at_k``, plus ``threshold``: the macro-F1 threshold is the one maximising validation
    macro-F1 over 0.05..0.95 (scores read as probabilities), then applied to test. All metrics
    are computed at once so that one training run serves every protocol.
    """
    scores, y = scores.detach().float().cpu(), y.cpu()
    val, test = split.val.cpu(), split.test.cpu()
    sv, yv, st, yt = scores[val], y[val], scores[test], y[test]
    out: dict[str, float] = {}
    out["threshold"], out["val_macro_f1"] = tune_threshold_macro_f1(sv, yv)
    out["test_macro_f1"] = macro_f1((st > out["threshold"]).long(), yt)
    for name, fn in (("auroc", auroc), ("auprc", auprc), ("rec_at_k", recall_at_k)):
        out[f"val_{name}"], out[f"test_{name}"] = fn(sv, yv), fn(st, yt)
    return out


def select_epoch(history: list[dict[str, float]], protocol: Protocol) -> dict[str, float]:
    """The epoch's row with the best validation metric of ``protocol`` (first one on ties)."""
    if not history:
        raise ValueError("no epochs to select from")
    return max(history, key=lambda row: row[protocol.select])


def pick_test(row: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
    """The ``test_<name>`` entries of a :func:`score_split` row, keyed by ``name``."""
    return {k: row[f"test_{k}"] for k in names}


def class_weight(y: Tensor) -> Tensor:
    """Cross-entropy weights ``[1, #normal / #anomalous]`` of the training labels."""
    pos = int(y.sum())
    if pos == 0 or pos == y.numel():
        raise ValueError("the training nodes hold a single class; both are needed")
    return torch.tensor([1.0, (y.numel() - pos) / pos])


# -- models ---------------------------------------------------------------------------------


@dataclass
class HarnessConfig:
    """What every model of a comparison shares: epochs, optimiser, sizes.

    ``et`` holds extra keyword arguments of :class:`NodeEnergyTransformer`; ``baseline`` those of
    the PyG baselines; ``rf`` those of both tree ensembles (:class:`RFGraph`, :class:`GBGraph`).
    ``input_hops`` > 0 feeds every neural model RF-Graph's feature map instead of the raw
    features, ``input_bins`` > 0 their piecewise-linear encoding (see :func:`neural_input`).
    ``lr``, ``weight_decay`` and ``grad_clip`` (max gradient norm, ``None``: no clipping) go to
    the Trainer's AdamW at a constant learning rate, ``ema_decay`` to the Trainer too (a moving
    average of the weights is evaluated and selected); ``standardize``: standardise the node
    features first (:func:`prepare`); ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``; ``progress``: progress bars and per-epoch lines.
    """

    epochs: int = 100
    lr: float = 0.01
    weight_decay: float = 0.0
    ema_decay: float | None = None
    hidden: int = 64
    grad_clip: float | None = 1.0
    standardize: bool = True
    input_hops: int = 0
    input_bins: int = 0
    device: str = "auto"
    progress: bool = False
    et: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    rf: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked before any data are read: a bad option costs nothing.
        check_positive_int("epochs", self.epochs)
        check_real("lr", self.lr)
        check_real("weight_decay", self.weight_decay, allow_zero=True)
        check_ema_decay(self.ema_decay)
        check_positive_int("hidden", self.hidden)
        check_count("input_hops", self.input_hops)
        check_count("input_bins", self.input_bins)
        build_model("et", 1, self)  # ET's options, checked by its constructor


def build_model(name: str, in_dim: int, cfg: HarnessConfig) -> tuple[nn.Module, dict[str, Any]]:
    """A neural model by name and the keyword arguments that rebuild it."""
    if name == "et":
        kwargs = {"in_dim": in_dim, "dim": cfg.hidden, **cfg.et}
        return NodeEnergyTransformer(**kwargs), {"name": name, **kwargs}
    if name not in GAD_BASELINES or not is_neural(name):
        raise ValueError(f"unknown neural model {name!r}; choose from {MODELS}")
    kwargs = {"in_dim": in_dim, "hidden": cfg.hidden, **cfg.baseline}
    return GAD_BASELINES[name](**kwargs), {"name": name, **kwargs}


def rebuild_model(model_config: dict[str, Any]) -> nn.Module:
    """The inverse of :func:`build_model`'s second output."""
    kwargs = dict(model_config)
    name = kwargs.pop("name")
    if name == "et":
        return NodeEnergyTransformer(**kwargs)
    return GAD_BASELINES[name](**kwargs)


def _standardize(x: Tensor) -> Tensor:
    mean, std = x.mean(0), x.std(0)
    return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))


def prepare(data: Any, standardize: bool = True) -> Any:
    """A copy of the graph ``data`` whose node features are standardised with statistics over
    all nodes (labels are not used); with ``standardize=False`` an unchanged copy."""
    data = data.clone()
    if standardize:
        data.x = _standardize(data.x)
    return data


def neural_input(data: Any, hops: int = 0, bins: int = 0) -> Any:
    """The graph a neural model sees: ``data`` itself, or a copy with other node features.

    ``hops`` > 0: RF-Graph's map (:func:`aggregate_neighbors`, mean and max over 1..``hops``
    hops), standardised again (``(N, F)`` -> ``(N, F * (1 + 2 * hops))``). ``bins`` > 0: then
    each column's piecewise-linear encoding over that many quantile bins of all nodes
    (:func:`piecewise_linear_encoding`, no labels used; ``(N, F')`` -> ``(N, <= F' * bins)``).

    Departures from every model's published form, applied to all neural models alike: the
    first so that RF-Graph's hand-made features are no longer its advantage alone, the second
    so that a network can cut a skewed tabular column at its quantiles as trees do.
    """
    if hops == 0 and bins == 0:
        return data
    out = copy.copy(data)
    if hops:
        out.x = _standardize(aggregate_neighbors(data.x, data.edge_index, hops))
    if bins:
        out.x = piecewise_linear_encoding(out.x, bins)
    return out


def input_description(hops: int = 0, bins: int = 0) -> str:
    """What :func:`neural_input` feeds the neural models, in words for reports."""
    text = f"RF-Graph's map over {counted(hops, 'hop')}" if hops else "the raw features"
    if bins:
        return f"{text}, each column piecewise-linear over {counted(bins, 'quantile bin')}"
    return f"{text}, standardised"


def anomaly_scores(model: nn.Module, data: Any) -> Tensor:
    """Softmax probability of class 1 for every node, ``(N,)``."""
    return torch.softmax(model(data.x, data.edge_index), dim=-1)[:, 1]


@dataclass
class RunResult:
    """One model, one seed: per protocol, the test metrics at its selected epoch; wall time.

    ``validation``: per protocol, the validation metric that selected that epoch (its value
    there), which :func:`select_configurations` compares across runs; ``split``: the split's
    :meth:`Split.fingerprint`; ``configuration``: the one a selection chose this result from.
    ``energy_metrics`` (ET only): ranking metrics of the final node energies as anomaly scores,
    with the weights selected by the first protocol.
    """

    model: str
    seed: int
    metrics: dict[str, dict[str, float]]
    seconds: float
    best_epoch: dict[str, int] = field(default_factory=dict)
    energy_metrics: dict[str, float] | None = None
    state: dict[str, Tensor] | None = None
    validation: dict[str, float] = field(default_factory=dict)
    split: str | None = None
    configuration: str | None = None


def _protocols(protocols: str | Protocol | list | tuple) -> list[Protocol]:
    if isinstance(protocols, (str, Protocol)):
        protocols = [protocols]
    out = [get_protocol(p) if isinstance(p, str) else p for p in protocols]
    if not out:
        raise ValueError("give at least one protocol")
    return out


def train_neural(
    name: str,
    data: Any,
    split: Split,
    protocols: str | Protocol | list,
    cfg: HarnessConfig,
    seed: int,
    run_dir: Path | None = None,
    resume: bool = False,
    extra_config: dict[str, Any] | None = None,
) -> RunResult:
    """Train one neural model full-batch with weighted cross-entropy; select on validation.

    The Trainer keeps the weights of the first protocol's best epoch; every protocol reads its
    own best epoch from the per-epoch history (they differ only in the selection metric).
    """
    protocols = _protocols(protocols)
    seed_everything(seed)
    data = neural_input(data, cfg.input_hops, cfg.input_bins)
    model, model_config = build_model(name, data.x.shape[1], cfg)
    weight = class_weight(data.y[split.train])
    train_idx = split.train

    def loss_fn(m: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        logits = m(batch.x, batch.edge_index)
        idx = train_idx.to(logits.device)
        loss = F.cross_entropy(logits[idx], batch.y[idx], weight=weight.to(logits.device))
        return loss, {}

    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_epochs=0.0,
        min_lr=cfg.lr,  # constant learning rate: GADBench and BWGNN use Adam without schedule
        grad_clip=cfg.grad_clip,
        seed=seed,
        device=cfg.device,
        progress=cfg.progress,
        log_every=1,
        ema_decay=cfg.ema_decay,
    )
    extra = {
        **(extra_config or {}),
        "protocols": [p.name for p in protocols],
        "seed": seed,
        "standardize": cfg.standardize,
        "input_hops": cfg.input_hops,
        "input_bins": cfg.input_bins,
    }
    trainer = Trainer(
        model,
        loss_fn,
        train_cfg,
        run_dir=run_dir,
        task="anomaly",
        model_config=model_config,
        extra_config=extra,
    )
    graph = copy.copy(data).to(trainer.device)  # PyG's .to moves in place: keep the caller's

    def evaluate(m: nn.Module) -> dict[str, float]:
        scores = anomaly_scores(m, graph)
        if not torch.isfinite(scores).all():
            raise FloatingPointError(
                f"training diverged: {name}'s anomaly scores are NaN or inf (try a lower lr)"
            )
        return score_split(scores, graph.y, split)

    result = trainer.fit([graph], evaluate=evaluate, select=protocols[0].select, resume=resume)
    metrics, best_epoch, validation = {}, {}, {}
    for p in protocols:
        row = select_epoch(result.history, p)
        metrics[p.name], best_epoch[p.name] = pick_test(row, p.metrics), int(row["epoch"])
        validation[p.name] = row[p.select]
    model.load_state_dict(result.best_state)
    model.eval()
    energy = None
    if name == "et":
        scores = model.energy_scores(graph.x, graph.edge_index)
        energy = pick_test(score_split(scores, graph.y, split), RANKING)
    return RunResult(
        name,
        seed,
        metrics,
        result.seconds,
        best_epoch,
        energy,
        result.best_state,
        validation,
        split.fingerprint(),
    )


def fit_trees(
    name: str,
    data: Any,
    split: Split,
    protocols: str | Protocol | list,
    cfg: HarnessConfig,
    seed: int,
) -> RunResult:
    """Fit a tree ensemble (``rf-graph``, ``gb-graph``) on the training nodes and score
    validation and test once."""
    start = time.perf_counter()
    trees = GAD_BASELINES[name](seed=seed, **cfg.rf)
    trees.fit(data.x, data.edge_index, data.y, split.train)
    row = score_split(trees.predict_proba(data.x, data.edge_index), data.y, split)
    seconds = time.perf_counter() - start
    protocols = _protocols(protocols)
    metrics = {p.name: pick_test(row, p.metrics) for p in protocols}
    validation = {p.name: row[p.select] for p in protocols}
    return RunResult(name, seed, metrics, seconds, validation=validation, split=split.fingerprint())


def run_one(
    name: str,
    data: Any,
    protocols: str | Protocol | list,
    cfg: HarnessConfig,
    seed: int,
    split: Split,
    run_dir: Path | None = None,
    resume: bool = False,
    extra_config: dict[str, Any] | None = None,
) -> RunResult:
    """One model, one seed, on a given split (``extra_config`` goes to the run's config)."""
    if name != "et" and not is_neural(name):
        return fit_trees(name, data, split, protocols, cfg, seed)
    sizes = [len(split.train), len(split.val), len(split.test)]
    extra = {**(extra_config or {}), "split_sizes": sizes}
    return train_neural(name, data, split, protocols, cfg, seed, run_dir, resume, extra)


def run_protocols(
    data: Any,
    protocols: str | Protocol | list = ("gadbench", "bwgnn"),
    models: list[str] | tuple[str, ...] = MODELS,
    seeds: list[int] | tuple[int, ...] = tuple(range(10)),
    cfg: HarnessConfig | None = None,
    train_ratio: float | None = None,
    run_root: Path | None = None,
    resume: bool = False,
    on_result: Callable[[RunResult], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    splits: str = "random",
) -> list[RunResult]:
    """Run every model for every seed on ``data`` (one graph) under the given protocols.

    For a given seed every model sees the same split: with ``splits="random"`` a stratified one
    (``train_ratio``, default the first protocol's; the rest 1:2 val:test), with
    ``splits="file"`` the dataset's own split number ``seed`` (:func:`file_split`; GADBench's
    for Tolokers). The protocols share each training run and differ in the validation metric
    that picks the reported epoch. Checkpoints go to ``run_root/<model>/seed<k>/`` when
    ``run_root`` is given (``resume`` continues them), with ``extra_config`` (and the train
    ratio) recorded in each run's ``config.json``.
    """
    protocols = _protocols(protocols)
    cfg = cfg or HarnessConfig()
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {MODELS}")
    ratio = train_ratio_of(protocols[0], train_ratio, splits)
    by_seed = seed_splits(data, list(seeds), splits, ratio)  # all checked before anything trains
    data = prepare(data, cfg.standardize)
    results = []
    for seed in seeds:
        split = by_seed[seed]
        for name in models:
            run_dir = None if run_root is None else Path(run_root) / name / f"seed{seed}"
            extra = {**(extra_config or {}), "train_ratio": ratio}
            result = run_one(name, data, protocols, cfg, seed, split, run_dir, resume, extra)
            result.state = None  # keep memory flat over many runs
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def summarize(
    results: list[RunResult], protocol: str | Protocol
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per model: metric -> (mean, std over seeds) under ``protocol``; ``seconds`` is the mean
    wall time per seed (one run serves all protocols). ET's energy score is the row
    ``et-energy`` (ranking metrics only)."""
    protocol = _protocols(protocol)[0]
    rows: dict[str, dict[str, list[float]]] = {}
    for r in results:
        row = rows.setdefault(r.model, {})
        for k, v in {**r.metrics[protocol.name], "seconds": r.seconds}.items():
            row.setdefault(k, []).append(v)
        if r.energy_metrics is not None:
            erow = rows.setdefault(f"{r.model}-energy", {})
            for k in protocol.metrics:
                if k in r.energy_metrics:
                    erow.setdefault(k, []).append(r.energy_metrics[k])
    return {
        model: {k: (float(np.mean(v)), float(np.std(v))) for k, v in row.items()}
        for model, row in rows.items()
    }


SELECT_PER = ("seed", "model")


def select_configurations(
    candidates: dict[str, list[RunResult]], protocol: str | Protocol, per: str = "seed"
) -> tuple[list[RunResult], dict[str, dict[str, int]]]:
    """Model selection across configurations on validation: of several runs of a model on the
    same splits, keep the one with the best validation metric of ``protocol`` and report its
    test metrics.

    ``per="seed"`` chooses seed by seed (each seed's split has its own validation nodes: the
    result measures "the model with its configuration chosen on validation"); ``per="model"``
    chooses one configuration per model by its mean validation metric over the seeds, as
    GADBench's hyper-parameter search keeps one configuration per model and dataset. The choice
    sees validation nodes only; ties go to the configuration named first (list the default
    first). A selected seed costs every candidate's training, so its ``seconds`` are their sum.
    A model is selected among the configurations that ran it, over the seeds all of them
    finished; each protocol selects on its own metric.

    Args:
        candidates: configuration name -> its results (any models and seeds).
        protocol: whose validation metric chooses (``"gadbench"``: AUPRC).
        per: ``"seed"`` or ``"model"``.

    Returns:
        The chosen results (one per model and shared seed; ``configuration`` names the one
        chosen) and, per model, how many seeds chose each configuration that ran it.

    Raises:
        ValueError: an unknown ``per``, fewer than two configurations, results without a
            validation record for
            ``protocol`` (logs from before it was kept), a model whose configurations share no
            seed, or runs of one seed on other splits.
    """
    protocol = _protocols(protocol)[0]
    if per not in SELECT_PER:
        raise ValueError(f"per must be one of {SELECT_PER}, got {per!r}")
    if len(candidates) < 2:
        raise ValueError(f"selection needs at least two configurations, got {len(candidates)}")
    runs: dict[str, dict[str, dict[int, RunResult]]] = {}
    for config, results in candidates.items():
        for r in results:
            if protocol.name not in r.validation:
                raise ValueError(
                    f"{config}: {r.model} seed {r.seed} has no validation {protocol.select} for"
                    f" protocol {protocol.name} (a run from before validation was recorded)"
                )
            runs.setdefault(r.model, {}).setdefault(config, {})[r.seed] = r
    selected: list[RunResult] = []
    chosen: dict[str, dict[str, int]] = {}
    for model, by_config in runs.items():
        seeds = sorted(set.intersection(*(set(seeds) for seeds in by_config.values())))
        if not seeds:
            held = "; ".join(f"{c}: {sorted(by_seed)}" for c, by_seed in by_config.items())
            raise ValueError(f"the configurations of {model} share no seed ({held})")
        rows = {seed: {c: by_seed[seed] for c, by_seed in by_config.items()} for seed in seeds}
        for seed, row in rows.items():
            if len({r.split for r in row.values()}) > 1:
                splits = ", ".join(f"{c}: {r.split}" for c, r in row.items())
                raise ValueError(
                    f"{model} seed {seed}: the configurations ran on different splits ({splits});"
                    " were they trained with other --train-ratio or --splits?"
                )
        val = {
            seed: {c: r.validation[protocol.name] for c, r in row.items()}
            for seed, row in rows.items()
        }
        if per == "model":
            mean = {c: float(np.mean([val[seed][c] for seed in seeds])) for c in by_config}
            val = dict.fromkeys(seeds, mean)
        counts = chosen.setdefault(model, dict.fromkeys(by_config, 0))
        for seed, row in rows.items():
            # max() keeps the first of equal values: the configuration named first.
            config = max(row, key=val[seed].__getitem__)
            counts[config] += 1
            seconds = sum(r.seconds for r in row.values())
            selected.append(replace(row[config], seconds=seconds, state=None, configuration=config))
    return selected, chosen


def format_chosen(
    candidates: dict[str, list[RunResult]],
    selected: list[RunResult],
    chosen: dict[str, dict[str, int]],
    protocol: str | Protocol,
) -> str:
    """A markdown table of :func:`select_configurations`' choices: per model, how many
    configurations ran it, then per configuration how many seeds chose it and that
    configuration's own mean test value of the selecting metric over the same seeds (for
    reading only: choosing by it would look at test). A model with one candidate was not
    selected, only carried over."""
    protocol = _protocols(protocol)[0]
    metric = protocol.select.removeprefix("val_")
    names = list(candidates)
    head = "| model | candidates | " + " | ".join(names) + " |"
    lines = [head, "|---" * (len(names) + 2) + "|"]
    for model, counts in chosen.items():
        seeds = {r.seed for r in selected if r.model == model}
        cells = []
        for name in names:
            own = [
                r.metrics[protocol.name][metric]
                for r in candidates[name]
                if r.model == model and r.seed in seeds
            ]
            mean = f"{100 * sum(own) / len(own):.1f}" if own else "-"
            cells.append(f"{counts[name]} / {mean}" if name in counts else "-")
        lines.append(f"| {model} | {len(counts)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(summary: dict[str, dict[str, tuple[float, float]]], scale: float = 100.0) -> str:
    """A markdown table: one row per model, ``mean ± std`` per metric (times ``scale``: 100
    gives percent), seconds per seed."""
    metrics = list(dict.fromkeys(k for row in summary.values() for k in row if k != "seconds"))
    head = "| model | " + " | ".join(metrics) + " | s / seed |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for model, row in summary.items():
        cells = [
            f"{row[k][0] * scale:.1f} ± {row[k][1] * scale:.1f}" if k in row else "-"
            for k in metrics
        ]
        sec = f"{row['seconds'][0]:.1f}" if "seconds" in row else "(in et)"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {sec} |")
    return "\n".join(lines)
