"""Evaluation metrics: ranking scores for anomaly detection, classification and reconstruction.

Every function accepts numpy arrays, torch tensors or sequences (1-D, except :func:`mse`: any
shape; :func:`psnr`: a scalar) and returns a python ``float`` (or a tuple of floats). Inputs are
checked: mismatched lengths, empty inputs, NaN scores and labels outside ``{0, 1}`` raise a
:class:`ValueError` naming the problem (a ``k`` of :func:`recall_at_k` that is not an int, a
:class:`TypeError`).

The ranking metrics follow the definitions used by GADBench (Tang et al., NeurIPS 2023) and
scikit-learn: :func:`auroc` is the Mann-Whitney statistic (ties count one half), :func:`auprc` is
average precision (a step-wise integral of the precision-recall curve, no interpolation), and
:func:`recall_at_k` is GADBench's Rec@K with ``K`` the number of true anomalies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

__all__ = [
    "accuracy",
    "auprc",
    "auroc",
    "macro_f1",
    "mse",
    "psnr",
    "recall_at_k",
    "tune_threshold_macro_f1",
]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # numpy has no bfloat16/float16 counterpart for every op; widen before converting.
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _scores(x: ArrayLike, name: str = "scores") -> np.ndarray:
    arr = _vector(x, name)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}")
    return arr


def _binary(x: ArrayLike, name: str = "labels") -> np.ndarray:
    arr = _vector(x, name)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric or bool, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise ValueError(
            f"{name} must be binary (0 = normal, 1 = anomaly); found {arr[bad][0].item()!r} "
            f"at index {int(np.flatnonzero(bad)[0])}"
        )
    return arr.astype(np.int64)


def _integers(x: ArrayLike, name: str) -> np.ndarray:
    arr = _vector(x, name)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        as_float = arr.astype(np.float64)
        if not np.isfinite(as_float).all() or (as_float != np.round(as_float)).any():
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} differ in length: {a.shape[0]} != {b.shape[0]}")


def _ranking_inputs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s, y = _scores(scores), _binary(labels)
    _same_length(s, y, "scores", "labels")
    positives = int(y.sum())
    if positives == 0 or positives == y.size:
        raise ValueError(
            f"labels hold a single class ({positives} anomalies out of {y.size}); "
            "ranking metrics need both normal and anomalous nodes"
        )
    return s, y


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` in ascending order, tied values sharing their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    # The last rank of each tie group is the running count; its mean rank is (count - 1) / 2 below.
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    r"""Area under the ROC curve, computed as the Mann-Whitney statistic.

    .. math::
        \mathrm{AUROC} = \frac{1}{n_+ n_-} \sum_{i: y_i = 1} \sum_{j: y_j = 0}
        \big( \mathbb{1}[s_i > s_j] + \tfrac12 \mathbb{1}[s_i = s_j] \big)

    evaluated in :math:`O(n \log n)` from average ranks.

    Args:
        scores: anomaly scores, higher = more anomalous.
        labels: 1 = anomaly, 0 = normal; both classes must occur.

    Shapes:
        scores, labels: ``(n,)``
    """
    s, y = _ranking_inputs(scores, labels)
    ranks = _average_ranks(s)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auprc(scores: ArrayLike, labels: ArrayLike) -> float:
    r"""Area under the precision-recall curve as average precision (GADBench, scikit-learn).

    .. math::
        \mathrm{AP} = \sum_n (R_n - R_{n-1}) P_n

    over the distinct score thresholds in decreasing order; tied scores enter together.

    Args:
        scores: anomaly scores, higher = more anomalous.
        labels: 1 = anomaly, 0 = normal; both classes must occur.

    Shapes:
        scores, labels: ``(n,)``
    """
    s, y = _ranking_inputs(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # One threshold per distinct score: the last position of each run of tied scores.
    # (s[1:] != s[:-1], not np.diff: inf - inf is NaN, which would split a tie of infinities.)
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tp = np.cumsum(y)[ends]
    precision = tp / (ends + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def recall_at_k(scores: ArrayLike, labels: ArrayLike, k: int | None = None) -> float:
    r"""Fraction of the true anomalies found among the ``k`` highest scores (GADBench's Rec@K).

    .. math::
        \mathrm{Rec@}K = \frac{|\{i \in \mathrm{top}_K(s) : y_i = 1\}|}{n_+}

    With the default ``k = n_+`` this equals precision at ``k``. Tied scores at the cut-off are
    broken by position (earlier first), so the value is deterministic.

    Args:
        scores: anomaly scores, higher = more anomalous.
        labels: 1 = anomaly, 0 = normal; both classes must occur.
        k: how many top-scored nodes to inspect, ``1 <= k <= n``; defaults to the number of
            true anomalies.

    Shapes:
        scores, labels: ``(n,)``
    """
    s, y = _ranking_inputs(scores, labels)
    n_pos = int(y.sum())
    if k is None:
        k = n_pos
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= s.size:
        raise ValueError(f"k must lie in [1, {s.size}], got {k}")
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].sum() / n_pos)


def macro_f1(pred: ArrayLike, labels: ArrayLike) -> float:
    r"""Unweighted mean of the per-class F1 scores of binary predictions.

    .. math::
        F_1^{(c)} = \frac{2\,\mathrm{TP}_c}{2\,\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c},
        \qquad \text{macro-}F_1 = \frac{1}{|\mathcal{C}|} \sum_{c \in \mathcal{C}} F_1^{(c)}

    where :math:`\mathcal{C}` holds the classes present in ``pred`` or ``labels`` (as
    scikit-learn's ``f1_score(average="macro")``).

    Args:
        pred: predicted classes in ``{0, 1}``.
        labels: true classes in ``{0, 1}``.

    Shapes:
        pred, labels: ``(n,)``
    """
    p, y = _binary(pred, "pred"), _binary(labels)
    _same_length(p, y, "pred", "labels")
    f1s = []
    for c in (0, 1):
        tp = int(np.sum((p == c) & (y == c)))
        fp = int(np.sum((p == c) & (y != c)))
        fn = int(np.sum((p != c) & (y == c)))
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def tune_threshold_macro_f1(
    probs: ArrayLike, labels: ArrayLike, thresholds: ArrayLike | None = None
) -> tuple[float, float]:
    r"""Threshold on anomaly probabilities that maximises macro-F1 (BWGNN's validation protocol).

    A node is predicted anomalous when ``probs > threshold``. The first threshold reaching the
    best macro-F1 wins, so the result is deterministic.

    Args:
        probs: anomaly probabilities (or any scores on the thresholds' scale).
        labels: 1 = anomaly, 0 = normal.
        thresholds: candidates; defaults to :math:`0.05, 0.10, \dots, 0.95` as in BWGNN.

    Returns:
        ``(threshold, macro_f1)``: the best threshold and its macro-F1 on ``(probs, labels)``.

    Shapes:
        probs, labels: ``(n,)``
    """
    p, y = _scores(probs, "probs"), _binary(labels)
    _same_length(p, y, "probs", "labels")
    grid = np.linspace(0.05, 0.95, 19) if thresholds is None else _scores(thresholds, "thresholds")
    best_t, best_f1 = float(grid[0]), -1.0
    for t in grid:
        f1 = macro_f1((p > t).astype(np.int64), y)
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t, best_f1


def accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to the labels (any integer class ids).

    Args:
        pred: predicted class ids.
        labels: true class ids.

    Shapes:
        pred, labels: ``(n,)``
    """
    p, y = _integers(pred, "pred"), _integers(labels, "labels")
    _same_length(p, y, "pred", "labels")
    return float(np.mean(p == y))


def mse(pred: ArrayLike, target: ArrayLike) -> float:
    r"""Mean squared error :math:`\frac1n \sum_i (\hat x_i - x_i)^2` over all elements.

    Args:
        pred: reconstruction.
        target: reference, same shape as ``pred``.

    Shapes:
        pred, target: any shape, equal, non-empty.
    """
    a, b = _to_numpy(pred), _to_numpy(target)
    if a.shape != b.shape:
        raise ValueError(f"pred and target differ in shape: {a.shape} != {b.shape}")
    if a.size == 0:
        raise ValueError("pred is empty")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("pred or target contains NaN")
    return float(np.mean((a - b) ** 2))


def psnr(mse: float | torch.Tensor | np.ndarray, data_range: float = 1.0) -> float:
    r"""Peak signal-to-noise ratio in dB from a mean squared error.

    .. math::
        \mathrm{PSNR} = 10 \log_{10} \frac{\mathrm{data\_range}^2}{\mathrm{MSE}}

    Args:
        mse: mean squared error (a scalar); 0 gives ``inf``.
        data_range: span of the pixel values (1.0 for images in ``[0, 1]``).
    """
    arr = _to_numpy(mse)
    if arr.size != 1:
        raise ValueError(f"mse must be a scalar, got shape {arr.shape}")
    value = float(arr.reshape(-1)[0])
    if math.isnan(value) or value < 0:
        raise ValueError(f"mse must be a non-negative number, got {value}")
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be finite and positive, got {data_range}")
    if value == 0:
        return math.inf
    if math.isinf(value):
        return -math.inf
    # Two logs, not one of the ratio: data_range**2 / value overflows for a tiny mse.
    return float(20.0 * math.log10(data_range) - 10.0 * math.log10(value))
