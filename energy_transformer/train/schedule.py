"""Learning-rate schedule: linear warm-up, then cosine decay (spec §2.1's recipe)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    r"""Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    .. math::
        m(s) = \begin{cases} (s + 1) / W & s < W \\
        r + (1 - r)\,\tfrac12\big(1 + \cos(\pi \tfrac{s - W}{S - W})\big) & s \ge W \end{cases}

    with warm-up steps :math:`W`, total steps :math:`S` and floor ratio :math:`r`.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
