import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from energy_transformer.metrics import (
    accuracy,
    auprc,
    auroc,
    macro_f1,
    mse,
    psnr,
    recall_at_k,
    tune_threshold_macro_f1,
)


def test_auroc_hand_computed():
    # Positive pairs: (0.35 vs 0.1 win, 0.35 vs 0.4 loss, 0.8 wins twice) -> 3 / 4.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75


def test_auroc_ties_count_one_half():
    # Pairs: (0.5 vs 0.5) = 1/2, (0.5 vs 0.2) = 1, (0.9 vs 0.5) = 1, (0.9 vs 0.2) = 1 -> 3.5 / 4.
    assert auroc([0.5, 0.2, 0.5, 0.9], [0, 0, 1, 1]) == 0.875
    assert auroc([1.0, 1.0, 1.0], [0, 1, 0]) == 0.5


def test_auroc_perfect_and_reversed():
    assert auroc([0.0, 0.1, 0.9, 1.0], [0, 0, 1, 1]) == 1.0
    assert auroc([0.0, 0.1, 0.9, 1.0], [1, 1, 0, 0]) == 0.0


def test_auprc_hand_computed():
    # Ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3.
    assert auprc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)


def test_auprc_ties_enter_together():
    # Both tied scores share one threshold: precision 1/2 at recall 1.
    assert auprc([0.5, 0.5], [0, 1]) == 0.5
    # 0.9(+) then {0.5(-), 0.5(+)}: AP = 1/2 * 1 + 1/2 * 2/3.
    assert auprc([0.9, 0.5, 0.5], [1, 0, 1]) == pytest.approx(5 / 6)


def test_recall_at_k_hand_computed():
    scores = [0.1, 0.4, 0.35, 0.8, 0.9]
    labels = [0, 0, 1, 1, 0]
    # K defaults to 2 true anomalies; top-2 = {0.9(-), 0.8(+)} -> 1 / 2.
    assert recall_at_k(scores, labels) == 0.5
    assert recall_at_k(scores, labels, k=4) == 1.0
    assert recall_at_k(scores, labels, k=1) == 0.0


def test_ranking_metrics_match_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 300))
        labels = rng.random(n) < rng.uniform(0.05, 0.5)
        labels[:2] = [True, False]
        # Rounded scores produce many ties on odd trials.
        scores = rng.normal(size=n) + labels
        if trial % 2:
            scores = np.round(scores, 1)
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert auprc(scores, labels) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12
        )


def test_recall_at_k_matches_sorted_definition():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200)
    labels = (rng.random(200) < 0.1).astype(int)
    k = int(labels.sum())
    expected = labels[np.argsort(-scores)[:k]].sum() / k
    assert recall_at_k(scores, labels) == pytest.approx(expected)


def test_recall_at_k_breaks_ties_by_position_earlier_first():
    # Two nodes tie at the top; k = 1 keeps the earlier one, whatever its label.
    assert recall_at_k([0.5, 0.5, 0.1], [0, 1, 0], k=1) == 0.0
    assert recall_at_k([0.5, 0.5, 0.1], [1, 0, 0], k=1) == 1.0
    # The cut-off falls inside a three-way tie below a clear top score: top-3 takes 0.9 (index
    # 2), then indices 0 and 1 of the tie, not index 3.
    assert recall_at_k([0.2, 0.2, 0.9, 0.2, 0.0], [0, 1, 1, 1, 0], k=3) == pytest.approx(2 / 3)
    assert recall_at_k([0.2, 0.2, 0.9, 0.2, 0.0], [1, 1, 1, 0, 0], k=3) == 1.0
    assert recall_at_k([0.2, 0.2, 0.9, 0.2, 0.0], [0, 0, 1, 1, 0], k=3) == pytest.approx(1 / 2)
    # Many ties (scores rounded to one decimal), against the rule spelled out with sorted().
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(300), 1)
    labels = (rng.random(300) < 0.3).astype(int)
    ranked = sorted(range(300), key=lambda i: (-scores[i], i))
    for k in (1, 7, 50, int(labels.sum()), 299):
        expected = sum(int(labels[i]) for i in ranked[:k]) / labels.sum()
        assert recall_at_k(scores, labels, k=k) == pytest.approx(expected), k


def test_torch_inputs_and_float_outputs():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.bfloat16, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    for fn in (auroc, auprc, recall_at_k):
        assert type(fn(s, y)) is float
    assert auroc(s, y.bool()) == 0.75


def test_macro_f1_hand_computed_and_sklearn():
    pred = [1, 0, 1, 1, 0, 0]
    labels = [1, 0, 0, 1, 1, 0]
    # Class 1: tp 2, fp 1, fn 1 -> 2/3; class 0: tp 2, fp 1, fn 1 -> 2/3.
    assert macro_f1(pred, labels) == pytest.approx(2 / 3)
    rng = np.random.default_rng(2)
    for _ in range(10):
        p, y = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
        assert macro_f1(p, y) == pytest.approx(f1_score(y, p, average="macro"))
    # A class absent from both is left out of the average, as in scikit-learn.
    assert macro_f1([0, 0], [0, 0]) == 1.0


def test_tune_threshold_macro_f1():
    probs = [0.1, 0.2, 0.3, 0.62, 0.7]
    labels = [0, 0, 0, 1, 1]
    t, f1 = tune_threshold_macro_f1(probs, labels)
    # Thresholds 0.30 .. 0.60 separate perfectly; the first one (strict >) wins.
    assert t == pytest.approx(0.3) and f1 == 1.0
    t, f1 = tune_threshold_macro_f1(probs, labels, thresholds=[0.65, 0.05])
    assert t == 0.65
    assert f1 == pytest.approx(macro_f1([0, 0, 0, 0, 1], labels))


def test_accuracy_and_mse_and_psnr():
    assert accuracy([0, 2, 1, 1], [0, 2, 2, 1]) == 0.75
    assert accuracy(torch.tensor([3, 3]), np.array([3, 4])) == 0.5
    assert mse([[0.0, 1.0]], [[1.0, 1.0]]) == 0.5
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(torch.tensor(0.25), data_range=2.0) == pytest.approx(10 * math.log10(16.0))
    assert psnr(0.0) == math.inf


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: auroc([0.1, 0.2], [0, 1, 1]), "differ in length"),
        (lambda: auroc([], []), "empty"),
        (lambda: auroc([0.1, float("nan")], [0, 1]), "NaN"),
        (lambda: auroc([0.1, 0.2], [0, 2]), "binary .*; found 2 at index 1"),
        (lambda: auroc([0.1, 0.2], [1, 1]), "single class"),
        (lambda: auprc([0.1, 0.2], [0, 0]), "single class"),
        (lambda: recall_at_k([0.1, 0.2], [0, 1], k=3), r"k must lie in \[1, 2\]"),
        (lambda: auroc(np.zeros((2, 2)), [0, 1]), "1-D"),
        (lambda: macro_f1([0, 1], [0, 0.5]), "binary"),
        (lambda: macro_f1([0, 1, 1], [0, 1]), "differ in length"),
        (lambda: tune_threshold_macro_f1([0.2, float("nan")], [0, 1]), "NaN"),
        (lambda: accuracy([0.5, 1.0], [0, 1]), "integer class ids"),
        (lambda: mse(np.zeros(3), np.zeros(4)), "shape"),
        (lambda: psnr(-1.0), "non-negative"),
        (lambda: psnr(np.ones(2)), "scalar"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_infinite_scores_tie_like_any_other():
    # inf - inf is NaN: ties of infinities must still enter together (sklearn, with +-10 for inf).
    inf = np.inf
    assert auprc(np.array([inf, inf, 1.0, 0.0]), [1, 0, 1, 0]) == pytest.approx(7 / 12)
    assert auprc(np.array([inf, inf, 1.0, 0.0]), [0, 1, 1, 0]) == pytest.approx(7 / 12)
    assert auprc(np.array([-inf, -inf, 1.0, 0.0]), [1, 0, 1, 0]) == pytest.approx(0.75)


def test_psnr_at_the_extremes_and_bad_inputs():
    assert psnr(1e-320) == pytest.approx(3200.0, rel=1e-6)  # no overflow of 1 / mse
    assert psnr(float("inf")) == -np.inf
    with pytest.raises(ValueError, match="data_range must be finite and positive"):
        psnr(0.01, float("nan"))
    with pytest.raises(ValueError, match="scores must be real numbers"):
        auroc(np.array([1 + 1j, 2]), [0, 1])
    with pytest.raises(ValueError, match="integer class ids"):
        accuracy([np.inf, 1], [0, 1])


def test_auprc_is_step_wise_not_interpolated_nor_trapezoidal():
    # Ranking + - - + +: precision 1, 1/2, 1/3, 2/4, 3/5 at recall 1/3, 1/3, 1/3, 2/3, 1.
    # Step-wise AP = 1/3 * (1 + 2/4 + 3/5) = 0.7; interpolating (max precision to the right) would
    # give 1/3 * (1 + 3/5 + 3/5) and the trapezoid rule something else again.
    scores, labels = [5, 4, 3, 2, 1], [1, 0, 0, 1, 1]
    assert auprc(scores, labels) == pytest.approx(0.7)
    assert average_precision_score(labels, scores) == pytest.approx(0.7)
    # Tied pairs: {3, 3} -> 1/2 at recall 1/3, {2, 2} -> 2/4 at 2/3, 1 -> 3/5 at 1.
    assert auprc([3, 3, 2, 2, 1], [0, 1, 1, 0, 1]) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    # AUROC of the first ranking: positive-negative wins 2 (first) + 0 + 0 out of 6.
    assert auroc(scores, labels) == pytest.approx(2 / 6)


def test_recall_at_k_rejects_k_zero_and_non_integers():
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\], got 0"):
        recall_at_k([0.1, 0.2, 0.3], [0, 1, 0], k=0)
    for k in (1.0, True):
        with pytest.raises(TypeError, match="k must be an int"):
            recall_at_k([0.1, 0.2, 0.3], [0, 1, 0], k=k)
    assert recall_at_k([0.1, 0.2, 0.3], [0, 1, 0], k=np.int64(2)) == 1.0


def test_mse_refuses_broadcasting_nan_and_empty():
    # (2, 1) against (1, 2) would broadcast to (2, 2) and give a wrong number silently.
    with pytest.raises(ValueError, match=r"differ in shape: \(2, 1\) != \(1, 2\)"):
        mse(np.zeros((2, 1)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mse([0.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        mse(np.zeros(0), np.zeros(0))
    # 1/3 * (0 + 4 + 1): a mean over every element, not a sum.
    assert mse(torch.tensor([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 4.0])) == pytest.approx(5 / 3)


def test_psnr_uses_data_range_squared():
    # 8-bit pixels: an error of 255 / 10 per pixel is 20 dB; data_range 1 would give -28 dB.
    assert psnr((255 / 10) ** 2, data_range=255) == pytest.approx(20.0)
    assert psnr(1.0, data_range=10.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="data_range must be finite and positive, got 0"):
        psnr(0.01, 0)


def test_tune_threshold_default_grid_reaches_both_ends_and_uses_strict_greater():
    # Only 0.95 separates 0.92 (normal) from 0.97 (anomaly): the grid must include it.
    assert tune_threshold_macro_f1([0.1, 0.92, 0.97], [0, 0, 1]) == (pytest.approx(0.95), 1.0)
    # Only 0.05 separates 0.04 (normal) from 0.06 (anomaly).
    assert tune_threshold_macro_f1([0.04, 0.06, 0.5], [0, 1, 1]) == (pytest.approx(0.05), 1.0)
    # A probability equal to a threshold is not above it: at t = 0.5 the 0.5 node is normal.
    t, f1 = tune_threshold_macro_f1([0.5, 0.5, 0.9], [0, 0, 1], thresholds=[0.5, 0.4])
    assert (t, f1) == (0.5, 1.0)
    # Ties in macro-F1 keep the first candidate, in the order given.
    assert tune_threshold_macro_f1([0.1, 0.9], [0, 1], thresholds=[0.7, 0.2, 0.5]) == (0.7, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: tune_threshold_macro_f1([0.2, 0.3], [0, 1, 1]),
            "probs and labels differ in length",
        ),
        (lambda: accuracy([0, 1, 1], [0, 1]), "pred and labels differ in length: 3 != 2"),
        (lambda: auroc([0.1, 0.2, 0.3], [0, 1]), "scores and labels differ in length: 3 != 2"),
        (lambda: auroc([[0.1], [0.2]], [0, 1]), r"scores must be 1-D, got shape \(2, 1\)"),
        (lambda: accuracy([0, 1], [0, 1.5]), "labels must hold integer class ids"),
    ],
)
def test_more_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
