"""An exponential moving average of a model's weights (Polyak averaging), for evaluation."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def check_ema_decay(decay: float | None) -> None:
    """Refuse a decay outside (0, 1) (``None``: no average)."""
    if decay is not None and not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")


def ema_decay_at(decay: float, step: int) -> float:
    r"""The decay used by the ``step``-th update (1-based): :math:`\min(d, (1 + s) / (10 + s))`.

    The warm-up keeps the first updates from weighting the random initialisation for
    :math:`1 / (1 - d)` steps: early averages follow the weights closely, later ones slowly.
    """
    return min(decay, (1 + step) / (10 + step))


class WeightEMA:
    r"""A frozen copy of ``model`` whose weights track an exponential moving average,

    .. math::
        \bar\theta_s = d_s\,\bar\theta_{s-1} + (1 - d_s)\,\theta_s,
        \qquad d_s = \min\!\big(d, \tfrac{1 + s}{10 + s}\big),

    after each optimizer step :math:`s`. Evaluating the average instead of the last weights
    smooths the step-to-step noise of small-batch training, so that an epoch chosen on a small
    validation set reflects the weights more than the luck of the last few batches. Floating
    buffers are averaged too; integer buffers are copied.

    Args:
        model: the model being trained (the copy is made now; it must already sit on its
            device).
        decay: :math:`d`, in (0, 1); about :math:`1 / (1 - d)` steps are averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        check_ema_decay(decay)
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        # state_dict() tensors share storage with the parameters the optimizer updates in place.
        live, averaged = model.state_dict(), self.model.state_dict()
        floats = {k for k, v in live.items() if v.is_floating_point()}
        self._floats = ([averaged[k] for k in floats], [live[k] for k in floats])
        self._others = [(averaged[k], live[k]) for k in live.keys() - floats]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the live weights in, after optimizer step ``step`` (1-based)."""
        averaged, live = self._floats
        if averaged:
            torch._foreach_lerp_(averaged, live, 1.0 - ema_decay_at(self.decay, step))
        for target, source in self._others:
            target.copy_(source)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)
