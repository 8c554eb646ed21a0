"""The anomaly-detection harness: stratified splits, metric bookkeeping, an end-to-end run."""

import json

import pytest
import torch
from torch_geometric.data import Data

from energy_transformer.protocols.gad import (
    PROTOCOLS,
    HarnessConfig,
    Split,
    class_weight,
    file_split,
    format_table,
    neural_input,
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
    assert [r.model for r in results] == ["et", "mlp", "gcn", "sage", "gat", "bwgnn", "rf-graph"]
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
    assert "| et-energy |" in table and "| rf-graph |" in table
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
