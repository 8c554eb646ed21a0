"""The argument checks of energy_transformer.nn, on the values users get wrong."""

import math

import numpy as np
import pytest

from energy_transformer.nn.checks import check_count, check_positive_int, check_real


@pytest.mark.parametrize("value", [1, 7, 4096, np.int64(3)])  # numpy ints (from shapes) too
def test_positive_ints_pass(value):
    check_positive_int("heads", value)


@pytest.mark.parametrize("value", [0, -2, 1.0, True, "4", None])
def test_anything_else_is_not_a_size(value):
    with pytest.raises(ValueError, match=f"heads must be a positive int, got {value!r}"):
        check_positive_int("heads", value)


def test_a_count_may_be_zero_and_says_so_when_refused():
    for value in (0, 3, np.int64(2)):
        check_count("input_hops", value)
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match=f"input_hops must be an int >= 0, got {bad!r}"):
            check_count("input_hops", bad)


def test_real_numbers_by_their_bound():
    check_real("alpha", 0.1)
    check_real("alpha", np.float32(0.5))  # numpy scalars are real numbers too
    check_real("std", 0.0, allow_zero=True)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha must be finite and > 0"):
            check_real("alpha", bad)
    with pytest.raises(ValueError, match="std must be finite and >= 0, got -0.5"):
        check_real("std", -0.5, allow_zero=True)
    for bad in ("0.1", None, True):
        with pytest.raises(TypeError, match="alpha must be a real number"):
            check_real("alpha", bad)
