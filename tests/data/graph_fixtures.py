"""A tiny TU dataset of rings (class 7) and stars (class 3), written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch_geometric.data import Data

from energy_transformer.data.tu import write_tu


def ring_or_star(n: int, star: bool) -> Data:
    s = torch.zeros(n - 1, dtype=torch.long) if star else torch.arange(n)
    t = torch.arange(1, n) if star else (torch.arange(n) + 1) % n
    edges = torch.stack([torch.cat([s, t]), torch.cat([t, s])])
    data = Data(edge_index=edges, num_nodes=n, y=torch.tensor([3 if star else 7]))
    data.node_label = torch.zeros(n, dtype=torch.long)
    return data


def write_toy(root: Path, name: str = "TOY", graphs: int = 24) -> Path:
    """``graphs`` rings and stars of 4-8 nodes as ``root/TUDataset/<name>.zip``; returns
    ``root``, the data root the loaders take."""
    write_tu(root / "TUDataset", name, [ring_or_star(4 + i % 5, i % 2 == 1) for i in range(graphs)])
    return root
