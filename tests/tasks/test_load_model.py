"""`energy_transformer.load_model`: one call gives back the trained model of any task's run."""

import copy
import json
import re

import numpy as np
import pytest
import torch
from graph_fixtures import write_toy
from image_fixtures import write_fake_mnist

import energy_transformer
from energy_transformer.cli import main
from energy_transformer.tasks import load_model
from energy_transformer.train import check_run_task, load_checkpoint, load_run, save_checkpoint


def _same_weights(model: torch.nn.Module, checkpoint) -> bool:
    state = load_checkpoint(checkpoint).model_state
    return model.state_dict().keys() == state.keys() and all(
        torch.equal(v, state[k]) for k, v in model.state_dict().items()
    )


def _gad_root(root):
    rng = np.random.default_rng(0)
    n = 60
    y = (rng.random(n) < 0.3).astype(np.int64)
    x = (rng.standard_normal((n, 4)) + y[:, None]).astype(np.float32)
    (root / "gad").mkdir(parents=True)
    edges = rng.integers(0, n, size=(3 * n, 2)).astype(np.int64)
    np.savez(root / "gad" / "reddit.npz", node_features=x, node_labels=y, edges=edges)
    return root


def test_the_top_level_name_is_the_tasks_one():
    assert energy_transformer.load_model is load_model


def test_each_tasks_run_gives_back_its_selected_model_and_a_whole_run_names_its_models(
    tmp_path, one_thread
):
    image = tmp_path / "image"
    data = write_fake_mnist(tmp_path / "mnist", train=24, test=4)
    args = ["train", "image", "--data", str(data), "--out", str(image), "--subset", "16"]
    args += ["--val-size", "8", "--epochs", "1", "--batch-size", "8", "--steps", "1"]
    assert main([*args, "--no-progress", "--device", "cpu"]) == 0
    graph = tmp_path / "graph"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(write_toy(tmp_path / "tu"))]
    args += ["--model", "mlp", "--folds", "2", "--epochs", "1", "--out", str(graph)]
    assert main([*args, "--no-progress"]) == 0
    anomaly = tmp_path / "anomaly"
    args = ["train", "anomaly", "--dataset", "reddit", "--data", str(_gad_root(tmp_path / "g"))]
    args += ["--out", str(anomaly), "--epochs", "2", "--hidden", "8", "--heads", "1"]
    args += ["--head-dim", "4", "--model", "et,gcn", "--seeds", "1", "--no-progress"]
    assert main(args) == 0

    cases = {
        image: "ImageEnergyTransformer",
        graph / "fold-01": "SumMLP",
        anomaly / "et" / "seed0": "NodeEnergyTransformer",
        anomaly / "gcn" / "seed0": "GCN",
    }
    for run, kind in cases.items():
        model = load_model(run)
        assert type(model).__name__ == kind and not model.training
        assert _same_weights(model, run / "best.safetensors")
        # A checkpoint file: that file's weights.
        assert _same_weights(load_model(run / "last.safetensors"), run / "last.safetensors")

    with pytest.raises(
        ValueError, match=r"holds 2 models \(fold-00, fold-01\), each in a folder of its own: load"
    ):
        load_model(graph)
    with pytest.raises(
        ValueError, match=r"holds 2 models \(et/seed0, gcn/seed0\), each in a folder"
    ):
        load_model(anomaly)
    with pytest.raises(ValueError, match="holds a run of task 'image'; this command needs task"):
        load_model(image, task="graph")


def test_what_holds_no_model_of_its_own_is_refused_with_a_reason(tmp_path):
    selection = tmp_path / "sel"
    selection.mkdir()
    record = {"task": "graph", "extra": {"selected_from": {"a": "runs/a", "b": "runs/b"}}}
    (selection / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"is a selection among runs \(a, b\) and holds no"):
        load_model(selection)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text('{"task": "image"}')
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        load_model(empty)
    (empty / "config.json").write_text('{"task": "music"}')
    with pytest.raises(ValueError, match=r"names no known task \('music'; \['image'"):
        load_model(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_every_task_module_gives_the_functions_the_cli_and_load_model_call():
    from energy_transformer.tasks import TASKS, task_module

    for name in TASKS:
        module = task_module(name)
        for function in ("add_train_arguments", "train", "evaluate", "build_model"):
            assert callable(getattr(module, function, None)), f"{name}: no {function}"


# Hand-made runs: a tiny image model's config.json and weights files, no training.
TINY = {"arch": "et", "image_size": 8, "patch_size": 2, "channels": 1, "dim": 16, "heads": 2,
        "head_dim": 4, "memories": 32, "steps": 1, "selected": 9, "masked": 6, "mean": [0.5],
        "std": [0.25]}  # fmt: skip


def _image_run(folder, **weights):
    """A run folder of task image holding ``name.safetensors`` for each ``name=seed``: the
    weights of the tiny model initialised with that seed."""
    from energy_transformer.tasks.image import build_model

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": "image", "model": TINY}))
    for name, seed in weights.items():
        torch.manual_seed(seed)
        save_checkpoint(folder / f"{name}.safetensors", build_model(TINY).state_dict())
    return folder


def test_a_folder_gives_its_selected_weights_and_without_a_selection_its_last(tmp_path):
    run = _image_run(tmp_path / "run", best=1, last=2)
    assert _same_weights(load_model(run), run / "best.safetensors")
    assert not _same_weights(load_model(run), run / "last.safetensors")  # they differ
    (run / "best.safetensors").unlink()  # no epoch selected (no validation): the last
    assert _same_weights(load_model(run), run / "last.safetensors")


def test_weights_that_leave_part_of_the_model_untrained_are_refused(tmp_path):
    run = _image_run(tmp_path / "run", last=1)
    state = load_checkpoint(run / "last.safetensors").model_state
    del state["block.hopfield.xi"]  # the memories
    save_checkpoint(run / "last.safetensors", state)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model(run)


def test_the_model_goes_to_the_device_asked_for(tmp_path):
    # "meta" is a device every machine has: the CPU cannot tell a device ignored.
    model = load_model(_image_run(tmp_path / "run", last=1), device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize(
    ("models", "shown"),
    [(1, "1 model (m0)"), (3, "3 models (m0, m1, m2)"), (4, "4 models (m0, m1, m2, ...)")],
)  # fmt: skip
def test_a_folder_of_models_in_folders_names_the_first_three(tmp_path, models, shown):
    # One model in a folder of its own (an anomaly run of one model and seed) read "holds 1
    # models (et/seed0), not one".
    run = tmp_path / "run"
    for i in range(models):
        (run / f"m{i}").mkdir(parents=True)
        (run / f"m{i}" / "last.safetensors").write_bytes(b"")  # listed, never read
    (run / "config.json").write_text('{"task": "graph"}')
    with pytest.raises(ValueError, match=re.escape(f"holds {shown}, each in a folder of its")):
        load_model(run)


@pytest.mark.parametrize("config", [{"task": "image"}, {}])
def test_load_run_refuses_a_run_not_of_its_task_before_looking_for_weights(tmp_path, config):
    # A config.json of another task, or of none (an old or hand-written one), is no graph run;
    # the folder holds no weights at all: the task is what is refused.
    (tmp_path / "config.json").write_text(json.dumps(config))
    task = repr(config.get("task"))
    with pytest.raises(ValueError, match=f"holds a run of task {task}; this command needs task"):
        load_run(tmp_path, task="graph")
    with pytest.raises(ValueError, match=f"holds a run of task {task}; this command needs task"):
        check_run_task(tmp_path, config, "graph")
    check_run_task(tmp_path, config, None)  # any task


@pytest.mark.parametrize(
    ("task", "config", "kind"),
    [
        ("image", TINY, "ImageEnergyTransformer"),
        ("image", {k: v for k, v in TINY.items() if k != "arch"}, "ImageEnergyTransformer"),
        ("graph", {"name": "mlp", "in_features": 3, "num_classes": 2, "hidden": 4}, "SumMLP"),
        ("anomaly", {"name": "et", "in_dim": 3, "dim": 8, "heads": 2, "head_dim": 4},
         "NodeEnergyTransformer"),
    ],
)  # fmt: skip
def test_build_model_rebuilds_a_record_and_leaves_it_as_it_was(task, config, kind):
    # A config.json from before the image task had other archs names none: it is ET. The
    # record is the caller's: building from it twice gives the same model twice.
    from energy_transformer.tasks import task_module

    given = copy.deepcopy(config)
    for _ in range(2):
        assert type(task_module(task).build_model(config)).__name__ == kind
    assert config == given
