r"""Stratified k-fold cross-validation with a validation split carved from every training fold.

The protocol of the PyG kernel benchmark and of Errica et al. (2020): the graphs are split into
``folds`` stratified folds; fold ``i`` is the test set of round ``i``; from the remaining graphs a
stratified ``val_fraction`` is held out for model and epoch selection, and the model is trained
on the rest. The test accuracy of each round is read once, at the selected epoch; the summary is
its mean :math:`\pm` (population) standard deviation over the folds.

``protocol="train-on-all"`` reproduces the released notebooks instead: one round that trains on
every graph and scores the same graphs (train = val = test). It is **NOT a generalisation
measure** and every file it writes says so; it exists to show why the paper's numbers are high.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from energy_transformer.files import atomic_path, write_text_atomic
from energy_transformer.text import counted

PROTOCOLS = ("cv", "train-on-all")
NOT_GENERALISATION = (
    "train-on-all: trained on every graph and scored on the same graphs;"
    " NOT a generalisation measure"
)


@dataclass(frozen=True)
class Fold:
    """One round: indices (into the dataset) of its training, validation and test graphs."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """The fold as JSON-ready lists (what ``fold-XX/split.json`` holds)."""
        return {
            "index": self.index,
            "train": self.train.tolist(),
            "val": self.val.tolist(),
            "test": self.test.tolist(),
        }


def stratified_folds(
    labels: np.ndarray | list[int],
    folds: int = 10,
    val_fraction: float = 0.1,
    seed: int = 0,
    protocol: str = "cv",
) -> list[Fold]:
    """The rounds of the protocol.

    Args:
        labels: class of every graph, ``(graphs,)``.
        folds: number of folds ``k`` (``cv``); ignored by ``train-on-all``.
        val_fraction: share of each training fold held out for validation (stratified).
        seed: fixes the shuffles.
        protocol: ``"cv"`` or ``"train-on-all"``.

    Returns:
        ``folds`` :class:`Fold` objects whose test sets partition the graphs (``cv``), or one
        fold with train = val = test = all graphs (``train-on-all``).
    """
    # Imported here: sklearn takes about a second to import, and every `et` command (its
    # help included) imports this module.
    from sklearn.model_selection import StratifiedKFold, train_test_split

    labels = np.asarray(labels)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-d array, got shape {labels.shape}")
    if protocol == "train-on-all":
        everything = np.arange(labels.size)
        return [Fold(0, everything, everything, everything)]
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    smallest = np.bincount(np.unique(labels, return_inverse=True)[1]).min()
    if smallest < folds:
        raise ValueError(
            f"the smallest class has {counted(smallest, 'graph')}, fewer than folds={folds}"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rounds = []
    classes = np.unique(labels).size
    for i, (rest, test) in enumerate(splitter.split(np.zeros(labels.size), labels)):
        # Named here: sklearn's own errors speak of its arguments, not of folds / val_fraction.
        fewest = np.bincount(np.unique(labels[rest], return_inverse=True)[1]).min()
        val_size = int(np.ceil(val_fraction * rest.size))
        if fewest < 2 or not classes <= val_size <= rest.size - classes:
            raise ValueError(
                f"fold {i}: its {rest.size} training graphs (smallest class: {fewest}) cannot"
                f" give a stratified validation share of val_fraction={val_fraction} with every"
                f" one of the {classes} classes on both sides: use fewer folds or another"
                " val_fraction"
            )
        train, val = train_test_split(
            rest, test_size=val_fraction, stratify=labels[rest], random_state=seed + i
        )
        rounds.append(Fold(i, np.sort(train), np.sort(val), np.sort(test)))
    return rounds


def majority_accuracy(labels: np.ndarray | list[int], fold: Fold) -> float:
    """Test accuracy of always answering the commonest class of the fold's training graphs
    (ties: the smaller label), the floor a model has to clear on that fold."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels[fold.train], return_counts=True)
    return float((labels[fold.test] == classes[counts.argmax()]).mean())


@dataclass
class FoldResult:
    """What one round produced; ``extra`` holds anything model-specific (selected epoch, C ...).
    ``majority_acc`` is :func:`majority_accuracy` of the round, set by :func:`run_kfold`."""

    fold: int
    test_acc: float
    val_acc: float
    train_acc: float
    seconds: float
    extra: dict[str, Any]
    majority_acc: float | None = None


FitFold = Callable[[Fold], FoldResult]


@dataclass
class CVSummary:
    """Mean and population std of the test accuracy over folds, plus the per-fold results;
    ``majority``: the mean majority-class accuracy of the same folds (None if one lacks it)."""

    protocol: str
    folds: list[FoldResult]
    mean: float
    std: float
    seconds_per_fold: float
    note: str
    majority: float | None = None

    def describe(self, digits: int = 1) -> str:
        """``"74.3 +- 2.9"`` (percent; ``"74.3"`` for one fold, which has no spread), with the
        train-on-all warning when it applies."""
        text = f"{100 * self.mean:.{digits}f}"
        if len(self.folds) > 1:
            text += f" +- {100 * self.std:.{digits}f}"
        return f"{text} ({self.note})" if self.protocol == "train-on-all" else text


def summarize(results: list[FoldResult], protocol: str = "cv") -> CVSummary:
    """Mean :math:`\\pm` population std of ``test_acc`` over folds."""
    if not results:
        raise ValueError("no fold results to summarize")
    acc = np.array([r.test_acc for r in results])
    note = NOT_GENERALISATION if protocol == "train-on-all" else "test accuracy over folds"
    floors = [r.majority_acc for r in results]
    return CVSummary(
        protocol,
        results,
        float(acc.mean()),
        float(acc.std()),
        float(np.mean([r.seconds for r in results])),
        note,
        None if None in floors else float(np.mean(floors)),
    )


@dataclass
class Paired:
    """Model A against model B on the folds both finished (same splits, so the folds pair up)."""

    folds: int
    mean_diff: float  # mean over folds of acc_A - acc_B (fraction)
    ahead: int
    level: int
    behind: int

    def describe(self) -> str:
        """``"-0.7 (5/1/4)"``: mean difference in points, then folds ahead / level / behind."""
        return f"{100 * self.mean_diff:+.1f} ({self.ahead}/{self.level}/{self.behind})"


def paired(a: list[FoldResult], b: list[FoldResult]) -> Paired:
    """Fold-by-fold comparison of two models' test accuracies.

    Means over 10 folds differ by less than one fold's standard deviation more often than not;
    counting the folds where A is ahead shows whether a gap between means is consistent.
    """
    by_fold = {r.fold: r.test_acc for r in b}
    diffs = np.array([r.test_acc - by_fold[r.fold] for r in a if r.fold in by_fold])
    if diffs.size == 0:
        raise ValueError("the two runs share no fold")
    tie = np.isclose(diffs, 0.0, atol=1e-9)
    return Paired(
        int(diffs.size),
        float(diffs.mean()),
        int(((diffs > 0) & ~tie).sum()),
        int(tie.sum()),
        int(((diffs < 0) & ~tie).sum()),
    )


def save_results(out: Path, summary: CVSummary, meta: dict[str, Any] | None = None) -> None:
    """``out/folds.csv`` (one row per fold) and ``out/summary.json``, whose ``folds_run``
    counts the folds ``summary`` holds (fewer than planned while a run is going)."""
    # Nested values (a selection's val_accs) as JSON, not Python's repr.
    rows = [
        {k: v for k, v in asdict(r).items() if k != "extra"}
        | {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.extra.items()}
        for r in summary.folds
    ]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(out / "folds.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    body = {
        **(meta or {}),
        "folds_run": len(summary.folds),
        "protocol": summary.protocol,
        "note": summary.note,
        "test_acc_mean": summary.mean,
        "test_acc_std": summary.std,
        "majority_acc_mean": summary.majority,
        "seconds_per_fold": summary.seconds_per_fold,
        "folds": [asdict(r) for r in summary.folds],
    }
    write_text_atomic(out / "summary.json", json.dumps(body, indent=2, default=str))


def run_kfold(
    labels: np.ndarray | list[int],
    fit_fold: FitFold,
    folds: int = 10,
    val_fraction: float = 0.1,
    seed: int = 0,
    protocol: str = "cv",
    out: str | os.PathLike | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    max_folds: int | None = None,
    only: Sequence[int] | None = None,
) -> CVSummary:
    """Run ``fit_fold`` on every round and summarise.

    ``fit_fold(fold) -> FoldResult`` trains a fresh model on ``fold.train``, selects on
    ``fold.val`` and scores ``fold.test``. With ``out``, each round writes
    ``out/fold-XX/result.json`` and ``out/fold-XX/split.json`` as soon as it finishes, and
    ``folds.csv`` / ``summary.json`` are rewritten; with ``resume``, rounds whose ``result.json``
    exists are read back instead of re-run (a ``fit_fold`` may also resume its own training
    inside ``out/fold-XX``). ``max_folds`` runs only the first rounds of the same split (a
    smaller budget; the summary then covers those rounds only and says so in ``folds_run``).
    ``only`` runs just the listed rounds (to spread one run's folds over processes that share
    ``out``; :func:`load_results` then gathers them). ``labels``, ``folds``, ``val_fraction``,
    ``seed`` and ``protocol`` make the rounds as in :func:`stratified_folds`; ``meta`` adds keys
    to ``summary.json``.
    """
    rounds = stratified_folds(labels, folds, val_fraction, seed, protocol)
    if max_folds is not None:
        if max_folds < 1:
            raise ValueError(f"max_folds must be >= 1, got {max_folds}")
        rounds = rounds[:max_folds]
    if only is not None:
        rounds = [r for r in rounds if r.index in set(only)]
    out_dir = Path(out) if out is not None else None
    meta = {"seed": seed, "val_fraction": val_fraction} | (meta or {})
    results: list[FoldResult] = []
    for fold in rounds:
        fold_dir = out_dir / f"fold-{fold.index:02d}" if out_dir is not None else None
        done = fold_dir / "result.json" if fold_dir is not None else None
        finished = resume and done is not None and done.is_file()
        if finished:
            result = FoldResult(**json.loads(done.read_text()))
        else:
            start = time.perf_counter()
            result = fit_fold(fold)
            if result.seconds <= 0:
                result.seconds = time.perf_counter() - start
        if result.majority_acc is None:  # a fold saved before the floor was recorded, too
            result.majority_acc = majority_accuracy(labels, fold)
        results.append(result)
        if fold_dir is not None and not finished:
            write_text_atomic(fold_dir / "split.json", json.dumps(fold.to_json()))
            write_text_atomic(fold_dir / "result.json", json.dumps(asdict(result), default=str))
            save_results(out_dir, summarize(results, protocol), meta)
    summary = summarize(results, protocol)
    if out_dir is not None:
        save_results(out_dir, summary, meta)
    return summary


def load_results(out: str | os.PathLike) -> list[FoldResult]:
    """The finished rounds saved under ``out`` (``fold-XX/result.json``), in fold order.

    Where no fold folder was kept (a run copied back without them, e.g. from a remote machine),
    the rows of ``out/folds.csv`` are read instead; its extra columns come back as ``extra``.
    """
    files = sorted(Path(out).glob("fold-*/result.json"))
    table = Path(out) / "folds.csv"
    if files or not table.is_file():
        return [FoldResult(**json.loads(f.read_text())) for f in files]
    return sorted(_read_folds_csv(table), key=lambda r: r.fold)


def _read_folds_csv(path: Path) -> list[FoldResult]:
    """The rows of a ``folds.csv`` written by :func:`save_results`."""
    numbers = ("test_acc", "val_acc", "train_acc", "seconds")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    results = []
    for line, row in enumerate(rows, start=2):
        try:
            floor = row.get("majority_acc") or None  # absent, or empty, in older tables
            results.append(
                FoldResult(
                    int(row["fold"]),
                    *(float(row[k]) for k in numbers),
                    {k: v for k, v in row.items() if k not in ("fold", *numbers, "majority_acc")},
                    None if floor is None else float(floor),
                )
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}, line {line}: a fold row needs a number in each of fold, "
                f"{', '.join(numbers)} ({err})"
            ) from None
    return results


def select_on_validation(candidates: dict[str, Sequence[FoldResult]]) -> list[FoldResult]:
    """Model selection inside each round: of several configurations run on the same splits,
    keep, fold by fold, the one with the best validation accuracy, and report its test accuracy.

    The choice sees validation graphs only, so the selected column is an honest estimate of
    "this model, with its configuration chosen on held-out data" (the nested selection of
    Errica et al., 2020). Ties go to the lower validation loss when every tied candidate
    recorded one (``extra["val_loss"]``), else to the candidate named first: list the default
    configuration first. A selected round costs every candidate's training, so its ``seconds``
    are their sum. Only rounds that every candidate finished are kept.

    Args:
        candidates: configuration name -> its per-fold results, all on the same splits.

    Returns:
        One result per shared round: the chosen candidate's, with ``extra["selected"]`` naming
        it, ``extra["val_accs"]`` giving every candidate's validation accuracy and
        ``extra["tie"]`` how a tie was broken (``"loss"``, ``"order"``, or None: no tie).
    """
    if len(candidates) < 2:
        raise ValueError(f"selection needs at least two candidates, got {len(candidates)}")
    by_fold = {name: {r.fold: r for r in results} for name, results in candidates.items()}
    shared = sorted(set.intersection(*(set(folds) for folds in by_fold.values())))
    if not shared:
        raise ValueError(f"the candidates {sorted(candidates)} share no finished fold")
    selected = []
    for fold in shared:
        rows = {name: folds[fold] for name, folds in by_fold.items()}
        # Another split would give another majority class share (older folds may lack it).
        floors = {r.majority_acc for r in rows.values()} - {None}
        if len(floors) > 1:
            raise ValueError(f"fold {fold}: the candidates were not run on the same splits")
        best = max(r.val_acc for r in rows.values())
        tied = [name for name, r in rows.items() if abs(r.val_acc - best) <= 1e-9]
        # A fold read back from folds.csv without a loss has "" there, not None.
        losses = [rows[name].extra.get("val_loss") for name in tied]
        losses = [None if v in (None, "") else float(v) for v in losses]
        tie = None if len(tied) == 1 else "loss" if None not in losses else "order"
        if tie == "loss":
            tied = [tied[int(np.argmin(losses))]]
        chosen = rows[tied[0]]
        extra = {
            **chosen.extra,
            "selected": tied[0],
            "tie": tie,
            "val_accs": {name: r.val_acc for name, r in rows.items()},
        }
        seconds = sum(r.seconds for r in rows.values())
        selected.append(replace(chosen, seconds=seconds, extra=extra))
    return selected
