"""Argument checks shared by the modules of :mod:`energy_transformer.nn` and the baselines of
:mod:`energy_transformer.models`: a bad size or scale fails at construction with its name, not
later as a shape error or a NaN energy."""

from __future__ import annotations

import math
import numbers


def _whole(value: object, low: int) -> bool:
    """``value`` is an integer >= ``low`` (numpy's too; ``bool`` is not a size)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= low


def check_positive_int(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1 (numpy's too; ``bool`` is not
    a size)."""
    if not _whole(value, 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_count(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 0: a count where 0 means none
    (descent steps, degree buckets, input hops)."""
    if not _whole(value, 0):
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


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
    check_count("steps", steps)
    check_real("alpha", alpha)
    check_real("noise_std", noise_std, allow_zero=True)


def check_sizes(
    in_dim: object,
    hidden: object,
    num_classes: object,
    layers: object,
    dropout: object,
    in_name: str = "in_dim",
) -> None:
    """A baseline network's sizes: whole numbers (``num_classes`` >= 2), dropout in [0, 1);
    ``in_name``: what the network calls its input size, for the message."""
    for name, value, low in (
        (in_name, in_dim, 1),
        ("hidden", hidden, 1),
        ("num_classes", num_classes, 2),
        ("layers", layers, 1),
    ):
        if not _whole(value, low):
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    check_dropout(dropout)


def check_dropout(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a probability in [0, 1) (1 would drop all)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {value!r}")
