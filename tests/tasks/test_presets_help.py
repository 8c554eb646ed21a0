"""The presets' values an option's help lists, so that a user sees what "unset" means."""

import pytest

from energy_transformer.cli import main
from energy_transformer.tasks import preset_values


def test_preset_values_lists_each_presets_value_in_order():
    presets = {"big": {"lr": 5e-4, "kind": "hard", "steps": 12}, "tiny": {"lr": 3e-3, "steps": 2}}
    assert preset_values(presets, "lr") == "big: 0.0005, tiny: 0.003"
    assert preset_values(presets, "steps") == "big: 12, tiny: 2"
    assert preset_values(presets, "lr", ["tiny"]) == "tiny: 0.003"
    assert preset_values({"big": presets["big"]}, "kind") == "big: hard"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("graph", ["(released: 300, paper: 300, cpu: 30)", "(released: 4, paper: 1, cpu: 1)"]),
        ("image", ["(imagenet: 768, fashion-mnist: 128)"]),
        ("anomaly", ["(small: 8, released: 64)"]),
    ],
)
def test_the_help_shows_the_presets_values(task, expected, capsys):
    with pytest.raises(SystemExit):
        main(["train", task, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for part in expected:
        assert part in text
    assert "None:" not in text  # Python's word for unset is not the user's


def test_preset_values_shows_floats_without_a_trailing_zero():
    presets = {"a": {"epochs": 300.0, "alpha": 0.1}, "b": {"epochs": 30, "alpha": 1e-05}}
    assert preset_values(presets, "epochs") == "a: 300, b: 30"
    assert preset_values(presets, "alpha") == "a: 0.1, b: 1e-05"
