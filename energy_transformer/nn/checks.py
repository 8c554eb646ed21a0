"""Argument checks shared by the modules of :mod:`energy_transformer.nn`: a bad size or scale
fails at construction with its name, not later as a shape error or a NaN energy."""

from __future__ import annotations

import math
import numbers


def check_positive_int(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1 (numpy's too; ``bool`` is not
    a size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_real(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number, ``ValueError`` unless it is finite
    and > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and math.isfinite(value)):
        raise ValueError(
            f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value!r}"
        )


def check_descent(steps: object, alpha: object, noise_std: object = 0.0) -> None:
    """Raise unless ``steps`` is an int >= 0 (0: no descent), ``alpha`` > 0 and ``noise_std``
    >= 0: the settings of :meth:`EnergyTransformer.forward` and of the models that call it."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    check_real("alpha", alpha)
    check_real("noise_std", noise_std, allow_zero=True)
