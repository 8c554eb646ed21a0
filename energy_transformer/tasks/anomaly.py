"""Graph anomaly detection: an Energy Transformer over a graph's edges, against GNN baselines.

Plugs into the ``et`` command line: ``et train anomaly --dataset tolokers --protocol gadbench``
trains ET (or any baseline, or all of them) for several seeds under the GADBench and/or BWGNN
protocol and writes checkpoints, a results table and figures; ``et eval RUN`` re-scores the
saved weights and redraws the figures.

Run folder layout: ``RUN/config.json`` (the command), ``RUN/results.json`` and
``RUN/results.md`` (per protocol, mean ± std over seeds), ``RUN/<model>/seed<k>/`` (one
Trainer run each: ``config.json``, ``best.safetensors``, ``last.safetensors``, ``metrics.csv``)
and ``RUN/figures/seed<k>/`` (ET's energy descent, score distributions of normal vs anomalous
nodes; training draws the first seed's, ``et eval`` every seed's).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from energy_transformer.data.gad import GAD_DATASETS, load_gad, load_gad_file
from energy_transformer.files import recorded_path, write_text_atomic
from energy_transformer.models.gad_baselines import is_neural
from energy_transformer.models.node import PRESETS, node_preset
from energy_transformer.nn import EnergyTerms
from energy_transformer.nn.hopfield import HOPFIELD_KINDS
from energy_transformer.protocols.gad import (
    MODELS,
    PROTOCOLS,
    SPLITS,
    HarnessConfig,
    RunResult,
    anomaly_scores,
    format_chosen,
    format_table,
    input_description,
    neural_input,
    prepare,
    rebuild_model,
    run_protocols,
    score_split,
    seed_splits,
    select_configurations,
    summarize,
    train_ratio_of,
)
from energy_transformer.tasks import (
    RUN_PLACE_OPTIONS,
    add_ema_argument,
    check_selection_out,
    command_record,
    load_model,
    option_names,
    preset_values,
    refuse_selection,
    resume_help,
    run_names,
)
from energy_transformer.text import counted
from energy_transformer.train import (
    NO_PROGRESS,
    check_new_run,
    check_not_part_of_run,
    launched_world_size,
    read_run_config,
    resolve_device,
)

PROTOCOL_CHOICES = (*PROTOCOLS, "both")


def _seeds(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` (or ``"7,"`` for one) -> those seeds."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"seeds must be a count or a list: {text!r}") from err
    if "," in text:
        if not seeds:
            raise argparse.ArgumentTypeError(f"no seed in {text!r}")
        if len(set(seeds)) != len(seeds):  # the second run would meet the first's folder
            raise argparse.ArgumentTypeError(f"seeds repeat: {text!r}")
        return seeds
    if len(seeds) != 1 or seeds[0] < 1:
        raise argparse.ArgumentTypeError(f"a seed count must be >= 1, got {text!r}")
    return list(range(seeds[0]))


def _models(text: str) -> list[str]:
    names = list(MODELS) if text == "all" else [m.strip() for m in text.split(",")]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {MODELS}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"models repeat: {text!r}")
    return names


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default=None,
        choices=sorted(GAD_DATASETS),
        help="graph to score (default: tolokers, or the name of the file --data gives)",
    )
    parser.add_argument(
        "--protocol",
        default="gadbench",
        choices=PROTOCOL_CHOICES,
        help="gadbench: select on val AUPRC, report AUROC/AUPRC/Rec@K; bwgnn: select on val"
        " macro-F1 (threshold tuned on val), report macro-F1/AUROC; both: one run, both tables",
    )
    parser.add_argument(
        "--model", type=_models, default="et", help=f"comma list of {MODELS}, or all"
    )
    parser.add_argument(
        "--train-ratio",
        type=float,
        default=None,
        help="stratified train fraction (1%%: 0.01; default 0.4, both protocols');"
        " not with --splits file",
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default="1",
        help="a count (5 = seeds 0..4) or a list of seeds (0,2; one seed: 3, with the comma);"
        " one run is a quick look: the protocols report mean ± std over 5 (BWGNN) or 10"
        " (GADBench) seeds",
    )
    parser.add_argument(
        "--epochs", type=int, default=100, help="full-batch epochs, every model (no early stop)"
    )
    parser.add_argument("--lr", type=float, default=0.01, help="AdamW learning rate, constant")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    add_ema_argument(parser)
    parser.add_argument("--hidden", type=int, default=64, help="ET token dim / baseline width")
    add_et_arguments(parser)
    parser.add_argument(
        "--input-hops",
        type=int,
        default=0,
        metavar="N",
        help="feed neural models RF-Graph's mean/max aggregates over 1..N hops (0: raw features)",
    )
    parser.add_argument(
        "--input-bins",
        type=int,
        default=0,
        metavar="N",
        help="feed neural models each input column's piecewise-linear encoding over N quantile"
        " bins (0: the values themselves)",
    )
    parser.add_argument(
        "--splits",
        default="random",
        choices=SPLITS,
        help="random: stratified per seed; file: the dataset's own masks (split = seed)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/anomaly"), help="run folder (MODEL/seedK inside)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root holding gad/ (else $ET_DATA, else the cache), or one graph file: .npz"
        " (GADBench: node_features, node_labels, edges) or .mat (CARE-GNN)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=resume_help("the run in OUT"),
    )
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


# The ET options' defaults (dest names without the prefix): any other value is a choice the
# user made, which a run without ET says it does not use.
ET_OPTION_DEFAULTS: dict[str, Any] = {
    "preset": "small", "heads": None, "head_dim": None, "steps": None, "alpha": None,
    "memories": None, "qk_init_std": 0.02, "degree_buckets": 0, "learn_beta": False,
    "no_self_loops": False, "no_concat": False, "hopfield": "relu",
}  # fmt: skip


def add_et_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The ET block's options, ``--preset``, ``--heads`` ...; ``prefix="et-"`` gives
    ``--et-preset``, ``--et-heads`` ... for a parser whose other options serve every model."""
    p = f"--{prefix}"
    parser.add_argument(
        f"{p}preset",
        default=ET_OPTION_DEFAULTS["preset"],
        choices=sorted(PRESETS),
        help="ET block sizes (models.node.PRESETS); the size options below override them",
    )
    for name, kind, what in [
        ("heads", int, "ET attention heads H"),
        ("head-dim", int, "ET head size Y"),
        ("steps", int, "ET descent steps T"),
        ("alpha", float, "ET step size"),
    ]:
        values = preset_values(PRESETS, name.replace("-", "_"))
        parser.add_argument(f"{p}{name}", type=kind, default=None, help=f"{what} ({values})")
    parser.add_argument(
        f"{p}memories", type=int, default=None, help="Hopfield memories K (default 4 * hidden)"
    )
    parser.add_argument(
        f"{p}qk-init-std",
        type=float,
        default=ET_OPTION_DEFAULTS["qk_init_std"],
        help="init std of ET's query and key projections W^Q, W^K",
    )
    parser.add_argument(
        f"{p}degree-buckets",
        type=int,
        default=ET_OPTION_DEFAULTS["degree_buckets"],
        help="add an embedding of the log2-bucketed in-degree (0: none, the paper's form)",
    )
    parser.add_argument(
        f"{p}learn-beta",
        action="store_true",
        help="learn one attention inverse temperature beta per head (released graph code)",
    )
    parser.add_argument(
        f"{p}no-self-loops",
        f"{p}exclude-self",
        action="store_true",
        help="a node does not attend to itself, as the paper's key sets (default: it does;"
        " the same switch as --exclude-self of the other tasks)",
    )
    parser.add_argument(
        f"{p}hopfield",
        choices=HOPFIELD_KINDS,
        default=ET_OPTION_DEFAULTS["hopfield"],
        help="Hopfield energy: relu (the paper's) or softmax",
    )
    parser.add_argument(
        f"{p}no-concat",
        action="store_true",
        help="classify the final tokens alone, as the paper describes (default: with the input"
        " embedding, as the released code)",
    )


def et_options(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """:class:`~energy_transformer.models.node.NodeEnergyTransformer` keyword arguments (but
    ``in_dim`` and ``dim``) from the options of :func:`add_et_arguments` with ``prefix``."""
    opt = vars(args)
    p = prefix.replace("-", "_")
    sizes = ("heads", "head_dim", "steps", "alpha", "memories")
    return {
        **node_preset(opt[f"{p}preset"], **{k: opt[p + k] for k in sizes}),
        "qk_init_std": opt[f"{p}qk_init_std"],
        "degree_buckets": opt[f"{p}degree_buckets"],
        "learn_beta": opt[f"{p}learn_beta"],
        "self_loops": not opt[f"{p}no_self_loops"],
        "concat_input": not opt[f"{p}no_concat"],
        "hopfield": opt[f"{p}hopfield"],
    }


def dataset_name(dataset: str | None, data: Path | None) -> str:
    """What a run is called: ``--dataset``, else the name of the file ``--data`` gives (a
    graph of one's own must not be recorded as Tolokers), else tolokers."""
    if dataset is not None:
        return dataset
    return data.stem if data is not None and data.is_file() else "tolokers"


def load_graph(dataset: str, data: str | Path | None) -> Any:
    """The graph file ``data`` when it is one, else ``dataset`` from the data root ``data``."""
    if data is not None and Path(data).is_file():
        return load_gad_file(data)
    return load_gad(dataset, root=data)


def _config(args: argparse.Namespace) -> HarnessConfig:
    return HarnessConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        ema_decay=args.ema,
        hidden=args.hidden,
        input_hops=args.input_hops,
        input_bins=args.input_bins,
        device=args.device,
        progress=not args.no_progress,
        et=et_options(args),
    )


def _protocol_names(name: str) -> list[str]:
    # The first protocol's selection decides which weights are saved as best.safetensors.
    return ["gadbench", "bwgnn"] if name == "both" else [name]


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def results_markdown(results: list[RunResult], protocols: list[str], title: str) -> str:
    parts = [f"# {title}\n"]
    for p in protocols:
        parts.append(f"## protocol: {p} (metrics in %, mean ± std over seeds)\n")
        parts.append(format_table(summarize(results, p)) + "\n")
    return "\n".join(parts)


def train(args: argparse.Namespace) -> None:
    """``et train anomaly``: every chosen model, every seed, one results table per protocol."""
    if launched_world_size() > 1:
        # Every epoch is one full-batch step on one graph: nothing to split across processes.
        raise ValueError(
            "et train anomaly trains full-batch on one graph, so torchrun would only repeat it"
            " in every process: run it as one process (seeds side by side: one process each)"
        )
    protocols = _protocol_names(args.protocol)
    if args.splits == "file" and args.train_ratio is not None:
        raise ValueError("--train-ratio draws random splits: it does not apply to --splits file")
    if "et" not in args.model:
        given = [k for k, d in ET_OPTION_DEFAULTS.items() if getattr(args, k) != d]
        if given:
            options = option_names(given)
            print(
                f"note: {options} not used: no Energy Transformer in --model {','.join(args.model)}"
            )
    check_not_part_of_run(args.out, "anomaly")
    check_new_run(args.out, args.resume, task="anomaly")
    cfg = _config(args)
    args.dataset = dataset_name(args.dataset, args.data)
    data = load_graph(args.dataset, args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    run_config = {"task": "anomaly", "command": command_record(args)}
    # A resumed run keeps its record until every seed has accepted the new command (a seed's
    # trainer refuses other data or settings).
    if not (args.out / "config.json").is_file():
        _write_json(args.out / "config.json", run_config)
    record = {"dataset": args.dataset, "data": recorded_path(args.data)}
    if args.splits == "file":
        record["splits"] = "file"
    print(
        f"{args.dataset}: {data.num_nodes} nodes, {data.edge_index.shape[1]} directed edges,"
        f" {int(data.y[data.label_mask].sum())} anomalies; models {args.model},"
        f" seeds {args.seeds}, protocol {args.protocol}"
    )
    results: list[RunResult] = []

    def report(r: RunResult) -> None:
        results.append(r)
        print(f"[{r.model} seed {r.seed}] {_shown(r.metrics)} ({r.seconds:.1f}s)", flush=True)

    run_protocols(
        data,
        protocols,
        args.model,
        args.seeds,
        cfg,
        args.train_ratio,
        run_root=args.out,
        resume=args.resume,
        on_result=report,
        extra_config=record,
        splits=args.splits,
    )
    _write_json(args.out / "config.json", run_config)
    ratio = train_ratio_of(PROTOCOLS[protocols[0]], args.train_ratio, args.splits)
    splits = "the dataset's own splits" if ratio is None else f"train ratio {ratio}"
    if args.input_hops or args.input_bins:
        splits += f", input: {input_description(args.input_hops, args.input_bins)}"
    neural = [m for m in args.model if m == "et" or is_neural(m)]
    title = f"{args.dataset}, {splits}" + (f", {counted(args.epochs, 'epoch')}" if neural else "")
    text = results_markdown(results, protocols, title)
    (args.out / "results.md").write_text(text)
    _write_json(
        args.out / "results.json",
        {p: summarize(results, p) for p in protocols} | {"runs": [_run_record(r) for r in results]},
    )
    print(text)
    if "et" in args.model:
        # Where et eval of the whole run draws this seed's figures: one copy, redrawn in place.
        seed = f"seed{args.seeds[0]}"
        figures(args.out / "et" / seed, args.out / "figures" / seed, args.data)
    print(f"results: {args.out / 'results.md'}")


def _shown(metrics: dict[str, dict[str, float]]) -> str:
    """``"gadbench: auroc 69.4, auprc 7.2 | bwgnn: ..."``, in %."""
    return " | ".join(
        f"{p}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items()) for p, m in metrics.items()
    )


def _recorded_trees(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The tree ensembles' seeds in ``run_dir/results.json``, with the metrics et train recorded."""
    path = run_dir / "results.json"
    if not path.is_file():
        return {}
    runs = json.loads(path.read_text()).get("runs", [])
    return {
        f"{r['model']}/seed{r['seed']}": {"recorded": r["metrics"], "weights": "none (refitted)"}
        for r in runs
        if r["model"] != "et" and not is_neural(r["model"])
    }


def _run_record(r: RunResult) -> dict[str, Any]:
    return {
        "model": r.model,
        "seed": r.seed,
        "metrics": r.metrics,
        "seconds": r.seconds,
        "best_epoch": r.best_epoch,
        "energy_metrics": r.energy_metrics,
        "validation": r.validation,
        "split": r.split,
        "configuration": r.configuration,
    }


# -- model selection across runs --------------------------------------------------------------


def _finished_results(folder: Path) -> tuple[dict[str, Any], list[RunResult]]:
    """``config.json`` and the per-seed results of a finished ``et train anomaly`` run."""
    folder, config = read_run_config(folder)
    if config.get("task") != "anomaly":
        raise ValueError(f"{folder} is not an anomaly run (task {config.get('task')!r})")
    if "selected_from" in (config.get("extra") or {}):
        raise ValueError(f"{folder} is a selection, not a run: give the runs it chose among")
    path = folder / "results.json"
    if not path.is_file():
        raise ValueError(
            f"{folder} has no results.json: the run has not finished (the same training command"
            " with --resume finishes it)"
        )
    try:
        records = json.loads(path.read_text())["runs"]
        results = [
            RunResult(
                model=r["model"],
                seed=int(r["seed"]),
                metrics=r["metrics"],
                seconds=float(r["seconds"]),
                best_epoch=r.get("best_epoch") or {},
                energy_metrics=r.get("energy_metrics"),
                validation=r.get("validation") or {},
                split=r.get("split"),
            )
            for r in records
        ]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a results file of et train anomaly: {err}") from None
    if any(not r.validation for r in results):
        raise ValueError(
            f"{folder} was trained before runs recorded their validation metric: train it again"
            " to select among it"
        )
    return config, results


def select_runs(
    out: str | Path, candidates: Sequence[str | Path], partial: bool = False, per: str = "seed"
) -> tuple[dict[str, list[RunResult]], str]:
    """Model selection across finished ``et train anomaly`` runs of one dataset: per model and
    seed (``per="seed"``), or one run per model by its mean over the seeds (``per="model"``),
    the run with the best validation metric of each protocol
    (:func:`~energy_transformer.protocols.gad.select_configurations`), written to ``out``
    (``config.json``, ``results.json``, ``results.md``).

    The runs must share their splits (checked seed by seed); protocols some run lacks are left
    out, and said so. Runs whose models hold other seeds are refused, unless ``partial``: then
    every model is selected over the seeds that every run of every model holds, so that each
    row of the table is over the same seeds (as ``bench_anomaly.py --select`` reads its logs).
    Returns the selected results per protocol, each naming the run it came from
    (``configuration``), and the text of ``results.md``.
    """
    out, folders = Path(out), [Path(c) for c in candidates]
    check_selection_out(out)
    if len(folders) < 2:
        raise ValueError(f"selection needs at least two runs, got {len(folders)}")
    names = run_names(folders)
    configs, runs = {}, {}
    for name, folder in zip(names, folders, strict=True):
        configs[name], runs[name] = _finished_results(folder)
    datasets = {name: c["command"].get("dataset") for name, c in configs.items()}
    if len(set(datasets.values())) > 1:
        raise ValueError(f"the runs are of different datasets: {datasets}")
    ran = {name: _protocol_names(c["command"]["protocol"]) for name, c in configs.items()}
    protocols = [p for p in ran[names[0]] if all(p in r for r in ran.values())]
    if not protocols:
        listed = "; ".join(f"{name}: {', '.join(r)}" for name, r in ran.items())
        raise ValueError(f"the runs share no protocol ({listed})")
    held: dict[tuple[str, str], set[int]] = {}  # (run, model) -> its seeds
    for name, results in runs.items():
        for r in results:
            held.setdefault((name, r.model), set()).add(r.seed)
    if len({frozenset(s) for s in held.values()}) > 1:
        listed = "; ".join(f"{name} {model}: {sorted(s)}" for (name, model), s in held.items())
        if not partial:
            raise ValueError(
                f"the runs hold other seeds ({listed}): run the missing ones, or select over"
                " the seeds all of them hold (--partial)"
            )
        shared = set.intersection(*held.values())
        if not shared:
            raise ValueError(f"the runs share no seed that every model finished ({listed})")
        runs = {name: [r for r in results if r.seed in shared] for name, results in runs.items()}
    selected = {p: select_configurations(runs, p, per) for p in protocols}
    how = "per seed" if per == "seed" else "one run per model, by its mean over the seeds,"
    text = [f"# Selection on validation among {', '.join(names)}: {datasets[names[0]]}\n"]
    text.append(_settings_table({name: c["command"] for name, c in configs.items()}) + "\n")
    left_out = sorted({p for r in ran.values() for p in r} - set(protocols))
    if left_out:
        text.append(f"Protocol {', '.join(left_out)} left out: not every run was scored by it.\n")
    for p, (results, chosen) in selected.items():
        metric = PROTOCOLS[p].select.removeprefix("val_")
        seeds = sorted({r.seed for r in results})
        text += [
            f"## protocol: {p}, chosen {how} on validation {metric} (metrics in %, mean ± std"
            f" over seeds {', '.join(map(str, seeds))}; seconds summed over the runs)\n",
            format_table(summarize(results, p)) + "\n",
            f"Seeds that chose each run / that run's own mean test {metric} (%); a model with"
            " one candidate is carried over, not selected:\n",
            format_chosen(runs, results, chosen, p) + "\n",
            "The run each seed chose (`et eval` that run's `MODEL/seedK`):\n",
            _choices_table(results) + "\n",
        ]
        if any(r.energy_metrics for r in results):
            text.append(
                "`et-energy` scores the final energies of the ET run chosen under this"
                " protocol, so it can differ between protocols.\n"
            )
    out.mkdir(parents=True, exist_ok=True)
    sources = {name: str(folder.resolve()) for name, folder in zip(names, folders, strict=True)}
    record = {"dataset": datasets[names[0]], "per": per, "selected_from": sources}
    _write_json(out / "config.json", {"task": "anomaly", "extra": record})
    _write_json(
        out / "results.json",
        {p: summarize(results, p) for p, (results, _) in selected.items()}
        | {"chosen": {p: chosen for p, (_, chosen) in selected.items()}}
        | {"runs": {p: [_run_record(r) for r in results] for p, (results, _) in selected.items()}},
    )
    report = "\n".join(text)
    (out / "results.md").write_text(report)
    return {p: results for p, (results, _) in selected.items()}, report


# What a run's command record holds besides its settings (records written before
# command_record also kept the parser's own entries: command, task, func).
_NOT_SETTINGS = RUN_PLACE_OPTIONS | {"command", "task", "func"}


def _settings_table(commands: dict[str, dict[str, Any]]) -> str:
    """The training options in which the runs differ, one row per run (or a line saying the
    runs were trained alike, which makes the selection a choice among repeats)."""
    keys = sorted({k for c in commands.values() for k in c} - _NOT_SETTINGS)
    differ = [k for k in keys if len({json.dumps(c.get(k)) for c in commands.values()}) > 1]
    if not differ:
        return "The runs were trained with the same settings."
    lines = [
        "Settings in which the runs differ:\n",
        "| run | " + " | ".join(differ) + " |",
        "|---" * (len(differ) + 1) + "|",
    ]
    for name, command in commands.items():
        lines.append(f"| {name} | " + " | ".join(str(command.get(k)) for k in differ) + " |")
    return "\n".join(lines)


def _choices_table(results: list[RunResult]) -> str:
    """``| model | seed 0 | seed 1 |`` with the run each selected seed came from."""
    seeds = sorted({r.seed for r in results})
    lines = [
        "| model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---" * (len(seeds) + 1) + "|",
    ]
    by_model: dict[str, dict[int, str]] = {}
    for r in results:
        by_model.setdefault(r.model, {})[r.seed] = r.configuration or "-"
    for model, picks in by_model.items():
        lines.append(f"| {model} | " + " | ".join(picks.get(s, "-") for s in seeds) + " |")
    return "\n".join(lines)


def select(args: argparse.Namespace) -> dict[str, list[RunResult]]:
    """``et select RUN RUN ... --out OUT`` for anomaly runs: :func:`select_runs`."""
    selected, report = select_runs(args.out, args.runs, args.partial, args.per)
    print(report)
    print(f"selection written to {args.out} (results.md, results.json)")
    return selected


# -- evaluation and figures -------------------------------------------------------------------


def build_model(model_config: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a neural model from the ``model`` section of a seed's ``config.json``."""
    return rebuild_model(model_config)


def _load_model_run(run_dir: Path, data_root: Path | None, device: str = "cpu"):
    """Model (best weights), prepared graph and split of one ``RUN/<model>/seed<k>`` folder."""
    config = read_run_config(run_dir)[1]
    extra = config.get("extra", {})
    if "dataset" not in extra:
        raise ValueError(f"{run_dir}/config.json records no dataset: not an anomaly run")
    dev = resolve_device(device)
    model = load_model(run_dir, dev, task="anomaly")
    root = data_root if data_root is not None else extra.get("data")
    raw = prepare(load_graph(extra["dataset"], root), extra.get("standardize", True))
    data = neural_input(raw, extra.get("input_hops", 0), extra.get("input_bins", 0))
    splits = extra.get("splits", "random")
    split = seed_splits(data, [extra["seed"]], splits, extra["train_ratio"])[extra["seed"]]
    return model, data.to(dev), split, config


@torch.no_grad()
def figures(run_dir: Path, out: Path, data_root: Path | None = None) -> list[Path]:
    """Energy descent of ET's node tokens and score histograms (normal vs anomalous)."""
    from energy_transformer.plots import plot_energy_descent, plot_score_distributions

    model, data, split, config = _load_model_run(run_dir, data_root)
    name = f"{config['extra']['dataset']}, seed {config['extra']['seed']}"
    _, _, traj = model.descend(data.x, data.edge_index, return_trajectory=True)
    test, y = split.test, data.y[split.test]
    # Each test node's share of the energy at every step: a spread, not one graph's sum.
    per_step = [model.node_energies(tokens[0], data.edge_index) for tokens in traj.tokens]
    energies = EnergyTerms(
        *(torch.stack([e[k][test] for e in per_step]) for k in EnergyTerms._fields)
    )
    paths = [
        plot_energy_descent(
            energies,
            out / "energy_descent.png",
            f"ET energy of each test node over descent steps ({name})",
            unit="nodes",
        )
    ]
    scores = {
        "anomaly probability (classifier)": anomaly_scores(model, data)[test],
        "final node energy (label-free)": energies.total[-1],  # energy_scores, not redone
    }
    title = f"ET on {name}: test nodes ({int((y == 0).sum())} normal, {int(y.sum())} anomalous)"
    paths.append(plot_score_distributions(scores, y, out / "score_distributions.png", title))
    return paths


def evaluate(run_dir: Path, args: argparse.Namespace) -> None:
    """``et eval RUN``: re-score every saved model of ``RUN`` (or one ``RUN/<model>/seed<k>``,
    or one checkpoint file in it: that file's weights) on its split and redraw ET's figures."""
    run_dir = Path(run_dir)
    trees: dict[str, dict[str, Any]] = {}
    whole_run = False  # a whole run keeps each seed's figures apart; one seed, beside it
    if run_dir.is_file():
        runs, run_dir = [run_dir], run_dir.parent
    elif (run_dir / "best.safetensors").is_file():
        runs = [run_dir]
    else:
        refuse_selection(run_dir, "its results.md names the run each seed chose")
        runs = sorted(p.parent for p in run_dir.glob("*/seed*/best.safetensors"))
        trees, whole_run = _recorded_trees(run_dir), True
    if not runs and not trees:
        raise FileNotFoundError(f"no trained model (best.safetensors) under {run_dir}")
    out = Path(args.out) if getattr(args, "out", None) else run_dir
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    if trees:
        print(
            "the tree ensembles keep no weights (et train fits them afresh): their test metrics"
            " below are the ones it recorded, not re-scored"
        )
        for name, row in trees.items():
            print(name, _shown(row["recorded"]))
        rows.update(trees)
    for run in runs:
        model, data, split, config = _load_model_run(run, args.data, args.device)
        with torch.no_grad():
            metrics = score_split(anomaly_scores(model, data), data.y, split)
        seed = run.parent.name if run.is_file() else run.name
        name = f"{config['model']['name']}/{seed}"
        rows[name] = {k: v for k, v in metrics.items() if k.startswith("test_")}
        print(name, " ".join(f"{k} {100 * v:.1f}" for k, v in rows[name].items()))
        # Only the first protocol's pick is saved: say whose weights these numbers score.
        protocols = config.get("extra", {}).get("protocols") or []
        picked = f"the epoch {protocols[0]} selected" if protocols else "the selected epoch"
        rows[name]["weights"] = f"file {run.name}" if run.is_file() else picked
        if len(protocols) > 1:
            print(
                f"  (weights of {picked}; {', '.join(protocols[1:])} picked its own epoch in"
                " training, reported in results.json but not saved)"
            )
        if config["model"]["name"] == "et":
            where = out / "figures" / seed if whole_run else out / "figures"
            print("pictures: " + ", ".join(str(p) for p in figures(run, where, args.data)))
    _write_json(out / "eval.json", rows)
    print(f"metrics: {out / 'eval.json'}")
