"""Anomaly-detection loaders: the GADBench .npz and CARE-GNN .mat layouts, and their errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from energy_transformer.data.gad import (
    AMAZON_UNLABELED,
    load_fraud_mat,
    load_gad,
    load_gad_file,
    load_npz_graph,
)
from energy_transformer.data.paths import DataNotFoundError


def split_masks(n=6, splits=2):
    """Disjoint masks: nodes 0-2 train, 3 validation, 4.. test, in every split."""
    train, val, test = (np.zeros((splits, n), dtype=bool) for _ in range(3))
    train[:, :3], val[:, 3], test[:, 4:] = True, True, True
    return {"train_masks": train, "val_masks": val, "test_masks": test}


def write_npz(path, n=6, masks=True, **override):
    arrays = {
        "node_features": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        "node_labels": np.array([0, 1, 0, 0, 1, 0][:n], dtype=np.int64),
        # one direction only, a duplicate, and a self loop: the loader symmetrises and cleans
        "edges": np.array([[0, 1], [1, 2], [0, 1], [3, 3], [4, 5]], dtype=np.int64),
    }
    if masks:
        arrays.update(split_masks(n))
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def edge_set(data):
    return set(map(tuple, data.edge_index.T.tolist()))


def test_npz_layout(tmp_path):
    data = load_npz_graph(write_npz(tmp_path / "g.npz"))
    assert data.x.dtype == torch.float32 and data.x.shape == (6, 3)
    assert data.y.tolist() == [0, 1, 0, 0, 1, 0]
    assert edge_set(data) == {(0, 1), (1, 0), (1, 2), (2, 1), (4, 5), (5, 4)}
    assert data.train_masks.shape == (2, 6) and data.train_masks[:, :3].all()
    assert data.test_masks.dtype == torch.bool and data.test_masks[:, 4:].all()
    assert data.label_mask.all()


def test_npz_without_masks_has_none(tmp_path):
    data = load_npz_graph(write_npz(tmp_path / "g.npz", masks=False))
    assert not hasattr(data, "train_masks") and data.num_nodes == 6


def test_npz_masks_as_integers_or_one_split(tmp_path):
    ints = {k: m.astype(np.uint8) for k, m in split_masks().items()}
    data = load_npz_graph(write_npz(tmp_path / "i.npz", **ints))
    assert data.val_masks.dtype == torch.bool and data.val_masks[:, 3].all()
    one = {k: m[0] for k, m in split_masks().items()}  # (nodes,): a single split
    data = load_npz_graph(write_npz(tmp_path / "o.npz", **one))
    assert data.train_masks.shape == (1, 6) and data.test_masks.shape == (1, 6)


def overlapping_test_mask():
    test = split_masks()["test_masks"].copy()
    test[1, 0] = True  # node 0 trains in split 1 and is also scored there
    return test


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            {"test_masks": overlapping_test_mask()},
            r"g.npz: split 1: train_masks and test_masks overlap on 1 node\(s\) \(first: node 0\)",
        ),
        (
            {"val_masks": split_masks()["train_masks"]},
            r"g.npz: split 0: train_masks and val_masks overlap on 3 node",
        ),
        (
            {"val_masks": np.full((2, 6), 0.3)},
            r"g.npz: val_masks must be boolean or 0/1 integers, got dtype float64",
        ),
        (
            {"test_masks": split_masks()["test_masks"].astype(np.int64) * 2},
            r"g.npz: test_masks must be boolean or 0/1 integers, found values \[0, 2\]",
        ),
        (
            {"val_masks": np.zeros((3, 6), dtype=bool)},
            r"g.npz: train_masks, val_masks and test_masks must have one shape, got"
            r" \(2, 6\), \(3, 6\), \(2, 6\)",
        ),
        (
            {"train_masks": np.zeros((2, 6, 1), dtype=bool)},
            r"train_masks must be \(splits, 6\), got \(2, 6, 1\)",
        ),
    ],
)
def test_npz_bad_split_masks(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_npz_graph(write_npz(tmp_path / "g.npz", **override))


def test_npz_some_masks_missing(tmp_path):
    path = write_npz(tmp_path / "g.npz", masks=False, train_masks=split_masks()["train_masks"])
    with pytest.raises(
        ValueError, match=r"g.npz: has train_masks but not \['val_masks', 'test_masks'\]"
    ):
        load_npz_graph(path)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"edges": np.zeros((3, 3), dtype=np.int64)}, r"edges must be an \(E, 2\)"),
        ({"edges": np.array([[0, 9]])}, "edges refer to nodes"),
        ({"node_labels": np.array([0, 1, 2, 0, 0, 0])}, "labels must be 0"),
        ({"node_labels": np.zeros(5, dtype=np.int64)}, "labels have shape"),
        ({"node_features": np.full((6, 3), np.nan, dtype=np.float32)}, "NaN"),
        ({"train_masks": np.ones((2, 4), dtype=bool)}, r"train_masks must be \(splits, 6\)"),
    ],
)
def test_npz_malformed(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_npz_graph(write_npz(tmp_path / "g.npz", **override))


def test_npz_missing_array_and_bad_file(tmp_path):
    np.savez(tmp_path / "a.npz", node_features=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['node_labels', 'edges'\]"):
        load_npz_graph(tmp_path / "a.npz")
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz_graph(tmp_path / "b.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_npz_graph(tmp_path / "none.npz")


def write_mat(path, n, relations, labels, density=0.2):
    rng = np.random.default_rng(0)
    feats = scipy.sparse.random(n, 5, density=0.5, format="csc", random_state=1)
    rel = {}
    for name in relations:
        a = scipy.sparse.random(n, n, density=density, format="csc", random_state=rng)
        rel[name] = ((a + a.T) > 0).astype(float).tocsc()
    homo = sum(rel.values())
    homo = (homo > 0).astype(float).tocsc()
    scipy.io.savemat(path, {"features": feats, "label": labels[None, :], "homo": homo, **rel})
    return feats.toarray(), homo, rel


def test_mat_layout_yelpchi(tmp_path):
    labels = np.array([0, 1] * 10, dtype=np.int64)
    feats, homo, rel = write_mat(tmp_path / "YelpChi.mat", 20, ("net_rur", "net_rtr"), labels)
    data = load_fraud_mat(tmp_path / "YelpChi.mat")
    np.testing.assert_allclose(data.x.numpy(), feats, rtol=1e-6)
    assert data.y.tolist() == labels.tolist() and data.label_mask.all()
    assert edge_set(data) == off_diagonal(homo)
    one = load_fraud_mat(tmp_path / "YelpChi.mat", relation="net_rur")
    assert edge_set(one) == off_diagonal(rel["net_rur"]) != off_diagonal(homo)


def off_diagonal(adjacency) -> set[tuple[int, int]]:
    coo = adjacency.tocoo()
    return {(int(r), int(c)) for r, c in zip(coo.row, coo.col, strict=True) if r != c}


def test_mat_layout_amazon_excludes_first_3305(tmp_path):
    n = 3305 + 40
    labels = np.zeros(n, dtype=np.int64)
    labels[3305::4] = 1
    write_mat(tmp_path / "Amazon.mat", n, ("net_upu", "net_usu", "net_uvu"), labels, 1e-3)
    data = load_fraud_mat(tmp_path / "Amazon.mat")
    assert data.num_nodes == n
    assert not data.label_mask[:3305].any() and data.label_mask[3305:].all()
    dropped = load_fraud_mat(tmp_path / "Amazon.mat", drop_unlabeled=True)
    assert dropped.num_nodes == 40 and dropped.y.tolist() == labels[3305:].tolist()
    assert dropped.edge_index.max() < 40


def test_mat_malformed(tmp_path):
    scipy.io.savemat(tmp_path / "m.mat", {"features": np.zeros((3, 2)), "label": np.zeros((1, 3))})
    with pytest.raises(ValueError, match=r"missing variable\(s\) \['homo'\]"):
        load_fraud_mat(tmp_path / "m.mat")
    scipy.io.savemat(
        tmp_path / "d.mat",
        {"features": np.zeros((3, 2)), "label": np.zeros((1, 3)), "homo": np.eye(3)},
    )
    with pytest.raises(ValueError, match=r"homo must be a sparse \(3, 3\)"):
        load_fraud_mat(tmp_path / "d.mat")
    (tmp_path / "x.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        load_fraud_mat(tmp_path / "x.mat")


def test_load_gad_by_name(tmp_path):
    (tmp_path / "gad").mkdir()
    write_npz(tmp_path / "gad" / "reddit.npz")
    assert load_gad("reddit", root=tmp_path).num_nodes == 6
    with pytest.raises(DataNotFoundError, match="YelpChi.mat"):
        load_gad("yelpchi", root=tmp_path)
    with pytest.raises(ValueError, match="unknown anomaly dataset"):
        load_gad("cora", root=tmp_path)


def shared_root() -> Path:
    root = os.environ.get("ET_DATA")
    if not root or not (Path(root) / "gad" / "tolokers.npz").is_file():
        pytest.skip("ET_DATA does not hold gad/tolokers.npz and gad/reddit.npz")
    return Path(root)


@pytest.mark.parametrize(
    ("name", "nodes", "edges", "anomalies", "features"),
    [("tolokers", 11758, 519000, 2566, 10), ("reddit", 10984, 168016 - 10984, 366, 64)],
)
def test_real_datasets(name, nodes, edges, anomalies, features):
    data = load_gad(name, root=shared_root())
    assert data.num_nodes == nodes and data.x.shape[1] == features
    # stored once per direction, self loops removed (Reddit's file lists both directions + loops)
    assert data.edge_index.shape[1] == (2 * edges if name == "tolokers" else edges)
    assert int(data.y.sum()) == anomalies


@pytest.mark.parametrize(
    ("override", "match"),
    [
        # 0.5 would silently become 0 (normal) if cast to int
        ({"node_labels": np.array([0, 1, 0.5, 0, 1, 0])}, "node_labels must be integers, got"),
        ({"edges": np.array([[0.0, 1.0], [1.0, 2.5]])}, r"edges must be an \(E, 2\) integer"),
    ],
)
def test_npz_float_labels_or_edges_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_npz_graph(write_npz(tmp_path / "g.npz", **override))


def test_load_gad_accepts_the_file_itself(tmp_path):
    path = write_npz(tmp_path / "anywhere.npz")
    data = load_gad("tolokers", root=path)
    assert data.num_nodes == 6 and data.y.tolist() == [0, 1, 0, 0, 1, 0]


def test_a_graph_file_that_is_not_there_is_named(tmp_path):
    # It was searched as a data root: "put tolokers.npz into .../missing.npz/gad".
    for name in ("missing.npz", "missing.mat"):
        with pytest.raises(FileNotFoundError, match=f"graph file not found: .*{name}$"):
            load_gad("tolokers", root=tmp_path / name)


def test_mat_drop_unlabeled_keeps_the_labelled_rows_and_their_edges(tmp_path):
    n, unlabeled = 10, 4
    feats = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    labels = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0, 0])
    rows, cols = np.array([0, 4, 5, 6, 2]), np.array([5, 5, 6, 9, 3])
    homo = scipy.sparse.coo_matrix((np.ones(5), (rows, cols)), shape=(n, n)).tocsc()
    scipy.io.savemat(tmp_path / "f.mat", {"features": feats, "label": labels[None], "homo": homo})
    kept = load_fraud_mat(tmp_path / "f.mat", unlabeled=unlabeled)
    assert kept.label_mask.tolist() == [False] * 4 + [True] * 6
    assert edge_set(kept) == {
        (0, 5),
        (5, 0),
        (4, 5),
        (5, 4),
        (5, 6),
        (6, 5),
        (6, 9),
        (9, 6),
        (2, 3),
        (3, 2),
    }
    dropped = load_fraud_mat(tmp_path / "f.mat", unlabeled=unlabeled, drop_unlabeled=True)
    np.testing.assert_array_equal(dropped.x.numpy(), feats[4:])
    assert dropped.y.tolist() == [1, 0, 0, 1, 0, 0] and dropped.label_mask.all()
    # nodes 4..9 become 0..5; edges touching nodes 0..3 are gone
    assert edge_set(dropped) == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 5), (5, 2)}
    with pytest.raises(ValueError, match=r"unlabeled=10 must be in \[0, 10\)"):
        load_fraud_mat(tmp_path / "f.mat", unlabeled=10)


def test_npz_duplicate_edges_are_stored_once_per_direction(tmp_path):
    # (0, 1) twice and (1, 0) once are one undirected edge: two entries, not four or six.
    edges = np.array([[0, 1], [1, 0], [0, 1], [1, 2], [3, 3]], dtype=np.int64)
    data = load_npz_graph(write_npz(tmp_path / "g.npz", edges=edges))
    assert sorted(map(tuple, data.edge_index.T.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]


@pytest.mark.parametrize(
    ("edges", "match"),
    [
        ([[0, 1], [2, -1]], r"g.npz: edges refer to nodes \[-1, 2\] but there are 6 nodes"),
        ([[0, 1], [2, 6]], r"g.npz: edges refer to nodes \[0, 6\] but there are 6 nodes"),
    ],
)
def test_npz_edges_out_of_range_by_one_are_refused(tmp_path, edges, match):
    with pytest.raises(ValueError, match=match):
        load_npz_graph(write_npz(tmp_path / "g.npz", edges=np.array(edges, dtype=np.int64)))


def test_npz_graph_without_edges_loads(tmp_path):
    data = load_npz_graph(write_npz(tmp_path / "g.npz", edges=np.zeros((0, 2), dtype=np.int64)))
    assert data.edge_index.shape == (2, 0) and data.num_nodes == 6


def test_npz_infinite_features_are_refused(tmp_path):
    features = np.zeros((6, 3), dtype=np.float32)
    features[2, 1] = np.inf
    with pytest.raises(ValueError, match="g.npz: node features contain NaN or inf"):
        load_npz_graph(write_npz(tmp_path / "g.npz", node_features=features))


def write_small_mat(path, labels, shape=None, **relations):
    n = len(labels)
    homo = scipy.sparse.coo_matrix(
        (np.ones(2), ([0, 1], [1, n - 1])), shape=shape or (n, n)
    ).tocsc()
    feats = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    labels = np.asarray(labels, dtype=np.int64)[None]
    scipy.io.savemat(path, {"features": feats, "label": labels, "homo": homo, **relations})
    return path


def test_mat_labels_checked_on_labelled_nodes_only(tmp_path):
    # Nodes left out by `unlabeled` may carry any placeholder; a labelled node must be 0 or 1.
    path = write_small_mat(tmp_path / "f.mat", [-1, 7, 2, 0, 1, 0, 1])
    data = load_fraud_mat(path, unlabeled=3)
    assert data.y.tolist() == [-1, 7, 2, 0, 1, 0, 1]
    assert data.label_mask.tolist() == [False] * 3 + [True] * 4
    with pytest.raises(ValueError, match=r"f.mat: labels must be 0 \(normal\) or 1 .* \[0, 1, 2\]"):
        load_fraud_mat(path, unlabeled=2)


def test_mat_negative_unlabeled_is_refused(tmp_path):
    path = write_small_mat(tmp_path / "f.mat", [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"f.mat: unlabeled=-1 must be in \[0, 4\)"):
        load_fraud_mat(path, unlabeled=-1)


def test_mat_adjacency_of_the_wrong_shape_is_refused(tmp_path):
    path = write_small_mat(tmp_path / "f.mat", [0, 1, 0], shape=(3, 4))
    with pytest.raises(ValueError, match=r"f.mat: homo must be a sparse \(3, 3\) adjacency, got"):
        load_fraud_mat(path)


def test_amazon_is_recognised_by_its_net_upu_relation(tmp_path):
    # Only Amazon has net_upu: its first 3,305 users are masked out by default; a file with
    # another relation (net_usu alone) keeps every node.
    n = AMAZON_UNLABELED + 5
    labels = [0] * AMAZON_UNLABELED + [1, 0, 0, 1, 0]
    upu = scipy.sparse.csc_matrix((n, n))
    data = load_fraud_mat(write_small_mat(tmp_path / "a.mat", labels, net_upu=upu))
    assert int(data.label_mask.sum()) == 5 and not data.label_mask[:AMAZON_UNLABELED].any()
    other = load_fraud_mat(write_small_mat(tmp_path / "b.mat", labels, net_usu=upu))
    assert other.label_mask.all()


def test_load_gad_gives_its_options_to_a_mat_file_given_itself(tmp_path):
    labels = np.array([0, 1] * 10, dtype=np.int64)
    _, homo, rel = write_mat(tmp_path / "mine.mat", 20, ("net_rur", "net_rtr"), labels)
    data = load_gad("yelpchi", root=tmp_path / "mine.mat", relation="net_rur")
    assert edge_set(data) == off_diagonal(rel["net_rur"]) != off_diagonal(homo)


def test_a_npz_graph_refuses_options_it_would_ignore(tmp_path):
    path = write_npz(tmp_path / "g.npz")
    with pytest.raises(
        TypeError, match=r"g.npz: a .npz graph takes no options, got \['unlabeled'\]"
    ):
        load_gad_file(path, unlabeled=3305)
