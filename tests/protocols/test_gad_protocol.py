"""The anomaly-detection harness: stratified splits, metric bookkeeping, an end-to-end run."""

import csv
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from energy_transformer.models.features import piecewise_linear_encoding
from energy_transformer.protocols import gad
from energy_transformer.protocols.gad import (
    PROTOCOLS,
    HarnessConfig,
    RunResult,
    Split,
    class_weight,
    file_split,
    format_table,
    neural_input,
    pick_test,
    run_protocols,
    score_split,
    select_epoch,
    stratified_split,
    summarize,
)


def labels(n=1000, anomalies=100):
    y = torch.zeros(n, dtype=torch.long)
    y[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:anomalies]] = 1
    return y


@pytest.mark.parametrize("ratio", [0.01, 0.4])
def test_stratified_split_is_disjoint_complete_and_stratified(ratio):
    y = labels()
    s = stratified_split(y, ratio, seed=3)
    parts = [set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(1000))
    for c, count in ((0, 900), (1, 100)):
        n_train = int((y[s.train] == c).sum())
        n_val, n_test = int((y[s.val] == c).sum()), int((y[s.test] == c).sum())
        assert n_train == max(1, round(ratio * count))
        assert abs(n_test - 2 * n_val) <= 2  # rest split 1:2
    assert torch.equal(stratified_split(y, ratio, seed=3).train, s.train)
    assert not torch.equal(stratified_split(y, ratio, seed=4).train, s.train)


def test_split_respects_label_mask_and_validates():
    y = labels()
    mask = torch.arange(1000) >= 300
    s = stratified_split(y, 0.4, seed=0, label_mask=mask)
    assert min(s.train.min(), s.val.min(), s.test.min()) >= 300
    with pytest.raises(ValueError, match="train_ratio"):
        stratified_split(y, 1.0)
    with pytest.raises(ValueError, match="class 1 has 2 labelled nodes"):
        stratified_split(torch.tensor([0, 0, 0, 1, 1]), 0.4)


def test_file_split_and_its_errors():
    data = Data(x=torch.zeros(4, 1), y=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="ships no split masks"):
        file_split(data)
    data.train_masks = torch.tensor([[True, True, False, False]])
    data.val_masks = torch.tensor([[False, False, True, False]])
    data.test_masks = torch.tensor([[False, False, False, True]])
    s = file_split(data)
    assert s.train.tolist() == [0, 1] and s.val.tolist() == [2] and s.test.tolist() == [3]
    with pytest.raises(ValueError, match=r"the dataset ships 1: use seeds in \[0, 1\)"):
        file_split(data, 1)


def masked_data(train, val, test):
    data = Data(x=torch.zeros(4, 1), y=torch.tensor([0, 1, 0, 1]))
    data.train_masks, data.val_masks, data.test_masks = train, val, test
    return data


def test_file_split_refuses_overlapping_or_partial_masks():
    train = torch.tensor([[True, True, False, False], [True, False, False, False]])
    val = torch.tensor([[False, False, True, False], [False, True, False, False]])
    test = torch.tensor([[False, False, False, True], [False, False, True, True]])
    assert file_split(masked_data(train, val, test), 1).test.tolist() == [2, 3]
    leaky = test.clone()
    leaky[1, 0] = True  # node 0 is trained on and tested in split 1
    with pytest.raises(ValueError, match="split 1: train_masks and test_masks overlap on 1 node"):
        file_split(masked_data(train, val, leaky), 0)
    with pytest.raises(ValueError, match="val_masks must be boolean or 0/1 integers"):
        file_split(masked_data(train, val.float() * 0.5, test))
    partial = Data(x=torch.zeros(4, 1), train_masks=train)
    with pytest.raises(ValueError, match=r"has train_masks but not \['val_masks', 'test_masks'\]"):
        file_split(partial)


def test_score_split_hand_computed():
    y = torch.tensor([0, 1, 0, 1, 0, 0, 1, 0])
    scores = torch.tensor([0.1, 0.9, 0.2, 0.3, 0.05, 0.6, 0.7, 0.15])
    split = Split(torch.tensor([0]), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7]))
    m = score_split(scores, y, split)
    # validation: anomalies {0.9, 0.3}, normals {0.2, 0.05}: perfectly ranked
    assert m["val_auroc"] == 1.0 and m["val_auprc"] == 1.0 and m["val_rec_at_k"] == 1.0
    # first threshold separating them: 0.2 < t < 0.3 -> 0.25 (grid 0.05..0.95)
    assert m["threshold"] == pytest.approx(0.25) and m["val_macro_f1"] == 1.0
    # test: normal 0.6 and anomaly 0.7 both above 0.25, normal 0.15 below
    assert m["test_auroc"] == 1.0
    assert m["test_macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_select_epoch_and_class_weight():
    history = [{"epoch": 1, "val_auprc": 0.2}, {"epoch": 2, "val_auprc": 0.5}]
    history.append({"epoch": 3, "val_auprc": 0.5})
    assert select_epoch(history, PROTOCOLS["gadbench"])["epoch"] == 2
    assert class_weight(torch.tensor([0, 0, 0, 1])).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="single class"):
        class_weight(torch.zeros(4, dtype=torch.long))


def small_graph(n=120, seed=0):
    """Anomalies have shifted features and link to each other: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.2).long()
    x = torch.randn(n, 4, generator=g) + 1.5 * y[:, None]
    edge_index = torch.randint(0, n, (2, 4 * n), generator=g)
    return Data(x=x, edge_index=torch.cat([edge_index, edge_index.flip(0)], 1), y=y)


def test_harness_end_to_end_every_model(tmp_path):
    data = small_graph()
    cfg = HarnessConfig(
        epochs=3,
        hidden=8,
        lr=0.02,
        device="cpu",
        et={"heads": 1, "head_dim": 4, "steps": 2},
        rf={"n_estimators": 10},
    )
    results = run_protocols(
        data, ["gadbench", "bwgnn"], seeds=[0], cfg=cfg, run_root=tmp_path, train_ratio=0.4
    )
    assert [r.model for r in results] == [
        "et", "mlp", "gcn", "sage", "gat", "bwgnn", "rf-graph", "gb-graph"
    ]  # fmt: skip
    for r in results:
        assert set(r.metrics) == {"gadbench", "bwgnn"}
        assert set(r.metrics["gadbench"]) == {"auroc", "auprc", "rec_at_k"}
        assert set(r.metrics["bwgnn"]) == {"macro_f1", "auroc"}
        assert all(0.0 <= v <= 1.0 for m in r.metrics.values() for v in m.values())
    et = results[0]
    assert set(et.energy_metrics) == {"auroc", "auprc", "rec_at_k"}
    assert et.metrics["gadbench"]["auroc"] > 0.7  # shifted features are easy
    assert (tmp_path / "et" / "seed0" / "best.safetensors").is_file()
    assert (tmp_path / "gcn" / "seed0" / "metrics.csv").is_file()
    table = format_table(summarize(results, "gadbench"))
    assert "| et-energy |" in table and "| rf-graph |" in table and "| gb-graph |" in table
    assert table.splitlines()[0] == "| model | auroc | auprc | rec_at_k | s / seed |"


def test_neural_input_is_rf_graphs_map_standardised(tmp_path):
    data = small_graph()
    assert neural_input(data, 0) is data
    src, dst = data.edge_index
    # One hop, node by node: [own features, mean and max over in-neighbours], then standardised.
    rows = []
    for node in range(120):
        nbrs = data.x[src[dst == node]]
        rows.append(torch.cat([data.x[node], nbrs.mean(0), nbrs.max(0).values]))
    raw = torch.stack(rows)
    expected = (raw - raw.mean(0)) / raw.std(0)
    torch.testing.assert_close(neural_input(data, 1).x, expected)
    assert data.x.shape == (120, 4)  # the caller's graph is left alone
    cfg = HarnessConfig(epochs=2, hidden=8, device="cpu", input_hops=2, rf={"n_estimators": 5})
    run_protocols(data, "gadbench", ["mlp", "rf-graph"], [0], cfg, run_root=tmp_path)
    config = json.loads((tmp_path / "mlp" / "seed0" / "config.json").read_text())
    assert config["model"]["in_dim"] == 20 and config["extra"]["input_hops"] == 2


def test_neural_input_bins_encode_the_features_it_would_feed(tmp_path):
    data = small_graph()
    torch.testing.assert_close(neural_input(data, 0, 4).x, piecewise_linear_encoding(data.x, 4))
    mapped = neural_input(data, 1)
    torch.testing.assert_close(neural_input(data, 1, 4).x, piecewise_linear_encoding(mapped.x, 4))
    assert data.x.shape == (120, 4)
    cfg = HarnessConfig(epochs=2, hidden=8, device="cpu", input_bins=4)
    run_protocols(data, "gadbench", ["mlp"], [0], cfg, run_root=tmp_path)
    config = json.loads((tmp_path / "mlp" / "seed0" / "config.json").read_text())
    assert config["model"]["in_dim"] == neural_input(data, 0, 4).x.shape[1] == 16
    assert config["extra"]["input_bins"] == 4


@pytest.mark.parametrize("name", ["input_hops", "input_bins"])
def test_input_options_are_refused_as_a_count(name):
    # 0 (raw features) is the default: "must be a positive int" contradicted it.
    with pytest.raises(ValueError, match=f"{name} must be an int >= 0, got -1"):
        HarnessConfig(**{name: -1})


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown model"):
        run_protocols(small_graph(), "gadbench", models=["gin"], seeds=[0])
    with pytest.raises(ValueError, match="unknown protocol"):
        run_protocols(small_graph(), "odd", seeds=[0])


def test_the_datasets_own_splits_drive_every_model(tmp_path):
    data = small_graph()
    # Split k: nodes k, k + 2, ... train, then val and test in thirds of the rest.
    masks = torch.zeros(3, 2, 120, dtype=torch.bool)
    for k in range(2):
        order = torch.arange(120).roll(k)
        masks[0, k, order[:60]], masks[1, k, order[60:80]], masks[2, k, order[80:]] = True, 1, 1
    data.train_masks, data.val_masks, data.test_masks = masks
    cfg = HarnessConfig(epochs=2, hidden=8, device="cpu", rf={"n_estimators": 5})
    run_protocols(data, "gadbench", ["mlp"], [1], cfg, run_root=tmp_path, splits="file")
    config = json.loads((tmp_path / "mlp" / "seed1" / "config.json").read_text())
    assert config["extra"]["split_sizes"] == [60, 20, 40] and config["extra"]["train_ratio"] is None
    with pytest.raises(ValueError, match="the dataset ships 2: use seeds in"):
        run_protocols(data, "gadbench", ["mlp"], [0, 2], cfg, splits="file")
    assert not (tmp_path / "mlp" / "seed0").exists()  # refused before seed 0 trained
    with pytest.raises(ValueError, match="splits must be one of"):
        run_protocols(data, "gadbench", ["mlp"], [0], cfg, splits="gadbench")


def class_counts(y, idx):
    return [int((y[idx] == 0).sum()), int((y[idx] == 1).sum())]


def test_stratified_split_sizes_by_hand_and_unlabelled_nodes_left_out():
    # 5 unlabelled nodes (they would count as anomalies), then 13 normal nodes and 7 anomalies.
    y = torch.tensor([1] * 5 + [0] * 13 + [1] * 7)
    s = stratified_split(y, 0.4, seed=0, label_mask=torch.arange(25) >= 5)
    # normal: round(0.4 * 13) = 5 train, the other 8 split 1:2 -> 3 val, 5 test;
    # anomalous: round(0.4 * 7) = round(2.8) = 3 train, the other 4 -> 1 val, 3 test.
    assert class_counts(y, s.train) == [5, 3]
    assert class_counts(y, s.val) == [3, 1]
    assert class_counts(y, s.test) == [5, 3]
    assert min(int(p.min()) for p in (s.train, s.val, s.test)) >= 5
    assert all(torch.equal(p, p.sort().values) for p in (s.train, s.val, s.test))


def test_every_part_keeps_each_class_even_at_a_large_train_ratio():
    y = torch.tensor([0] * 30 + [1] * 3)
    s = stratified_split(y, 0.9, seed=0)
    # anomalies: round(2.7) = 3 capped at 3 - 2 = 1 so that val and test keep one each
    assert [class_counts(y, p) for p in (s.train, s.val, s.test)] == [[27, 1], [1, 1], [2, 1]]


def test_macro_f1_threshold_is_strict_on_test():
    # Validation as in test_score_split_hand_computed: the tuned threshold is 0.25 exactly.
    y = torch.tensor([0, 1, 0, 1, 0, 0, 1])
    scores = torch.tensor([0.1, 0.9, 0.2, 0.3, 0.05, 0.25, 0.7])
    split = Split(torch.tensor([0]), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6]))
    m = score_split(scores, y, split)
    assert m["threshold"] == 0.25
    # the normal test node scored exactly 0.25 is not above the threshold: predicted normal
    assert m["test_macro_f1"] == 1.0


# Three epochs: validation AUPRC peaks at epoch 2, validation macro-F1 at epoch 3, and every test
# metric at epoch 3; validation values differ from test ones so a mix-up shows.
HISTORY = [
    {"epoch": 1, "val_auprc": 0.30, "val_macro_f1": 0.60, "val_auroc": 0.11, "val_rec_at_k": 0.12,
     "test_auroc": 0.71, "test_auprc": 0.31, "test_rec_at_k": 0.21, "test_macro_f1": 0.61},
    {"epoch": 2, "val_auprc": 0.50, "val_macro_f1": 0.55, "val_auroc": 0.13, "val_rec_at_k": 0.14,
     "test_auroc": 0.72, "test_auprc": 0.32, "test_rec_at_k": 0.22, "test_macro_f1": 0.62},
    {"epoch": 3, "val_auprc": 0.40, "val_macro_f1": 0.70, "val_auroc": 0.15, "val_rec_at_k": 0.16,
     "test_auroc": 0.90, "test_auprc": 0.91, "test_rec_at_k": 0.92, "test_macro_f1": 0.93},
]  # fmt: skip
GADBENCH_AT_2 = {"auroc": 0.72, "auprc": 0.32, "rec_at_k": 0.22}
BWGNN_AT_3 = {"macro_f1": 0.93, "auroc": 0.90}


def test_test_metrics_are_read_at_the_epoch_of_best_validation():
    gadbench, bwgnn = PROTOCOLS["gadbench"], PROTOCOLS["bwgnn"]
    assert select_epoch(HISTORY, gadbench)["epoch"] == 2
    assert pick_test(select_epoch(HISTORY, gadbench), gadbench.metrics) == GADBENCH_AT_2
    assert select_epoch(HISTORY, bwgnn)["epoch"] == 3
    assert pick_test(select_epoch(HISTORY, bwgnn), bwgnn.metrics) == BWGNN_AT_3
    with pytest.raises(ValueError, match="no epochs"):
        select_epoch([], gadbench)


def fake_trainer(monkeypatch):
    """Replace the Trainer by one that records the loss on the graph and returns HISTORY."""
    seen = {}

    class FakeTrainer:
        def __init__(self, model, loss_fn, cfg, **kwargs):
            self.model, self.loss_fn, self.device = model, loss_fn, torch.device("cpu")

        def fit(self, data, evaluate=None, select=None, resume=False):
            (graph,) = data
            seen["select"], seen["graph"], seen["model"] = select, graph, self.model
            seen["loss"] = self.loss_fn(self.model, graph)[0].detach()
            seen["logits"] = self.model(graph.x, graph.edge_index).detach()
            state = {k: v.clone() for k, v in self.model.state_dict().items()}
            return SimpleNamespace(history=HISTORY, best_state=state, seconds=1.5)

    monkeypatch.setattr(gad, "Trainer", FakeTrainer)
    return seen


def test_train_neural_selects_each_protocols_epoch_and_trains_on_train_labels(monkeypatch):
    seen = fake_trainer(monkeypatch)
    data = small_graph(n=40)
    data.y = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0] + [1] * 16 + [0] * 16)
    train = torch.arange(8)  # 2 anomalies, 6 normal: class weights [1, 3]
    split = Split(train, torch.arange(8, 24), torch.arange(24, 40))
    cfg = HarnessConfig(hidden=8, device="cpu")
    r = gad.train_neural("mlp", data, split, ["gadbench", "bwgnn"], cfg, seed=0)
    assert r.metrics == {"gadbench": GADBENCH_AT_2, "bwgnn": BWGNN_AT_3}
    assert r.best_epoch == {"gadbench": 2, "bwgnn": 3} and r.seconds == 1.5
    assert seen["select"] == "val_auprc"  # the first protocol's metric picks the saved weights
    # The loss sees the training nodes only, weighted by their own class ratio (6 / 2).
    expected = F.cross_entropy(seen["logits"][:8], data.y[:8], weight=torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(seen["loss"], expected)


def run(model, seed, gadbench, bwgnn, seconds, energy=None):
    ranking = ("auroc", "auprc", "rec_at_k")
    metrics = {
        "gadbench": dict(zip(ranking, gadbench, strict=True)),
        "bwgnn": dict(zip(("macro_f1", "auroc"), bwgnn, strict=True)),
    }
    energy = None if energy is None else dict(zip(ranking, energy, strict=True))
    return RunResult(model, seed, metrics, seconds, energy_metrics=energy)


RESULTS = [
    run("et", 0, (0.8, 0.5, 0.4), (0.7, 0.8), 10.0, energy=(0.9, 0.6, 0.5)),
    run("et", 1, (0.6, 0.3, 0.1), (0.5, 0.6), 20.0, energy=(0.7, 0.2, 0.3)),
    run("rf-graph", 0, (0.9, 0.8, 0.7), (0.6, 0.9), 3.0),
]


def test_summary_over_seeds_is_mean_and_population_std():
    s = summarize(RESULTS, "gadbench")
    assert list(s) == ["et", "et-energy", "rf-graph"]
    flat = {(m, k): pair for m, row in s.items() for k, pair in row.items()}
    expected = {
        ("et", "auroc"): (0.7, 0.1),
        ("et", "auprc"): (0.4, 0.1),
        ("et", "rec_at_k"): (0.25, 0.15),
        ("et", "seconds"): (15.0, 5.0),
        ("et-energy", "auroc"): (0.8, 0.1),
        ("et-energy", "auprc"): (0.4, 0.2),
        ("et-energy", "rec_at_k"): (0.4, 0.1),
        ("rf-graph", "auroc"): (0.9, 0.0),  # one seed: std 0, not NaN
        ("rf-graph", "auprc"): (0.8, 0.0),
        ("rf-graph", "rec_at_k"): (0.7, 0.0),
        ("rf-graph", "seconds"): (3.0, 0.0),
    }
    assert set(flat) == set(expected)
    for key, (mean, std) in expected.items():
        assert flat[key] == pytest.approx((mean, std)), key
    assert summarize(RESULTS, "bwgnn")["et-energy"] == {"auroc": pytest.approx((0.8, 0.1))}
    three = [run("gcn", seed, (auc, 0, 0), (0, 0), 1.0) for seed, auc in enumerate((0.5, 0.6, 1.0))]
    # mean 0.7 (the median would be 0.6); population std sqrt((0.04 + 0.01 + 0.09) / 3)
    assert summarize(three, "gadbench")["gcn"]["auroc"] == pytest.approx((0.7, (0.14 / 3) ** 0.5))


def test_results_tables_by_hand():
    from energy_transformer.tasks.anomaly import results_markdown

    assert format_table(summarize(RESULTS, "gadbench")).splitlines() == [
        "| model | auroc | auprc | rec_at_k | s / seed |",
        "|---|---|---|---|---|",
        "| et | 70.0 ± 10.0 | 40.0 ± 10.0 | 25.0 ± 15.0 | 15.0 |",
        "| et-energy | 80.0 ± 10.0 | 40.0 ± 20.0 | 40.0 ± 10.0 | (in et) |",
        "| rf-graph | 90.0 ± 0.0 | 80.0 ± 0.0 | 70.0 ± 0.0 | 3.0 |",
    ]
    bwgnn = [
        "| model | macro_f1 | auroc | s / seed |",
        "|---|---|---|---|",
        "| et | 60.0 ± 10.0 | 70.0 ± 10.0 | 15.0 |",
        "| et-energy | - | 80.0 ± 10.0 | (in et) |",
        "| rf-graph | 60.0 ± 0.0 | 90.0 ± 0.0 | 3.0 |",
    ]
    assert format_table(summarize(RESULTS, "bwgnn")).splitlines() == bwgnn
    text = results_markdown(RESULTS, ["gadbench", "bwgnn"], "Tolokers")
    assert text.startswith("# Tolokers\n")
    assert text.index("## protocol: gadbench") < text.index("## protocol: bwgnn")
    assert text.rstrip().endswith("\n".join(bwgnn))


def test_every_model_of_a_seed_gets_that_seeds_split_of_the_labelled_nodes(monkeypatch):
    seen = []

    def fake_run_one(name, data, protocols, cfg, seed, split, *args):
        seen.append((name, seed, split))
        return RunResult(name, seed, {}, 0.0)

    monkeypatch.setattr(gad, "run_one", fake_run_one)
    data = small_graph()
    data.label_mask = torch.arange(120) >= 20
    run_protocols(data, "gadbench", ["rf-graph", "mlp"], [0, 1], train_ratio=0.5)
    assert [(name, seed) for name, seed, _ in seen] == [
        ("rf-graph", 0), ("mlp", 0), ("rf-graph", 1), ("mlp", 1)
    ]  # fmt: skip
    for i, seed in ((0, 0), (2, 1)):
        a, b = seen[i][2], seen[i + 1][2]
        expected = stratified_split(data.y, 0.5, seed, data.label_mask)
        for part in ("train", "val", "test"):
            got = getattr(a, part)
            assert torch.equal(got, getattr(b, part)) and torch.equal(got, getattr(expected, part))
            assert int(got.min()) >= 20  # the unlabelled nodes 0..19 are in no part
    assert not torch.equal(seen[0][2].train, seen[2][2].train)  # seeds draw different splits


def test_ets_energy_row_ranks_by_the_final_node_energies(monkeypatch):
    from energy_transformer.metrics import auprc, auroc

    seen = fake_trainer(monkeypatch)
    data = small_graph(n=60)
    split = stratified_split(data.y, 0.4, seed=0)
    cfg = HarnessConfig(hidden=8, device="cpu", et={"heads": 1, "head_dim": 4, "steps": 2})
    r = gad.train_neural("et", data, split, "gadbench", cfg, seed=0)
    model = seen["model"].eval()
    with torch.no_grad():
        energy = model.energy_scores(data.x, data.edge_index)[split.test]
        softmax = gad.anomaly_scores(model, data)[split.test]
    y = data.y[split.test]
    assert r.energy_metrics["auroc"] == pytest.approx(auroc(energy, y))
    assert r.energy_metrics["auprc"] == pytest.approx(auprc(energy, y))
    assert auroc(energy, y) != pytest.approx(auroc(softmax, y))  # the two scores do differ here


@pytest.mark.parametrize("name", ["rf-graph", "gb-graph"])
def test_a_tree_ensemble_reports_its_wall_time(name):
    data = small_graph()
    split = stratified_split(data.y, 0.4, seed=0)
    cfg = HarnessConfig(rf={"n_estimators": 5})
    r = gad.fit_trees(name, data, split, "gadbench", cfg, seed=0)
    assert r.model == name and r.seconds > 0
    assert set(r.metrics["gadbench"]) == {"auroc", "auprc", "rec_at_k"}


def test_a_tree_ensemble_is_seeded_by_the_runs_seed():
    from energy_transformer.metrics import auroc
    from energy_transformer.models.gad_baselines import RFGraph

    g = torch.Generator().manual_seed(1)
    n = 150
    x, y = torch.randn(n, 3, generator=g), (torch.rand(n, generator=g) < 0.3).long()
    data = Data(x=x, edge_index=torch.randint(0, n, (2, 3 * n), generator=g), y=y)
    split = stratified_split(data.y, 0.4, seed=0)
    cfg = HarnessConfig(rf={"n_estimators": 3})
    expected = {}
    for seed in (1, 2):
        rf = RFGraph(n_estimators=3, seed=seed).fit(x, data.edge_index, y, split.train)
        expected[seed] = auroc(rf.predict_proba(x, data.edge_index)[split.test], y[split.test])
        r = gad.fit_trees("rf-graph", data, split, "gadbench", cfg, seed=seed)
        assert r.seed == seed and r.metrics["gadbench"]["auroc"] == pytest.approx(expected[seed])
    assert expected[1] != pytest.approx(expected[2])  # the seed matters here


@pytest.mark.parametrize(
    ("et", "message"),
    [
        ({"steps": -1}, "steps must be an int >= 0, got -1"),
        ({"steps": True}, "steps must be an int >= 0, got True"),
        ({"steps": 2.0}, "steps must be an int >= 0, got 2.0"),
        ({"noise_std": -0.1}, "noise_std must be finite and >= 0, got -0.1"),
    ],
)
def test_the_harness_config_refuses_bad_descent_settings(et, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        HarnessConfig(et=et)


def test_the_harness_config_accepts_no_descent_and_numpy_steps():
    import numpy as np

    HarnessConfig(et={"steps": 0})  # 0 steps: the block is skipped, a valid ablation
    HarnessConfig(et={"steps": np.int64(2), "noise_std": 0.0})


def _picked(model, seed, auprc_val, auprc_test, f1_val, split="s", seconds=1.0):
    metrics = {
        "gadbench": {"auroc": 0.5, "auprc": auprc_test, "rec_at_k": 0.5},
        "bwgnn": {"macro_f1": auprc_test, "auroc": 0.5},
    }
    validation = {"gadbench": auprc_val, "bwgnn": f1_val}
    return RunResult(model, seed, metrics, seconds, validation=validation, split=split)


def test_selection_across_configurations_picks_on_validation_seed_by_seed():
    candidates = {
        # seed 0: "wide" has the better validation AUPRC but the worse test AUPRC.
        "small": [_picked("et", 0, 0.5, 0.9, 0.7), _picked("et", 1, 0.6, 0.2, 0.1)],
        "wide": [_picked("et", 0, 0.6, 0.1, 0.2), _picked("et", 1, 0.6, 0.8, 0.3, seconds=4)],
        "more": [_picked("mlp", 0, 0.1, 0.3, 0.1)],
    }
    selected, chosen = gad.select_configurations(candidates, "gadbench")
    et = {r.seed: r for r in selected if r.model == "et"}
    assert et[0].metrics["gadbench"]["auprc"] == 0.1  # validation decides, not test
    assert et[1].metrics["gadbench"]["auprc"] == 0.2  # a tie goes to the one named first
    assert et[1].seconds == 5.0  # the cost of every candidate
    assert chosen == {"et": {"small": 1, "wide": 1}, "mlp": {"more": 1}}
    # The BWGNN protocol selects on its own metric (validation macro-F1).
    selected, chosen = gad.select_configurations(candidates, "bwgnn")
    assert chosen["et"] == {"small": 1, "wide": 1}
    assert {r.seed: r.metrics["bwgnn"]["macro_f1"] for r in selected if r.model == "et"} == {
        0: 0.9,
        1: 0.8,
    }


def test_selection_keeps_shared_seeds_and_refuses_what_it_cannot_compare():
    one = {"a": [_picked("et", 0, 0.5, 0.5, 0.5), _picked("et", 1, 0.5, 0.5, 0.5)]}
    selected, _ = gad.select_configurations(
        {**one, "b": [_picked("et", 1, 0.9, 0.7, 0.5)]}, "gadbench"
    )
    assert [(r.seed, r.metrics["gadbench"]["auprc"]) for r in selected] == [(1, 0.7)]
    with pytest.raises(ValueError, match="at least two configurations"):
        gad.select_configurations(one, "gadbench")
    other_split = {**one, "b": [_picked("et", 0, 0.9, 0.7, 0.5, split="t")]}
    with pytest.raises(ValueError, match="et seed 0: the configurations ran on different splits"):
        gad.select_configurations(other_split, "gadbench")
    old = {**one, "b": [RunResult("et", 0, {"gadbench": {}}, 1.0)]}
    with pytest.raises(ValueError, match="b: et seed 0 has no validation val_auprc"):
        gad.select_configurations(old, "gadbench")


def test_results_record_the_selecting_validation_value_and_the_split(tmp_path):
    data = small_graph()
    cfg = HarnessConfig(epochs=3, hidden=8, lr=0.02, device="cpu", rf={"n_estimators": 5})
    results = run_protocols(
        data, ["gadbench", "bwgnn"], ["mlp", "rf-graph"], [0, 1], cfg, run_root=tmp_path
    )
    split = gad.stratified_split(data.y, 0.4, seed=0)
    assert {r.split for r in results if r.seed == 0} == {split.fingerprint()}
    assert results[0].split != results[2].split  # seed 1 draws another split
    # The neural model's record is the best value of each protocol's column of its history.
    with open(tmp_path / "mlp" / "seed0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    mlp = results[0]
    for protocol, column in (("gadbench", "val_auprc"), ("bwgnn", "val_macro_f1")):
        assert mlp.validation[protocol] == pytest.approx(max(float(r[column]) for r in rows))
    # The trees' record is their one fit's validation score.
    trees = results[1]
    assert set(trees.validation) == {"gadbench", "bwgnn"}
    assert 0.0 < trees.validation["gadbench"] <= 1.0


def test_selection_per_model_keeps_one_configuration_by_mean_validation():
    # "a" wins seed 0 on validation, "b" seed 1 by more: per model, "b" has the better mean.
    candidates = {
        "a": [_picked("et", 0, 0.6, 0.1, 0.5), _picked("et", 1, 0.2, 0.2, 0.5)],
        "b": [_picked("et", 0, 0.5, 0.3, 0.5), _picked("et", 1, 0.5, 0.4, 0.5)],
    }
    per_seed, chosen = gad.select_configurations(candidates, "gadbench", per="seed")
    assert [r.configuration for r in per_seed] == ["a", "b"] and chosen == {"et": {"a": 1, "b": 1}}
    per_model, chosen = gad.select_configurations(candidates, "gadbench", per="model")
    assert [(r.configuration, r.metrics["gadbench"]["auprc"]) for r in per_model] == [
        ("b", 0.3),
        ("b", 0.4),
    ]
    assert chosen == {"et": {"a": 0, "b": 2}}
    with pytest.raises(ValueError, match=r"per must be one of \('seed', 'model'\)"):
        gad.select_configurations(candidates, "gadbench", per="fold")


def test_chosen_table_by_hand_with_a_model_of_one_candidate():
    candidates = {
        "a": [_picked("et", 0, 0.6, 0.25, 0.5), _picked("mlp", 0, 0.1, 0.5, 0.5)],
        "b": [_picked("et", 0, 0.5, 0.75, 0.5)],
    }
    selected, chosen = gad.select_configurations(candidates, "gadbench")
    assert gad.format_chosen(candidates, selected, chosen, "gadbench").splitlines() == [
        "| model | candidates | a | b |",
        "|---|---|---|---|",
        "| et | 2 | 1 / 25.0 | 0 / 75.0 |",
        "| mlp | 1 | 1 / 50.0 | - |",
    ]


# -- the split fingerprint, the trees' validation record, format_chosen by hand -------------


def test_a_split_fingerprint_is_eight_hex_digits_that_see_every_part_and_its_bounds():
    def split(train, val, test):
        return Split(*(torch.tensor(p) for p in (train, val, test)))

    base = split([0, 1], [2, 3], [4, 5])
    fingerprint = base.fingerprint()
    assert len(fingerprint) == 8 and int(fingerprint, 16) >= 0
    assert split([0, 1], [2, 3], [4, 5]).fingerprint() == fingerprint  # a function of the split
    others = [
        split([0, 1], [2, 3], [4, 6]),  # another test node only
        split([0, 1], [2], [3, 4, 5]),  # the same nodes in the same order, cut elsewhere
        split([0], [1, 2, 3], [4, 5]),
    ]
    assert len({fingerprint, *(s.fingerprint() for s in others)}) == 4


def test_a_tree_ensembles_validation_record_is_its_fits_validation_score_per_protocol():
    from energy_transformer.metrics import auprc, tune_threshold_macro_f1
    from energy_transformer.models.gad_baselines import RFGraph

    data = small_graph()
    split = stratified_split(data.y, 0.4, seed=0)
    cfg = HarnessConfig(rf={"n_estimators": 3})
    r = gad.fit_trees("rf-graph", data, split, ["gadbench", "bwgnn"], cfg, seed=1)
    rf = RFGraph(n_estimators=3, seed=1).fit(data.x, data.edge_index, data.y, split.train)
    probs, y = rf.predict_proba(data.x, data.edge_index)[split.val], data.y[split.val]
    assert r.validation["gadbench"] == pytest.approx(auprc(probs, y))
    assert r.validation["bwgnn"] == pytest.approx(tune_threshold_macro_f1(probs, y)[1])
    assert r.split == split.fingerprint()


def test_a_selected_result_carries_no_weights_and_unchosen_runs_count_zero():
    state = {"w": torch.zeros(1)}
    candidates = {
        "a": [RunResult("et", 0, {}, 1.0, state=state, validation={"gadbench": 0.9}, split="s")],
        "b": [RunResult("et", 0, {}, 2.0, state=state, validation={"gadbench": 0.1}, split="s")],
    }
    selected, chosen = gad.select_configurations(candidates, "gadbench")
    assert [(r.seconds, r.state) for r in selected] == [(3.0, None)]
    assert chosen == {"et": {"a": 1, "b": 0}}  # b is listed though no seed chose it


def _table_cells(table):
    """A markdown table's rows by their first cell, each a dict of its cells by column."""
    lines = table.splitlines()
    assert len({line.count("|") for line in lines}) == 1  # every row as wide as the header
    columns = [c.strip() for c in lines[0].split("|")[1:-1]]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}


def test_the_chosen_table_counts_each_models_own_seeds_by_hand():
    # et: seeds 0 and 1 in both configurations, seed 2 in "a" only: not selected for et ("b"
    # lacks it), so it stays out of a's mean though mlp's seed 2 is selected. mlp: "a" only.
    candidates = {
        "a": [
            _picked("et", 0, 0.9, 0.50, 0.1),
            _picked("et", 1, 0.9, 0.30, 0.1),
            _picked("et", 2, 0.9, 0.99, 0.1),
            _picked("mlp", 2, 0.5, 0.25, 0.5),
        ],
        "b": [_picked("et", 0, 0.1, 0.20, 0.9), _picked("et", 1, 0.1, 0.10, 0.2)],
    }
    selected, chosen = gad.select_configurations(candidates, "gadbench")
    assert chosen == {"et": {"a": 2, "b": 0}, "mlp": {"a": 1}}
    cells = _table_cells(gad.format_chosen(candidates, selected, chosen, "gadbench"))
    # the mean test AUPRC (%) over et's seeds 0 and 1
    assert (cells["et"]["a"], cells["et"]["b"]) == ("2 / 40.0", "0 / 15.0")
    assert (cells["mlp"]["a"], cells["mlp"]["b"]) == ("1 / 25.0", "-")
    # The BWGNN protocol: chosen on validation macro-F1, its cells show test macro-F1 (in
    # _picked, equal to the test AUPRC; the test AUROC is 0.5 everywhere).
    selected, chosen = gad.select_configurations(candidates, "bwgnn")
    assert chosen == {"et": {"a": 0, "b": 2}, "mlp": {"a": 1}}
    cells = _table_cells(gad.format_chosen(candidates, selected, chosen, PROTOCOLS["bwgnn"]))
    assert (cells["et"]["a"], cells["et"]["b"]) == ("0 / 40.0", "2 / 15.0")
    assert (cells["mlp"]["a"], cells["mlp"]["b"]) == ("1 / 25.0", "-")


def test_selection_refuses_a_model_whose_configurations_share_no_seed():
    candidates = {
        "a": [_picked("et", 0, 0.5, 0.5, 0.5), _picked("mlp", 0, 0.5, 0.5, 0.5)],
        "b": [_picked("et", 1, 0.5, 0.5, 0.5), _picked("mlp", 0, 0.5, 0.5, 0.5)],
    }
    with pytest.raises(
        ValueError, match=r"the configurations of et share no seed \(a: \[0\]; b: \[1\]\)"
    ):
        gad.select_configurations(candidates, "gadbench")
