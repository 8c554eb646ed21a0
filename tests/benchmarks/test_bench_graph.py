"""benchmarks/bench_graph.py: its option parsing, a short MUTAG run, parallel folds and
reading runs back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from bench_scripts import BENCHMARKS, load_script
from graph_fixtures import write_toy

from energy_transformer.protocols.kfold import FoldResult, summarize
from energy_transformer.tasks.graph import cross_validate


@pytest.fixture
def toy_root(tmp_path) -> Path:
    return write_toy(tmp_path / "data")


def _bench_graph():
    return load_script("bench_graph")


def test_benchmark_et_overrides_parse_values():
    parse = _bench_graph().parse_overrides
    assert parse(["qk_init_std=0.05", "steps=8", "adjacency=soft", "learn_beta=true"]) == {
        "qk_init_std": 0.05,
        "steps": 8,
        "adjacency": "soft",
        "learn_beta": True,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse(["qk_init_std"])


def test_benchmark_short_run_mutag(tmp_path, one_thread):
    root = os.environ.get("ET_DATA")
    if not root or not (Path(root) / "TUDataset" / "MUTAG.zip").is_file():
        pytest.skip("ET_DATA with TUDataset/MUTAG.zip not available")
    bench = _bench_graph()
    rows = bench.run(
        ["MUTAG"], bench.MODELS, folds=2, epochs=2, root=root, out=tmp_path, progress=False
    )
    assert {r["model"] for r in rows} == {"et", "gin", "mlp", "wl"}
    for row in rows:
        assert len(row["summary"].folds) == 2
        assert 0.3 <= row["summary"].mean <= 1.0  # MUTAG is 66% one class
    table = bench.markdown(rows, budget="2 folds, 2 epochs")
    assert "| MUTAG |" in table and "96.6" in table  # the paper's (training-set) number beside
    # The fold-by-fold line: 2 folds, each ahead, level or behind.
    line = next(x for x in table[table.index("ET - GIN") :].splitlines() if "| MUTAG |" in x)
    counts = [c.split("(")[1].rstrip(") ") for c in line.split("|")[2:-1]]
    assert len(counts) == 3 and all(sum(map(int, c.split("/"))) == 2 for c in counts)


def test_benchmark_parallel_folds_in_spawned_processes(toy_root, tmp_path):
    # Any device but "cpu" (here "auto", which is the CPU on this machine) spawns the fold
    # workers instead of forking them, as CUDA needs; each worker prepares the data itself.
    out = tmp_path / "runs"
    cmd = [sys.executable, str(BENCHMARKS / "bench_graph.py"), "--datasets", "TOY"]
    cmd += ["--models", "et", "mlp", "--folds", "2", "--epochs", "1", "--jobs", "2"]
    cmd += ["--device", "auto", "--threads", "1", "--data", str(toy_root), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prepared TOY" not in done.stdout  # not prepared in the parent: nothing to fork
    for model in ("et", "mlp"):
        summary = json.loads((out / f"TOY-{model}" / "summary.json").read_text())
        assert len(summary["folds"]) == 2
    assert "| TOY |" in (out / "results.md").read_text()


def test_benchmark_collect_reads_runs_back_and_refuses_a_cell_twice(toy_root, tmp_path, one_thread):
    bench = _bench_graph()
    a, b = tmp_path / "a", tmp_path / "b"
    summary = cross_validate("TOY", "mlp", folds=2, epochs=1, root=toy_root, out=a / "TOY-mlp")
    shutil.copytree(a, b)
    for fold in (b / "TOY-mlp").glob("fold-*"):  # as a device returns it: folds.csv only
        shutil.rmtree(fold)
    for out in (a, b):
        [row] = bench.collect([str(out)])
        assert (row["dataset"], row["model"], row["epochs"]) == ("TOY", "mlp", 1)
        assert row["summary"].mean == pytest.approx(summary.mean)
    with pytest.raises(ValueError, match=r"a/TOY-mlp and .*b/TOY-mlp both hold TOY mlp"):
        bench.collect([str(a), str(b)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished run .* under .*empty"):
        bench.collect([str(tmp_path / "empty")])


def test_markdown_puts_et_first_whichever_dataset_sorts_first(toy_root, tmp_path, one_thread):
    bench = _bench_graph()
    summary = cross_validate("TOY", "mlp", folds=2, epochs=1, root=toy_root, out=tmp_path / "m")

    def row(dataset: str, model: str) -> dict:
        return {"dataset": dataset, "model": model, "summary": summary, "k": 2, "epochs": 1}

    # Folders sort DD-gin first: the columns must not follow that.
    rows = [row("DD", "gin"), row("DD", "mlp"), row("MUTAG", "et"), row("MUTAG", "et:degree")]
    header = next(line for line in bench.markdown(rows, "toy").splitlines() if "| dataset" in line)
    labels = [cell.strip() for cell in header.split("|")[4:-2:2]]
    assert labels == ["ET", "ET (degree)", "GIN", "MLP (sum)"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "foo"], "bad model 'foo'"),
        (["--folds", "1"], "need --folds >= 2 and --jobs >= 1"),
        (["--et-set", "bogus=1"], "['bogus'] are not options of GraphEnergyTransformer"),
        (["--gin-set", "heads=2"], "--gin-set: ['heads'] are not options of GINClassifier"),
        (["--mlp-set", "hidden"], "--mlp-set takes KEY=VALUE, got 'hidden'"),
        (["--select", "out", "a"], "--select needs OUT and at least two runs"),
    ],
)
def test_bad_options_end_in_one_argparse_line(monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["bench_graph.py", *args])
    with pytest.raises(SystemExit):
        load_script("bench_graph").main()
    assert message in capsys.readouterr().err


# -- the table's numbers, from hand-made fold results -------------------------------------------


def _folds(accs: list[float], seconds: float = 10.0, majority=None) -> list[FoldResult]:
    # Seconds 10, 20, 30 ... (mean 15 over two folds, 20 over three).
    floors = majority or [None] * len(accs)
    return [
        FoldResult(i, a, 0.5, 1.0, seconds * (i + 1), {}, floor)
        for i, (a, floor) in enumerate(zip(accs, floors, strict=True))
    ]


def _row(dataset, model, accs, k=2, epochs=5, max_nodes=None, majority=None) -> dict:
    summary = summarize(_folds(accs, majority=majority))
    return {"dataset": dataset, "model": model, "summary": summary, "k": k, "epochs": epochs,
            "max_nodes": max_nodes}  # fmt: skip


def test_markdown_cells_wins_and_fold_by_fold_counts():
    bench = _bench_graph()
    # Accuracies are exact binary fractions, so every printed cell is exact.
    rows = [
        # MUTAG, inserted out of column order: ET ahead of both GIN and the MLP.
        _row("MUTAG", "wl", [1.0, 0.75], epochs=None, majority=[0.5, 0.75]),
        _row("MUTAG", "mlp", [0.5, 0.75], majority=[0.5, 0.75]),
        _row("MUTAG", "et", [0.875, 0.625], majority=[0.5, 0.75]),
        _row("MUTAG", "gin", [0.75, 0.5], majority=[0.5, 0.75]),
        # DD: no MLP (not counted towards the wins), a node cap, ET ahead of GIN.
        _row("DD", "gin", [0.5, 0.75], max_nodes=200),
        _row("DD", "et", [0.75, 0.75], max_nodes=200),
        # PROTEINS, 3 folds planned: ET level with GIN (not ahead), ahead of the MLP.
        _row("PROTEINS", "et", [0.75, 0.5], k=3),
        _row("PROTEINS", "gin", [0.5, 0.75, 0.625], k=3),
        _row("PROTEINS", "mlp", [0.5, 0.5], k=3),
    ]
    lines = bench.markdown(rows, budget="toy").splitlines()
    assert lines[0].startswith("Budget: toy. Test accuracy mean +- std over folds (%)")
    table = [
        "| dataset | budget | majority | ET | s/fold | GIN | s/fold | MLP (sum) | s/fold | WL+SVM"
        " | s/fold | paper ET (train-set acc!) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| MUTAG | 2 folds, 5 epochs | 62.5 | 75.0 +- 12.5 | 15 | 62.5 +- 12.5 | 15 | 62.5 +- 12.5"
        " | 15 | 87.5 +- 12.5 | 15 | 96.6 |",
        # The budget is the most-trained neural row's; [n] marks rows short of the plan.
        "| PROTEINS | 3 folds, 5 epochs | - | 62.5 +- 12.5 [2] | 15 | 62.5 +- 10.2 | 20"
        " | 50.0 +- 0.0 [2] | 15 | - | - | 90.3 |",
        "| DD (first 200 nodes) | 2 folds, 5 epochs | - | 75.0 +- 0.0 | 15 | 62.5 +- 12.5 | 15"
        " | - | - | - | - | 95.9 |",
        "",
        "ET ahead of both GIN and the MLP on 1 of 2 datasets; 1 without all three rows not"
        " counted (issue goal: at least 4 of 6).",
    ]
    start = lines.index(table[0])
    assert lines[start : start + len(table)] == table
    paired = [
        "| dataset | ET - GIN | ET - MLP (sum) | ET - WL+SVM |",
        "|---|---|---|---|",
        # Mean of ET minus the baseline per fold, in points, then folds ahead / level / behind.
        "| MUTAG | +12.5 (2/0/0) | +12.5 (1/0/1) | -12.5 (0/0/2) |",
        "| PROTEINS | +0.0 (1/0/1) | +12.5 (1/1/0) | - |",  # on the 2 folds both finished
        "| DD | +12.5 (1/1/0) | - | - |",
    ]
    start = lines.index(paired[0])
    assert lines[start : start + len(paired)] == paired
    optimism = [  # every fold's validation accuracy is 0.5: 50 minus the mean test accuracy
        "| dataset | ET | GIN | MLP (sum) | WL+SVM |",
        "|---|---|---|---|---|",
        "| MUTAG | -25.0 | -12.5 | -12.5 | -37.5 |",
        "| PROTEINS | -12.5 | -12.5 | +0.0 | - |",
        "| DD | -25.0 | -12.5 | - | - |",
    ]
    start = lines.index(optimism[0])
    assert lines[start - 2].startswith("Validation minus test accuracy of what each fold selected")
    assert lines[start : start + len(optimism)] == optimism


def test_markdown_counts_the_wins_of_each_et_form():
    bench = _bench_graph()
    rows = [
        _row("MUTAG", "et", [0.5, 0.5]),
        _row("MUTAG", "et:degree", [0.75, 0.75]),
        _row("MUTAG", "gin", [0.5, 0.75]),
        _row("MUTAG", "mlp", [0.5, 0.5]),
    ]
    text = bench.markdown(rows, budget="toy")
    assert "ET ahead of both GIN and the MLP on 0 of 1 dataset (issue goal" in text
    assert "ET (degree) ahead of both GIN and the MLP on 1 of 1 dataset (issue goal" in text
    assert "| MUTAG | -12.5 (0/1/1) | +0.0 (0/2/0) | +12.5 (1/1/0) | +25.0 (2/0/0) |" in text


def _write_run(out: Path, folder: str, dataset: str, accs, k, epochs, max_nodes=None) -> None:
    run = out / folder
    for result in _folds(accs):
        (run / f"fold-{result.fold:02d}").mkdir(parents=True)
        (run / f"fold-{result.fold:02d}" / "result.json").write_text(json.dumps(asdict(result)))
    extra = {"dataset": dataset, "protocol": "cv", "k": k, "max_nodes": max_nodes}
    if epochs is not None:
        extra["train"] = {"epochs": epochs}
    (run / "config.json").write_text(json.dumps({"task": "graph", "extra": extra}))


def test_collect_reads_each_runs_settings_and_every_fold(tmp_path):
    bench = _bench_graph()
    _write_run(tmp_path, "DD-et-degree", "DD", [0.75, 0.5, 0.25], k=10, epochs=7, max_nodes=200)
    _write_run(tmp_path, "DD-wl", "DD", [0.5, 0.5], k=10, epochs=None, max_nodes=200)
    _write_run(tmp_path, "IMDB-BINARY-et", "IMDB-BINARY", [1.0, 0.5], k=2, epochs=3)
    (tmp_path / "notes").mkdir()  # not a run: skipped
    rows = bench.collect([str(tmp_path)])
    got = [
        (r["dataset"], r["model"], r["k"], r["epochs"], r["max_nodes"], r["summary"].mean,
         len(r["summary"].folds), r["summary"].seconds_per_fold)
        for r in rows
    ]  # fmt: skip
    assert got == [
        ("DD", "et:degree", 10, 7, 200, 0.5, 3, 20.0),
        ("DD", "wl", 10, None, 200, 0.5, 2, 15.0),
        ("IMDB-BINARY", "et", 2, 3, None, 0.75, 2, 15.0),
    ]
    # One summary per run folder, from every fold (as several processes leave them).
    summary = json.loads((tmp_path / "DD-et-degree" / "summary.json").read_text())
    assert summary["test_acc_mean"] == 0.5 and len(summary["folds"]) == 3


def test_floors_are_the_majority_class_of_each_datasets_folds(tmp_path):
    from graph_fixtures import ring_or_star

    from energy_transformer.data.tu import write_tu

    # 6 stars and 18 rings: every stratified half trains on 3 + 9 and tests 3 + 9, so always
    # answering "ring" scores 9 of 12.
    write_tu(tmp_path / "TUDataset", "LOP", [ring_or_star(4 + i % 5, i < 6) for i in range(24)])
    write_toy(tmp_path)  # 12 and 12: ties go to the smaller label, half the test graphs
    text = _bench_graph().floors(["LOP", "TOY"], 2, str(tmp_path))
    assert text.splitlines()[2:] == ["| LOP | 24 | 2 | 75.0 |", "| TOY | 24 | 2 | 50.0 |"]


def test_the_majority_column_is_the_floor_of_the_row_with_most_folds():
    bench = _bench_graph()
    rows = [
        # GIN finished one fold of two (its floor 50.0), ET both (mean of 50 and 75).
        _row("MUTAG", "gin", [0.75], majority=[0.5]),
        _row("MUTAG", "et", [0.5, 0.75], majority=[0.5, 0.75]),
        _row("MUTAG", "mlp", [0.5], majority=[0.5]),
    ]
    line = next(x for x in bench.markdown(rows, "toy").splitlines() if x.startswith("| MUTAG |"))
    assert line.split(" | ")[2] == "62.5"


def _write_halves(root: Path) -> Path:
    from graph_fixtures import ring_or_star

    from energy_transformer.data.tu import write_tu

    write_tu(root / "TUDataset", "HALF", [ring_or_star(4 + i % 5, i % 2 == 1) for i in range(22)])
    return root


def test_floors_use_the_splits_cross_validate_uses(tmp_path):
    # 11 rings and 11 stars: a test half holds 6 + 5, its training half 5 + 6 of which
    # validation takes one of each (10% rounded up to 2), so the training majority is the class
    # with 5 in the test half: 5 of 11 right on both folds, 45.5 (not the 50 a tie would give).
    root = _write_halves(tmp_path)
    text = _bench_graph().floors(["HALF"], 2, str(root))
    assert text.splitlines()[2] == "| HALF | 22 | 2 | 45.5 |"
    summary = cross_validate("HALF", "wl", folds=2, root=root, out=None)
    assert summary.majority == pytest.approx(5 / 11)


def test_floors_flag_prints_the_floors_and_trains_nothing(tmp_path, monkeypatch, capsys):
    root = _write_halves(tmp_path)
    out = tmp_path / "out"
    argv = ["bench_graph.py", "--floors", "--datasets", "HALF", "--folds", "2", "--data", str(root)]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    _bench_graph().main()
    assert capsys.readouterr().out.splitlines() == [
        "| dataset | graphs | classes | majority class %, mean over 2 folds |",
        "|---|---|---|---|",
        "| HALF | 22 | 2 | 45.5 |",
    ]
    assert not out.exists()


def test_select_prints_which_run_each_fold_chose(
    toy_root, tmp_path, one_thread, monkeypatch, capsys
):
    bench = _bench_graph()
    overrides = {"gin": {"layers": 2}, "mlp": {"hidden": 8}}
    bench.run(["TOY"], ["gin", "mlp"], folds=2, epochs=1, root=toy_root, out=tmp_path / "a")
    bench.run(
        ["TOY"],
        ["gin", "mlp"],
        folds=2,
        epochs=1,
        root=toy_root,
        out=tmp_path / "b",
        overrides=overrides,
    )
    configs = {
        m: json.loads((tmp_path / "b" / f"TOY-{m}" / "config.json").read_text())
        for m in ("gin", "mlp")
    }
    assert configs["gin"]["extra"]["model_config"]["layers"] == 2  # each model its own variant
    assert configs["mlp"]["extra"]["model_config"]["hidden"] == 8
    out = tmp_path / "selected" / "TOY-gin"
    argv = [
        "bench_graph.py",
        "--select",
        str(out),
        str(tmp_path / "a" / "TOY-gin"),
        str(tmp_path / "b" / "TOY-gin"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    printed = capsys.readouterr().out
    assert "| fold | selected | val a/TOY-gin | val b/TOY-gin | test |" in printed
    summary = json.loads((out / "summary.json").read_text())
    rows = [
        line for line in printed.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")
    ]
    assert len(rows) == 2
    for row, fold in zip(rows, summary["folds"], strict=True):
        tie = {"loss": " (tie: lower val loss)", "order": " (tie: named first)", None: ""}
        assert row.split("|")[2].strip() == fold["extra"]["selected"] + tie[fold["extra"]["tie"]]
        assert row.split("|")[-2].strip() == f"{100 * fold['test_acc']:.1f}"
    # the selection is a run like any other for --collect (the gin column)
    table = bench.markdown(bench.collect([str(tmp_path / "selected")]), "toy")
    assert "| TOY |" in table and "GIN" in table


def test_selection_table_gives_every_candidates_validation_accuracy_in_percent():
    bench = _bench_graph()
    rows = [
        FoldResult(
            0,
            0.75,
            0.8,
            1.0,
            2.0,
            {"selected": "plain", "val_accs": {"plain": 0.8, "degree": 0.7}},
            0.5,
        ),
        FoldResult(
            1,
            0.6,
            0.9,
            1.0,
            2.0,
            {"selected": "degree", "val_accs": {"plain": 0.6, "degree": 0.9}},
            0.5,
        ),
    ]
    assert bench.selection_table(summarize(rows)).splitlines() == [
        "| fold | selected | val plain | val degree | test |",  # the candidates' own order
        "|---|---|---|---|---|",
        "| 0 | plain | 80.0 | 70.0 | 75.0 |",
        "| 1 | degree | 60.0 | 90.0 | 60.0 |",
        "",
        "selected: 67.5 +- 7.5 over 2 folds",  # mean of 75 and 60, population std
    ]


def test_a_parallel_fold_gives_each_model_its_own_overrides(toy_root, tmp_path, one_thread):
    import time

    bench = _bench_graph()
    overrides = {"et": {}, "gin": {"hidden": 8}, "mlp": {"hidden": 16}}
    for spec in ("gin", "mlp"):
        task = dict(
            dataset="TOY",
            spec=spec,
            fold=0,
            folds=2,
            epochs=1,
            preset="cpu",
            root=str(toy_root),
            out=str(tmp_path),
            device="cpu",
            deadline=time.time() + 600,
            batch_size=None,
            max_nodes=None,
            lr=None,
            overrides=overrides,
            ema=0.9,
        )
        assert bench._one_fold(task).startswith(f"TOY {spec} fold 0: ")
        config = json.loads((tmp_path / f"TOY-{spec}" / "config.json").read_text())
        assert config["extra"]["model_config"]["hidden"] == overrides[spec]["hidden"]
        assert config["extra"]["train"]["ema_decay"] == 0.9


def test_the_budget_line_names_the_model_of_each_override(
    toy_root, tmp_path, monkeypatch, one_thread
):
    bench = _bench_graph()
    out = tmp_path / "runs"
    argv = ["bench_graph.py", "--datasets", "TOY", "--models", "gin", "mlp", "wl", "--folds", "2"]
    argv += ["--epochs", "1", "--threads", "1", "--data", str(toy_root), "--out", str(out)]
    argv += ["--ema", "0.9"]  # every neural model averages; WL, which trains no weights, runs
    monkeypatch.setattr(sys, "argv", [*argv, "--gin-set", "hidden=8", "--mlp-set", "dropout=0"])
    bench.main()
    table = (out / "results.md").read_text()
    assert (
        "Budget: 2 folds, 1 epoch, weight average (EMA) 0.9, ET preset cpu, GIN hidden=8,"
        " MLP (sum) dropout=0." in table
    )
    config = json.loads((out / "TOY-gin" / "config.json").read_text())
    assert config["extra"]["model_config"]["hidden"] == 8
    assert config["extra"]["train"]["ema_decay"] == 0.9
    assert "train" not in json.loads((out / "TOY-wl" / "config.json").read_text())["extra"]


def test_run_computes_the_positional_encodings_an_et_variant_reads(toy_root, tmp_path, one_thread):
    bench = _bench_graph()
    assert bench.PRESETS["cpu"]["pe_dim"] != 3
    overrides = {"et": {"pe_dim": 3}}
    [row] = bench.run(
        ["TOY"],
        ["et"],
        folds=2,
        max_folds=1,
        epochs=1,
        root=toy_root,
        out=tmp_path,
        overrides=overrides,
    )
    assert len(row["summary"].folds) == 1
    assert bench._DATA["TOY"].graphs[0].pe.shape[1] == 3  # 3 Laplacian eigenvectors per node
    config = json.loads((tmp_path / "TOY-et" / "config.json").read_text())
    assert config["extra"]["model_config"]["pe_dim"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gin-set", "layers=0"], "--gin-set: layers must be an int >= 1, got 0"),
        (["--mlp-set", "hidden=-5"], "--mlp-set: hidden must be an int >= 1, got -5"),
        (["--mlp-set", "dropout=1.5"], "--mlp-set: dropout must lie in [0, 1), got 1.5"),
        (["--models", "et", "--gin-set", "layers=2"], "--gin-set is given but --models has no gin"),
        (["--select", "out", "nowhere", "nothere"], "--select: nowhere is not a graph run folder"),
        (["--ema", "1"], "--ema: ema_decay must be in (0, 1), got 1.0"),
    ],
)
def test_bad_values_end_in_one_argparse_line(monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["bench_graph.py", *args])
    with pytest.raises(SystemExit):
        load_script("bench_graph").main()
    assert message in capsys.readouterr().err


def test_collect_names_a_folder_it_cannot_place_in_a_column(toy_root, tmp_path, one_thread):
    bench = _bench_graph()
    bench.run(["TOY"], ["mlp"], folds=2, epochs=1, root=toy_root, out=tmp_path / "a")
    (tmp_path / "a" / "TOY-mlp").rename(tmp_path / "a" / "three")
    with pytest.raises(ValueError, match="three holds a TOY run but is not named TOY-MODEL"):
        bench.collect([str(tmp_path / "a")])


def test_running_the_same_command_again_reads_the_finished_folds_back(
    toy_root, tmp_path, one_thread
):
    bench = _bench_graph()
    first = bench.run(["TOY"], ["mlp"], folds=2, epochs=1, root=toy_root, out=tmp_path)
    again = bench.run(["TOY"], ["mlp"], folds=2, epochs=1, root=toy_root, out=tmp_path)
    assert [r.test_acc for r in again[0]["summary"].folds] == [
        r.test_acc for r in first[0]["summary"].folds
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gin-set", "in_features=5"], "--gin-set: ['in_features'] are not options of GIN"),
        (["--models", "et", "--et-set", "dim=-1"], "--et-set: "),
    ],
)
def test_dataset_sizes_and_values_torch_rejects_end_in_one_line(monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["bench_graph.py", *args])
    with pytest.raises(SystemExit):
        load_script("bench_graph").main()
    assert message in capsys.readouterr().err
