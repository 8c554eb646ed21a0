"""TU Dortmund graph-classification datasets, read from their public zip layout.

A dataset ``NAME`` is a zip (or an extracted folder) holding, one value per line:

- ``NAME_A.txt``: ``i, j`` edges, 1-based node ids over the whole dataset (both directions listed
  for undirected graphs);
- ``NAME_graph_indicator.txt``: for node ``i`` (line ``i``), the 1-based id of its graph;
- ``NAME_graph_labels.txt``: for graph ``g`` (line ``g``), its class label;
- optionally ``NAME_node_labels.txt`` (one or more comma-separated integer columns) and
  ``NAME_node_attributes.txt`` (comma-separated floats).

:func:`load_tu` finds the zip through :func:`energy_transformer.data.paths.locate` (``$ET_DATA``,
else the user cache, else a download from the TU Dortmund collection) and returns a
:class:`TUDataset` of PyTorch Geometric ``Data`` objects. Nothing is pickled: the text files are
parsed, and a malformed line raises a :class:`ValueError` naming the file and the line.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from energy_transformer.data.paths import RemoteFile, data_roots, locate
from energy_transformer.text import counted

# The collection's own server (the TU Dortmund graph kernel benchmark sets).
TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets/{name}.zip"
TU_SUBDIR = "TUDataset"
NODE_FEATURES = ("auto", "labels", "attributes", "both", "degree")


def tu_remote(name: str) -> RemoteFile:
    """The public zip of dataset ``name`` (e.g. ``"PROTEINS"``)."""
    return RemoteFile(f"{name}.zip", TU_URL.format(name=name))


@dataclass
class TUDataset(Sequence):
    """The graphs of one TU dataset, with what was read about them.

    Attributes:
        name: dataset name.
        graphs: one ``Data`` per graph with ``x: (nodes, features)`` float32, ``edge_index:
            (2, edges)`` long (0-based, sorted, duplicates removed), ``y: (1,)`` long in
            ``0..num_classes-1`` and, when the dataset has node labels, ``node_label: (nodes,)``
            long (the first label column, re-indexed from 0).
        classes: the original label of each class index (``classes[y]`` is the file's label).
        feature_names: what each block of ``x`` holds, e.g.
            ``["node_label[0]: one-hot over 7 values"]``.
    """

    name: str
    graphs: list[Data]
    classes: list[str]
    feature_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int | slice) -> Data | list[Data]:  # type: ignore[override]
        return self.graphs[index]

    def __iter__(self) -> Iterator[Data]:
        return iter(self.graphs)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def num_features(self) -> int:
        """Width ``F`` of the node features ``x: (nodes, F)``."""
        return int(self.graphs[0].x.shape[1])

    @property
    def labels(self) -> Tensor:
        """Class index of every graph, ``(graphs,)`` long."""
        return torch.cat([g.y for g in self.graphs])

    def map(self, transform: Callable[[Data], Data]) -> TUDataset:
        """A new dataset with ``transform`` applied once to every graph (a cached transform)."""
        graphs = [transform(g) for g in self.graphs]
        return TUDataset(self.name, graphs, self.classes, self.feature_names)


# -- reading the text files -----------------------------------------------------------------


class _Source:
    """The files of one dataset, in a zip or a folder, found by their base name."""

    def __init__(self, path: Path, name: str | None) -> None:
        self.path = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise ValueError(f"{path} is not a zip file")
            with zipfile.ZipFile(path) as z:
                # Members may read "NAME/NAME_A.txt" or "NAME//NAME_A.txt": key by base name.
                self.members = {
                    m.rsplit("/", 1)[-1]: m for m in z.namelist() if not m.endswith("/")
                }
        elif path.is_dir():
            folder = path / name if name and (path / name).is_dir() else path
            self.members = {p.name: str(p) for p in folder.iterdir() if p.is_file()}
        else:
            raise FileNotFoundError(f"{path} does not exist")
        if name is None:
            found = sorted(m[: -len("_A.txt")] for m in self.members if m.endswith("_A.txt"))
            if len(found) != 1:
                raise ValueError(f"{path}: expected one NAME_A.txt, found {found or 'none'}")
            name = found[0]
        self.name = name

    def has(self, suffix: str) -> bool:
        return f"{self.name}_{suffix}.txt" in self.members

    def lines(self, suffix: str) -> tuple[str, list[str]]:
        """``(file name, lines)`` of ``NAME_suffix.txt``; blank trailing lines dropped."""
        fname = f"{self.name}_{suffix}.txt"
        if fname not in self.members:
            raise FileNotFoundError(f"{self.path}: {fname} is missing")
        member = self.members[fname]
        if self.path.is_file():
            where = f"{self.path}: member {member}"
            try:
                with zipfile.ZipFile(self.path) as z:
                    raw = z.read(member)
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # CRC, deflate, truncation
                raise ValueError(f"{where} is corrupt ({err})") from err
        else:
            where, raw = member, Path(member).read_bytes()
        lines = _decode(raw, where).splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise ValueError(f"{fname} is empty")
        return fname, lines


def _decode(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8 text; a bad byte is reported with ``where`` and its 1-based line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{where}, line {line}: byte 0x{raw[err.start]:02x} is not UTF-8 text"
        ) from None


def _parse(fname: str, lines: list[str], kind: type, columns: int | None) -> Tensor:
    """Comma-separated values per line as a ``(lines, columns)`` tensor (int64 or float32).

    Errors name ``fname`` and the 1-based line.
    """
    width = columns if columns is not None else lines[0].count(",") + 1
    dtype = np.int64 if kind is int else np.float32
    if all(line.count(",") == width - 1 for line in lines):
        try:  # fast path: one numpy conversion; the slow path below finds the bad line
            with np.errstate(over="ignore"):  # too large for float32: inf, refused below
                values = np.array(",".join(lines).replace(",", " ").split()).astype(dtype)
        except ValueError:
            values = None
        if values is not None and values.size == width * len(lines):
            return _finite(fname, lines, torch.from_numpy(values.reshape(len(lines), width)))
    for number, line in enumerate(lines, start=1):
        parts = line.split(",")
        if len(parts) != width:
            raise ValueError(
                f"{fname}, line {number}: expected {width} comma-separated values,"
                f" got {len(parts)}: {line!r}"
            )
        try:
            [kind(p) for p in parts]
        except ValueError:
            what = "integers" if kind is int else "numbers"
            raise ValueError(f"{fname}, line {number}: expected {what}, got {line!r}") from None
    raise ValueError(f"{fname}: could not parse {len(lines)} lines of {width} values")


def _finite(fname: str, lines: list[str], values: Tensor) -> Tensor:
    """``values`` unless a float is NaN or inf (training would fail later, far from the file)."""
    if values.is_floating_point():
        bad = (~torch.isfinite(values)).any(dim=1).nonzero()
        if bad.numel():
            line = int(bad[0, 0]) + 1
            raise ValueError(
                f"{fname}, line {line}: NaN or inf (or beyond float32): {lines[line - 1]!r}"
            )
    return values


def _reindex(values: Tensor) -> tuple[Tensor, Tensor]:
    """Map values to ``0..L-1`` in sorted order; returns ``(indices, sorted unique values)``."""
    unique, inverse = torch.unique(values, sorted=True, return_inverse=True)
    return inverse, unique


def _unique_rows(pairs: Tensor, num_nodes: int) -> Tensor:
    """Distinct ``(i, j)`` rows of ``pairs: (E, 2)``, sorted by ``(i, j)``."""
    key = torch.unique(pairs[:, 0] * num_nodes + pairs[:, 1], sorted=True)
    return torch.stack([key // num_nodes, key % num_nodes], dim=1)


def _one_hot(index: Tensor, size: int) -> Tensor:
    return torch.nn.functional.one_hot(index, size).to(torch.float32)


def read_tu(
    path: str | os.PathLike,
    name: str | None = None,
    node_features: str = "auto",
    max_degree: int | None = None,
) -> TUDataset:
    """Read a TU dataset from its zip or extracted folder.

    Args:
        path: ``NAME.zip``, a folder holding ``NAME_*.txt``, or a folder holding ``NAME/``.
        name: dataset name (default: found from the single ``*_A.txt``).
        node_features: what ``x`` holds. ``"auto"``: one-hot node labels and the attributes,
            whichever the dataset has, else one-hot degrees; ``"labels"``, ``"attributes"``,
            ``"both"``: those (an error when missing); ``"degree"``: one-hot degrees.
        max_degree: cap of the one-hot degree (default: the dataset's largest degree).

    Returns:
        A :class:`TUDataset`.
    """
    if node_features not in NODE_FEATURES:
        raise ValueError(f"node_features must be one of {NODE_FEATURES}, got {node_features!r}")
    src = _Source(Path(path).expanduser(), name)

    fname, lines = src.lines("graph_indicator")
    graph_of = _parse(fname, lines, int, 1)[:, 0]
    num_nodes = graph_of.numel()
    fname_y, lines = src.lines("graph_labels")
    raw_y = _parse(fname_y, lines, int, 1)[:, 0]
    if raw_y.unique().numel() < 2:  # one class: any classifier scores a meaningless 100%
        raise ValueError(
            f"{fname_y}: every graph has label {int(raw_y[0])}; graph classification needs at"
            " least 2 classes"
        )
    num_graphs = raw_y.numel()
    bad = ((graph_of < 1) | (graph_of > num_graphs)).nonzero()
    if bad.numel():
        line = int(bad[0, 0]) + 1
        raise ValueError(
            f"{fname}, line {line}: graph id {int(graph_of[line - 1])} is outside 1..{num_graphs}"
            f" ({fname_y} has {counted(num_graphs, 'line')})"
        )
    graph_of = graph_of - 1
    sizes = torch.bincount(graph_of, minlength=num_graphs)
    if (sizes == 0).any():
        empty = int((sizes == 0).nonzero()[0, 0]) + 1
        raise ValueError(f"{fname}: graph {empty} has no nodes")

    fname, lines = src.lines("A")
    edges = _parse(fname, lines, int, 2) - 1
    bad = ((edges < 0) | (edges >= num_nodes)).any(dim=1).nonzero()
    if bad.numel():
        line = int(bad[0, 0]) + 1
        raise ValueError(
            f"{fname}, line {line}: node id outside 1..{num_nodes}: {lines[line - 1]!r}"
        )
    across = (graph_of[edges[:, 0]] != graph_of[edges[:, 1]]).nonzero()
    if across.numel():
        line = int(across[0, 0]) + 1
        raise ValueError(
            f"{fname}, line {line}: edge {lines[line - 1].strip()!r} joins two different graphs"
        )

    # Nodes of graph g in file order get local ids 0..n_g-1.
    order = torch.argsort(graph_of, stable=True)
    offsets = torch.cumsum(sizes, 0) - sizes
    local = torch.empty(num_nodes, dtype=torch.long)
    local[order] = torch.arange(num_nodes) - offsets[graph_of[order]]

    blocks: list[Tensor] = []
    names: list[str] = []
    node_label = None
    has_labels, has_attrs = src.has("node_labels"), src.has("node_attributes")
    want_labels = node_features in ("labels", "both") or (node_features == "auto" and has_labels)
    want_attrs = node_features in ("attributes", "both") or (node_features == "auto" and has_attrs)
    if want_labels or has_labels:
        fname, lines = src.lines("node_labels")
        labels = _parse(fname, lines, int, None)
        if labels.shape[0] != num_nodes:
            raise ValueError(f"{fname} has {labels.shape[0]} lines, expected {num_nodes} (nodes)")
        for column in range(labels.shape[1]):
            index, unique = _reindex(labels[:, column])
            if column == 0:
                node_label = index
            if want_labels:
                blocks.append(_one_hot(index, unique.numel()))
                names.append(
                    f"node_label[{column}]: one-hot over {counted(unique.numel(), 'value')}"
                )
    if want_attrs:
        fname, lines = src.lines("node_attributes")
        attrs = _parse(fname, lines, float, None)
        if attrs.shape[0] != num_nodes:
            raise ValueError(f"{fname} has {attrs.shape[0]} lines, expected {num_nodes} (nodes)")
        blocks.append(attrs)
        names.append(f"node_attributes: {counted(attrs.shape[1], 'float')}")
    if node_features == "degree" or not blocks:
        both = torch.cat([edges, edges.flip(1)])
        both = _unique_rows(both[both[:, 0] != both[:, 1]], num_nodes)
        degree = torch.bincount(both[:, 0], minlength=num_nodes)
        cap = int(degree.max()) if max_degree is None else max_degree
        blocks.append(_one_hot(degree.clamp(max=cap), cap + 1))
        names.append(f"degree: one-hot 0..{cap}")
    x = torch.cat(blocks, dim=1)

    y, unique_y = _reindex(raw_y)
    edges = _unique_rows(edges, num_nodes)  # sorted by (source, target)
    edge_graph = graph_of[edges[:, 0]]
    edge_order = torch.argsort(edge_graph, stable=True)
    edges, edge_graph = edges[edge_order], edge_graph[edge_order]
    edge_counts = torch.bincount(edge_graph, minlength=num_graphs).tolist()
    graphs = []
    for g, (nodes, graph_edges) in enumerate(
        zip(order.split(sizes.tolist()), edges.split(edge_counts), strict=True)
    ):
        data = Data(
            x=x[nodes],
            edge_index=local[graph_edges].T.contiguous(),
            y=y[g : g + 1],
            num_nodes=int(sizes[g]),
        )
        if node_label is not None:
            data.node_label = node_label[nodes]
        graphs.append(data)
    return TUDataset(src.name, graphs, [str(v) for v in unique_y.tolist()], names)


def load_tu(
    name: str,
    root: str | os.PathLike | None = None,
    node_features: str = "auto",
    max_degree: int | None = None,
    allow_download: bool = True,
) -> TUDataset:
    """Load TU dataset ``name`` from ``root/TUDataset/NAME.zip`` (default roots: ``$ET_DATA``,
    then the user cache, downloading from the TU Dortmund collection when missing).

    ``root`` may also be a ``NAME.zip`` or an extracted folder itself. See :func:`read_tu`.
    """
    if root is not None:
        direct = Path(root).expanduser()
        if direct.is_file() or (direct / f"{name}_A.txt").is_file() or (direct / name).is_dir():
            return read_tu(direct, name, node_features, max_degree)
    if spelled := _other_spelling(name, root):
        raise ValueError(f"no TU dataset {name!r}, but {spelled}: dataset names are case-sensitive")
    folder = locate(TU_SUBDIR, [tu_remote(name)], root, allow_download)
    return read_tu(folder / f"{name}.zip", name, node_features, max_degree)


def _other_spelling(name: str, root: str | os.PathLike | None) -> Path | None:
    """A zip in the data roots whose name differs from ``name`` only in case, when none is
    ``name`` itself: ``mutag`` beside ``MUTAG.zip`` would otherwise be downloaded (the
    server's names are case-sensitive too) or reported missing. Names are compared as listed,
    not by ``is_file``, which a case-insensitive file system answers for any case."""
    zips = [path for base in data_roots(root) for path in sorted((base / TU_SUBDIR).glob("*.zip"))]
    if any(path.stem == name for path in zips):
        return None
    return next((path for path in zips if path.stem.lower() == name.lower()), None)


def keep_first_nodes(data: Data, max_nodes: int) -> Data:
    """The subgraph induced by the first ``max_nodes`` nodes (file order), for graphs above it.

    A documented cap for dense models on datasets with huge graphs (DD: up to 5,748 nodes);
    smaller graphs are returned unchanged.
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    if data.num_nodes <= max_nodes:
        return data
    return data.subgraph(torch.arange(max_nodes))


def write_tu(
    folder: str | os.PathLike,
    name: str,
    graphs: Sequence[Data],
    attributes: bool = False,
    as_zip: bool = True,
) -> Path:
    """Write ``graphs`` in the TU layout (the inverse of :func:`read_tu`), e.g. to export a
    dataset or to make test fixtures.

    Writes ``NAME_A.txt``, ``NAME_graph_indicator.txt``, ``NAME_graph_labels.txt`` (from ``y``),
    ``NAME_node_labels.txt`` (from ``node_label``, when every graph has it) and, with
    ``attributes``, ``NAME_node_attributes.txt`` (from ``x``). Returns ``folder/NAME.zip`` (members
    ``NAME/NAME_*.txt``) or, with ``as_zip=False``, the folder ``folder/NAME``.
    """
    files: dict[str, list[str]] = {"A": [], "graph_indicator": [], "graph_labels": []}
    with_labels = all(getattr(g, "node_label", None) is not None for g in graphs)
    if with_labels:
        files["node_labels"] = []
    if attributes:
        files["node_attributes"] = []
    offset = 0
    for number, g in enumerate(graphs, start=1):
        n = int(g.num_nodes)
        files["A"] += [f"{s + offset + 1}, {t + offset + 1}" for s, t in g.edge_index.t().tolist()]
        files["graph_indicator"] += [str(number)] * n
        files["graph_labels"].append(str(int(g.y.reshape(-1)[0])))
        if with_labels:
            files["node_labels"] += [str(v) for v in g.node_label.tolist()]
        if attributes:
            files["node_attributes"] += [", ".join(f"{v:.6f}" for v in r) for r in g.x.tolist()]
        offset += n
    folder = Path(folder)
    texts = {f"{name}_{key}.txt": "\n".join(lines) + "\n" for key, lines in files.items()}
    if as_zip:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for fname, text in texts.items():
                z.writestr(f"{name}/{fname}", text)
        return path
    path = folder / name
    path.mkdir(parents=True, exist_ok=True)
    for fname, text in texts.items():
        (path / fname).write_text(text)
    return path
