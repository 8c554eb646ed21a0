"""`et train graph` / `et eval` end to end on a tiny TU dataset."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from graph_fixtures import ring_or_star, write_toy
from launch import torchrun
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader.dataloader import Collater

from energy_transformer.cli import main
from energy_transformer.data.tu import write_tu
from energy_transformer.tasks import load_model
from energy_transformer.tasks.graph import (
    SizeBuckets,
    accuracy,
    cross_validate,
    eval_loader,
    score,
    train_loader,
)
from energy_transformer.train import load_checkpoint


@pytest.fixture
def toy_root(tmp_path) -> Path:
    return write_toy(tmp_path / "data")


PAPER_SPEC_VARIANTS = ["--exclude-self", "--learn-beta", "--hopfield", "softmax", "--alpha", "0.05"]
RELEASED_STYLE = ["--adjacency", "released", "--blocks", "2", "--steps", "1", "--noise-std", "0.02"]


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("et", []),
        ("et", RELEASED_STYLE),
        ("et", ["--adjacency", "soft"]),
        ("et", ["--max-degree", "4", "--head", "mlp", "--readout", "cls+sum", "--dropout", "0.5"]),
        ("et", PAPER_SPEC_VARIANTS),
        ("gin", []),
        ("gin", ["--weight-decay", "0.01"]),
        ("gin", ["--ema", "0.9"]),
        ("mlp", []),
        ("wl", []),
    ],
)
def test_train_and_eval_end_to_end(toy_root, tmp_path, model, extra, one_thread, capsys):
    out = tmp_path / f"run-{model}"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", model]
    args += ["--folds", "2", "--epochs", "2", "--batch-size", "4", "--out", str(out), *extra]
    assert main([*args, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "cv" and summary["folds_run"] == 2 and summary["model"] == model
    assert len(summary["folds"]) == 2 and 0 <= summary["test_acc_mean"] <= 1
    table = (out / "results.md").read_text()
    assert f"| TOY | {model} |" in table and "2 of 2 folds" in table
    for fold in ("fold-00", "fold-01"):
        split = json.loads((out / fold / "split.json").read_text())
        assert len(split["test"]) == 12 and not set(split["test"]) & set(split["train"])
        if model != "wl":
            assert (out / fold / "best.safetensors").is_file()
            assert (out / fold / "metrics.csv").is_file()
    if model == "et" and not extra:
        assert (out / "energy_descent.png").stat().st_size > 0
    if model == "et":  # every adjacency gives its attention picture
        assert (out / "attention.png").stat().st_size > 0
        assert f"{out / 'attention.png'}" in capsys.readouterr().out.split("pictures: ")[1]
    if extra:  # the options reach the model and its saved config (et eval rebuilds it below)
        config = json.loads((out / "fold-00" / "config.json").read_text())["model"]
    if extra == ["--adjacency", "soft"]:
        assert config["adjacency"] == "soft"
    if "--readout" in extra:
        assert config["max_degree"] == 4 and config["head"] == "mlp"
        assert config["readout"] == "cls+sum" and config["dropout"] == 0.5
    if extra == ["--weight-decay", "0.01"]:  # the run's record and the fold's optimiser
        assert json.loads((out / "config.json").read_text())["extra"]["train"]["weight_decay"] == (
            0.01
        )
        fold_train = json.loads((out / "fold-00" / "config.json").read_text())["train"]
        assert fold_train["weight_decay"] == 0.01
    if extra == ["--ema", "0.9"]:  # the average is what was selected, saved and re-scored below
        assert json.loads((out / "config.json").read_text())["extra"]["train"]["ema_decay"] == 0.9
        fold_train = json.loads((out / "fold-00" / "config.json").read_text())["train"]
        assert fold_train["ema_decay"] == 0.9
        last = load_checkpoint(out / "fold-00" / "last.safetensors")
        assert last.ema_state.keys() == last.model_state.keys()
        best = load_checkpoint(out / "fold-00" / "best.safetensors")
        assert best.ema_state is None and best.model_state.keys() == last.model_state.keys()
    if extra == PAPER_SPEC_VARIANTS:
        assert config["exclude_self"] is True and config["learn_beta"] is True
        assert config["hopfield"] == "softmax" and config["alpha"] == 0.05
    if extra == RELEASED_STYLE:
        assert config["adjacency"] == "released" and config["blocks"] == 2
        assert config["steps"] == 1 and config["noise_std"] == 0.02
        assert (out / "energy_descent_block1.png").stat().st_size > 0  # numbered as titled
        assert (out / "energy_descent_block2.png").is_file()
        assert not (out / "energy_descent_block0.png").exists()
    capsys.readouterr()
    # et eval re-scores the saved checkpoints on the saved test splits: the same accuracies.
    assert main(["eval", str(out), "--data", str(toy_root)]) == 0
    report = json.loads((out / "eval.json").read_text())
    saved = {f["fold"]: f["test_acc"] for f in summary["folds"]}
    assert {int(k): v for k, v in report["folds"].items()} == pytest.approx(saved)
    printed = capsys.readouterr().out
    assert "| TOY |" in printed and f"metrics: {out / 'eval.json'}" in printed
    assert report["rescored"] == (model != "wl")
    if model != "wl":  # each fold's line names the weights it scored: the selected epoch's
        assert f"fold-01: test acc {100 * saved[1]:.2f}% (best.safetensors)" in printed
    if model == "wl":  # no weights: the recorded accuracies, said so; a fold folder works too
        assert "not re-scored" in printed
        assert main(["eval", str(out / "fold-01"), "--data", str(toy_root)]) == 0
        report = json.loads((out / "fold-01" / "eval.json").read_text())
        assert report["folds"] == {"1": pytest.approx(saved[1])}
    if model == "mlp":  # a fold's checkpoint file: that file's weights, that fold's split
        best = out / "fold-01" / "best.safetensors"
        result = out / "fold-01" / "result.json"
        recorded = json.loads(result.read_text())
        result.write_text(json.dumps({**recorded, "val_acc": 0.123}))
        assert main(["eval", str(best), "--data", str(toy_root), "--out", str(tmp_path / "e")]) == 0
        report = json.loads((tmp_path / "e" / "eval.json").read_text())
        assert report["folds"] == {"1": pytest.approx(saved[1])}
        # Val accuracy of those weights, scored again (not the recorded one, of the selection).
        assert report["val_folds"] == {"1": pytest.approx(recorded["val_acc"])}


class FixedLogits(nn.Module):
    """Returns the logits row ``table[gid]`` of each graph, whatever the batching; records the
    mode it was called in."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)
        self.modes: list[bool] = []

    def forward(self, batch):
        self.modes.append(self.training)
        return self.table[batch.gid]


def labelled_graphs(labels: list[int]) -> list[Data]:
    # Different sizes: eval_loader reorders them by size, the stub still finds each one's row.
    graphs = [ring_or_star(8 - i, star=False) for i in range(len(labels))]
    for i, (g, y) in enumerate(zip(graphs, labels, strict=True)):
        g.y, g.gid = torch.tensor([y]), torch.tensor([i])
    return graphs


def test_score_is_accuracy_mean_cross_entropy_and_the_selection_value():
    ln3 = math.log(3.0)
    # (0, ln 3) predicts class 1 with probability 3/4; (ln 3, 0) class 0 with 3/4.
    table = [[0.0, ln3], [0.0, ln3], [ln3, 0.0], [0.0, ln3], [ln3, 0.0]]
    labels = [1, 1, 0, 0, 1]  # right, right, right, wrong, wrong: 3 of 5
    model = FixedLogits(table).train()
    loader = eval_loader(labelled_graphs(labels), range(5), batch_size=2)  # batches of 2, 2, 1
    result = score(model, loader, torch.device("cpu"))
    loss = (3 * math.log(4 / 3) + 2 * math.log(4.0)) / 5  # -log 3/4 three times, -log 1/4 twice
    assert result["acc"] == pytest.approx(3 / 5, abs=1e-12)
    assert result["loss"] == pytest.approx(loss, rel=1e-6)
    assert result["select"] == pytest.approx(3 / 5 - 1e-4 * loss, rel=1e-9)
    assert model.modes == [False] * 3 and model.training  # scored in eval mode, mode restored
    assert accuracy(model, loader, torch.device("cpu")) == pytest.approx(3 / 5, abs=1e-12)
    # Confidently wrong on the three graphs of class 1: a mean loss of 3 * 30 / 5 = 18 enters
    # the selection capped at 10.
    wrong = FixedLogits([[30.0, 0.0]] * 5).eval()
    capped = score(wrong, loader, torch.device("cpu"))
    assert capped["acc"] == pytest.approx(2 / 5) and capped["loss"] == pytest.approx(18.0)
    assert capped["select"] == pytest.approx(2 / 5 - 1e-4 * 10.0, rel=1e-9)
    assert not wrong.training


@pytest.mark.parametrize(("model", "epochs"), [("wl", []), ("gin", ["--epochs", "30"])])
def test_models_that_see_structure_separate_rings_from_stars(
    toy_root, tmp_path, model, epochs, one_thread, capsys
):
    # Rings and stars of the same sizes with identical node labels: the WL kernel and GIN see
    # the degrees, so every test graph of both folds is right (and et eval agrees).
    out = tmp_path / f"run-{model}"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", model]
    args += ["--folds", "2", "--batch-size", "4", "--out", str(out), "--no-progress", *epochs]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [f["test_acc"] for f in summary["folds"]] == [1.0, 1.0]
    assert summary["test_acc_mean"] == 1.0
    assert main(["eval", str(out), "--data", str(toy_root)]) == 0
    assert json.loads((out / "eval.json").read_text())["folds"] == {"0": 1.0, "1": 1.0}


def test_resume_skips_finished_folds(toy_root, tmp_path, one_thread):
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "mlp"]
    args += ["--folds", "2", "--epochs", "1", "--out", str(out), "--no-progress"]
    main(args)
    first = (out / "fold-00" / "result.json").read_text()
    (out / "fold-01" / "result.json").unlink()
    main([*args, "--resume"])
    assert (out / "fold-00" / "result.json").read_text() == first
    assert (out / "fold-01" / "result.json").is_file()


def test_train_on_all_protocol_is_labelled(toy_root, tmp_path, one_thread, capsys):
    out = tmp_path / "run"
    main(
        ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "wl"]
        + ["--protocol", "train-on-all", "--out", str(out), "--no-progress"]
    )
    printed = capsys.readouterr().out
    assert "NOT a generalisation measure" in printed
    assert "NOT a generalisation measure" in (out / "results.md").read_text()
    assert json.loads((out / "summary.json").read_text())["folds"][0]["fold"] == 0


@pytest.mark.parametrize(
    "option", [["--folds", "5"], ["--max-folds", "1"], ["--val-fraction", "0.2"]]
)
def test_train_on_all_refuses_the_options_it_would_ignore(toy_root, tmp_path, option, capsys):
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "wl"]
    args += ["--protocol", "train-on-all", "--out", str(tmp_path / "run"), *option]
    assert main(args) == 2
    assert f"{option[0]}: not used by --protocol train-on-all" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_size_buckets_cover_every_graph_once():
    sizes = [5, 50, 7, 48, 6, 49, 8, 47]
    torch.manual_seed(0)
    buckets = SizeBuckets(sizes, batch_size=2, pool=4)
    batches = list(buckets)
    assert len(batches) == len(buckets) == 4
    assert sorted(i for b in batches for i in b) == list(range(8))
    # Sorted within the pool (here: all graphs): a batch pairs graphs of similar size.
    assert all(abs(sizes[b[0]] - sizes[b[1]]) == 1 for b in batches)
    assert len(SizeBuckets(sizes, batch_size=3)) == 3


@pytest.mark.parametrize("model", ["et", "gin", "mlp"])
def test_fold_models_standardise_features_with_training_graphs_only(tmp_path, model, one_thread):
    graphs = [ring_or_star(4 + i % 5, star=i % 2 == 1) for i in range(24)]
    for i, g in enumerate(graphs):  # one continuous attribute on a large scale
        g.x = torch.full((g.num_nodes, 1), 100.0 * i) + torch.arange(g.num_nodes)[:, None]
    write_tu(tmp_path / "data" / "TUDataset", "ATTR", graphs, attributes=True)
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "ATTR", "--data", str(tmp_path / "data")]
    args += ["--model", model, "--folds", "2", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    from energy_transformer.tasks.graph import prepare_dataset

    dataset = prepare_dataset("ATTR", tmp_path / "data", model)
    for fold in ("fold-00", "fold-01"):
        train = json.loads((out / fold / "split.json").read_text())["train"]
        x = torch.cat([dataset.graphs[i].x for i in train])
        attr = x.shape[1] - 1  # the attribute column follows the one-hot labels
        scaler = load_model(out / fold).scaler
        assert scaler.mean[attr] == pytest.approx(float(x[:, attr].mean()), rel=1e-5)
        assert scaler.std[attr] == pytest.approx(float(x[:, attr].std(correction=0)), rel=1e-5)
        onehot = [i for i in range(x.shape[1]) if i != attr]
        assert (scaler.mean[onehot] == 0).all() and (scaler.std[onehot] == 1).all()


def test_resume_refuses_a_folder_run_with_other_settings(toy_root, tmp_path, one_thread):
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "mlp"]
    args += ["--folds", "2", "--out", str(out), "--no-progress"]
    main([*args, "--epochs", "1"])
    # Finished folds are read back on resume: a 1-epoch fold must not pass for a 3-epoch one.
    run = {"folds": 2, "root": toy_root, "out": out, "resume": True}
    for changes, message in [
        ({"epochs": 3}, "train.epochs 1 -> 3"),
        ({"epochs": 1, "weight_decay": 0.5}, "train.weight_decay 0.05 -> 0.5"),
        ({"epochs": 1, "seed": 3}, "seed 0 -> 3"),  # other splits: test folds would overlap
        ({"epochs": 1, "val_fraction": 0.3}, "val_fraction 0.1 -> 0.3"),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"other settings ({message})")):
            cross_validate("TOY", "mlp", **run, **changes)
    assert json.loads((out / "config.json").read_text())["extra"]["train"]["epochs"] == 1
    moved = tmp_path / "elsewhere"  # the same run read from another data path resumes
    shutil.copytree(toy_root, moved)
    summary = cross_validate("TOY", "mlp", folds=2, epochs=1, root=moved, out=out, resume=True)
    assert len(summary.folds) == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--epochs", "epochs must be >= 1, got 0"),
        ("--batch-size", "batch_size must be >= 1, got 0"),
    ],
)
def test_a_zero_budget_is_an_error_not_the_presets(
    toy_root, tmp_path, capsys, monkeypatch, option, message
):
    # 0 once meant "the preset's value": a 0-epoch request trained for 30 epochs.
    monkeypatch.delenv("ET_DEBUG", raising=False)
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--folds", "2"]
    assert main([*args, "--out", str(tmp_path / "run"), option, "0"]) == 2
    assert f"et: error: {message}" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_runs_cross_validation_and_one_process_reports(toy_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = torchrun("-m", "energy_transformer.cli", "train", "graph", "--dataset", "TOY")
    cmd += ["--data", str(toy_root), "--folds", "2", "--epochs", "2", "--batch-size", "4"]
    cmd += ["--out", str(out), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1 and proc.stdout.count("| TOY | et |") == 1
    assert len(json.loads((out / "summary.json").read_text())["folds"]) == 2
    assert len((out / "fold-00" / "metrics.csv").read_text().splitlines()) == 3  # header, 2 epochs


def test_under_torchrun_padded_attention_gets_plain_shares(monkeypatch):
    # Size buckets are not split across processes; padded (soft, released) attention still
    # trains, on shares of shuffled batches.
    from energy_transformer.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "init_distributed", lambda device: True)
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    graphs = [ring_or_star(4 + i % 3, bool(i % 2)) for i in range(8)]
    shares = list(train_loader(graphs, 4, buckets=True, device="cpu"))
    assert [int(b.num_graphs) for b in shares] == [2, 2]


def test_under_torchrun_each_process_gets_its_share_of_every_graph_batch(monkeypatch):
    from energy_transformer.train import distributed, make_loader

    graphs = [ring_or_star(4 + i % 3, bool(i % 2)) for i in range(12)]
    for i, g in enumerate(graphs):
        g.gid = torch.tensor([i])
    whole = make_loader(graphs, 4, seed=5, collate_fn=Collater(graphs), device="cpu")
    expected = [sorted(b.gid.tolist()) for b in whole]  # one process, global batch 4

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "init_distributed", lambda device: True)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (rank, 2))
        shares.append([b.gid.tolist() for b in train_loader(graphs, 4, seed=5, device="cpu")])
    assert all(len(b) == 2 for share in shares for b in share)
    assert [sorted(a + b) for a, b in zip(*shares, strict=True)] == expected
    assert not set(shares[0][0]) & set(shares[1][0])


@pytest.mark.parametrize("model", ["mlp", "wl"])  # the WL kernel leaves results, no weights
def test_training_into_a_trained_run_folder_needs_resume(
    toy_root, tmp_path, capsys, monkeypatch, model
):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", model]
    args += ["--folds", "2", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]
    main(args)
    assert main(args) == 2
    assert "run already holds a trained run: continue it with --resume" in capsys.readouterr().err
    main([*args, "--resume"])  # finished folds are read back


def test_every_training_option_reaches_the_folds_and_the_records(
    toy_root, tmp_path, one_thread, monkeypatch
):
    # Each option set away from its default: the split, the trainer, the batches, the graphs
    # and the records must all show the user's value, not the preset's or the default.
    from energy_transformer.protocols.kfold import stratified_folds
    from energy_transformer.tasks import graph

    batches, plotted = [], []
    real_loader, real_plot = graph.train_loader, graph.plot_energy

    def spy_loader(graphs, batch_size, *args, **kwargs):
        batches.append(([g.num_nodes for g in graphs], batch_size))
        return real_loader(graphs, batch_size, *args, **kwargs)

    def spy_plot(model, graphs, out, what):
        plotted.append((model, [(g.num_nodes, int(g.y)) for g in graphs]))
        return real_plot(model, graphs, out, what)

    monkeypatch.setattr(graph, "train_loader", spy_loader)
    monkeypatch.setattr(graph, "plot_energy", spy_plot)
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "et"]
    args += ["--preset", "paper", "--folds", "3", "--max-folds", "2", "--epochs", "2"]
    args += ["--batch-size", "5", "--lr", "0.0123", "--seed", "7", "--val-fraction", "0.25"]
    args += ["--max-nodes", "6", "--out", str(out), "--no-progress"]
    assert main(args) == 0

    labels = graph.prepare_dataset("TOY", toy_root, "mlp").labels.numpy()
    expected = stratified_folds(labels, 3, 0.25, 7)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["seed"], summary["val_fraction"], summary["k"]) == (7, 0.25, 3)
    assert summary["folds_run"] == 2 and summary["max_nodes"] == 6
    assert "| TOY | et |" in (out / "results.md").read_text()
    assert "2 of 3 folds, 2 epochs" in (out / "results.md").read_text()
    for i in (0, 1):
        fold = out / f"fold-{i:02d}"
        split = json.loads((fold / "split.json").read_text())
        assert split == expected[i].to_json()  # seeded by --seed, --val-fraction carved out
        config = json.loads((fold / "config.json").read_text())
        train = config["train"]
        assert (train["epochs"], train["lr"], train["seed"]) == (2, 0.0123, 7)
        assert config["model"]["dim"] == 128  # the paper preset's, not cpu's 64
        assert config["extra"]["preset"] == "paper" and config["extra"]["seed"] == 7
        assert len((fold / "metrics.csv").read_text().splitlines()) == 3  # header, 2 epochs
        sizes, batch_size = batches[i]
        assert batch_size == 5 and len(sizes) == len(split["train"])
        assert max(sizes) == 6  # graphs of 7 and 8 nodes cut to 6
    # et eval rebuilds the same cut graphs
    dataset, _ = graph.run_dataset(out, None)
    assert max(g.num_nodes for g in dataset.graphs) == 6
    # The energy figure: fold 0's selected model on fold 0's test graphs (train and eval).
    main(["eval", str(out), "--data", str(toy_root)])
    test = expected[0].test[:32]
    shown = [(dataset.graphs[i].num_nodes, int(dataset.graphs[i].y)) for i in test]
    fold0 = load_model(out / "fold-00").state_dict()
    assert len(plotted) == 2
    for model, graphs in plotted:
        assert graphs == shown
        state = model.state_dict()
        assert all(torch.equal(state[k].cpu(), v) for k, v in fold0.items())


def test_eval_of_a_checkpoint_file_scores_that_files_weights(tmp_path, one_thread):
    # Two classes in proportion 1:2, so that a model that always answers one class scores a
    # known accuracy (its class's share of the split) that no other weights would be bound to.
    from energy_transformer.tasks import graph
    from energy_transformer.train.checkpoint import save_checkpoint

    write_tu(
        tmp_path / "data" / "TUDataset",
        "LOPSIDED",
        [ring_or_star(4 + i % 5, i % 3 == 0) for i in range(24)],
    )
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "LOPSIDED", "--data", str(tmp_path / "data")]
    args += ["--model", "mlp", "--folds", "2", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    labels = graph.prepare_dataset("LOPSIDED", tmp_path / "data", "mlp").labels.numpy()
    split = json.loads((out / "fold-01" / "split.json").read_text())
    state = load_model(out / "fold-01").state_dict()
    for answer in (0, 1):
        constant = dict(state)
        constant["mlp.3.weight"] = torch.zeros_like(state["mlp.3.weight"])
        constant["mlp.3.bias"] = torch.tensor([5.0, -5.0] if answer == 0 else [-5.0, 5.0])
        weights = out / "fold-01" / f"always-{answer}.safetensors"
        save_checkpoint(weights, constant)
        dest = tmp_path / f"eval-{answer}"
        assert main(["eval", str(weights), "--out", str(dest)]) == 0
        report = json.loads((dest / "eval.json").read_text())
        share = {k: float((labels[split[k]] == answer).mean()) for k in ("test", "val")}
        assert report["folds"] == {"1": pytest.approx(share["test"])}
        assert report["val_folds"] == {"1": pytest.approx(share["val"])}
    assert share["test"] != pytest.approx(0.5)  # the two constant models score differently


def test_results_table_shows_validation_and_test_accuracy_of_each_fold():
    from energy_transformer.protocols.kfold import FoldResult, summarize
    from energy_transformer.tasks.graph import results_table

    folds = [FoldResult(0, 0.5, 0.9, 1.0, 2.0, {}), FoldResult(1, 0.7, 0.8, 1.0, 4.0, {})]
    table = results_table([{"dataset": "D", "model": "et", "summary": summarize(folds)}])
    row = table.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["D", "et"]
    assert cells[2].startswith("60.0") and "10.0" in cells[2]  # test: mean +- std of 50, 70
    assert cells[3] == "85.0" and cells[4] == "3.0"  # val mean; seconds per fold
    assert "NOT a generalisation" not in table


def test_eval_of_a_train_on_all_run_keeps_its_label(toy_root, tmp_path, one_thread, capsys):
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "wl"]
    assert main([*args, "--protocol", "train-on-all", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "train-on-all"
    split = json.loads((out / "fold-00" / "split.json").read_text())
    assert sorted(split["test"]) == sorted(split["train"]) == list(range(24))
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["protocol"] == "train-on-all" and "NOT a generalisation" in report["note"]
    assert "NOT a generalisation measure" in capsys.readouterr().out


def test_a_pe_dim_override_reaches_the_data_and_the_model(toy_root, tmp_path, one_thread):
    from energy_transformer.tasks import graph

    out = tmp_path / "run"
    summary = cross_validate(
        "TOY", "et", folds=2, max_folds=1, epochs=1, root=toy_root, out=out, progress=False,
        overrides={"pe_dim": 4, "blocks": 1},
    )  # fmt: skip
    assert len(summary.folds) == 1
    config = json.loads((out / "config.json").read_text())["extra"]["model_config"]
    assert config["pe_dim"] == 4
    dataset, _ = graph.run_dataset(out, None)
    assert dataset.graphs[0].pe.shape[1] == 4


def test_a_folds_scores_are_those_of_the_selected_weights(tmp_path, monkeypatch):
    # A stand-in trainer leaves the model answering class 1 (its last weights) and selects
    # weights answering class 0: test and train accuracy must be the selected weights'.
    from types import SimpleNamespace

    from energy_transformer.protocols.kfold import stratified_folds
    from energy_transformer.tasks import graph

    def always(state, answer):
        state = dict(state)
        state["mlp.3.weight"] = torch.zeros_like(state["mlp.3.weight"])
        state["mlp.3.bias"] = torch.tensor([5.0, -5.0] if answer == 0 else [-5.0, 5.0])
        return state

    class SelectsClassZero:
        def __init__(self, model, *args, **kwargs):
            self.model = model

        def fit(self, loader, evaluate, select, resume):
            best = always(self.model.state_dict(), 0)
            self.model.load_state_dict(always(self.model.state_dict(), 1))
            return SimpleNamespace(
                best_state=best, best_metrics={"val_acc": 0.25}, best_epoch=1, seconds=1.0
            )

    monkeypatch.setattr(graph, "Trainer", SelectsClassZero)
    graphs = [ring_or_star(4 + i % 5, i % 3 == 0) for i in range(24)]
    write_tu(tmp_path / "data" / "TUDataset", "LOPSIDED", graphs)
    summary = cross_validate("LOPSIDED", "mlp", folds=2, root=tmp_path / "data", progress=False)
    labels = graph.prepare_dataset("LOPSIDED", tmp_path / "data", "mlp").labels.numpy()
    for fold, result in zip(stratified_folds(labels, 2), summary.folds, strict=True):
        assert result.test_acc == pytest.approx(float((labels[fold.test] == 0).mean()))
        assert result.train_acc == pytest.approx(float((labels[fold.train] == 0).mean()))
        assert result.val_acc == 0.25  # the selected epoch's, as the trainer reported it
    assert summary.folds[0].test_acc != pytest.approx(0.5)


@pytest.mark.parametrize("model", ["gin", "mlp", "wl"])
def test_a_baseline_names_the_energy_transformer_options_it_does_not_use(
    toy_root, tmp_path, model, one_thread, capsys
):
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", model]
    args += ["--out", str(tmp_path / "run"), "--blocks", "2", "--no-learn-beta"]
    assert main([*args, "--folds", "2", "--max-folds", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        f"note: --blocks, --learn-beta not used: options of the Energy Transformer, not of {model}"
        in printed
    )


class RecordingTrainer:
    """Stands in for the Trainer: records each fold's model as built (its initial weights), the
    selection key, and the validation score of a model answering class 0; trains nothing."""

    folds: list[dict] = []

    def __init__(self, model, loss_fn, config, **kwargs):
        self.model = model
        RecordingTrainer.folds.append(
            {"initial": {k: v.clone() for k, v in model.state_dict().items()}, **kwargs}
        )

    def fit(self, loader, evaluate, select, resume):
        from types import SimpleNamespace

        state = dict(self.model.state_dict())
        if "mlp.3.bias" in state:  # SumMLP: the last layer answers class 0 whatever the input
            state["mlp.3.weight"] = torch.zeros_like(state["mlp.3.weight"])
            state["mlp.3.bias"] = torch.tensor([5.0, -5.0])
            self.model.load_state_dict(state)
        metrics = evaluate(self.model)
        RecordingTrainer.folds[-1].update(select=select, metrics=metrics)
        return SimpleNamespace(
            best_state=self.model.state_dict(),
            best_metrics={"val_acc": metrics["val_acc"]},
            best_epoch=2,
            seconds=1.0,
        )


@pytest.fixture
def recording(monkeypatch):
    from energy_transformer.tasks import graph

    RecordingTrainer.folds = []
    monkeypatch.setattr(graph, "Trainer", RecordingTrainer)
    return RecordingTrainer.folds


def lopsided_root(tmp_path) -> Path:
    graphs = [ring_or_star(4 + i % 5, i % 3 == 0) for i in range(24)]  # 8 stars, 16 rings
    write_tu(tmp_path / "data" / "TUDataset", "LOPSIDED", graphs)
    return tmp_path / "data"


def test_each_fold_starts_from_weights_seeded_by_seed_plus_fold_index(
    toy_root, recording, one_thread
):
    # Per-fold initialisation: fold i's model is the one built right after
    # torch.manual_seed(seed + i), so the folds start from different weights and a run is
    # reproducible fold by fold.
    from energy_transformer.models.graph_baselines import SumMLP
    from energy_transformer.tasks import graph

    cross_validate("TOY", "mlp", folds=3, seed=7, root=toy_root, progress=False)
    dataset = graph.prepare_dataset("TOY", toy_root, "mlp")
    config = graph.model_config("mlp", dataset.num_features, dataset.num_classes, "cpu")
    assert len(recording) == 3
    for i, fold in enumerate(recording):
        torch.manual_seed(7 + i)
        expected = SumMLP(**config).state_dict()
        for name, value in expected.items():
            if not name.startswith("scaler."):  # the scaler is fitted on the fold afterwards
                assert torch.equal(fold["initial"][name], value), (i, name)
        assert fold["extra_config"]["fold"] == i
    first, second = (f["initial"]["mlp.0.weight"] for f in recording[:2])
    assert not torch.equal(first, second)


def test_epochs_are_selected_on_the_validation_split(tmp_path, recording, one_thread):
    # A model answering class 0 scores the share of class 0 in what it is evaluated on: that of
    # the fold's validation graphs (not its test graphs), and the key is the selection score.
    from energy_transformer.protocols.kfold import stratified_folds
    from energy_transformer.tasks import graph

    root = lopsided_root(tmp_path)
    summary = cross_validate("LOPSIDED", "mlp", folds=2, epochs=5, root=root, progress=False)
    labels = graph.prepare_dataset("LOPSIDED", root, "mlp").labels.numpy()
    for fold, record, result in zip(
        stratified_folds(labels, 2), recording, summary.folds, strict=True
    ):
        val_share = float((labels[fold.val] == 0).mean())
        assert val_share != pytest.approx(float((labels[fold.test] == 0).mean()))
        assert record["select"] == "val_select"
        assert record["metrics"]["val_acc"] == pytest.approx(val_share)
        assert set(record["metrics"]) == {"val_acc", "val_loss", "val_select"}
        assert result.val_acc == pytest.approx(val_share)
        assert result.extra == {"best_epoch": 2, "epochs": 5}  # the trainer's selected epoch


@pytest.mark.parametrize(
    ("model", "overrides", "buckets"),
    [
        ("mlp", None, False),
        ("et", None, False),  # hard adjacency on edge lists: no padding
        ("et", {"adjacency": "soft"}, True),
        ("et", {"attention": "dense"}, True),
    ],
)
def test_training_batches_are_seeded_per_fold_and_bucketed_only_when_padded(
    toy_root, recording, monkeypatch, one_thread, model, overrides, buckets
):
    from energy_transformer.tasks import graph

    calls = []
    real = graph.train_loader

    def spy(graphs, batch_size, padded, **kwargs):
        calls.append((padded, kwargs["seed"]))
        return real(graphs, batch_size, padded, **kwargs)

    monkeypatch.setattr(graph, "train_loader", spy)
    overrides = {**(overrides or {}), "blocks": 1} if model == "et" else overrides
    cross_validate(
        "TOY", model, folds=2, seed=3, root=toy_root, progress=False, overrides=overrides
    )
    assert calls == [(buckets, 3), (buckets, 4)]


def test_wl_chooses_on_each_folds_validation_split(toy_root, monkeypatch, one_thread):
    from energy_transformer.models.graph_baselines import WLSubtreeSVM
    from energy_transformer.protocols.kfold import stratified_folds
    from energy_transformer.tasks import graph

    seen = []

    class Spy(WLSubtreeSVM):
        def fit(self, labels, train, val):
            seen.append((list(train), list(val)))
            return super().fit(labels, train, val)

    monkeypatch.setattr(graph, "WLSubtreeSVM", Spy)
    cross_validate("TOY", "wl", folds=2, seed=1, val_fraction=0.25, root=toy_root, progress=False)
    labels = graph.prepare_dataset("TOY", toy_root, "wl").labels.numpy()
    expected = stratified_folds(labels, 2, 0.25, 1)
    assert seen == [(f.train.tolist(), f.val.tolist()) for f in expected]


@pytest.mark.parametrize(
    ("kwargs", "rounds"),
    [
        ({"folds": 3}, 3),
        ({"folds": 3, "max_folds": 2}, 2),
        ({"folds": 3, "only": [1]}, 1),
        ({"folds": 3, "max_folds": 2, "only": [0, 1, 2]}, 3),
        ({"protocol": "train-on-all"}, 1),
    ],
)
def test_wl_kernel_time_is_shared_by_the_rounds_run(toy_root, monkeypatch, kwargs, rounds):
    from energy_transformer.protocols.kfold import FoldResult
    from energy_transformer.tasks import graph

    shares = []

    def spy(dataset, n):
        shares.append(n)
        return lambda fold: FoldResult(fold.index, 1.0, 1.0, 1.0, 1.0, {})

    monkeypatch.setattr(graph, "make_fit_wl", spy)
    cross_validate("TOY", "wl", root=toy_root, progress=False, **kwargs)
    assert shares == [rounds]


def test_a_wl_folds_time_holds_its_share_of_the_kernels(toy_root, one_thread):
    import time

    from energy_transformer.protocols.kfold import stratified_folds
    from energy_transformer.tasks import graph

    dataset = graph.prepare_dataset("TOY", toy_root, "wl")
    fit_fold = graph.make_fit_wl(dataset, 4)
    fold = stratified_folds(dataset.labels.numpy(), 2)[0]
    start = time.perf_counter()
    result = fit_fold(fold)
    elapsed = time.perf_counter() - start
    share = result.extra["kernel_seconds"] / 4
    assert result.extra["kernel_seconds"] > 0
    assert share <= result.seconds <= share + elapsed


def test_results_table_shows_the_majority_class_floor():
    from energy_transformer.protocols.kfold import FoldResult, summarize
    from energy_transformer.tasks.graph import results_table

    folds = [FoldResult(0, 0.5, 0.9, 1.0, 2.0, {}, 0.6), FoldResult(1, 0.7, 0.8, 1.0, 4.0, {}, 0.5)]
    old = [FoldResult(0, 0.5, 0.9, 1.0, 2.0, {})]  # a run saved before the floor was recorded
    table = results_table(
        [
            {"dataset": "D", "model": "et", "summary": summarize(folds)},
            {"dataset": "E", "model": "et", "summary": summarize(old)},
        ]
    ).splitlines()
    assert table[0].endswith("| budget | majority class % |")
    assert table[2].endswith("|  | 55.0 |") and table[3].endswith("|  | - |")


def test_the_energy_plot_title_names_the_graphs_and_the_descent(monkeypatch, tmp_path):
    from energy_transformer import plots
    from energy_transformer.models.graph import LaplacianPE, build_graph_et
    from energy_transformer.tasks.graph import plot_energy

    titles = []
    monkeypatch.setattr(
        plots,
        "plot_energy_descent",
        lambda energies, path, title, unit: titles.append(title) or path,
    )
    graphs = [LaplacianPE(4)(ring_or_star(5, i % 2 == 0)) for i in range(3)]
    for g in graphs:
        g.x = torch.ones(g.num_nodes, 1)
    one = build_graph_et(1, 2, "cpu", pe_dim=4, alpha=0.05, steps=3)
    plot_energy(one, graphs, tmp_path, "test graphs of TOY, fold-02")
    two = build_graph_et(1, 2, "cpu", pe_dim=4, blocks=2, steps=1)
    plot_energy(two, graphs, tmp_path)
    assert titles == [
        "graph ET (alpha 0.05, 3 steps): 3 test graphs of TOY, fold-02",
        "graph ET, block 1 of 2 (alpha 0.1, 1 step): 3 graphs",
        "graph ET, block 2 of 2 (alpha 0.1, 1 step): 3 graphs",
    ]


def test_wl_says_training_options_go_unused_and_refuses_torchrun(
    toy_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "wl"]
    args += ["--out", str(tmp_path / "run")]
    assert main([*args, "--epochs", "5", "--lr", "0.1", "--max-folds", "1"]) == 0
    assert "note: --epochs, --lr not used: WL+SVM has no training loop" in capsys.readouterr().out
    args[-1] = str(tmp_path / "other")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: every process would fit it
    assert main(args) == 2
    assert "WL+SVM is fitted by scikit-learn in one process" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_eval_of_a_checkpoint_file_names_that_file(toy_root, tmp_path, one_thread, capsys):
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "mlp"]
    args += ["--folds", "2", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    dest = tmp_path / "eval"
    last = out / "fold-01" / "last.safetensors"
    assert main(["eval", str(last), "--data", str(toy_root), "--out", str(dest)]) == 0
    acc = json.loads((dest / "eval.json").read_text())["folds"]["1"]
    printed = capsys.readouterr().out
    assert f"fold-01: test acc {100 * acc:.2f}% (last.safetensors)\n" in printed
    assert f"metrics: {dest / 'eval.json'}\n" in printed


def test_train_and_eval_titles_name_the_dataset_and_fold_of_the_plotted_graphs(
    toy_root, tmp_path, monkeypatch, one_thread
):
    from energy_transformer import plots

    titles = []
    monkeypatch.setattr(
        plots,
        "plot_energy_descent",
        lambda energies, path, title, unit: titles.append(title) or path,
    )
    out = tmp_path / "run"
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "et"]
    args += ["--folds", "2", "--max-folds", "1", "--epochs", "1", "--out", str(out)]
    assert main([*args, "--steps", "2", "--alpha", "1", "--no-progress"]) == 0
    shown = len(json.loads((out / "fold-00" / "split.json").read_text())["test"][:32])
    # alpha 1, not 1.0: the title prints it as given
    assert titles == [f"graph ET (alpha 1, 2 steps): {shown} test graphs of TOY, fold 0"]
    assert main(["eval", str(out), "--data", str(toy_root)]) == 0
    assert titles[1] == f"graph ET (alpha 1, 2 steps): {shown} test graphs of TOY, fold-00"


def test_wl_names_every_training_option_it_does_not_use(toy_root, tmp_path, capsys):
    args = ["train", "graph", "--dataset", "TOY", "--data", str(toy_root), "--model", "wl"]
    args += ["--out", str(tmp_path / "run"), "--max-folds", "1", "--weight-decay", "0.01"]
    assert main([*args, "--lr", "0.1", "--batch-size", "4", "--epochs", "5", "--ema", "0.9"]) == 0
    assert (
        "note: --epochs, --batch-size, --lr, --weight-decay, --ema not used: WL+SVM has no"
        " training loop (h, C chosen on val)\n" in capsys.readouterr().out
    )
    # The Python face refuses them rather than ignore them; the CLI above does not pass them.
    for settings in (dict(ema_decay=0.9), dict(epochs=5, lr=0.1)):
        with pytest.raises(ValueError, match=f"so {', '.join(settings)} do not apply"):
            cross_validate("TOY", "wl", root=toy_root, **settings)


def test_selecting_among_runs_writes_a_run_of_the_best_validation_folds(
    toy_root, tmp_path, one_thread, capsys
):
    from energy_transformer.protocols.kfold import load_results
    from energy_transformer.tasks.graph import select_runs

    common = dict(folds=3, epochs=1, root=toy_root, progress=False)
    cross_validate("TOY", "mlp", out=tmp_path / "base" / "TOY-mlp", **common)
    cross_validate(
        "TOY", "mlp", out=tmp_path / "wide" / "TOY-mlp", overrides={"hidden": 8}, **common
    )
    config = json.loads((tmp_path / "wide" / "TOY-mlp" / "config.json").read_text())
    assert config["extra"]["model_config"]["hidden"] == 8  # a baseline's variant
    runs = [tmp_path / "base" / "TOY-mlp", tmp_path / "wide" / "TOY-mlp"]
    summary = select_runs(tmp_path / "sel" / "TOY-mlp", runs)
    base, wide = (load_results(r) for r in runs)
    for chosen, a, b in zip(summary.folds, base, wide, strict=True):
        assert "val_loss" in a.extra  # recorded by every neural fold
        name = chosen.extra["selected"]
        assert name in ("base/TOY-mlp", "wide/TOY-mlp")  # alike names: the parent's added
        pick, other = (a, b) if name == "base/TOY-mlp" else (b, a)
        assert chosen.test_acc == pick.test_acc and pick.val_acc >= other.val_acc
    saved = load_results(tmp_path / "sel" / "TOY-mlp")
    assert [r.test_acc for r in saved] == [r.test_acc for r in summary.folds]
    meta = json.loads((tmp_path / "sel" / "TOY-mlp" / "config.json").read_text())["extra"]
    assert (
        meta["dataset"] == "TOY"
        and meta["k"] == 3
        and set(meta["selected_from"]) == {"base/TOY-mlp", "wide/TOY-mlp"}
    )
    # another seed is another split: no fold-by-fold choice between them
    cross_validate("TOY", "mlp", out=tmp_path / "seed1" / "TOY-mlp", seed=1, **common)
    with pytest.raises(ValueError, match="same splits: seed 0 in base/TOY-mlp, 1 in seed1/TOY-mlp"):
        select_runs(tmp_path / "x", [runs[0], tmp_path / "seed1" / "TOY-mlp"])
    with pytest.raises(ValueError, match="is not a graph run folder"):
        select_runs(tmp_path / "x", [runs[0], tmp_path])
    with pytest.raises(ValueError, match=r"TOY-mlp already holds a run \(config.json, folds.csv\)"):
        select_runs(tmp_path / "sel" / "TOY-mlp", runs)
    assert main(["eval", str(tmp_path / "sel" / "TOY-mlp"), "--data", str(toy_root)]) == 2
    assert "is a selection among runs (base/TOY-mlp, wide/TOY-mlp) and holds no weights" in (
        capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="wl takes no constructor overrides"):
        cross_validate("TOY", "wl", overrides={"hidden": 8}, **common)


def test_the_attention_picture_shows_each_nodes_share_over_its_graphs_mean(tmp_path, monkeypatch):
    from torch_geometric.data import Batch

    from energy_transformer import plots
    from energy_transformer.models.graph import LaplacianPE, build_graph_et
    from energy_transformer.tasks.graph import plot_attention

    drawn = {}
    monkeypatch.setattr(
        plots, "plot_graph_attention", lambda *args: drawn.update(args=args) or args[2]
    )
    graphs = [LaplacianPE(4)(ring_or_star(n, n % 2 == 0)) for n in (4, 5, 6)]
    for i, g in enumerate(graphs):
        g.x, g.y = torch.ones(g.num_nodes, 1), torch.tensor([i % 2])
    model = build_graph_et(1, 2, "cpu", pe_dim=4, steps=2, qk_init_std=0.3).eval()
    plot_attention(model, graphs, tmp_path, "toy graphs", shown=2)
    panels, rows, path, titles, title, _, center = drawn["args"]
    assert path == tmp_path / "attention.png" and center == 1.0
    assert [n for _, n in panels] == [4, 5]  # the first `shown` graphs
    weights, logits = model.cls_attention(Batch.from_data_list(graphs[:2]))
    for i, row in enumerate(rows):
        n = graphs[i].num_nodes
        torch.testing.assert_close(row, weights[i, :n] / weights[i, :n].mean())
        guess = int(logits[i].argmax())
        p = float(logits[i].softmax(-1)[guess])
        assert titles[i] == f"true {i % 2}, predicted {guess} (prob. {p:.2f})"
    assert title == "Where the CLS token looks after the descent: 2 toy graphs"
    # classes in turn: with labels 0, 0, 1 the two graphs shown are the first 0 and the 1
    graphs[1].y = torch.tensor([0])
    graphs[2].y = torch.tensor([1])
    plot_attention(model, graphs, tmp_path, "toy graphs", shown=2)
    assert [n for _, n in drawn["args"][0]] == [4, 6]
    plot_attention(model, graphs, tmp_path, "toy graphs", shown=5)  # all three: 0, 1, then 0
    assert [n for _, n in drawn["args"][0]] == [4, 6, 5]


def test_each_neural_fold_records_the_validation_loss_of_its_selected_epoch(
    toy_root, tmp_path, one_thread
):
    import csv

    from energy_transformer.protocols.kfold import load_results

    out = tmp_path / "run"
    cross_validate("TOY", "mlp", folds=2, epochs=3, root=toy_root, out=out, progress=False)
    for result in load_results(out):
        with open(out / f"fold-{result.fold:02d}" / "metrics.csv", newline="") as f:
            epochs = {int(row["epoch"]): row for row in csv.DictReader(f)}
        best = epochs[result.extra["best_epoch"]]
        assert result.val_acc == pytest.approx(float(best["val_acc"]))
        assert result.extra["val_loss"] == pytest.approx(float(best["val_loss"]))


def test_select_runs_checks_every_candidates_splits_and_records_what_it_chose(
    tmp_path, monkeypatch
):
    from energy_transformer.protocols.kfold import FoldResult, save_results, summarize
    from energy_transformer.tasks.graph import select_runs

    def fake_run(folder, vals, tests, **changes):
        """A finished 2-fold cv run written by hand: config.json and folds.csv."""
        meta = {
            "dataset": "TOY",
            "model": "mlp",
            "protocol": "cv",
            "k": 2,
            "max_nodes": None,
            "seed": 0,
            "val_fraction": 0.1,
            "train": {"epochs": 1},
            **changes,
        }
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"task": "graph", "extra": meta}))
        results = [
            FoldResult(i, t, v, 1.0, 1.0, {}, 0.5)
            for i, (v, t) in enumerate(zip(vals, tests, strict=True))
        ]
        save_results(folder, summarize(results), meta)
        return folder

    monkeypatch.chdir(tmp_path)
    base = fake_run(tmp_path / "TOY-mlp", [0.8, 0.6], [0.7, 0.6])
    wide = fake_run(tmp_path / "TOY-mlp-wide", [0.7, 0.9], [0.9, 0.8], train={"epochs": 2})
    # names that differ are kept as they are (no parent added); relative paths are resolved
    summary = select_runs(tmp_path / "sel", [Path("TOY-mlp"), Path("TOY-mlp-wide")])
    assert [r.extra["selected"] for r in summary.folds] == ["TOY-mlp", "TOY-mlp-wide"]
    assert [r.test_acc for r in summary.folds] == [0.7, 0.8]
    assert summary.mean == pytest.approx(0.75)
    meta = json.loads((tmp_path / "sel" / "config.json").read_text())["extra"]
    assert meta["selected_from"]["TOY-mlp-wide"]["path"] == str(wide.resolve())
    assert meta["k"] == 2 and meta["val_fraction"] == 0.1 and meta["model"] == "selected"
    assert meta["train"] is None  # the candidates trained differently: no one setting
    same = fake_run(tmp_path / "same" / "TOY-mlp", [0.9, 0.1], [0.1, 0.1])
    select_runs(tmp_path / "sel2", [base, same])
    meta = json.loads((tmp_path / "sel2" / "config.json").read_text())["extra"]
    assert meta["train"] == {"epochs": 1}
    # every split key of every candidate, second or third, is compared with the first's
    for key, value, said in [
        ("val_fraction", 0.2, "val_fraction 0.1 in TOY-mlp, 0.2 in TOY-mlp-x"),
        ("max_nodes", 50, "max_nodes None in TOY-mlp, 50 in TOY-mlp-x"),
        ("dataset", "OTHER", "dataset 'TOY' in TOY-mlp, 'OTHER' in TOY-mlp-x"),
        ("k", 3, "k 2 in TOY-mlp, 3 in TOY-mlp-x"),
    ]:
        other = fake_run(tmp_path / key / "TOY-mlp-x", [0.5, 0.5], [0.5, 0.5], **{key: value})
        for candidates in ([base, wide, other], [base, other, wide]):
            with pytest.raises(ValueError, match=re.escape(f"same splits: {said}")):
                select_runs(tmp_path / "x", candidates)
    with pytest.raises(ValueError, match="TOY-mlp given twice: each run is one candidate"):
        select_runs(tmp_path / "x", [base, base])
    alike = [fake_run(tmp_path / d / "p" / "TOY-mlp", [0.5, 0.5], [0.5, 0.5]) for d in "ab"]
    with pytest.raises(
        ValueError, match="have alike folder names: give each run a name of its own"
    ):
        select_runs(tmp_path / "x", alike)
    held = fake_run(tmp_path / "held", [0.5, 0.5], [0.5, 0.5], protocol="train-on-all")
    with pytest.raises(ValueError, match="is a train-on-all run: select among cv runs"):
        select_runs(tmp_path / "x", [base, held])
    # a folder holding only a table of folds already holds a run
    (tmp_path / "table").mkdir()
    shutil.copy(base / "folds.csv", tmp_path / "table" / "folds.csv")
    with pytest.raises(ValueError, match=r"already holds a run \(folds.csv\)"):
        select_runs(tmp_path / "table", [base, wide])
    assert not (tmp_path / "x").exists()  # nothing written by a refused selection


def test_cross_validate_et_without_overrides_reads_its_presets_encodings(toy_root, one_thread):
    summary = cross_validate("TOY", "et", folds=2, max_folds=1, epochs=1, root=toy_root)
    assert len(summary.folds) == 1 and 0 <= summary.mean <= 1


def test_et_select_chooses_among_trained_runs_from_the_command_line(
    toy_root, tmp_path, one_thread, capsys
):
    common = ["--dataset", "TOY", "--data", str(toy_root), "--folds", "2", "--epochs", "1"]
    for name, extra in (("a", ["--model", "gin"]), ("b", ["--model", "mlp"])):
        out = ["--out", str(tmp_path / name), "--no-progress"]
        assert main(["train", "graph", *common, *extra, *out]) == 0
    capsys.readouterr()
    sel = tmp_path / "sel"
    assert main(["select", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(sel)]) == 0
    printed = capsys.readouterr().out
    assert "| fold | selected | val a | val b | test |" in printed
    summary = json.loads((sel / "summary.json").read_text())
    chosen = [f["extra"]["selected"] for f in summary["folds"]]
    for fold, name in zip(summary["folds"], chosen, strict=True):
        own = json.loads((tmp_path / name / "summary.json").read_text())["folds"][fold["fold"]]
        assert fold["test_acc"] == own["test_acc"]  # the chosen run's test accuracy, as it was
    assert f"selected: {100 * summary['test_acc_mean']:.1f}" in printed
    assert main(["select", str(tmp_path / "a"), "--out", str(tmp_path / "one")]) == 2
    assert "selection needs at least two candidates, got 1" in capsys.readouterr().err


def test_selection_refuses_runs_with_unfinished_folds_unless_partial(tmp_path, capsys):
    from energy_transformer.protocols.kfold import FoldResult, save_results, summarize
    from energy_transformer.tasks.graph import select_runs

    def run(folder, folds, task="graph"):
        meta = {
            "dataset": "TOY",
            "model": "mlp",
            "protocol": "cv",
            "k": 4,
            "max_nodes": None,
            "seed": 0,
            "val_fraction": 0.1,
        }
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"task": task, "extra": meta}))
        results = [FoldResult(i, 0.5 + i / 10, 0.5, 1.0, 1.0, {}, 0.5) for i in folds]
        save_results(folder, summarize(results), meta)
        return folder

    full, short = run(tmp_path / "TOY-mlp", [0, 1, 2, 3]), run(tmp_path / "TOY-gin", [0, 1])
    with pytest.raises(ValueError, match=r"TOY-gin lacks fold\(s\) \[2, 3\]: finish them"):
        select_runs(tmp_path / "sel", [full, short])
    assert not (tmp_path / "sel").exists()
    summary = select_runs(tmp_path / "sel", [full, short], partial=True)
    assert [r.fold for r in summary.folds] == [0, 1]
    # equal validation accuracies, no losses: the first named, and the table says why
    assert [r.extra["tie"] for r in summary.folds] == ["order", "order"]
    assert main(["select", str(full), str(short), "--out", str(tmp_path / "s2"), "--partial"]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | TOY-mlp (tie: named first) | 50.0 | 50.0 | 50.0 |" in printed
    assert "over 2 folds" in printed
    image = run(tmp_path / "img", [0, 1, 2, 3], task="image")
    with pytest.raises(ValueError, match=r"img is not a graph run \(task 'image'\)"):
        select_runs(tmp_path / "s3", [full, image])


def test_alike_run_names_take_their_resolved_parents_name(tmp_path, monkeypatch):
    from energy_transformer.tasks import run_names

    for folder in ("base/run", "variant/run", "variant/other"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "base")
    # "run" lies in base/: its name is told apart by the folder it resolves to, not by ""
    assert run_names([Path("run"), tmp_path / "variant" / "run"]) == ["base/run", "variant/run"]
    assert run_names([Path("run"), Path("../variant/other")]) == ["run", "other"]
