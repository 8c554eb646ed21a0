"""k-fold protocol: stratified partitions, per-fold files, resume, the train-on-all label."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from energy_transformer.protocols.kfold import (
    NOT_GENERALISATION,
    Fold,
    FoldResult,
    load_results,
    paired,
    run_kfold,
    save_results,
    select_on_validation,
    stratified_folds,
    summarize,
)

LABELS = np.array([0] * 60 + [1] * 30 + [2] * 20)


def test_folds_partition_and_keep_class_ratios():
    folds = stratified_folds(LABELS, folds=10, val_fraction=0.1, seed=3)
    assert len(folds) == 10
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(tests), np.arange(LABELS.size))  # test sets partition
    for f in folds:
        parts = [set(f.train), set(f.val), set(f.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert set.union(*parts) == set(range(LABELS.size))
        # Each test fold holds 6, 3 and 2 of the classes (1/10 of 60, 30, 20).
        assert np.bincount(LABELS[f.test], minlength=3).tolist() == [6, 3, 2]
        val_counts = np.bincount(LABELS[f.val], minlength=3)
        assert abs(f.val.size - 0.1 * 99) <= 1 and (val_counts >= 1).all()
        assert abs(val_counts[0] / f.val.size - 60 / 110) < 0.15


def test_folds_fixed_by_seed():
    a = stratified_folds(LABELS, 5, seed=0)
    b = stratified_folds(LABELS, 5, seed=0)
    c = stratified_folds(LABELS, 5, seed=1)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=True))


def test_train_on_all_and_errors():
    (only,) = stratified_folds(LABELS, protocol="train-on-all")
    everything = np.arange(LABELS.size)
    assert all(np.array_equal(s, everything) for s in (only.train, only.val, only.test))
    with pytest.raises(ValueError, match="protocol must be one of"):
        stratified_folds(LABELS, protocol="peek")
    with pytest.raises(ValueError, match="folds must be >= 2"):
        stratified_folds(LABELS, folds=1)
    with pytest.raises(ValueError, match="smallest class has 2 graphs, fewer than folds=3"):
        stratified_folds(np.array([0] * 10 + [1] * 2), folds=3)
    with pytest.raises(ValueError, match="smallest class has 1 graph, fewer than folds=3"):
        stratified_folds(np.array([0] * 10 + [1]), folds=3)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_folds(LABELS, val_fraction=1.5)
    with pytest.raises(ValueError, match="non-empty 1-d"):
        stratified_folds(np.zeros((0,)))


def majority(labels):
    """A fit_fold predicting the training fold's majority class: accuracies known by hand."""
    calls = []

    def fit_fold(fold: Fold) -> FoldResult:
        calls.append(fold.index)
        guess = np.bincount(labels[fold.train]).argmax()
        acc = {
            k: float((labels[getattr(fold, k)] == guess).mean()) for k in ("train", "val", "test")
        }
        return FoldResult(fold.index, acc["test"], acc["val"], acc["train"], 0.5, {"guess": guess})

    return fit_fold, calls


def test_run_kfold_saves_per_fold_results_and_resumes(tmp_path):
    fit_fold, calls = majority(LABELS)
    summary = run_kfold(LABELS, fit_fold, folds=5, seed=0, out=tmp_path, meta={"model": "maj"})
    # Class 0 is 60/110 of every stratified test fold (12 of 22).
    assert np.isclose(summary.mean, 12 / 22) and np.isclose(summary.std, 0.0)
    assert calls == [0, 1, 2, 3, 4]
    for i in range(5):
        saved = json.loads((tmp_path / f"fold-{i:02d}" / "result.json").read_text())
        split = json.loads((tmp_path / f"fold-{i:02d}" / "split.json").read_text())
        assert saved["fold"] == i and np.isclose(saved["test_acc"], 12 / 22)
        assert len(split["test"]) == 22
    with open(tmp_path / "folds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["fold"]) for r in rows] == list(range(5)) and rows[0]["guess"] == "0"
    body = json.loads((tmp_path / "summary.json").read_text())
    assert body["model"] == "maj" and body["folds_run"] == 5 and body["protocol"] == "cv"
    # Resume: finished folds are read back, not re-run; a removed fold is re-run.
    (tmp_path / "fold-03" / "result.json").unlink()
    fit_again, calls_again = majority(LABELS)
    resumed = run_kfold(LABELS, fit_again, folds=5, seed=0, out=tmp_path, resume=True)
    assert calls_again == [3]
    assert np.isclose(resumed.mean, summary.mean)


def test_only_listed_folds_then_gathered(tmp_path):
    fit_fold, calls = majority(LABELS)
    run_kfold(LABELS, fit_fold, folds=5, only=[3, 1], out=tmp_path)
    run_kfold(LABELS, fit_fold, folds=5, only=[0], out=tmp_path)
    assert calls == [1, 3, 0]
    assert [r.fold for r in load_results(tmp_path)] == [0, 1, 3]


def test_results_read_back_from_folds_csv_alone(tmp_path):
    fit_fold, _ = majority(LABELS)
    summary = run_kfold(LABELS, fit_fold, folds=5, only=[4, 2], out=tmp_path)
    for fold_dir in tmp_path.glob("fold-*"):
        shutil.rmtree(fold_dir)
    back = load_results(tmp_path)
    assert [r.fold for r in back] == [2, 4]
    assert [r.test_acc for r in back] == pytest.approx([r.test_acc for r in summary.folds])
    assert back[0].extra == {"guess": "0"}
    with open(tmp_path / "folds.csv", "a") as f:
        f.write("7,0.5,,0.5,1.0,0\n")
    with pytest.raises(ValueError, match=r"folds.csv, line 4: a fold row needs a number"):
        load_results(tmp_path)


def test_max_folds_and_summary_std(tmp_path):
    fit_fold, calls = majority(LABELS)
    partial = run_kfold(LABELS, fit_fold, folds=10, max_folds=3, out=tmp_path)
    assert calls == [0, 1, 2] and len(partial.folds) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["folds_run"] == 3
    results = [FoldResult(i, acc, 0, 0, 1.0, {}) for i, acc in enumerate([0.5, 0.7, 0.9])]
    s = summarize(results)
    assert np.isclose(s.mean, 0.7) and np.isclose(s.std, np.sqrt(((0.2**2) * 2) / 3))
    assert s.describe() == "70.0 +- 16.3"
    assert summarize(results[:1]).describe() == "50.0"  # one fold has no spread to print


def test_an_interrupted_run_summarises_the_folds_it_finished(tmp_path):
    fit_fold, _ = majority(LABELS)

    def stops_at_fold_2(fold):
        if fold.index == 2:
            raise KeyboardInterrupt
        return fit_fold(fold)

    with pytest.raises(KeyboardInterrupt):
        run_kfold(LABELS, stops_at_fold_2, folds=5, out=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["folds_run"] == 2 and len(summary["folds"]) == 2


def test_train_on_all_is_labelled(tmp_path):
    fit_fold, _ = majority(LABELS)
    summary = run_kfold(LABELS, fit_fold, protocol="train-on-all", out=tmp_path)
    assert len(summary.folds) == 1 and "NOT a generalisation measure" in summary.describe()
    assert "+-" not in summary.describe()
    body = json.loads((tmp_path / "summary.json").read_text())
    assert body["note"] == NOT_GENERALISATION and "NOT a generalisation measure" in body["note"]


def test_paired_counts_folds_ahead_level_behind():
    a = [FoldResult(i, acc, 0, 0, 1.0, {}) for i, acc in enumerate([0.6, 0.8, 0.5, 0.7])]
    b = [FoldResult(i, acc, 0, 0, 1.0, {}) for i, acc in enumerate([0.7, 0.6, 0.5])]
    p = paired(a, b)  # fold 3 has no partner and is left out
    assert (p.folds, p.ahead, p.level, p.behind) == (3, 1, 1, 1)
    assert p.mean_diff == pytest.approx((-0.1 + 0.2 + 0.0) / 3)
    assert p.describe() == "+3.3 (1/1/1)"
    with pytest.raises(ValueError, match="share no fold"):
        paired(a[3:], b)


def fixed(accs, seconds):
    """A fit_fold returning set test accuracies and times, fold by fold."""

    def fit_fold(fold: Fold) -> FoldResult:
        i = fold.index
        return FoldResult(i, accs[i], 0.25, 1.0, seconds[i], {})

    return fit_fold


def test_summary_json_holds_mean_population_std_and_time_per_fold(tmp_path):
    run_kfold(LABELS, fixed([0.5, 0.7, 0.9], [1.0, 2.0, 6.0]), folds=3, out=tmp_path)
    body = json.loads((tmp_path / "summary.json").read_text())
    # mean 0.7; population std sqrt((0.2^2 + 0 + 0.2^2) / 3) = 0.163299...; time (1+2+6)/3 = 3
    assert body["test_acc_mean"] == pytest.approx(0.7)
    assert body["test_acc_std"] == pytest.approx(0.16329931618554522)
    assert body["seconds_per_fold"] == pytest.approx(3.0)
    assert [f["test_acc"] for f in body["folds"]] == [0.5, 0.7, 0.9]


def test_summary_is_the_mean_not_a_middle_value():
    results = [FoldResult(i, acc, 0, 0, 1.0, {}) for i, acc in enumerate([0.5, 0.6, 1.0])]
    s = summarize(results)
    # mean 0.7 (the median would be 0.6); population std sqrt((0.04 + 0.01 + 0.09) / 3)
    assert s.mean == pytest.approx(0.7) and s.std == pytest.approx(np.sqrt(0.14 / 3))
    assert s.describe() == "70.0 +- 21.6"


def test_validation_split_is_stratified_and_fixed_by_seed():
    # 5 folds of 110 graphs: each training fold holds 48 / 24 / 16 of the classes; a quarter of
    # it (22 graphs) stratified is exactly 12 / 6 / 4, leaving 36 / 18 / 12 to train on.
    a = stratified_folds(LABELS, 5, val_fraction=0.25, seed=0)
    for f in a:
        assert np.bincount(LABELS[f.val], minlength=3).tolist() == [12, 6, 4]
        assert np.bincount(LABELS[f.train], minlength=3).tolist() == [36, 18, 12]
    b = stratified_folds(LABELS, 5, val_fraction=0.25, seed=0)
    for x, y in zip(a, b, strict=True):  # the same seed: the same train and val, not just test
        assert np.array_equal(x.train, y.train) and np.array_equal(x.val, y.val)


def test_a_class_with_exactly_folds_members_is_enough():
    labels = np.array([0] * 20 + [1] * 5)
    folds = stratified_folds(labels, folds=5, val_fraction=0.25)
    assert [int(labels[f.test].sum()) for f in folds] == [1, 1, 1, 1, 1]


def test_without_resume_every_fold_is_fitted_again(tmp_path):
    fit_fold, calls = majority(LABELS)
    run_kfold(LABELS, fit_fold, folds=3, out=tmp_path)
    run_kfold(LABELS, fit_fold, folds=3, out=tmp_path)
    assert calls == [0, 1, 2, 0, 1, 2]


def test_paired_counts_a_one_point_gap_as_ahead():
    a = [FoldResult(0, 0.71, 0, 0, 1.0, {}), FoldResult(1, 0.50, 0, 0, 1.0, {})]
    b = [FoldResult(0, 0.70, 0, 0, 1.0, {}), FoldResult(1, 0.51, 0, 0, 1.0, {})]
    p = paired(a, b)
    assert (p.ahead, p.level, p.behind) == (1, 0, 1) and p.mean_diff == pytest.approx(0.0)


def test_fold_time_is_measured_when_fit_fold_leaves_it_unset():
    summary = run_kfold(LABELS, fixed([0.5] * 3, [0.0] * 3), folds=3)
    assert all(r.seconds > 0 for r in summary.folds) and summary.seconds_per_fold > 0


@pytest.mark.parametrize(
    ("labels", "folds", "val_fraction"),
    [
        ([0, 0] + [1] * 6, 2, 0.1),  # a training fold holds one graph of class 0
        ([0] * 10 + [1] * 10, 2, 0.05),  # one validation graph for two classes
        ([0] * 10 + [1] * 10, 2, 0.95),  # one training graph left for two classes
    ],
)
def test_a_validation_share_that_cannot_be_stratified_names_the_options(
    labels, folds, val_fraction
):
    with pytest.raises(ValueError, match=f"val_fraction={val_fraction} .* use fewer folds"):
        stratified_folds(labels, folds, val_fraction)


def test_each_folds_validation_split_is_seeded_by_seed_plus_fold_index():
    # Written out with sklearn: shuffled stratified k-fold seeded by `seed`, then a stratified
    # validation share of each training fold seeded by `seed + i` (not one seed for all).
    from sklearn.model_selection import StratifiedKFold, train_test_split

    seed = 5
    folds = stratified_folds(LABELS, 4, val_fraction=0.2, seed=seed)
    splitter = StratifiedKFold(n_splits=4, shuffle=True, random_state=seed)
    for i, (rest, test) in enumerate(splitter.split(np.zeros(LABELS.size), LABELS)):
        train, val = train_test_split(
            rest, test_size=0.2, stratify=LABELS[rest], random_state=seed + i
        )
        assert folds[i].index == i and np.array_equal(folds[i].test, np.sort(test))
        assert np.array_equal(folds[i].val, np.sort(val))
        assert np.array_equal(folds[i].train, np.sort(train))


def test_fold_indices_are_sorted():
    for f in stratified_folds(LABELS, 5, val_fraction=0.2, seed=2):
        for part in (f.train, f.val, f.test):
            assert np.array_equal(part, np.sort(part)) and np.unique(part).size == part.size


@pytest.mark.parametrize(
    ("val_fraction", "val_size"),
    [
        (0.15, 2),  # ceil(0.15 * 10) = 2 = one graph per class: the smallest share allowed
        (0.75, 8),  # ceil(7.5) = 8 leaves 2 = one training graph per class: the largest
    ],
)
def test_the_validation_share_rounds_up_and_its_bounds_are_inclusive(val_fraction, val_size):
    labels = np.array([0] * 10 + [1] * 10)
    for f in stratified_folds(labels, 2, val_fraction=val_fraction):
        assert f.val.size == val_size and f.train.size == 10 - val_size
        assert np.bincount(labels[f.val]).tolist() == [val_size // 2] * 2
        assert np.bincount(labels[f.train]).tolist() == [(10 - val_size) // 2] * 2


def test_a_training_fold_with_one_graph_of_a_class_is_refused_in_our_words():
    # Two graphs of class 0 over 2 folds: each training fold holds one, which no stratified
    # validation split can put on both sides, although 3 validation graphs would be enough.
    labels = np.array([0] * 2 + [1] * 18)
    with pytest.raises(ValueError, match=r"fold 0: its 10 training graphs \(smallest class: 1\)"):
        stratified_folds(labels, 2, val_fraction=0.3)


def test_max_folds_below_one_is_refused():
    fit_fold, calls = majority(LABELS)
    with pytest.raises(ValueError, match="max_folds must be >= 1, got 0"):
        run_kfold(LABELS, fit_fold, folds=5, max_folds=0)
    assert calls == []


def test_results_are_written_as_each_fold_finishes(tmp_path):
    # A run that dies in round 2 leaves rounds 0 and 1 in folds.csv and summary.json.
    fit, _ = majority(LABELS)

    def fit_fold(fold: Fold) -> FoldResult:
        if fold.index == 2:
            raise RuntimeError("killed")
        return fit(fold)

    with pytest.raises(RuntimeError, match="killed"):
        run_kfold(LABELS, fit_fold, folds=5, out=tmp_path)
    with open(tmp_path / "folds.csv") as f:
        assert [int(r["fold"]) for r in csv.DictReader(f)] == [0, 1]
    body = json.loads((tmp_path / "summary.json").read_text())
    assert [r["fold"] for r in body["folds"]] == [0, 1]
    assert body["test_acc_mean"] == pytest.approx(12 / 22)
    assert sorted(p.name for p in tmp_path.glob("fold-*")) == ["fold-00", "fold-01"]


def test_majority_accuracy_by_hand():
    from energy_transformer.protocols.kfold import majority_accuracy

    labels = np.array([0, 1, 1, 2, 1, 0, 2, 2, 0, 1])
    # training graphs 0-5: labels 0, 1, 1, 2, 1, 0 -> class 1 (3 of 6); test 6-9: 2, 2, 0, 1
    fold = Fold(0, np.arange(6), np.array([], int), np.arange(6, 10))
    assert majority_accuracy(labels, fold) == 0.25
    # a tie (two 0s, two 2s) goes to the smaller label: test labels 0, 1, 1, 1 -> 1 of 4 (not 0)
    tie = Fold(1, np.array([0, 3, 5, 6]), np.array([], int), np.array([8, 1, 4, 9]))
    assert majority_accuracy(labels, tie) == 0.25


def test_the_majority_floor_is_recorded_summarised_and_read_back(tmp_path):
    from energy_transformer.protocols.kfold import majority_accuracy

    fit_fold, _ = majority(LABELS)
    summary = run_kfold(LABELS, fit_fold, folds=5, out=tmp_path)
    rounds = stratified_folds(LABELS, 5)
    floors = [majority_accuracy(LABELS, f) for f in rounds]
    assert [r.majority_acc for r in summary.folds] == floors
    assert summary.majority == pytest.approx(np.mean(floors))
    assert json.loads((tmp_path / "summary.json").read_text())["majority_acc_mean"] == (
        pytest.approx(np.mean(floors))
    )
    for fold_dir in tmp_path.glob("fold-*"):
        shutil.rmtree(fold_dir)  # folds.csv alone keeps it too
    assert [r.majority_acc for r in load_results(tmp_path)] == pytest.approx(floors)
    assert all("majority_acc" not in r.extra for r in load_results(tmp_path))
    # one fold without it (an older run): no mean is claimed
    old = [FoldResult(0, 0.5, 0.5, 1.0, 1.0, {}), FoldResult(1, 0.5, 0.5, 1.0, 1.0, {}, 0.6)]
    assert summarize(old).majority is None


def test_a_resumed_fold_saved_without_the_floor_gets_it(tmp_path):
    fit_fold, calls = majority(LABELS)
    run_kfold(LABELS, fit_fold, folds=5, max_folds=1, out=tmp_path)
    saved = tmp_path / "fold-00" / "result.json"
    record = json.loads(saved.read_text())
    floor = record.pop("majority_acc")
    saved.write_text(json.dumps(record))
    summary = run_kfold(LABELS, fit_fold, folds=5, max_folds=1, out=tmp_path, resume=True)
    assert calls == [0] and summary.folds[0].majority_acc == floor


def test_the_majority_floor_counts_the_training_graphs_not_the_validation_ones():
    from energy_transformer.protocols.kfold import majority_accuracy

    labels = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    # training graphs 0-2: 0, 0, 1 -> class 0; with the validation graphs 3-4 (1, 1) it would be
    # class 1. Test graphs 5-7: 0, 1, 0 -> 2 of 3.
    fold = Fold(0, np.arange(3), np.array([3, 4]), np.array([5, 6, 7]))
    assert majority_accuracy(labels, fold) == pytest.approx(2 / 3)


def test_no_floor_mean_when_a_later_fold_lacks_it():
    newer_then_older = [
        FoldResult(0, 0.5, 0.5, 1.0, 1.0, {}, 0.6),
        FoldResult(1, 0.5, 0.5, 1.0, 1.0, {}),
    ]
    assert summarize(newer_then_older).majority is None


def test_a_table_of_folds_without_the_floor_reads_back_without_it(tmp_path):
    old = [FoldResult(0, 0.5, 0.25, 1.0, 1.0, {}), FoldResult(1, 0.75, 0.5, 1.0, 1.0, {})]
    save_results(tmp_path, summarize(old))
    with open(tmp_path / "folds.csv") as f:
        assert [r["majority_acc"] for r in csv.DictReader(f)] == ["", ""]  # the column, empty
    assert json.loads((tmp_path / "summary.json").read_text())["majority_acc_mean"] is None
    back = load_results(tmp_path)
    assert [r.majority_acc for r in back] == [None, None]
    assert [r.test_acc for r in back] == [0.5, 0.75]


def test_one_folds_floor_is_its_summary_mean(tmp_path):
    save_results(tmp_path, summarize([FoldResult(0, 0.5, 0.5, 1.0, 1.0, {}, 0.625)]))
    assert json.loads((tmp_path / "summary.json").read_text())["majority_acc_mean"] == 0.625


def _candidate(vals, tests, losses=None, majority=0.5):
    return [
        FoldResult(
            i,
            t,
            v,
            1.0,
            10.0 * (i + 1),
            {} if losses is None else {"val_loss": losses[i]},
            majority,
        )
        for i, (v, t) in enumerate(zip(vals, tests, strict=True))
    ]


def test_selection_keeps_each_folds_best_validation_run_and_its_test_accuracy():
    plain = _candidate([0.8, 0.6, 0.7], [0.75, 0.70, 0.65])
    degree = _candidate([0.7, 0.9, 0.7], [0.95, 0.60, 0.90])
    chosen = select_on_validation({"plain": plain, "degree": degree})
    # fold 0: plain (0.8 > 0.7); fold 1: degree (0.9); fold 2: a tie with no losses -> plain,
    # named first, although degree's test accuracy is higher: the test split never chooses
    assert [r.extra["selected"] for r in chosen] == ["plain", "degree", "plain"]
    assert [r.test_acc for r in chosen] == [0.75, 0.60, 0.65]
    assert [r.val_acc for r in chosen] == [0.8, 0.9, 0.7]
    assert chosen[1].extra["val_accs"] == {"plain": 0.6, "degree": 0.9}
    assert [r.seconds for r in chosen] == [20.0, 40.0, 60.0]  # every candidate was trained
    assert summarize(chosen).mean == pytest.approx((0.75 + 0.60 + 0.65) / 3)


def test_selection_breaks_ties_on_validation_loss_and_keeps_shared_folds_only():
    a = _candidate([0.7, 0.7], [0.1, 0.2], losses=[0.50, 0.40])
    b = _candidate([0.7, 0.7, 0.9], [0.3, 0.4, 0.5], losses=[0.45, 0.60, 0.1])
    chosen = select_on_validation({"a": a, "b": b})
    assert [r.fold for r in chosen] == [0, 1]  # b's fold 2 has no partner
    assert [r.extra["selected"] for r in chosen] == ["b", "a"]  # the lower loss of each tie
    assert chosen[0].extra["val_loss"] == 0.45
    # a loss missing on one side: back to the first named
    c = _candidate([0.7, 0.7], [0.5, 0.6])
    assert [r.extra["selected"] for r in select_on_validation({"c": c, "a": a})] == ["c", "c"]


def test_selection_refuses_what_it_cannot_choose_among():
    one = _candidate([0.5], [0.5])
    with pytest.raises(ValueError, match="at least two candidates, got 1"):
        select_on_validation({"one": one})
    other = [FoldResult(3, 0.5, 0.5, 0.5, 1.0, {})]
    with pytest.raises(ValueError, match="share no finished fold"):
        select_on_validation({"one": one, "other": other})
    shifted = _candidate([0.5], [0.5], majority=0.6)
    with pytest.raises(ValueError, match="fold 0: the candidates were not run on the same splits"):
        select_on_validation({"one": one, "shifted": shifted})


def test_selection_counts_validation_accuracies_equal_to_rounding_as_a_tie():
    # 0.1 + 0.2 != 0.3 in floating point, yet the two are the same accuracy: the tie goes to
    # the lower validation loss, not to the accuracy larger by one ulp
    exact = [FoldResult(0, 0.25, 0.3, 1.0, 1.0, {"val_loss": 0.2}, 0.5)]
    rounded = [FoldResult(0, 0.75, 0.1 + 0.2, 1.0, 1.0, {"val_loss": 0.4}, 0.5)]
    (chosen,) = select_on_validation({"rounded": rounded, "exact": exact})
    assert chosen.extra["selected"] == "exact" and chosen.test_acc == 0.25
    # a real difference in accuracy is not a tie, whatever the losses
    better = [FoldResult(0, 0.5, 0.3 + 1e-3, 1.0, 1.0, {"val_loss": 0.9}, 0.5)]
    (chosen,) = select_on_validation({"exact": exact, "better": better})
    assert chosen.extra["selected"] == "better" and chosen.test_acc == 0.5


def test_selection_reads_a_missing_loss_from_folds_csv_as_missing(tmp_path):
    # A run resumed across the change: fold 0 has a loss, fold 1 an empty cell in folds.csv.
    old = [
        FoldResult(0, 0.5, 0.7, 1.0, 1.0, {"val_loss": 0.3}, 0.5),
        FoldResult(1, 0.6, 0.7, 1.0, 1.0, {}, 0.5),
    ]
    save_results(tmp_path / "old", summarize(old))
    read = load_results(tmp_path / "old")
    assert read[1].extra.get("val_loss") == ""
    new = _candidate([0.7, 0.7], [0.9, 0.8], losses=[0.2, 0.1])
    chosen = select_on_validation({"new": new, "old": read})
    # fold 0: both losses known, the lower (new, 0.2 < 0.3) wins; fold 1: a loss is missing,
    # so the first named wins
    assert [r.extra["selected"] for r in chosen] == ["new", "new"]
    chosen = select_on_validation({"old": read, "new": new})
    assert [r.extra["selected"] for r in chosen] == ["new", "old"]


def test_folds_csv_writes_nested_values_as_json(tmp_path):
    results = [FoldResult(0, 0.5, 0.6, 1.0, 1.0, {"val_accs": {"a": 0.6, "b": 0.5}}, 0.5)]
    save_results(tmp_path, summarize(results))
    with open(tmp_path / "folds.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert json.loads(row["val_accs"]) == {"a": 0.6, "b": 0.5}


def test_selection_counts_a_zero_validation_loss_and_ignores_a_missing_floor():
    a = [FoldResult(0, 0.5, 0.8, 1.0, 1.0, {"val_loss": 0.0}, None)]  # an older fold: no floor
    b = [FoldResult(0, 0.6, 0.8, 1.0, 1.0, {"val_loss": 0.3}, 0.6)]
    (chosen,) = select_on_validation({"b": b, "a": a})
    assert chosen.extra["selected"] == "a" and chosen.extra["tie"] == "loss"  # 0.0 < 0.3
