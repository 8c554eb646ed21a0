import pytest

from energy_transformer.text import counted


@pytest.mark.parametrize(
    ("n", "noun", "text"),
    [(1, "seed", "1 seed"), (0, "seed", "0 seeds"), (2, "fold", "2 folds"),
     (1, "torch thread", "1 torch thread"), (12, "torch thread", "12 torch threads")],
)  # fmt: skip
def test_a_count_is_singular_for_one_only(n, noun, text):
    assert counted(n, noun) == text
