"""Graph anomaly detection datasets: one graph, node features, binary node labels (1 = anomaly).

Two public layouts are read:

- GADBench / heterophilous-graphs ``.npz`` (Tolokers, Reddit): ``node_features (N, F)``,
  ``node_labels (N,)``, ``edges (E, 2)`` and optional ``train_masks``/``val_masks``/``test_masks``
  ``(splits, N)`` bool (or 0/1), all three or none, disjoint within each split.
- CARE-GNN / DGL fraud ``.mat`` (YelpChi, Amazon), read with :func:`scipy.io.loadmat`:
  ``features`` (sparse ``(N, F)``), ``label`` ``(1, N)``, ``homo`` (sparse ``(N, N)`` adjacency of
  all relations) and one sparse adjacency per relation (``net_rur``, ``net_rtr``, ``net_rsr`` for
  YelpChi; ``net_upu``, ``net_usu``, ``net_uvu`` for Amazon). Amazon's first 3,305 users carry no
  label: they stay in the graph (messages pass through them, as in BWGNN) but ``label_mask`` is
  False for them, so protocols never train or score on them.

Every loader returns a :class:`torch_geometric.data.Data` with ``x`` float32 ``(N, F)``,
``edge_index`` ``(2, E)`` undirected (both directions), deduplicated and without self loops,
``y`` int64 ``(N,)`` in {0, 1} and ``label_mask`` bool ``(N,)``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from energy_transformer.data.paths import RemoteFile, locate
from energy_transformer.files import read_npz

if TYPE_CHECKING:  # PyG is imported when a graph is built, not with this module
    from torch_geometric.data import Data

AMAZON_UNLABELED = 3305
SPLIT_MASKS = ("train_masks", "val_masks", "test_masks")
FRAUD_RELATIONS = {
    "yelpchi": ("net_rur", "net_rtr", "net_rsr"),
    "amazon": ("net_upu", "net_usu", "net_uvu"),
}

# The layouts a graph file given by path may have: GADBench's .npz, CARE-GNN's .mat.
GRAPH_FILE_SUFFIXES = (".npz", ".mat")
# name -> the file in <root>/gad/ and where it is published (None: no direct file URL; the
# fraud .mat files ship zipped in the CARE-GNN repository, Reddit as a pickle in PyGOD's).
GAD_DATASETS: dict[str, RemoteFile] = {
    "tolokers": RemoteFile(
        "tolokers.npz",
        "https://github.com/yandex-research/heterophilous-graphs/raw/main/data/tolokers.npz",
    ),
    "reddit": RemoteFile("reddit.npz", ""),
    "yelpchi": RemoteFile("YelpChi.mat", ""),
    "amazon": RemoteFile("Amazon.mat", ""),
}


def _graph(x: Tensor, edge_index: Tensor, y: Tensor, source: Path, **extra: Tensor):
    from torch_geometric.data import Data
    from torch_geometric.utils import remove_self_loops, to_undirected

    n = x.shape[0]
    if n == 0:
        raise ValueError(f"{source}: the graph has no nodes")
    if y.shape != (n,):
        raise ValueError(
            f"{source}: {n} nodes have features but labels have shape {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{source}: node features contain NaN or inf")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n):
        raise ValueError(
            f"{source}: edges refer to nodes [{int(edge_index.min())}, {int(edge_index.max())}]"
            f" but there are {n} nodes"
        )
    label_mask = extra.pop("label_mask", torch.ones(n, dtype=torch.bool))
    labels = y[label_mask].unique().tolist()
    if not set(labels) <= {0, 1}:
        raise ValueError(f"{source}: labels must be 0 (normal) or 1 (anomaly), found {labels}")
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=n)
    return Data(x=x, edge_index=edge_index, y=y, label_mask=label_mask, **extra)


def _mask_bool(mask: np.ndarray, name: str, source: str) -> np.ndarray:
    """``mask`` as bool; only bool or 0/1 integers are masks (a float cast would hide junk)."""
    if mask.dtype == np.bool_:
        return mask
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"{source}: {name} must be boolean or 0/1 integers, got dtype {mask.dtype}"
        )
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        raise ValueError(
            f"{source}: {name} must be boolean or 0/1 integers, found values {values[:5].tolist()}"
        )
    return mask.astype(bool)


def check_split_masks(
    masks: Mapping[str, Any], num_nodes: int | None, source: str
) -> dict[str, Tensor]:
    """Validate a dataset's own splits: ``train_masks``, ``val_masks``, ``test_masks``.

    Args:
        masks: a mapping that may hold the three masks, each ``(splits, N)`` or ``(N,)``, bool
            or 0/1 integers (numpy arrays or tensors); ``None`` counts as absent.
        num_nodes: ``N``, when known.
        source: the file (or dataset) named in errors.

    Returns:
        ``{}`` when none is present, else the three as ``(splits, N)`` bool tensors.

    Raises:
        ValueError: only some present, not bool / 0-1, shapes that differ, or a node in two
            parts of one split (test metrics on training nodes).
    """
    present = [k for k in SPLIT_MASKS if masks.get(k) is not None]
    if not present:
        return {}
    if len(present) < len(SPLIT_MASKS):
        missing = [k for k in SPLIT_MASKS if k not in present]
        raise ValueError(
            f"{source}: has {', '.join(present)} but not {missing}; split masks come as"
            " train_masks, val_masks and test_masks together"
        )
    arrays = {}
    for name in SPLIT_MASKS:
        raw = masks[name]
        raw = np.asarray(raw.cpu() if isinstance(raw, Tensor) else raw)
        mask = np.atleast_2d(_mask_bool(raw, name, source))
        if mask.ndim != 2 or (num_nodes is not None and mask.shape[1] != num_nodes):
            raise ValueError(
                f"{source}: {name} must be (splits, {num_nodes or 'N'}), got {raw.shape}"
            )
        arrays[name] = mask
    shapes = [arrays[k].shape for k in SPLIT_MASKS]
    if len(set(shapes)) > 1:
        raise ValueError(
            f"{source}: train_masks, val_masks and test_masks must have one shape, got"
            f" {', '.join(map(str, shapes))}"
        )
    for a, b in itertools.combinations(SPLIT_MASKS, 2):
        both = arrays[a] & arrays[b]
        if both.any():
            split, node = (int(i[0]) for i in np.nonzero(both))
            raise ValueError(
                f"{source}: split {split}: {a} and {b} overlap on {int(both[split].sum())}"
                f" node(s) (first: node {node})"
            )
    return {k: torch.from_numpy(m.copy()) for k, m in arrays.items()}


def load_npz_graph(path: str | os.PathLike) -> Data:
    """Read the GADBench ``.npz`` layout (see the module docstring) into a PyG ``Data``.

    Split masks, when present, become ``train_masks``/``val_masks``/``test_masks``
    ``(splits, N)`` bool attributes, checked by :func:`check_split_masks`.
    """
    path = Path(path)
    arrays = read_npz(path)
    missing = [k for k in ("node_features", "node_labels", "edges") if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: missing array(s) {missing}; expected node_features, node_labels, edges"
        )
    features, labels, edges = arrays["node_features"], arrays["node_labels"], arrays["edges"]
    if features.ndim != 2:
        raise ValueError(f"{path}: node_features must be (N, F), got shape {features.shape}")
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"{path}: edges must be an (E, 2) integer array, got {edges.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        raise ValueError(f"{path}: node_labels must be integers, got dtype {labels.dtype}")
    masks = check_split_masks(arrays, features.shape[0], str(path))
    return _graph(
        torch.from_numpy(features.astype(np.float32)),
        torch.from_numpy(edges.astype(np.int64)).T.contiguous(),
        torch.from_numpy(labels.reshape(-1).astype(np.int64)),
        path,
        **masks,
    )


def load_fraud_mat(
    path: str | os.PathLike,
    relation: str = "homo",
    unlabeled: int | None = None,
    drop_unlabeled: bool = False,
) -> Data:
    """Read the CARE-GNN / DGL fraud ``.mat`` layout (YelpChi, Amazon) into a PyG ``Data``.

    Args:
        path: the ``.mat`` file.
        relation: ``"homo"`` (all relations merged, what BWGNN and ET use) or one relation's
            matrix name (``net_rur`` ...).
        unlabeled: how many leading nodes carry no label; default 3,305 for Amazon (recognised
            by its ``net_upu`` relation), else 0.
        drop_unlabeled: remove those nodes and their edges instead of only masking them out.
    """
    import scipy.io
    import scipy.sparse

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        mat = scipy.io.loadmat(path)
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError) as err:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({err})") from err
    missing = [k for k in ("features", "label", relation) if k not in mat]
    if missing:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: missing variable(s) {missing}; the file has {present}")
    features = mat["features"]
    features = features.toarray() if scipy.sparse.issparse(features) else np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{path}: features must be (N, F), got shape {features.shape}")
    n = features.shape[0]
    adj = mat[relation]
    if not scipy.sparse.issparse(adj) or adj.shape != (n, n):
        raise ValueError(
            f"{path}: {relation} must be a sparse ({n}, {n}) adjacency, got"
            f" {type(adj).__name__} {getattr(adj, 'shape', None)}"
        )
    coo = adj.tocoo()
    edge_index = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    y = torch.from_numpy(np.asarray(mat["label"]).reshape(-1).astype(np.int64))
    if unlabeled is None:
        unlabeled = AMAZON_UNLABELED if "net_upu" in mat else 0
    if not 0 <= unlabeled < n:
        raise ValueError(f"{path}: unlabeled={unlabeled} must be in [0, {n})")
    label_mask = torch.arange(n) >= unlabeled
    x = torch.from_numpy(features.astype(np.float32))
    if drop_unlabeled and unlabeled:
        from torch_geometric.utils import subgraph

        edge_index, _ = subgraph(label_mask, edge_index, relabel_nodes=True, num_nodes=n)
        x, y, label_mask = x[unlabeled:], y[unlabeled:], label_mask[unlabeled:]
    return _graph(x, edge_index, y, path, label_mask=label_mask)


def load_gad(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> Data:
    """Load a graph anomaly dataset by name from ``<root or $ET_DATA or cache>/gad/``.

    Args:
        name: ``tolokers``, ``reddit`` (``.npz``), ``yelpchi`` or ``amazon`` (``.mat``).
        root: data root holding ``gad/``; a path to the file itself also works.
        kwargs: passed to :func:`load_fraud_mat` for the ``.mat`` datasets (refused for the
            ``.npz`` ones, which take none).
    """
    key = name.lower()
    if key not in GAD_DATASETS:
        raise ValueError(f"unknown anomaly dataset {name!r}; choose from {sorted(GAD_DATASETS)}")
    remote = GAD_DATASETS[key]
    if root is not None and Path(root).is_file():
        return load_gad_file(root, **kwargs)
    # A graph file that is not there would otherwise be searched as a data root
    # ("put tolokers.npz into missing.npz/gad").
    if root is not None and Path(root).suffix in GRAPH_FILE_SUFFIXES:
        raise FileNotFoundError(f"graph file not found: {root}")
    folder = locate("gad", [remote], root, allow_download=bool(remote.url))
    return load_gad_file(folder / remote.name, **kwargs)


def load_gad_file(path: str | os.PathLike, **kwargs: Any) -> Data:
    """Load one graph file by its layout: ``.mat`` (CARE-GNN, :func:`load_fraud_mat`, which
    ``kwargs`` go to) or ``.npz`` (GADBench, :func:`load_npz_graph`, which takes none)."""
    path = Path(path)
    if path.suffix == ".mat":
        return load_fraud_mat(path, **kwargs)
    if path.suffix not in GRAPH_FILE_SUFFIXES:
        raise ValueError(f"{path}: an anomaly graph is a .npz (GADBench) or .mat (CARE-GNN) file")
    if kwargs:
        raise TypeError(f"{path}: a .npz graph takes no options, got {sorted(kwargs)}")
    return load_npz_graph(path)
