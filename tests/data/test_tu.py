"""TU loader: exact parsing of a hand-written dataset, clear errors, the real MUTAG counts."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from graph_fixtures import write_toy

from energy_transformer.data.paths import DataNotFoundError
from energy_transformer.data.tu import keep_first_nodes, load_tu, read_tu, write_tu

# Three graphs: a triangle (nodes 1-3), a path 4-5, an isolated node 6.
TINY = {
    "A": "1, 2\n2, 1\n2, 3\n3, 2\n3, 1\n1, 3\n4, 5\n5, 4\n",
    "graph_indicator": "1\n1\n1\n2\n2\n3\n",
    "graph_labels": "-1\n1\n-1\n",
    "node_labels": "3\n5\n3\n7\n5\n3\n",
    "node_attributes": "0.5, 1.0\n1.5, 2.0\n2.5, 3.0\n3.5, 4.0\n4.5, 5.0\n5.5, 6.0\n",
}


def write_tiny(tmp_path: Path, files: dict[str, str | bytes] = TINY, as_zip: bool = True) -> Path:
    if as_zip:
        path = tmp_path / "TINY.zip"
        with zipfile.ZipFile(path, "w") as z:
            for key, text in files.items():
                # The public zips use "NAME//NAME_A.txt" member names: the loader must cope.
                z.writestr(f"TINY//TINY_{key}.txt", text)
        return path
    folder = tmp_path / "TINY"
    folder.mkdir()
    for key, text in files.items():
        (folder / f"TINY_{key}.txt").write_text(text)
    return folder


@pytest.mark.parametrize("as_zip", [True, False])
def test_tiny_dataset_parsed_exactly(tmp_path, as_zip):
    ds = read_tu(write_tiny(tmp_path, as_zip=as_zip))
    assert ds.name == "TINY" and len(ds) == 3
    assert ds.classes == ["-1", "1"]
    assert ds.labels.tolist() == [0, 1, 0]
    triangle, path, single = ds
    assert triangle.edge_index.tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert path.edge_index.tolist() == [[0, 1], [1, 0]]
    assert single.edge_index.shape == (2, 0) and single.num_nodes == 1
    # x = one-hot of the labels {3, 5, 7} -> {0, 1, 2}, then the two attributes.
    assert triangle.x.tolist() == [
        [1, 0, 0, 0.5, 1.0],
        [0, 1, 0, 1.5, 2.0],
        [1, 0, 0, 2.5, 3.0],
    ]
    assert path.x[:, :3].tolist() == [[0, 0, 1], [0, 1, 0]]
    assert path.node_label.tolist() == [2, 1]
    assert ds.num_features == 5 and ds.num_classes == 2


def test_feature_choices(tmp_path):
    path = write_tiny(tmp_path)
    assert read_tu(path, node_features="labels").num_features == 3
    attrs = read_tu(path, node_features="attributes")
    assert attrs[1].x.tolist() == [[3.5, 4.0], [4.5, 5.0]]
    degree = read_tu(path, node_features="degree")
    # degrees 2,2,2 | 1,1 | 0 -> one-hot over 0..2
    assert degree[0].x.argmax(1).tolist() == [2, 2, 2]
    assert degree[1].x.argmax(1).tolist() == [1, 1]
    assert degree[2].x.tolist() == [[1, 0, 0]]
    capped = read_tu(path, node_features="degree", max_degree=1)
    assert capped[0].x.tolist() == [[0, 1]] * 3
    with pytest.raises(ValueError, match="node_features must be one of"):
        read_tu(path, node_features="colour")


def test_no_node_labels_falls_back_to_degrees(tmp_path):
    files = {k: v for k, v in TINY.items() if k in ("A", "graph_indicator", "graph_labels")}
    ds = read_tu(write_tiny(tmp_path, files))
    assert ds.feature_names == ["degree: one-hot 0..2"]
    assert not hasattr(ds[0], "node_label") or ds[0].node_label is None
    with pytest.raises(FileNotFoundError, match="TINY_node_attributes.txt is missing"):
        read_tu(write_tiny(tmp_path, files), node_features="attributes")


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("A", "1, 2\n2, 1\n2, x\n", r"TINY_A.txt, line 3: expected integers, got '2, x'"),
        ("A", "1, 2\n2\n", r"TINY_A.txt, line 2: expected 2 comma-separated values, got 1"),
        ("A", "1, 2\n1, 9\n", r"TINY_A.txt, line 2: node id outside 1..6"),
        ("A", "1, 2\n3, 4\n", r"TINY_A.txt, line 2: edge '3, 4' joins two different graphs"),
        ("graph_indicator", "1\n1\n1\n2\n2\n4\n", r"graph_indicator.txt, line 6: graph id 4"),
        ("graph_indicator", "1\n1\n1\n3\n3\n3\n", r"graph_indicator.txt: graph 2 has no nodes"),
        ("graph_labels", "-1\n1.5\n-1\n", r"TINY_graph_labels.txt, line 2: expected integers"),
        ("node_labels", "3\n5\n3\n", r"TINY_node_labels.txt has 3 lines, expected 6"),
        ("node_attributes", "0.5, 1\n" * 5 + "0.5\n", r"node_attributes.txt, line 6: expected 2"),
        (
            "node_attributes",
            "0.5, 1\n" * 5 + "0.5, nan?\n",
            r"attributes.txt, line 6: expected num",
        ),
        ("graph_labels", "\n\n", r"TINY_graph_labels.txt is empty"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, key, text, message):
    files = dict(TINY, **{key: text})
    with pytest.raises(ValueError, match=message):
        read_tu(write_tiny(tmp_path, files))


def test_missing_file_and_bad_paths(tmp_path):
    files = {k: v for k, v in TINY.items() if k != "graph_labels"}
    with pytest.raises(FileNotFoundError, match="TINY_graph_labels.txt is missing"):
        read_tu(write_tiny(tmp_path, files))
    not_zip = tmp_path / "X.zip"
    not_zip.write_text("hello")
    with pytest.raises(ValueError, match="is not a zip file"):
        read_tu(not_zip)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_tu(tmp_path / "nowhere")


def test_load_tu_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="NOPE.zip"):
        load_tu("NOPE", tmp_path, allow_download=False)


def test_a_name_in_the_wrong_case_points_to_the_right_one(tmp_path, monkeypatch):
    # `--dataset mutag` beside MUTAG.zip tried a download, then said to put mutag.zip there.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_toy(tmp_path, "MUTAG")
    zip_file = root / "TUDataset" / "MUTAG.zip"
    with pytest.raises(ValueError) as err:
        load_tu("mutag", root)
    assert (
        str(err.value) == f"no TU dataset 'mutag', but {zip_file}: dataset names are case-sensitive"
    )
    assert len(load_tu("MUTAG", root)) == 24


def test_the_case_hint_looks_in_every_data_root(tmp_path, monkeypatch):
    # Without --data the roots are $ET_DATA, then the cache: the hint searches both, and a
    # name that one of them holds as spelled is never taken for a misspelling.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ET_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    write_toy(tmp_path / "cache" / "energy-transformer", "MUTAG")
    with pytest.raises(ValueError, match="no TU dataset 'mutag', but .*cache.*MUTAG.zip: dataset"):
        load_tu("mutag", allow_download=False)
    write_toy(tmp_path / "data", "Mutag", graphs=12)  # another spelling, in the first root
    assert len(load_tu("MUTAG", allow_download=False)) == 24  # the cache's MUTAG.zip


def test_the_case_hint_holds_on_a_case_insensitive_file_system(tmp_path, monkeypatch):
    # There (macOS, Windows) mutag.zip "is a file" beside MUTAG.zip: the hint asked is_file,
    # found the name spelled as given and gave way to a read of a zip of other member names.
    root = write_toy(tmp_path, "MUTAG")
    is_file = Path.is_file

    def any_case(path):
        return any(
            p.name.lower() == path.name.lower() and is_file(p) for p in path.parent.glob("*")
        )

    monkeypatch.setattr(Path, "is_file", any_case)
    with pytest.raises(ValueError, match="no TU dataset 'mutag', but .*MUTAG.zip: dataset names"):
        load_tu("mutag", root)


def test_load_tu_from_root_layout_and_round_trip(tmp_path):
    ds = read_tu(write_tiny(tmp_path))
    write_tu(tmp_path / "root" / "TUDataset", "COPY", ds.graphs, attributes=False)
    copy = load_tu("COPY", tmp_path / "root")
    assert len(copy) == 3
    for a, b in zip(ds, copy, strict=True):
        assert torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.node_label, b.node_label)
        assert torch.equal(a.y, b.y)
    folder = write_tu(tmp_path / "plain", "COPY", ds.graphs, attributes=True, as_zip=False)
    again = read_tu(folder)
    assert torch.allclose(again[0].x[:, 3:], ds[0].x)  # labels one-hot, then x as attributes


def test_keep_first_nodes(tmp_path):
    triangle = read_tu(write_tiny(tmp_path))[0]
    cut = keep_first_nodes(triangle, 2)
    assert cut.num_nodes == 2 and cut.edge_index.tolist() == [[0, 1], [1, 0]]
    assert cut.x.shape == (2, 5) and cut.y.tolist() == triangle.y.tolist()
    assert keep_first_nodes(triangle, 3) is triangle
    with pytest.raises(ValueError, match="max_nodes"):
        keep_first_nodes(triangle, 0)


def test_mutag_counts():
    root = os.environ.get("ET_DATA")
    if not root or not (Path(root) / "TUDataset" / "MUTAG.zip").is_file():
        pytest.skip("ET_DATA with TUDataset/MUTAG.zip not available")
    ds = load_tu("MUTAG", root, allow_download=False)
    assert len(ds) == 188
    assert torch.bincount(ds.labels).tolist() == [63, 125]
    assert ds.classes == ["-1", "1"]
    assert sum(g.num_nodes for g in ds) == 3371
    assert sum(g.edge_index.shape[1] for g in ds) == 7442
    assert ds.num_features == 7  # one-hot atom types
    for g in ds:  # undirected: every edge listed both ways
        pairs = set(map(tuple, g.edge_index.t().tolist()))
        assert all((t, s) in pairs for s, t in pairs)


def corrupt_member(path: Path, member: str, compression: int, at: float) -> Path:
    """Rewrite ``path`` with ``member`` compressed as asked, then zero 60 bytes of its data at
    fraction ``at``: the central directory stays intact, only the member's bytes are damaged."""
    with zipfile.ZipFile(path) as z:
        texts = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in texts.items():
            z.writestr(name, data)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    header = info.header_offset
    name_len, extra_len = (
        int.from_bytes(raw[header + k : header + k + 2], "little") for k in (26, 28)
    )
    start = header + 30 + name_len + extra_len + int(at * (info.compress_size - 60))
    raw[start : start + 60] = bytes(60)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("compression", "at", "raw_error"),
    [
        # zeroed first bytes read as a stored block with bad lengths: zlib.error
        (zipfile.ZIP_DEFLATED, 0.0, zlib.error),
        (zipfile.ZIP_DEFLATED, 0.5, zipfile.BadZipFile),  # decodes, but the CRC-32 differs
        (zipfile.ZIP_STORED, 0.5, zipfile.BadZipFile),
    ],
)
def test_corrupt_zip_member_names_zip_and_member(tmp_path, compression, at, raw_error):
    n = 400  # a member large enough to damage its middle: one graph of n nodes, a path
    files = {
        "A": "".join(f"{i}, {i + 1}\n{i + 1}, {i}\n" for i in range(1, n)),
        "graph_indicator": "1\n" * n + "2\n",
        "graph_labels": "0\n1\n",
    }
    path = corrupt_member(write_tiny(tmp_path, files), "TINY//TINY_A.txt", compression, at)
    with zipfile.ZipFile(path) as z, pytest.raises(raw_error):
        z.read("TINY//TINY_A.txt")  # what the loader must translate
    with pytest.raises(ValueError, match=r"TINY.zip: member TINY//TINY_A.txt is corrupt"):
        read_tu(path)


@pytest.mark.parametrize("as_zip", [True, False])
def test_non_utf8_byte_names_file_and_line(tmp_path, as_zip):
    bad = b"1\n1\n1\n2\n\xff2\n3\n"
    if as_zip:
        path = write_tiny(tmp_path, dict(TINY, graph_indicator=bad))  # writestr takes bytes
        where = r"TINY.zip: member TINY//TINY_graph_indicator.txt, line 5"
    else:
        path = write_tiny(tmp_path, as_zip=False)
        (path / "TINY_graph_indicator.txt").write_bytes(bad)
        where = r"TINY_graph_indicator.txt, line 5"
    with pytest.raises(ValueError, match=where + r": byte 0xff is not UTF-8 text"):
        read_tu(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e39"])
def test_non_finite_node_attributes_name_file_and_line(tmp_path, value):
    files = dict(TINY, node_attributes="0.5, 1\n" * 4 + f"0.5, {value}\n" + "0.5, 1\n")
    with pytest.raises(
        ValueError, match=r"TINY_node_attributes.txt, line 5: NaN or inf \(or beyond float32\)"
    ):
        read_tu(write_tiny(tmp_path, files))


def test_single_class_is_refused(tmp_path):
    files = dict(TINY, graph_labels="1\n1\n1\n")
    with pytest.raises(
        ValueError,
        match=r"graph_labels.txt: every graph has label 1; graph classification needs at least 2",
    ):
        read_tu(write_tiny(tmp_path, files))


def test_duplicate_edge_lines_are_removed(tmp_path):
    files = dict(TINY, A=TINY["A"] + "1, 2\n4, 5\n2, 1\n")
    triangle, path, _ = read_tu(write_tiny(tmp_path, files))
    assert triangle.edge_index.tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert path.edge_index.tolist() == [[0, 1], [1, 0]]


def test_edges_listed_one_way_keep_their_direction_and_degree_counts_both(tmp_path):
    # Graph 1: path 1 -> 2 -> 3 listed one way, plus a self loop on 3; graph 2: only "5, 4".
    files = {
        "A": "2, 3\n1, 2\n3, 3\n5, 4\n",
        "graph_indicator": "1\n1\n1\n2\n2\n",
        "graph_labels": "0\n1\n",
    }
    first, second = read_tu(write_tiny(tmp_path, files))
    assert first.edge_index.tolist() == [[0, 1, 2], [1, 2, 2]]  # sorted, as listed
    assert second.edge_index.tolist() == [[1], [0]]  # node 5 -> node 4, not reversed
    # Undirected degree without the self loop: 1, 2, 1 | 1, 1 -> one-hot over 0..2.
    assert first.x.tolist() == [[0, 1, 0], [0, 0, 1], [0, 1, 0]]
    assert second.x.tolist() == [[0, 1, 0], [0, 1, 0]]


def test_several_node_label_columns(tmp_path):
    # Column 0 takes values {3, 5, 7}, column 1 values {10, 20}.
    labels = "3, 20\n5, 10\n3, 10\n7, 20\n5, 20\n3, 10\n"
    ds = read_tu(write_tiny(tmp_path, dict(TINY, node_labels=labels)), node_features="labels")
    assert ds.feature_names == [
        "node_label[0]: one-hot over 3 values",
        "node_label[1]: one-hot over 2 values",
    ]
    triangle, path, single = ds
    assert triangle.x.tolist() == [[1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [1, 0, 0, 1, 0]]
    assert path.x.tolist() == [[0, 0, 1, 0, 1], [0, 1, 0, 0, 1]]
    assert single.x.tolist() == [[1, 0, 0, 1, 0]]
    # node_label is the first column, re-indexed from 0.
    assert [g.node_label.tolist() for g in ds] == [[0, 1, 0], [2, 1], [0]]


def test_interleaved_graph_indicator_keeps_file_order_within_each_graph(tmp_path):
    # Nodes 1, 3 form graph 1 and nodes 2, 4 graph 2; attributes tell the nodes apart.
    files = {
        "A": "1, 3\n3, 1\n4, 2\n",
        "graph_indicator": "1\n2\n1\n2\n",
        "graph_labels": "0\n1\n",
        "node_attributes": "1.0\n2.0\n3.0\n4.0\n",
    }
    first, second = read_tu(write_tiny(tmp_path, files))
    assert first.x.tolist() == [[1.0], [3.0]] and second.x.tolist() == [[2.0], [4.0]]
    assert first.edge_index.tolist() == [[0, 1], [1, 0]]
    assert second.edge_index.tolist() == [[1], [0]]


def test_attribute_count_mismatch_names_the_file(tmp_path):
    files = dict(TINY, node_attributes="0.5, 1.0\n" * 5)
    with pytest.raises(ValueError, match=r"TINY_node_attributes.txt has 5 lines, expected 6"):
        read_tu(write_tiny(tmp_path, files))


def test_blank_trailing_lines_are_ignored(tmp_path):
    files = dict(TINY, graph_labels="-1\n1\n-1\n\n  \n", graph_indicator="1\n1\n1\n2\n2\n3\n\n")
    ds = read_tu(write_tiny(tmp_path, files))
    assert ds.labels.tolist() == [0, 1, 0] and [g.num_nodes for g in ds] == [3, 2, 1]


def test_load_tu_reads_an_explicit_zip_or_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ET_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    zipped = load_tu("TINY", write_tiny(tmp_path), allow_download=False)
    folder = load_tu("TINY", write_tiny(tmp_path, as_zip=False), allow_download=False)
    parent = load_tu("TINY", tmp_path, allow_download=False)  # holds the folder TINY/
    for ds in (zipped, folder, parent):
        assert ds.labels.tolist() == [0, 1, 0]
        assert ds[1].edge_index.tolist() == [[0, 1], [1, 0]]
