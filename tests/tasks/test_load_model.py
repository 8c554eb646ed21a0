"""`energy_transformer.load_model`: one call gives back the trained model of any task's run."""

import json

import numpy as np
import pytest
import torch
from graph_fixtures import write_toy
from image_fixtures import write_fake_mnist

import energy_transformer
from energy_transformer.cli import main
from energy_transformer.tasks import load_model
from energy_transformer.train import load_checkpoint


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

    with pytest.raises(ValueError, match=r"holds 2 models \(fold-00, fold-01\), not one: load"):
        load_model(graph)
    with pytest.raises(ValueError, match=r"holds 2 models \(et/seed0, gcn/seed0\), not one"):
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
    with pytest.raises(ValueError, match=r"names no known task \('music'\)"):
        load_model(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_every_task_module_gives_the_functions_the_cli_and_load_model_call():
    from energy_transformer.tasks import TASKS, task_module

    for name in TASKS:
        module = task_module(name)
        for function in ("add_train_arguments", "train", "evaluate", "build_model"):
            assert callable(getattr(module, function, None)), f"{name}: no {function}"
