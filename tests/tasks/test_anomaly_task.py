"""`et train anomaly` / `et eval`: the command line end to end on a small generated dataset."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from energy_transformer.cli import main
from energy_transformer.tasks.anomaly import _settings_table, select_runs


@pytest.fixture
def data_root(tmp_path):
    """A small .npz in the GADBench layout; anomalies carry shifted features."""
    rng = np.random.default_rng(0)
    n = 150
    y = (rng.random(n) < 0.2).astype(np.int64)
    x = (rng.standard_normal((n, 6)) + 1.5 * y[:, None]).astype(np.float32)
    edges = rng.integers(0, n, size=(4 * n, 2)).astype(np.int64)
    (tmp_path / "data" / "gad").mkdir(parents=True)
    masks = np.zeros((2, n), dtype=bool)
    train, val, test = masks.copy(), masks.copy(), masks.copy()
    train[:, :75], val[:, 75:100], test[:, 100:] = True, True, True
    np.savez(
        tmp_path / "data" / "gad" / "reddit.npz",
        node_features=x,
        node_labels=y,
        edges=edges,
        train_masks=train,
        val_masks=val,
        test_masks=test,
    )
    return tmp_path / "data"


def train_args(root, out, *extra):
    return [
        "train", "anomaly", "--dataset", "reddit", "--data", str(root), "--out", str(out),
        "--epochs", "3", "--hidden", "8", "--heads", "1", "--head-dim", "4", "--no-progress",
        *extra,
    ]  # fmt: skip


def test_train_then_eval(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    main(train_args(data_root, out, "--model", "et,gcn", "--protocol", "both", "--seeds", "1"))
    assert json.loads((out / "config.json").read_text())["task"] == "anomaly"
    text = (out / "results.md").read_text()
    assert "## protocol: gadbench" in text and "## protocol: bwgnn" in text
    assert "| et-energy |" in text and "| gcn |" in text
    drawn = {p.relative_to(out) for p in (out / "figures").rglob("*.png")}
    assert drawn == {
        Path("figures/seed0/energy_descent.png"),
        Path("figures/seed0/score_distributions.png"),
    }
    assert all((out / p).stat().st_size > 0 for p in drawn)
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 2
    assert set(results["gadbench"]) == {"et", "et-energy", "gcn"}

    main(["eval", str(out)])
    evaluated = json.loads((out / "eval.json").read_text())
    # The saved best weights reproduce the test metrics reported at the selected epoch.
    for run in results["runs"]:
        row = evaluated[f"{run['model']}/seed{run['seed']}"]
        assert row["test_auroc"] == pytest.approx(run["metrics"]["gadbench"]["auroc"], abs=1e-6)
        assert row["test_auprc"] == pytest.approx(run["metrics"]["gadbench"]["auprc"], abs=1e-6)
    # et eval redraws the same figures in place: no second copy.
    assert {p.relative_to(out) for p in (out / "figures").rglob("*.png")} == drawn
    # Two protocols, one saved pick: the report says whose weights it scores.
    assert evaluated["gcn/seed0"]["weights"] == "the epoch gadbench selected"
    assert "bwgnn picked its own epoch in training" in capsys.readouterr().out
    # One checkpoint file: its weights, its seed's split.
    main(["eval", str(out / "gcn" / "seed0" / "best.safetensors"), "--out", str(tmp_path / "e")])
    row = json.loads((tmp_path / "e" / "eval.json").read_text())["gcn/seed0"]
    assert row.pop("weights") == "file best.safetensors"
    assert row == {k: v for k, v in evaluated["gcn/seed0"].items() if k != "weights"}
    # One seed's folder keeps its figures beside it, not under a second seed0.
    main(["eval", str(out / "et" / "seed0")])
    assert (out / "et" / "seed0" / "figures" / "energy_descent.png").is_file()
    assert not (out / "et" / "seed0" / "figures" / "seed0").exists()


def test_file_splits_and_resume(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(data_root, out, "--model", "mlp", "--splits", "file", "--seeds", "1")
    main(args)
    config = json.loads((out / "mlp" / "seed0" / "config.json").read_text())
    assert config["extra"]["split_sizes"] == [75, 25, 50]
    first = json.loads((out / "results.json").read_text())["runs"][0]["metrics"]
    main([*args, "--resume"])  # already finished: resuming changes nothing
    assert json.loads((out / "results.json").read_text())["runs"][0]["metrics"] == first
    # Resumed on other splits, a seed's run would score the old training on new test nodes.
    # (Without --splits the resume would take the run's own: file.)
    record = (out / "config.json").read_bytes()
    random_splits = train_args(data_root, out, "--splits", "random", "--seeds", "1", "--resume")
    capsys.readouterr()
    assert main(random_splits) == 2
    assert "holds a run on other data or settings (split_sizes" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == record


def test_a_resume_with_another_lr_is_refused_naming_lr_alone(data_root, tmp_path, capsys):
    # The harness trains at a constant rate, min_lr = lr: the user changed --lr only.
    args = train_args(data_root, tmp_path / "run", "--model", "mlp", "--seeds", "1")
    main([*args, "--lr", "0.01"])
    capsys.readouterr()
    assert main([*args, "--lr", "0.02", "--resume"]) == 2
    assert "holds a run on other data or settings (lr 0.01 -> 0.02): resume it" in (
        capsys.readouterr().err
    )


def test_preset_and_overrides_reach_the_saved_model(data_root, tmp_path):
    out = tmp_path / "run"
    extra = ["--model", "et", "--seeds", "1", "--preset", "released", "--steps", "2"]
    extra += ["--memories", "12", "--degree-buckets", "4", "--learn-beta"]
    main(train_args(data_root, out, *extra))
    model = json.loads((out / "et" / "seed0" / "config.json").read_text())["model"]
    # --heads 1 / --head-dim 4 / --steps 2 override the preset; its alpha stays.
    assert (model["heads"], model["head_dim"], model["steps"]) == (1, 4, 2)
    assert model["alpha"] == 1.0 and model["memories"] == 12 and model["degree_buckets"] == 4
    assert model["learn_beta"] is True
    main(["eval", str(out)])  # rebuilt from the saved configuration
    assert (out / "eval.json").is_file()


@pytest.mark.parametrize(
    ("option", "input_text", "in_dim"),
    [
        (["--input-hops", "1"], "RF-Graph's map over 1 hop, standardised", 18),
        (
            ["--input-hops", "1", "--input-bins", "3"],
            "RF-Graph's map over 1 hop, each column piecewise-linear over 3 quantile bins",
            54,
        ),
    ],
)
def test_input_options_round_trip_through_eval(data_root, tmp_path, option, input_text, in_dim):
    out = tmp_path / "run"
    main(train_args(data_root, out, "--model", "et", "--seeds", "1", *option))
    header = (out / "results.md").read_text().splitlines()[0]
    assert header == f"# reddit, train ratio 0.4, input: {input_text}, 3 epochs"
    config = json.loads((out / "et" / "seed0" / "config.json").read_text())
    assert config["model"]["in_dim"] == in_dim and config["extra"]["input_hops"] == 1
    main(["eval", str(out)])  # eval must rebuild the same aggregated input
    run = json.loads((out / "results.json").read_text())["runs"][0]
    row = json.loads((out / "eval.json").read_text())["et/seed0"]
    assert row["test_auroc"] == pytest.approx(run["metrics"]["gadbench"]["auroc"], abs=1e-6)


def test_a_bad_value_ends_with_one_line(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    assert main(train_args(data_root, tmp_path / "r", "--steps", "-1")) == 2
    assert "et: error: steps must be an int >= 0, got -1" in capsys.readouterr().err
    monkeypatch.setenv("ET_DEBUG", "1")
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        main(train_args(data_root, tmp_path / "r", "--alpha", "0"))


def test_bad_arguments(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    cases = [
        (("--model", "gin"), "argument --model: unknown model(s) ['gin']; choose from ("),
        (("--seeds", "0"), "argument --seeds: a seed count must be >= 1, got '0'"),
        (("--preset", "huge"), "argument --preset: invalid choice: 'huge'"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(train_args(data_root, tmp_path / "r", *extra))
        assert exit_info.value.code == 2  # argparse's usage error
        err = capsys.readouterr().err
        assert err.startswith("usage: et train anomaly") and message in err, (extra, err)
        assert not (tmp_path / "r").exists()  # refused before anything was written
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"task": "anomaly"}')
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "no trained model (best.safetensors) under" in capsys.readouterr().err


def test_torchrun_is_refused_with_a_reason(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(train_args(data_root, tmp_path / "r", "--seeds", "1")) == 2
    assert "trains full-batch on one graph, so torchrun would only repeat it" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "r").exists()


def test_a_finished_run_of_a_weight_free_model_needs_resume(
    data_root, tmp_path, capsys, monkeypatch
):
    # RF-Graph saves no weights: its results alone must keep a second run from overwriting it.
    monkeypatch.delenv("ET_DEBUG", raising=False)
    args = train_args(data_root, tmp_path / "r", "--model", "rf-graph", "--seeds", "1")
    assert main(args) == 0
    before = (tmp_path / "r" / "results.json").read_text()
    assert main(args) == 2
    assert "already holds a trained run: continue it with --resume" in capsys.readouterr().err
    assert (tmp_path / "r" / "results.json").read_text() == before


def test_mistakes_are_caught_before_any_training(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    for option, value, message in [
        ("--model", "et,mlp,et", "models repeat"),
        ("--seeds", "1,1", "seeds repeat"),
        ("--seeds", ",", "no seed in ','"),
    ]:
        with pytest.raises(SystemExit):
            main(train_args(data_root, tmp_path / "r", option, value))
        assert message in capsys.readouterr().err
    args = ["--splits", "file", "--train-ratio", "0.01"]
    assert main(train_args(data_root, tmp_path / "t", *args)) == 2
    assert "--train-ratio draws random splits: it does not apply" in capsys.readouterr().err
    # The data ship 2 splits: asking for 3 fails before seed 0 trains.
    args = ["--model", "mlp", "--splits", "file", "--seeds", "3"]
    assert main(train_args(data_root, tmp_path / "f", *args)) == 2
    assert "the dataset ships 2: use seeds in [0, 2)" in capsys.readouterr().err
    assert not (tmp_path / "f" / "mlp").exists()


def test_a_diverging_model_ends_with_one_line_naming_it(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    args = ["--model", "mlp", "--lr", "1e30", "--seeds", "1"]
    assert main(train_args(data_root, tmp_path / "r", *args)) == 2
    assert "et: error: training diverged" in capsys.readouterr().err


def test_every_training_option_reaches_the_harness_and_the_records(
    data_root, tmp_path, monkeypatch
):
    # Each option away from its default: what the harness receives, what each seed's run
    # records, and the tables must all show the user's value.
    from energy_transformer.tasks import anomaly

    calls, figures = [], []
    real = anomaly.run_protocols

    def spy(data, protocols, models, seeds, cfg, train_ratio, **kwargs):
        calls.append({"protocols": protocols, "models": models, "seeds": list(seeds), "cfg": cfg})
        calls[-1].update(train_ratio=train_ratio, **kwargs)
        return real(data, protocols, models, seeds, cfg, train_ratio, **kwargs)

    monkeypatch.setattr(anomaly, "run_protocols", spy)
    monkeypatch.setattr(anomaly, "figures", lambda run, out, root=None: figures.append(run))
    out = tmp_path / "run"
    extra = ["--model", "et", "--seeds", "2,1", "--protocol", "both", "--lr", "0.005"]
    extra += ["--weight-decay", "0.001", "--train-ratio", "0.3", "--device", "cpu"]
    extra += ["--qk-init-std", "0.05", "--no-self-loops", "--no-concat", "--ema", "0.9"]
    assert main(train_args(data_root, out, *extra, "--epochs", "2")) == 0  # the last one counts
    (call,) = calls
    cfg = call["cfg"]
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.hidden) == (2, 0.005, 0.001, 8)
    assert cfg.device == "cpu" and cfg.input_hops == 0 and cfg.ema_decay == 0.9
    assert cfg.et["qk_init_std"] == 0.05
    assert cfg.et["self_loops"] is False and cfg.et["concat_input"] is False
    assert (call["train_ratio"], call["seeds"], call["splits"]) == (0.3, [2, 1], "random")
    assert call["protocols"] == ["gadbench", "bwgnn"] and call["models"] == ["et"]
    assert call["resume"] is False and call["run_root"] == out
    for seed in (2, 1):
        config = json.loads((out / "et" / f"seed{seed}" / "config.json").read_text())
        train = config["train"]
        assert (train["epochs"], train["lr"], train["weight_decay"]) == (2, 0.005, 0.001)
        assert train["ema_decay"] == 0.9
        assert config["extra"]["train_ratio"] == 0.3 and config["extra"]["seed"] == seed
        rows = (out / "et" / f"seed{seed}" / "metrics.csv").read_text().splitlines()
        assert len(rows) == 3  # header, 2 epochs
    et_model = json.loads((out / "et" / "seed2" / "config.json").read_text())["model"]
    assert et_model["self_loops"] is False and et_model["concat_input"] is False
    assert et_model["qk_init_std"] == 0.05
    assert not (out / "et" / "seed0").exists()
    text = (out / "results.md").read_text()
    assert text.splitlines()[0] == "# reddit, train ratio 0.3, 2 epochs"
    # Each protocol's own table: its own metrics.
    gadbench, bwgnn = text.split("## protocol: bwgnn")
    assert "| model | auroc | auprc | rec_at_k |" in gadbench and "macro_f1" not in gadbench
    assert "| model | macro_f1 | auroc |" in bwgnn and "auprc" not in bwgnn
    results = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["seed"]) for r in results["runs"]] == [("et", 2), ("et", 1)]
    for run in results["runs"]:  # ET's energy score is recorded with its run
        assert set(run["energy_metrics"]) >= {"auroc", "auprc"}
    energy = results["gadbench"]["et-energy"]["auroc"][0]
    mean = sum(r["energy_metrics"]["auroc"] for r in results["runs"]) / 2
    assert energy == pytest.approx(mean)
    assert figures == [out / "et" / "seed2"]  # the first seed given


def _with_distinct_file_splits(root):
    """Rewrite the fixture's two shipped splits so that split 1 differs from split 0."""
    path = root / "gad" / "reddit.npz"
    arrays = dict(np.load(path))
    train, val, test = (np.zeros_like(arrays["train_masks"]) for _ in range(3))
    train[0, :75], val[0, 75:100], test[0, 100:] = True, True, True
    train[1, 75:], val[1, :25], test[1, 25:75] = True, True, True
    np.savez(path, **{**arrays, "train_masks": train, "val_masks": val, "test_masks": test})


@pytest.mark.parametrize("splits", [["--train-ratio", "0.3"], ["--splits", "file"]])
def test_eval_rebuilds_the_split_of_each_seed(data_root, tmp_path, splits):
    # Seed 1 (not 0) and a train ratio off the default: et eval must score the same test
    # nodes that training reported on, or its numbers describe another split.
    _with_distinct_file_splits(data_root)
    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--model", "mlp", "--seeds", "1,", *splits)) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["seed"] == 1
    assert main(["eval", str(out)]) == 0
    row = json.loads((out / "eval.json").read_text())["mlp/seed1"]
    for metric in ("auroc", "auprc"):
        assert row[f"test_{metric}"] == pytest.approx(run["metrics"]["gadbench"][metric], abs=1e-6)


def test_figures_show_the_test_nodes_of_the_first_seed(data_root, tmp_path, monkeypatch):
    from energy_transformer import plots

    shown = []
    monkeypatch.setattr(
        plots,
        "plot_score_distributions",
        lambda scores, labels, path, title: shown.append((labels, title)),
    )
    _with_distinct_file_splits(data_root)
    out = tmp_path / "run"
    args = ["--model", "et", "--seeds", "1,", "--splits", "file"]
    assert main(train_args(data_root, out, *args)) == 0
    y = np.load(data_root / "gad" / "reddit.npz")["node_labels"]
    ((labels, title),) = shown
    assert labels.tolist() == y[25:75].tolist()  # split 1's test nodes, not its val nodes
    anomalous = int(y[25:75].sum())
    assert (
        title
        == f"ET on reddit, seed 1: test nodes ({50 - anomalous} normal, {anomalous} anomalous)"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--epochs", "0"], "epochs must be a positive int, got 0"),
        (["--lr", "-0.1"], "lr must be finite and > 0, got -0.1"),
        (["--weight-decay", "-1"], "weight_decay must be finite and >= 0, got -1.0"),
        (["--input-hops", "-2"], "input_hops must be an int >= 0, got -2"),
        (["--input-bins", "-1"], "input_bins must be an int >= 0, got -1"),
        (["--alpha", "0"], "alpha must be finite and > 0, got 0.0"),
        (["--ema", "1.5"], "ema_decay must be in (0, 1), got 1.5"),
    ],
)
def test_bad_options_are_refused_before_the_graph_is_read(tmp_path, capsys, option, message):
    missing = tmp_path / "no-data-here"
    args = ["train", "anomaly", "--data", str(missing), "--out", str(tmp_path / "run")]
    assert main([*args, *option, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "no-data-here" not in err
    assert not (tmp_path / "run").exists()


def test_a_graph_file_of_ones_own_is_named_by_its_file(data_root, tmp_path, capsys):
    mine = tmp_path / "mine" / "shop-reviews.npz"
    mine.parent.mkdir()
    shutil.copy(data_root / "gad" / "reddit.npz", mine)
    out = tmp_path / "run"
    args = train_args(data_root, out, "--model", "mlp")
    args[args.index("--dataset") : args.index("--dataset") + 2] = []  # no --dataset
    args[args.index("--data") + 1] = str(mine)
    assert main(args) == 0
    assert (out / "results.md").read_text().startswith("# shop-reviews, train ratio 0.4")
    extra = json.loads((out / "mlp" / "seed0" / "config.json").read_text())["extra"]
    assert extra["dataset"] == "shop-reviews" and extra["data"] == str(mine)
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # et eval reads the recorded file again
    assert "mlp/seed0" in json.loads((out / "eval.json").read_text())
    text = tmp_path / "graph.txt"
    text.write_text("1 2\n")
    args[args.index("--data") + 1] = str(text)
    args[args.index("--out") + 1] = str(tmp_path / "other")
    assert main(args) == 2
    assert "graph.txt: an anomaly graph is a .npz (GADBench) or .mat (CARE-GNN) file" in (
        capsys.readouterr().err
    )


def test_a_run_of_tree_ensembles_alone_is_evaluated_from_its_record(data_root, tmp_path, capsys):
    out = tmp_path / "trees"
    args = train_args(data_root, out, "--model", "rf-graph,gb-graph", "--seeds", "2")
    assert main(args) == 0
    printed = capsys.readouterr().out
    # the ET sizes of the shared command line are not silently taken as used
    assert "note: --heads, --head-dim not used: no Energy Transformer in --model" in printed
    assert (out / "results.md").read_text().splitlines()[0] == "# reddit, train ratio 0.4"
    runs = json.loads((out / "results.json").read_text())["runs"]
    recorded = next(r["metrics"] for r in runs if (r["model"], r["seed"]) == ("gb-graph", 1))
    line = next(x for x in printed.splitlines() if x.startswith("[gb-graph seed 1]"))
    auroc = recorded["gadbench"]["auroc"]
    assert f"gadbench: auroc {100 * auroc:.1f}, auprc" in line  # in %, not a raw dict
    assert main(["eval", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the tree ensembles keep no weights" in printed and "not re-scored" in printed
    report = json.loads((out / "eval.json").read_text())
    assert sorted(report) == [f"{m}/seed{k}" for m in ("gb-graph", "rf-graph") for k in (0, 1)]
    assert report["gb-graph/seed1"]["recorded"] == recorded
    assert report["gb-graph/seed1"]["weights"] == "none (refitted)"


def test_the_block_variants_share_the_other_tasks_names(data_root, tmp_path):
    out = tmp_path / "run"
    args = train_args(data_root, out, "--model", "et", "--exclude-self", "--hopfield", "softmax")
    assert main(args) == 0
    model = json.loads((out / "et" / "seed0" / "config.json").read_text())["model"]
    assert model["self_loops"] is False and model["hopfield"] == "softmax"
    assert main(train_args(data_root, tmp_path / "plain", "--model", "et")) == 0
    model = json.loads((tmp_path / "plain" / "et" / "seed0" / "config.json").read_text())["model"]
    assert model["self_loops"] is True and model["hopfield"] == "relu"


def test_only_a_graph_file_names_the_run_a_data_folder_does_not(tmp_path):
    from energy_transformer.tasks.anomaly import dataset_name

    root = tmp_path / "my-data"
    (root / "gad").mkdir(parents=True)
    assert dataset_name(None, root) == "tolokers"  # a data root: the default graph in it
    assert dataset_name(None, None) == "tolokers"
    mine = root / "shop-reviews.npz"
    mine.write_bytes(b"")
    assert dataset_name(None, mine) == "shop-reviews"
    assert dataset_name("reddit", mine) == "reddit"  # --dataset says it


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--hidden", "0"], "hidden must be a positive int, got 0"),
        (["--steps", "-1"], "steps must be an int >= 0, got -1"),
    ],
)
def test_more_bad_options_are_refused_before_the_graph_is_read(
    tmp_path, capsys, monkeypatch, option, message
):
    monkeypatch.delenv("ET_DEBUG", raising=False)
    missing = tmp_path / "no-data-here"
    args = ["train", "anomaly", "--data", str(missing), "--out", str(tmp_path / "run")]
    assert main([*args, *option, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"et: error: {message} (ET_DEBUG=1" in err and "no-data-here" not in err
    assert not (tmp_path / "run").exists()


def test_the_energy_figure_follows_each_test_node(data_root, tmp_path, monkeypatch):
    from energy_transformer import plots
    from energy_transformer.tasks import anomaly

    drawn = []
    monkeypatch.setattr(
        plots,
        "plot_energy_descent",
        lambda energies, path, title, unit: drawn.append((energies, unit)) or path,
    )
    out = tmp_path / "run"
    assert main(train_args(data_root, out, "--model", "et", "--seeds", "1")) == 0
    ((energies, unit),) = drawn
    assert unit == "nodes"
    model, data, split, _ = anomaly._load_model_run(out / "et" / "seed0", None)
    steps = model.steps
    assert energies.total.shape == (steps + 1, len(split.test))  # one column per test node
    # the last row is each test node's final energy, the label-free score
    final = model.energy_scores(data.x, data.edge_index)[split.test]
    torch.testing.assert_close(energies.total[-1], final, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(energies.total, energies.attention + energies.hopfield)


def test_a_mixed_run_rescores_the_neural_models_and_shows_the_trees_record(
    data_root, tmp_path, capsys
):
    out = tmp_path / "mixed"
    extra = ["--model", "gcn,rf-graph", "--protocol", "both", "--seeds", "1", "--epochs", "2"]
    assert main(train_args(data_root, out, *extra)) == 0
    printed = capsys.readouterr().out
    runs = json.loads((out / "results.json").read_text())["runs"]
    tree = next(r["metrics"] for r in runs if r["model"] == "rf-graph")
    # Each protocol's metrics in %, protocols apart: "gadbench: auroc 69.4, ... | bwgnn: ..."
    shown = " | ".join(
        f"{p}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items()) for p, m in tree.items()
    )
    assert set(tree) == {"gadbench", "bwgnn"} and " | bwgnn: " in shown
    assert f"[rf-graph seed 0] {shown} (" in printed
    assert main(["eval", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    report = json.loads((out / "eval.json").read_text())
    assert sorted(report) == ["gcn/seed0", "rf-graph/seed0"]
    assert report["rf-graph/seed0"] == {"recorded": tree, "weights": "none (refitted)"}
    assert "recorded" not in report["gcn/seed0"]  # the neural model: re-scored
    assert [x for x in printed if x.startswith("rf-graph/")] == [f"rf-graph/seed0 {shown}"]
    scores = {k: v for k, v in report["gcn/seed0"].items() if k.startswith("test_")}
    assert {"test_auroc", "test_auprc"} <= set(scores)
    rescored = " ".join(f"{k} {100 * v:.1f}" for k, v in scores.items())
    assert [x for x in printed if x.startswith("gcn/")] == [f"gcn/seed0 {rescored}"]


def test_a_run_without_et_names_every_et_option_it_was_given(data_root, tmp_path, capsys):
    extra = ["--model", "rf-graph", "--seeds", "1", "--memories", "12", "--no-concat"]
    extra += ["--exclude-self", "--hopfield", "softmax", "--preset", "released"]
    assert main(train_args(data_root, tmp_path / "run", *extra)) == 0
    assert (
        "note: --preset, --heads, --head-dim, --memories, --no-self-loops, --no-concat,"
        " --hopfield not used: no Energy Transformer in --model rf-graph\n"
    ) in capsys.readouterr().out


# -- et select: model selection across anomaly runs -------------------------------------------


def test_select_among_runs_picks_per_seed_on_validation(data_root, tmp_path, capsys):
    runs = {}
    for name, width in (("narrow", "8"), ("wide", "16")):
        runs[name] = tmp_path / name
        args = train_args(data_root, runs[name], "--model", "et,mlp", "--protocol", "both")
        main([*args[: args.index("--hidden") + 1], width, *args[args.index("--hidden") + 2 :]]
             + ["--seeds", "0,1"])  # fmt: skip
    records = {n: json.loads((r / "results.json").read_text())["runs"] for n, r in runs.items()}
    assert all(set(r["validation"]) == {"gadbench", "bwgnn"} for r in records["wide"])
    capsys.readouterr()
    out = tmp_path / "sel"
    assert main(["select", str(runs["narrow"]), str(runs["wide"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"selection written to {out}" in printed
    selected = json.loads((out / "results.json").read_text())
    for protocol in ("gadbench", "bwgnn"):
        for model in ("et", "mlp"):
            for seed in (0, 1):
                own = {
                    n: next(r for r in rs if r["model"] == model and r["seed"] == seed)
                    for n, rs in records.items()
                }
                best = max(own, key=lambda n: own[n]["validation"][protocol])  # narrow on ties
                got = next(
                    r
                    for r in selected["runs"][protocol]
                    if r["model"] == model and r["seed"] == seed
                )
                assert got["metrics"] == own[best]["metrics"]
                assert got["seconds"] == pytest.approx(sum(r["seconds"] for r in own.values()))
        assert sum(selected["chosen"][protocol]["et"].values()) == 2
    assert "| et | " in (out / "results.md").read_text()
    assert json.loads((out / "config.json").read_text())["extra"]["selected_from"].keys() == {
        "narrow",
        "wide",
    }
    # The selection holds no weights: et eval says where they are.
    assert main(["eval", str(out)]) == 2
    assert (
        "is a selection among runs (narrow, wide) and holds no weights" in capsys.readouterr().err
    )


def test_select_refuses_what_it_cannot_compare(data_root, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    main(train_args(data_root, a, "--model", "mlp", "--seeds", "0,1"))
    main(train_args(data_root, b, "--model", "mlp", "--seeds", "1"))  # seed 0
    main(train_args(data_root, c, "--model", "mlp", "--seeds", "1", "--splits", "file"))
    capsys.readouterr()
    cases = [
        ([a, b], "the runs hold other seeds (a mlp: [0, 1]; b mlp: [0])"),
        ([b, c], "mlp seed 0: the configurations ran on different splits"),
        ([a], "selection needs at least two runs"),
    ]
    for runs, message in cases:
        argv = ["select", *map(str, runs), "--out", str(tmp_path / "sel")]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    # Over the seeds both hold, on request; the out folder is then taken.
    assert main(["select", str(a), str(b), "--out", str(tmp_path / "sel"), "--partial"]) == 0
    assert main(["select", str(a), str(b), "--out", str(tmp_path / "sel"), "--partial"]) == 2
    assert "already holds a run (config.json, results.json)" in capsys.readouterr().err
    # A run from before validation was recorded cannot be compared.
    results = json.loads((b / "results.json").read_text())
    for r in results["runs"]:
        del r["validation"]
    (b / "results.json").write_text(json.dumps(results))
    assert main(["select", str(a), str(b), "--out", str(tmp_path / "s2"), "--partial"]) == 2
    assert "trained before runs recorded their validation metric" in capsys.readouterr().err
    (b / "results.json").unlink()
    assert main(["select", str(a), str(b), "--out", str(tmp_path / "s3")]) == 2
    assert "has no results.json: the run has not finished" in capsys.readouterr().err


def test_partial_selection_puts_every_model_over_the_same_seeds(data_root, tmp_path, capsys):
    # b has mlp's seed 0 only: gcn, which a alone ran on seeds 0 and 1, is carried over on
    # seed 0 too, so that every row of the table is over the same seeds.
    a, b = tmp_path / "a", tmp_path / "b"
    main(train_args(data_root, a, "--model", "mlp,gcn", "--seeds", "2"))
    main(train_args(data_root, b, "--model", "mlp", "--seeds", "1", "--hidden", "16"))
    capsys.readouterr()
    argv = ["select", str(a), str(b), "--out", str(tmp_path / "sel")]
    assert main(argv) == 2
    assert "(a mlp: [0, 1]; a gcn: [0, 1]; b mlp: [0])" in capsys.readouterr().err
    assert main([*argv, "--partial"]) == 0
    recorded = json.loads((tmp_path / "sel" / "results.json").read_text())["runs"]["gadbench"]
    assert sorted((r["model"], r["seed"]) for r in recorded) == [("gcn", 0), ("mlp", 0)]
    assert "over seeds 0;" in (tmp_path / "sel" / "results.md").read_text()


def test_select_names_each_seeds_run_and_can_keep_one_run_per_model(data_root, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    main(train_args(data_root, a, "--model", "mlp", "--seeds", "2", "--protocol", "both"))
    main(train_args(data_root, b, "--model", "mlp", "--seeds", "2", "--hidden", "16"))
    runs = {
        n: json.loads((r / "results.json").read_text())["runs"] for n, r in (("a", a), ("b", b))
    }
    # b ran the gadbench protocol only: bwgnn is left out, and said so.
    out = tmp_path / "per-seed"
    assert main(["select", str(a), str(b), "--out", str(out)]) == 0
    text = (out / "results.md").read_text()
    assert "Settings in which the runs differ:" in text and "| a | 8 | both |" in text
    assert "Protocol bwgnn left out: not every run was scored by it." in text
    assert "over seeds 0, 1;" in text
    picks = [max("ab", key=lambda n: runs[n][seed]["validation"]["gadbench"]) for seed in (0, 1)]
    assert f"| mlp | {picks[0]} | {picks[1]} |" in text
    recorded = json.loads((out / "results.json").read_text())["runs"]["gadbench"]
    assert [r["configuration"] for r in recorded] == picks
    # --per model: the run with the better mean validation AUPRC, for every seed.
    means = {n: sum(r["validation"]["gadbench"] for r in runs[n]) / 2 for n in "ab"}
    best = max("ab", key=means.get)
    out = tmp_path / "per-model"
    assert main(["select", str(a), str(b), "--out", str(out), "--per", "model"]) == 0
    recorded = json.loads((out / "results.json").read_text())["runs"]["gadbench"]
    assert [r["configuration"] for r in recorded] == [best, best]
    assert [r["metrics"] for r in recorded] == [r["metrics"] for r in runs[best]]
    capsys.readouterr()
    # A selection is not a candidate; an out that is a file is not a folder.
    assert main(["select", str(a), str(out), "--out", str(tmp_path / "s2")]) == 2
    assert f"{out} is a selection, not a run" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["select", str(a), str(b), "--out", str(tmp_path / "file")]) == 2
    assert "file is a file: the output goes to a folder, give one" in capsys.readouterr().err


def test_select_refuses_runs_of_two_tasks_and_per_model_for_graph_runs(data_root, tmp_path, capsys):
    anomaly = tmp_path / "anomaly"
    main(train_args(data_root, anomaly, "--model", "mlp", "--seeds", "1"))
    graph = tmp_path / "graph"
    graph.mkdir()
    (graph / "config.json").write_text('{"task": "graph", "extra": {"protocol": "cv"}}')
    capsys.readouterr()
    assert main(["select", str(graph), str(anomaly), "--out", str(tmp_path / "s")]) == 2
    assert f"the runs are of different tasks ({graph}: graph, {anomaly}: anomaly)" in (
        capsys.readouterr().err
    )
    assert (
        main(["select", str(graph), str(graph), "--out", str(tmp_path / "s"), "--per", "model"])
        == 2
    )
    assert "--per model is for anomaly runs: graph runs are chosen per fold" in (
        capsys.readouterr().err
    )


# -- et select on hand-written anomaly runs (no training) -------------------------------------


def _written_run(folder, runs, dataset="reddit", protocol="both"):
    """A finished anomaly run written by hand: config.json and results.json, one ET record per
    ``(seed, validation AUPRC, validation macro-F1, every test metric, seconds)``."""
    protocols = ["gadbench", "bwgnn"] if protocol == "both" else [protocol]
    records = [
        {
            "model": "et",
            "seed": seed,
            "metrics": {
                "gadbench": {"auroc": t, "auprc": t, "rec_at_k": t},
                "bwgnn": {"macro_f1": t, "auroc": t},
            },
            "seconds": seconds,
            "validation": {p: {"gadbench": val_auprc, "bwgnn": val_f1}[p] for p in protocols},
            "split": f"split{seed}",
        }
        for seed, val_auprc, val_f1, t, seconds in runs
    ]
    folder.mkdir(parents=True)
    command = {"dataset": dataset, "protocol": protocol}
    (folder / "config.json").write_text(json.dumps({"task": "anomaly", "command": command}))
    (folder / "results.json").write_text(json.dumps({"runs": records}))
    return folder


A_RUNS = [(0, 0.6, 0.2, 0.8, 2.0), (1, 0.3, 0.9, 0.7, 2.0)]
B_RUNS = [(0, 0.5, 0.4, 0.6, 3.0), (1, 0.4, 0.1, 0.95, 3.0)]


def test_select_writes_the_choices_per_protocol_and_points_eval_to_the_runs(tmp_path, capsys):
    # b recorded its seeds in another order: the same seeds all the same
    a, b = _written_run(tmp_path / "a", A_RUNS), _written_run(tmp_path / "b", B_RUNS[::-1])
    out = tmp_path / "sel"
    assert main(["select", str(a), str(b), "--out", str(out)]) == 0
    selected = json.loads((out / "results.json").read_text())
    # GADBench (validation AUPRC): seed 0 chooses a, seed 1 b; BWGNN (macro-F1): b, then a.
    assert selected["chosen"] == {
        "gadbench": {"et": {"a": 1, "b": 1}},
        "bwgnn": {"et": {"a": 1, "b": 1}},
    }
    for protocol, tests in (("gadbench", [0.8, 0.95]), ("bwgnn", [0.6, 0.7])):
        runs = sorted(selected["runs"][protocol], key=lambda r: r["seed"])
        assert [r["metrics"][protocol]["auroc"] for r in runs] == tests
        assert [r["seconds"] for r in runs] == [5.0, 5.0]
    assert json.loads((out / "config.json").read_text())["task"] == "anomaly"
    # results.md tells how often each run was chosen and its own mean test value (seeds 0-1).
    lines = (out / "results.md").read_text().splitlines()
    heads = [
        i
        for i, line in enumerate(lines)
        if line.startswith("| model |") and line.endswith(" | a | b |")
    ]
    assert len(heads) == 2  # one table per protocol
    for i in heads:
        columns = [c.strip() for c in lines[i].split("|")[1:-1]]
        row = next(line for line in lines[i:] if line.startswith("| et | "))
        cells = dict(zip(columns, (c.strip() for c in row.split("|")[1:-1]), strict=True))
        assert (cells["a"], cells["b"]) == (f"1 / {100 * 0.75:.1f}", f"1 / {100 * 0.775:.1f}")
    capsys.readouterr()
    assert main(["eval", str(out)]) == 2
    assert (
        f"{out} is a selection among runs (a, b) and holds no weights: evaluate those runs;"
        " its results.md names the run each seed chose"
    ) in capsys.readouterr().err


def test_select_prints_the_report_it_wrote_without_reading_it_back(tmp_path, capsys, monkeypatch):
    a, b = _written_run(tmp_path / "a", A_RUNS), _written_run(tmp_path / "b", B_RUNS)
    out = tmp_path / "sel"
    read = Path.read_text

    def no_results_md(path, *args, **kwargs):
        assert path.name != "results.md", "et select read back the report it had just written"
        return read(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_results_md)
    assert main(["select", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    monkeypatch.undo()
    report = (out / "results.md").read_text()
    assert printed == f"{report}\nselection written to {out} (results.md, results.json)\n"


def test_select_keeps_the_protocols_every_run_has_and_refuses_other_runs(tmp_path, capsys):
    a = _written_run(tmp_path / "a", A_RUNS)
    auprc_only = _written_run(tmp_path / "g", B_RUNS, protocol="gadbench")
    f1_only = _written_run(tmp_path / "w", B_RUNS, protocol="bwgnn")
    other = _written_run(tmp_path / "o", B_RUNS, dataset="tolokers")
    image = tmp_path / "image"
    image.mkdir()
    (image / "config.json").write_text('{"task": "image"}')
    selected, report = select_runs(tmp_path / "sel", [a, auprc_only])
    assert report == (tmp_path / "sel" / "results.md").read_text()
    assert "Protocol bwgnn left out: not every run was scored by it." in report
    assert list(selected) == ["gadbench"]  # bwgnn: not every run was scored by it
    assert [r.seed for r in selected["gadbench"]] == [0, 1]
    for runs, message in [
        ([auprc_only, f1_only], "the runs share no protocol"),
        ([a, other], "the runs are of different datasets"),
        ([a, image], f"{image} is not an anomaly run (task 'image')"),
    ]:
        with pytest.raises(ValueError) as refused:
            select_runs(tmp_path / "x", runs)
        assert message in str(refused.value)
    assert not (tmp_path / "x").exists()


def test_the_selection_shows_the_settings_its_runs_differ_in():
    commands = {
        "a": {"hidden": 64, "epochs": 30, "out": "runs/a", "device": "cpu", "seeds": [0, 1]},
        "b": {"hidden": 128, "epochs": 30, "out": "runs/b", "device": "cuda", "seeds": [0, 1]},
    }
    assert _settings_table(commands).splitlines()[2:] == [
        "| run | hidden |",
        "|---|---|",
        "| a | 64 |",
        "| b | 128 |",
    ]
    alike = {"a": commands["a"], "b": {**commands["a"], "out": "runs/b"}}
    assert _settings_table(alike) == "The runs were trained with the same settings."
