"""Node-feature standardisation learned from training graphs and saved with the model."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"features={self.mean.numel()}"
