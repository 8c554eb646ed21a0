"""The anomaly benchmark script end to end on a tiny graph in the public ``.npz`` layout."""

from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_anomaly")


def write_tolokers(root: Path, n: int = 150) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(n) < 0.2).astype(np.int64)
    features = rng.normal(size=(n, 4)) + 1.5 * labels[:, None]
    edges = rng.integers(0, n, size=(4 * n, 2))
    (root / "gad").mkdir(parents=True)
    np.savez(root / "gad" / "tolokers.npz", node_features=features, node_labels=labels, edges=edges)


# The ET options are the CLI's (tasks.anomaly.add_et_arguments) under an "et-" prefix; the
# report's header must state what ET was.
DEFAULT_ET = (
    "",
    "K 32, W^Q/W^K init std 0.02, degree buckets 0, beta 1/sqrt(Y), self loops, classifier"
    " on [LN(final tokens), input embedding].",
)
OTHER_ET = (
    "--et-memories 12 --et-no-self-loops --et-no-concat --et-learn-beta",
    "K 12, W^Q/W^K init std 0.02, degree buckets 0, beta learned per head, no self loops,"
    " classifier on LN(final tokens).",
)


@pytest.mark.parametrize(
    ("ratio", "inputs", "et"),
    [
        (0.4, ("", "the raw features, standardised"), DEFAULT_ET),
        (
            0.1,
            (
                "--input-hops 1 --input-bins 3",
                "RF-Graph's map over 1 hop, each column piecewise-linear over 3 quantile bins",
            ),
            OTHER_ET,
        ),
    ],
)
def test_short_run_prints_both_protocols(bench, tmp_path, one_thread, ratio, inputs, et):
    write_tolokers(tmp_path)
    out = tmp_path / "report.md"
    report = bench.main(
        [
            "--datasets",
            "tolokers",
            "--models",
            "et,mlp,rf-graph",
            "--seeds",
            "1",
            "--first-seed",
            "3",
        ]
        + ["--epochs", "2", "--hidden", "8", "--rf-trees", "5", "--threads", "1"]
        + ["--train-ratio", str(ratio), "--data", str(tmp_path), "--out", str(out)]
        + [*inputs[0].split(), *et[0].split()]
    )
    assert out.read_text() == report
    train = f"{100 * ratio:g}%"
    assert f"1 seed (seed 3; one {train} / " in report
    assert f"neural models' input: {inputs[1]}." in report
    assert et[1] in report
    for table in ("GADBench protocol", "BWGNN protocol"):
        assert table in report
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert {r.split("|")[1].strip() for r in rows} >= {"et", "et-energy", "mlp", "rf-graph"}


def test_a_cut_off_run_is_tabulated_from_its_log(bench, tmp_path, capsys):
    # Seeds 0 and 1 finished by both models, seed 2 by one: only the first two count.
    metric = {"gadbench": {"auroc": 0.0, "auprc": 0.0, "rec_at_k": 0.0}, "bwgnn": {}}
    for model, seed, auroc in [("et", 0, 0.8), ("mlp", 0, 0.7), ("et", 1, 0.6), ("mlp", 1, 0.5)]:
        metrics = {**metric, "gadbench": {**metric["gadbench"], "auroc": auroc}}
        energy = {"auroc": 0.4, "auprc": 0.3} if model == "et" else None
        bench._report("tolokers", bench.RunResult(model, seed, metrics, 2.0, energy_metrics=energy))
    bench._report("tolokers", bench.RunResult("et", 2, metric, 2.0))
    log = tmp_path / "log.txt"
    log.write_text("a warning line\n" + capsys.readouterr().out)

    results = bench.parse_log(log.read_text())["tolokers"]
    assert sorted((r.model, r.seed) for r in results) == [
        ("et", 0), ("et", 1), ("mlp", 0), ("mlp", 1)
    ]  # fmt: skip
    assert results[0].energy_metrics == {"auroc": 0.4, "auprc": 0.3}

    write_tolokers(tmp_path)
    report = bench.main(
        ["--datasets", "tolokers", "--from-log", str(log), "--data", str(tmp_path)]
        + ["--out", str(tmp_path / "report.md")]
    )
    assert "over 2 seeds" in report
    assert "| et | 70.0 ± 10.0 |" in report
    assert "| mlp | 60.0 ± 10.0 |" in report
    assert "| et-energy | 40.0 ± 0.0 |" in report


def test_the_datasets_own_splits(bench, tmp_path, one_thread):
    write_tolokers(tmp_path)
    with np.load(tmp_path / "gad" / "tolokers.npz") as npz:
        arrays = dict(npz)
    order = np.random.default_rng(1).permutation(150)
    masks = np.zeros((3, 1, 150), dtype=bool)
    masks[0, 0, order[:75]], masks[1, 0, order[75:112]], masks[2, 0, order[112:]] = 1, 1, 1
    np.savez(tmp_path / "gad" / "tolokers.npz", **arrays, train_masks=masks[0],
             val_masks=masks[1], test_masks=masks[2])  # fmt: skip
    args = ["--datasets", "tolokers", "--models", "mlp,rf-graph", "--seeds", "1", "--splits"]
    args += ["file", "--epochs", "2", "--hidden", "8", "--rf-trees", "5", "--threads", "1"]
    report = bench.main([*args, "--data", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert "one dataset's own (split k for seed k) train / val / test split per seed" in report
    assert "| rf-graph |" in report


# -- the report's numbers, from a hand-written log ----------------------------------------------


def _metrics(auroc, auprc, rec, f1, bw_auroc) -> dict:
    return {
        "gadbench": {"auroc": auroc, "auprc": auprc, "rec_at_k": rec},
        "bwgnn": {"macro_f1": f1, "auroc": bw_auroc},
    }


def test_from_log_tables_every_protocol_of_the_finished_seeds(bench, tmp_path, capsys):
    # Seeds 2 and 3 finished by both models, seed 4 by ET only; a second dataset in the same log.
    runs = [
        ("tolokers", "et", 2, _metrics(0.75, 0.5, 0.25, 0.625, 0.875), 10.0, (0.5, 0.25)),
        ("tolokers", "mlp", 2, _metrics(0.5, 0.5, 0.5, 0.5, 0.5), 2.0, None),
        ("reddit", "mlp", 2, _metrics(0.125, 0.125, 0.125, 0.125, 0.125), 1.0, None),
        ("tolokers", "et", 3, _metrics(0.25, 0.5, 0.75, 0.875, 0.625), 30.0, (0.75, 0.25)),
        ("tolokers", "mlp", 3, _metrics(0.5, 0.25, 0.5, 0.75, 0.5), 4.0, None),
        ("tolokers", "et", 4, _metrics(1.0, 1.0, 1.0, 1.0, 1.0), 50.0, (1.0, 1.0)),
    ]
    for dataset, model, seed, metrics, seconds, energy in runs:
        energy = {"auroc": energy[0], "auprc": energy[1]} if energy else None
        bench._report(
            dataset, bench.RunResult(model, seed, metrics, seconds, energy_metrics=energy)
        )
    log = tmp_path / "log.txt"
    log.write_text(capsys.readouterr().out)

    logged = bench.parse_log(log.read_text())
    assert [(r.model, r.seed, r.seconds) for r in logged["reddit"]] == [("mlp", 2, 1.0)]
    assert [(r.model, r.seed, r.seconds) for r in logged["tolokers"]] == [
        ("et", 2, 10.0), ("mlp", 2, 2.0), ("et", 3, 30.0), ("mlp", 3, 4.0)
    ]  # fmt: skip
    assert logged["tolokers"][2].metrics == runs[3][3]
    assert logged["tolokers"][2].energy_metrics == {"auroc": 0.75, "auprc": 0.25}

    write_tolokers(tmp_path)
    with np.load(tmp_path / "gad" / "tolokers.npz") as npz:
        anomalies = int(npz["node_labels"].sum())
    report = bench.main(
        ["--datasets", "tolokers", "--from-log", str(log), "--data", str(tmp_path)]
        + ["--seeds", "3", "--first-seed", "2", "--train-ratio", "0.1", "--hidden", "8"]
        + ["--out", str(tmp_path / "report.md")]
    )
    assert "3 seeds (seeds 2-4; one 10% / 30% / 60% train / val / test split per seed" in report
    assert f" {anomalies} anomalies ({100 * anomalies / 150:.1f}%)" in report
    gadbench, bwgnn = report.split("ET paper / BWGNN protocol")
    assert "GADBench protocol: test metrics at the best validation AUPRC (%, mean ± std over 2" \
        " seeds)" in gadbench  # fmt: skip
    # mean ± population std over seeds 2 and 3, in %; seconds per seed.
    assert (
        "\n".join(
            [
                "| model | auroc | auprc | rec_at_k | s / seed |",
                "|---|---|---|---|---|",
                "| et | 50.0 ± 25.0 | 50.0 ± 0.0 | 50.0 ± 25.0 | 20.0 |",
                "| et-energy | 62.5 ± 12.5 | 25.0 ± 0.0 | - | (in et) |",
                "| mlp | 50.0 ± 0.0 | 37.5 ± 12.5 | 50.0 ± 0.0 | 3.0 |",
            ]
        )
        in gadbench
    )
    assert "mean ± std over 2 seeds)" in bwgnn
    assert (
        "\n".join(
            [
                "| model | macro_f1 | auroc | s / seed |",
                "|---|---|---|---|",
                "| et | 75.0 ± 12.5 | 75.0 ± 12.5 | 20.0 |",
                "| et-energy | - | 62.5 ± 12.5 | (in et) |",
                "| mlp | 62.5 ± 12.5 | 50.0 ± 0.0 | 3.0 |",
            ]
        )
        in bwgnn
    )
    assert bench.PAPER in bwgnn


# Spec §2.2: macro-F1 / AUROC (%) of ET, then of the best baseline (BWGNN unless noted).
SPEC_PAPER = {
    "YelpChi 1%": (63.0, 73.2, "BWGNN 61.1 / 72.0 (PC-GNN AUROC 75.4)"),
    "YelpChi 40%": (71.5, 84.9, "BWGNN 71.0 / 84.0"),
    "Amazon 1%": (89.3, 91.9, "BWGNN 90.9 / 89.4"),
    "Amazon 40%": (92.8, 97.3, "BWGNN 92.2 / 98.0"),
    "T-Finance 1%": (85.1, 92.8, "BWGNN 84.8 / 91.1"),
    "T-Finance 40%": (88.2, 95.0, "BWGNN 86.8 / 94.3"),
    "T-Social 1%": (79.1, 91.9, "BWGNN 75.9 / 88.0"),
    "T-Social 40%": (83.5, 93.9, "BWGNN 83.9 / 95.2"),
}


def test_paper_reference_table_matches_the_spec(bench):
    head, rule, *rows = bench.PAPER.splitlines()
    assert head.split("|")[2:4] == [" ET macro-F1 ", " ET AUROC "]
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert {c[0]: (float(c[1]), float(c[2]), c[3]) for c in cells} == SPEC_PAPER
    assert len(rows) == len(SPEC_PAPER)


def test_selection_across_configurations_from_two_runs_logs(bench, tmp_path, one_thread, capsys):
    """Two configurations run with the same seeds; --select picks per model and seed on
    validation, from the logs alone."""
    write_tolokers(tmp_path)
    base = ["--datasets", "tolokers", "--models", "et,mlp", "--seeds", "2", "--epochs", "2"]
    base += ["--rf-trees", "5", "--threads", "1", "--data", str(tmp_path)]
    logs, runs = {}, {}
    for name, flags in (("small", ["--hidden", "8"]), ("wide", ["--hidden", "16"])):
        capsys.readouterr()
        bench.main([*base, *flags, "--out", str(tmp_path / f"{name}.md")])
        logs[name] = tmp_path / f"{name}.txt"
        logs[name].write_text(capsys.readouterr().out)
        runs[name] = bench.parse_log(logs[name].read_text())["tolokers"]
    # The log carries what selection needs: each run's validation record and split.
    assert all(set(r.validation) == {"gadbench", "bwgnn"} and r.split for r in runs["wide"])
    report = bench.main(
        ["--select", *(f"{n}={p}" for n, p in logs.items()), "--out", str(tmp_path / "s.md")]
    )
    assert (tmp_path / "s.md").read_text() == report
    assert (
        "### tolokers, gadbench protocol: selected on validation auprc (2 seeds, seeds 0-1)"
        in report
    )
    for model in ("et", "mlp"):
        picks = {
            seed: max(runs, key=lambda n: next(
                r.validation["gadbench"] for r in runs[n] if r.model == model and r.seed == seed
            ))
            for seed in (0, 1)
        }  # fmt: skip
        expect = [
            next(r for r in runs[picks[s]] if r.model == model and r.seed == s).metrics
            for s in (0, 1)
        ]
        mean = 100 * sum(m["gadbench"]["auroc"] for m in expect) / 2
        row = next(line for line in report.splitlines() if line.startswith(f"| {model} | "))
        assert row.startswith(f"| {model} | {mean:.1f} ± ")
        counts = [list(picks.values()).count(n) for n in ("small", "wide")]
        assert any(
            line.startswith(f"| {model} | 2 | {counts[0]} / ") and f" | {counts[1]} / " in line
            for line in report.splitlines()
        )


def test_selection_refuses_bad_pairs_and_old_logs(bench, tmp_path, capsys):
    old = tmp_path / "old.txt"
    old.write_text(
        "[tolokers et seed 0] {'gadbench': {'auroc': 0.5, 'auprc': 0.5, 'rec_at_k': 0.5},"
        " 'bwgnn': {'macro_f1': 0.5, 'auroc': 0.5}} 3s\n"
    )
    for args, message in [
        (["a"], "--select takes NAME=LOG pairs, got 'a'"),
        ([f"a={tmp_path / 'none.txt'}", f"b={old}"], "--select a: no log file"),
        ([f"a={old}", f"b={old}"], "a: et seed 0 has no validation val_auprc"),
    ]:
        with pytest.raises(SystemExit):
            bench.main(["--select", *args, "--out", str(tmp_path / "s.md")])
        assert message in capsys.readouterr().err


def _log_line(dataset, model, seed, val, test, split="s1"):
    metrics = {"gadbench": {"auroc": test, "auprc": test, "rec_at_k": test},
               "bwgnn": {"macro_f1": test, "auroc": test}}  # fmt: skip
    return (
        f"[{dataset} {model} seed {seed}] {metrics} val {{'gadbench': {val}, 'bwgnn': {val}}}"
        f" split {split} 1.5s\n"
    )


def test_selection_from_logs_by_hand_and_its_guards(bench, tmp_path, capsys):
    a, b, r = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "r.txt"
    a.write_text(
        _log_line("tolokers", "et", 0, 0.6, 0.25) + _log_line("tolokers", "et", 1, 0.1, 0.5)
    )
    b.write_text(
        _log_line("tolokers", "et", 0, 0.5, 0.75) + _log_line("tolokers", "et", 1, 0.5, 1.0)
    )
    r.write_text(_log_line("reddit", "et", 0, 0.5, 0.5))
    out = tmp_path / "sel.md"
    report = bench.main(["--select", f"a={a}", f"b={b}", "--out", str(out)])
    # Seed 0 takes a (test 0.25), seed 1 takes b (test 1.0): mean 62.5, std 37.5.
    assert "| et | 62.5 ± 37.5 | 62.5 ± 37.5 | 62.5 ± 37.5 | 3.0 |" in report
    assert "| et | 2 | 1 / 37.5 | 1 / 87.5 |" in report
    # One configuration per model: b's mean validation (0.5) beats a's (0.35).
    report = bench.main(
        ["--select", f"a={a}", f"b={b}", "--select-per", "model", "--out", str(out)]
    )
    assert "| et | 87.5 ± 12.5 |" in report and "| et | 2 | 0 / 37.5 | 2 / 87.5 |" in report
    for args, message in [
        ([f"a={a}", f"b={b}"], "--select needs --out"),
        ([f"a={a}", f"b={b}", "--out", str(a)], f"--out {a} is one of the logs"),
        ([f"a={a}", f"a={b}", "--out", str(out)], "--select names a twice"),
        ([f"a={a}", f"e={out}", "--out", str(tmp_path / "x.md")], "holds no result line"),
        (
            [f"a={a}", f"r={r}", "--out", str(out)],
            "only a holds results of tolokers: nothing to select",
        ),
    ]:
        with pytest.raises(SystemExit):
            bench.main(["--select", *args])
        assert message in capsys.readouterr().err
    assert a.read_text().startswith("[tolokers et seed 0]")  # the inputs are untouched


# -- the selection log's round trip, both protocols' tables, --rf-hops ---------------------


def test_a_reported_line_reads_back_with_its_validation_split_and_energy(bench, capsys):
    validation = {"gadbench": 0.55, "bwgnn": 0.71}
    energy = {"auroc": 0.46, "auprc": 0.22, "rec_at_k": 0.2}
    written = [
        bench.RunResult("et", 4, _metrics(0.8, 0.5, 0.5, 0.7, 0.8), 12.0, energy_metrics=energy,
                        validation=validation, split="24f2b490"),
        bench.RunResult("mlp", 4, _metrics(0.7, 0.4, 0.4, 0.6, 0.7), 3.0,
                        validation={"gadbench": 0.5, "bwgnn": 0.6}, split="24f2b490"),
    ]  # fmt: skip
    for r in written:
        bench._report("tolokers", r)
    assert bench.parse_log(capsys.readouterr().out) == {"tolokers": written}


def _chosen_row(section: str, names: list[str], model: str) -> dict[str, str]:
    """The cells of ``model``'s row in the chosen-configuration table of ``section``, by
    configuration name."""
    lines = section.splitlines()
    head = next(line for line in lines if line.endswith(" | " + " | ".join(names) + " |"))
    columns = [c.strip() for c in head.split("|")[1:-1]]
    start = lines.index(head)
    row = next(line for line in lines[start:] if line.startswith(f"| {model} | "))
    return dict(zip(columns, (c.strip() for c in row.split("|")[1:-1]), strict=True))


def test_selection_report_selects_under_each_protocol_on_its_own_metric(bench, tmp_path, capsys):
    # (config, seed, validation AUPRC, validation macro-F1, every test metric, seconds)
    runs = [
        ("a", 0, 0.6, 0.2, 0.8, 2.0),
        ("a", 1, 0.3, 0.9, 0.7, 2.0),
        ("b", 0, 0.5, 0.4, 0.6, 3.0),
        ("b", 1, 0.4, 0.1, 0.95, 3.0),
    ]
    logs = {}
    for name in ("a", "b"):
        capsys.readouterr()
        for config, seed, val_auprc, val_f1, t, seconds in runs:
            if config == name:
                validation = {"gadbench": val_auprc, "bwgnn": val_f1}
                r = bench.RunResult("et", seed, _metrics(t, t, t, t, t), seconds,
                                    validation=validation, split=f"split{seed}")  # fmt: skip
                bench._report("tolokers", r)
        logs[name] = tmp_path / f"{name}.txt"
        logs[name].write_text(capsys.readouterr().out)
    report = bench.main(
        ["--select", *(f"{n}={p}" for n, p in logs.items()), "--out", str(tmp_path / "s.md")]
    )
    gadbench, bwgnn = report.split("### tolokers, bwgnn protocol: selected on validation")
    assert "### tolokers, gadbench protocol: selected on validation auprc" in gadbench
    assert bwgnn.startswith(" macro_f1 (2 seeds, seeds 0-1)")
    # GADBench: seed 0 chooses a (test 0.8), seed 1 b (0.95); seconds: both candidates'.
    mean, std = 100 * (0.8 + 0.95) / 2, 100 * (0.95 - 0.8) / 2
    assert f"| et | {mean:.1f} ± {std:.1f} | {mean:.1f} ± {std:.1f} |" in gadbench
    assert " | 5.0 |" in gadbench
    # BWGNN: on validation macro-F1 seed 0 chooses b (0.6), seed 1 a (0.7).
    assert f"| et | {100 * 0.65:.1f} ± {100 * 0.05:.1f} |" in bwgnn
    for section in (gadbench, bwgnn):  # one seed each; each run's own mean test over seeds 0-1
        row = _chosen_row(section, ["a", "b"], "et")
        assert (row["a"], row["b"]) == (f"1 / {100 * 0.75:.1f}", f"1 / {100 * 0.775:.1f}")
    for pair in ("=x", "a="):
        with pytest.raises(SystemExit):
            bench.main(["--select", pair, f"b={logs['b']}", "--out", str(tmp_path / "t.md")])
        assert f"--select takes NAME=LOG pairs, got '{pair}'" in capsys.readouterr().err


def harness_configs(bench, monkeypatch) -> list:
    """The HarnessConfig of each run_protocols call bench.main makes from now on."""
    configs = []
    run_protocols = bench.run_protocols

    def spy(data, protocols, models, seeds, cfg, **kwargs):
        configs.append(cfg)
        return run_protocols(data, protocols, models, seeds, cfg, **kwargs)

    monkeypatch.setattr(bench, "run_protocols", spy)
    return configs


def test_rf_hops_reaches_the_trees_and_the_report(bench, tmp_path, one_thread, monkeypatch):
    write_tolokers(tmp_path)
    configs = harness_configs(bench, monkeypatch)
    args = ["--datasets", "tolokers", "--models", "rf-graph", "--seeds", "1", "--rf-trees", "3"]
    args += ["--rf-hops", "3", "--threads", "1", "--data", str(tmp_path)]
    report = bench.main([*args, "--out", str(tmp_path / "r.md")])
    assert [c.rf for c in configs] == [{"n_estimators": 3, "hops": 3}]
    assert "RF-Graph and GB-Graph (gradient boosting): 3 trees on mean/max 3-hop aggregates" in (
        report
    )


def test_ema_reaches_every_network_and_the_report(bench, tmp_path, one_thread, monkeypatch, capsys):
    write_tolokers(tmp_path)
    configs = harness_configs(bench, monkeypatch)
    args = ["--datasets", "tolokers", "--models", "mlp", "--seeds", "1", "--epochs", "2"]
    args += ["--hidden", "8", "--threads", "1", "--data", str(tmp_path)]
    report = bench.main([*args, "--ema", "0.9", "--out", str(tmp_path / "r.md")])
    assert [c.ema_decay for c in configs] == [0.9]
    assert "2 epochs full-batch, Adam lr 0.01, weights averaged (EMA 0.9), hidden 8," in report
    with pytest.raises(SystemExit):
        bench.main([*args, "--ema", "2", "--out", str(tmp_path / "bad.md")])
    assert "--ema: ema_decay must be in (0, 1), got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "bad.md").exists()


def test_selection_from_logs_compares_every_model_on_the_seeds_all_finished(
    bench, tmp_path, capsys
):
    logs = {name: tmp_path / f"{name}.txt" for name in "abcd"}
    logs["a"].write_text("".join(_log_line("reddit", "et", s, 0.5, 0.5) for s in (0, 1)))
    logs["b"].write_text("".join(_log_line("reddit", "et", s, 0.4, 0.5) for s in (0, 1)))
    # The trees' logs hold a third seed, with a test score that would move their mean.
    for name in "cd":
        lines = [_log_line("reddit", "rf-graph", s, 0.5, 0.25 if s < 2 else 1.0) for s in range(3)]
        logs[name].write_text("".join(lines))
    pairs = [f"{n}={p}" for n, p in logs.items()]
    report = bench.main(["--select", *pairs, "--out", str(tmp_path / "s.md")])
    assert "(2 seeds, seeds 0-1)" in report
    assert "| rf-graph | 25.0 ± 0.0 |" in report
    logs["b"].write_text(_log_line("reddit", "et", 2, 0.4, 0.5))
    with pytest.raises(SystemExit):
        bench.main(["--select", *pairs, "--out", str(tmp_path / "s.md")])
    assert "the logs of reddit share no seed that every model finished" in capsys.readouterr().err


def test_seed_ranges_are_named_as_they_are(bench):
    assert bench._seed_range([4]) == "seed 4"
    assert bench._seed_range([10, 11, 12]) == "seeds 10-12"
    assert bench._seed_range([10, 12]) == "seeds 10, 12"
