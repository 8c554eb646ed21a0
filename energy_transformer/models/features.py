"""Node features a model adds or fixes before its first layer: standardisation of continuous
columns (fit on training graphs, saved with the model), a learned degree encoding, and the
piecewise-linear encoding of numerical columns over their quantiles."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import coalesce, remove_self_loops


class FeatureScaler(nn.Module):
    r"""Standardises continuous node-feature columns; 0/1 columns pass unchanged.

    .. math::
        x'_{vj} = \frac{x_{vj} - \mu_j}{\sigma_j}

    with :math:`\mu_j, \sigma_j` the mean and (population) standard deviation of column
    :math:`j` over the nodes given to :meth:`fit`, and :math:`\mu_j = 0, \sigma_j = 1` for a
    column holding only 0 and 1 (one-hot labels or degrees) or a constant one. Raw attributes
    such as ENZYMES' (standard deviations up to 45, next to one-hot labels) would otherwise
    swamp the embedding and, in ET, the layer norm. The statistics are buffers, so they are
    saved with the weights; fit them on training graphs only (the graph task does, per fold).
    Until :meth:`fit` is called the scaler is the identity.

    Args:
        features: number of feature columns :math:`F`.

    Shapes:
        - input ``x``: ``(nodes, features)``; output: the same
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    @torch.no_grad()
    def fit(self, x: Tensor) -> FeatureScaler:
        """Set the statistics from the nodes ``x: (nodes, features)``; returns ``self``."""
        if x.dim() != 2 or x.shape[1] != self.mean.numel():
            raise ValueError(
                f"fit needs x of shape (nodes, {self.mean.numel()}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError("fit needs at least one node")
        x = x.to(self.mean.dtype)
        mean, std = x.mean(0), x.std(0, correction=0)
        keep = ((x == 0) | (x == 1)).all(0) | (std == 0)
        self.mean.copy_(mean.masked_fill(keep, 0.0))
        self.std.copy_(std.masked_fill(keep, 1.0))
        return self

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # Checkpoints from before the scaler existed were trained on raw features: for them
        # the identity is the right scaler, not a missing-key error.
        names = (prefix + "mean", prefix + "std")
        if not any(name in state_dict for name in names):
            missing_keys[:] = [key for key in missing_keys if key not in names]
            with torch.no_grad():
                self.mean.zero_()
                self.std.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Standardised ``x: (nodes, features)``, same shape."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"features={self.mean.numel()}"


class DegreeEncoding(nn.Module):
    r"""A learned embedding of each node's number of keys: Graphormer's centrality encoding
    (Ying et al., 2021).

    .. math::
        z_v = W_{\min(b(d_v),\ d_{max})}, \qquad d_v = |\{u \ne v : u \to v\}|

    with :math:`d_v` counted over the distinct edges into :math:`v` (key -> query), self loops
    left out, and :math:`b(d) = d`, or :math:`b(d) = \lfloor \log_2(d + 1) \rfloor` with
    ``log2`` (for graphs whose degrees span orders of magnitude). In ET's update a token's
    own keys enter as a softmax-weighted mean, which cannot count them; the count reaches it
    only through the key-side sum over the queries attending to it, entangled with their
    attention weights. Sum-aggregating GNNs such as GIN see it directly; :math:`z_v` gives it
    to ET the same way.

    Args:
        max_degree: :math:`d_{max}`, the last bucket; larger ones share its embedding.
        dim: embedding size :math:`D`.
        log2: log-spaced buckets :math:`\lfloor \log_2(d + 1) \rfloor` instead of degrees.

    Shapes:
        - input: ``edge_index: (2, E)`` (key -> query) and ``num_nodes`` :math:`n`
        - output: ``(n, dim)``
    """

    def __init__(self, max_degree: int, dim: int, log2: bool = False) -> None:
        super().__init__()
        if max_degree < 1:
            raise ValueError(f"max_degree must be >= 1, got {max_degree}")
        self.max_degree, self.log2 = max_degree, log2
        self.embed = nn.Embedding(max_degree + 1, dim)

    def degrees(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """:math:`d_v` of every node: ``(n,)`` long."""
        edges, _ = remove_self_loops(coalesce(edge_index, num_nodes=num_nodes))
        return torch.bincount(edges[1], minlength=num_nodes)

    def buckets(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        r"""Embedding row of every node, :math:`\min(b(d_v), d_{max})`: ``(n,)`` long (depends on
        the graph only: a caller may compute it once per graph)."""
        buckets = self.degrees(edge_index, num_nodes)
        if self.log2:
            buckets = torch.log2(buckets + 1.0).floor().long()
        return buckets.clamp(max=self.max_degree)

    def forward(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """Each node's degree embedding :math:`z_v`, ``(num_nodes, dim)``."""
        return self.embed(self.buckets(edge_index, num_nodes))

    def extra_repr(self) -> str:
        return f"max_degree={self.max_degree}, log2={self.log2}"


def piecewise_linear_encoding(x: Tensor, bins: int) -> Tensor:
    r"""Each feature column replaced by its piecewise-linear encoding over quantile bins
    (Gorishniy et al., 2022, "On Embeddings for Numerical Features in Tabular Deep Learning").

    With :math:`b_{j0} < b_{j1} < \dots < b_{jT_j}` the distinct :math:`t / \mathrm{bins}`
    quantiles (:math:`t = 0..\mathrm{bins}`) of column :math:`j` over the given nodes,

    .. math::
        e_{vjt} = \mathrm{clip}\Big(\frac{x_{vj} - b_{j,t-1}}{b_{jt} - b_{j,t-1}},\ 0,\ 1\Big),
        \qquad t = 1..T_j

    so a value fills the bins below it and part of its own: the encoding is monotone in
    :math:`x_{vj}` and, unlike the raw value, spreads a skewed column (Tolokers' rates,
    most of them near 0) evenly over its :math:`T_j` coordinates. A network then learns a
    piecewise-linear function of each column, which is what trees get from their thresholds.
    Columns with fewer than three distinct quantiles (0/1 flags, constants) are kept as they
    are. A positive affine change of a column moves its quantiles with it, so the encoding is
    the same for raw and standardised features; it uses no labels.

    Args:
        x: node features.
        bins: quantile bins per column, >= 1 (ties merge bins: :math:`T_j \le` ``bins``).

    Shapes:
        - x: ``(N, F)``
        - output: ``(N, sum_j T_j)``, :math:`T_j = 1` for a kept column
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be (nodes, features) with nodes > 0, got {tuple(x.shape)}")
    levels = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    columns = []
    for column in x.double().unbind(1):  # x: (N, F) -> F columns of (N,)
        edges = torch.unique(torch.quantile(column, levels))  # (T_j + 1,)
        if edges.numel() < 3:
            columns.append(column[:, None])
            continue
        low, high = edges[:-1], edges[1:]
        columns.append(((column[:, None] - low) / (high - low)).clamp(0, 1))  # (N, T_j)
    return torch.cat(columns, 1).to(x.dtype)
