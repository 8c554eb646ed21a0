"""`et` itself: a run folder that is not one ends with one line naming the problem, status 2."""

import pytest

from energy_transformer.cli import main


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ET_DEBUG", raising=False)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "config.json not found: is {run} a run folder of et train?"),
        ("{not json", "config.json is not valid JSON"),
        ("[1, 2]", "config.json is not a run configuration (a JSON object)"),
        ('{"task": "music"}', "config.json names no known task ('music'; ['image', 'graph'"),
        ("{}", "config.json names no known task (None;"),
    ],
)
def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys, config, message):
    run = tmp_path / "run"
    run.mkdir()
    if config is not None:
        (run / "config.json").write_text(config)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("et: error: ") and err.count("\n") == 1
    assert message.format(run=run) in err


def test_eval_of_a_missing_path_names_that_path(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "run"
    assert main(["eval", str(missing)]) == 2
    assert f"et: error: {missing} does not exist: give a run folder" in capsys.readouterr().err


def test_complete_with_a_run_of_another_task_says_so(tmp_path, capsys):
    run = tmp_path / "graph-run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "graph"}')
    assert main(["complete", str(run), str(tmp_path / "shirt.png")]) == 2
    message = f"et: error: {run} holds a run of task 'graph'; this command needs task 'image'"
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("found", "command"),
    [
        ("graph", ["train", "image"]),
        ("image", ["train", "anomaly", "--dataset", "tolokers"]),
        ("anomaly", ["train", "graph", "--dataset", "MUTAG"]),
    ],
)
def test_resume_into_a_run_of_another_task_is_refused(tmp_path, capsys, found, command):
    run = tmp_path / "run"
    run.mkdir()
    config = f'{{"task": "{found}"}}'
    (run / "config.json").write_text(config)
    assert main([*command, "--out", str(run), "--resume", "--data", str(tmp_path)]) == 2
    assert f"holds a run of task '{found}', not '{command[1]}'" in capsys.readouterr().err
    assert (run / "config.json").read_text() == config  # left as it was


@pytest.mark.parametrize("task", ["image", "graph", "anomaly"])
def test_every_training_option_is_explained_once(task, capsys):
    import argparse

    from energy_transformer.cli import build_parser

    def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[name]

    parser = subparser(subparser(build_parser(), "train"), task)
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not silent, f"options without help: {silent}"
    with pytest.raises(SystemExit):
        main(["train", task, "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text


def test_resume_of_a_folder_naming_no_task_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert main(["train", "image", "--out", str(run), "--resume"]) == 2
    assert "config.json records no task: not a run of et train" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("task", "part", "command"),
    [
        ("anomaly", "et/seed0", ["train", "anomaly", "--dataset", "tolokers"]),
        ("graph", "fold-03", ["train", "graph", "--dataset", "MUTAG"]),
    ],
)
def test_a_fold_or_seed_folder_is_not_a_run_of_its_own(tmp_path, capsys, task, part, command):
    run = tmp_path / "run"
    (run / part).mkdir(parents=True)
    for folder in (run, run / part):
        (folder / "config.json").write_text(f'{{"task": "{task}"}}')
    assert main([*command, "--out", str(run / part), "--resume", "--data", str(tmp_path)]) == 2
    assert f"is part (a fold or seed) of the {task} run in {run}" in capsys.readouterr().err


def test_ctrl_c_ends_with_one_line_and_the_way_to_continue(monkeypatch, capsys):
    from energy_transformer.tasks import image

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(image, "train", interrupted)
    assert main(["train", "image"]) == 130
    assert capsys.readouterr().err == (
        "et: interrupted; run the same command with --resume to continue\n"
    )


def test_a_fold_without_config_of_its_own_is_of_its_runs_task(tmp_path):
    from energy_transformer.cli import run_task_of

    run = tmp_path / "wl-run"
    (run / "fold-02").mkdir(parents=True)
    (run / "config.json").write_text('{"task": "graph"}')
    (run / "fold-02" / "split.json").write_text('{"index": 2}')  # a WL+SVM fold: no weights
    assert run_task_of(run / "fold-02") == "graph"
    assert run_task_of(run) == "graph"


def test_a_diverging_run_is_a_user_error_and_success_is_status_0(monkeypatch, capsys):
    from energy_transformer.tasks import image

    def diverged(args):
        raise FloatingPointError("the loss is NaN at epoch 3 (try a lower lr)")

    monkeypatch.setattr(image, "train", diverged)
    assert main(["train", "image"]) == 2
    assert capsys.readouterr().err == (
        "et: error: the loss is NaN at epoch 3 (try a lower lr) (ET_DEBUG=1 shows the traceback)\n"
    )
    monkeypatch.setattr(image, "train", lambda args: None)
    assert main(["train", "image"]) == 0


def test_et_debug_keeps_the_traceback(monkeypatch):
    from energy_transformer.tasks import image

    monkeypatch.setenv("ET_DEBUG", "1")

    def bad_option(args):
        raise ValueError("--lr must be > 0")

    monkeypatch.setattr(image, "train", bad_option)
    with pytest.raises(ValueError, match="--lr must be > 0"):
        main(["train", "image"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(image, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["train", "image"])


def _imports_after(code: str) -> set[str]:
    """The energy_transformer.tasks and torch_geometric modules a fresh interpreter imports."""
    import subprocess
    import sys

    probe = (
        f"import sys\n{code}\n"
        "print(*sorted(m for m in sys.modules if m.startswith"
        "(('energy_transformer.tasks.', 'torch_geometric'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_command_line_imports_only_the_task_it_names():
    parse = "from energy_transformer.cli import build_parser\nbuild_parser({argv})"
    top = _imports_after(parse.format(argv="['--help']"))
    assert top == {"energy_transformer.tasks.image"}  # et demo / complete live there
    assert _imports_after(parse.format(argv="['train', 'image']")) == top
    graph = _imports_after(parse.format(argv="['train', 'graph']"))
    assert "energy_transformer.tasks.graph" in graph and "torch_geometric" in graph
    assert "energy_transformer.tasks.anomaly" not in graph


def test_every_task_is_listed_without_being_imported(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for task, help_text in [("image", "masked image completion"), ("anomaly", "anomaly")]:
        assert task in text and help_text in text


def test_a_task_whose_dependency_is_missing_names_the_package(monkeypatch, capsys):
    import energy_transformer.cli as cli

    def missing(name):
        raise ModuleNotFoundError("No module named 'torch_geometric'", name="torch_geometric")

    monkeypatch.setattr(cli, "task_module", missing)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "graph", "--dataset", "MUTAG"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "task 'graph' needs the Python package 'torch_geometric', which is not installed" in err
    assert "energy-transformer[image,graph]" in err


def test_the_command_tasks_are_those_that_add_commands():
    import importlib

    from energy_transformer.cli import COMMAND_TASKS, TASKS

    adds = {n for n, m in TASKS.items() if hasattr(importlib.import_module(m), "add_commands")}
    assert set(COMMAND_TASKS) == adds


def test_a_parser_built_without_a_command_line_has_every_tasks_options():
    from energy_transformer.cli import build_parser
    from energy_transformer.tasks import anomaly, graph, image

    parser = build_parser()
    for argv, train in [
        (["train", "image", "--preset", "fashion-mnist"], image.train),
        (["train", "graph", "--dataset", "MUTAG", "--folds", "3"], graph.train),
        (["train", "anomaly", "--dataset", "reddit"], anomaly.train),
    ]:
        assert parser.parse_args(argv).func is train


def test_main_reads_the_command_line_and_imports_only_the_task_it_names():
    code = (
        "from energy_transformer.tasks import image\n"
        "image.train = lambda args: None\n"
        "from energy_transformer.cli import main\n"
        "sys.argv = ['et', 'train', 'image']\n"
        "assert main() == 0"
    )
    assert _imports_after(code) == {"energy_transformer.tasks.image"}


def test_a_run_folder_named_like_a_task_imports_no_task():
    parse = "from energy_transformer.cli import build_parser\nbuild_parser({argv})"
    for argv in (["eval", "graph"], ["complete", "anomaly", "shirt.png"]):
        assert _imports_after(parse.format(argv=argv)) == {"energy_transformer.tasks.image"}


def test_select_takes_graph_or_anomaly_runs(tmp_path, capsys):
    runs = []
    for name in ("a", "b"):
        runs.append(tmp_path / name)
        runs[-1].mkdir()
        (runs[-1] / "config.json").write_text('{"task": "image"}')
    assert main(["select", *map(str, runs), "--out", str(tmp_path / "sel")]) == 2
    err = capsys.readouterr().err
    assert f"{runs[0]} is a run of task 'image': et select takes graph or anomaly runs" in err
    assert not (tmp_path / "sel").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["demo", "--out", "{file}"],
        ["train", "image", "--out", "{file}"],
        ["train", "graph", "--dataset", "MUTAG", "--out", "{file}"],
        ["train", "anomaly", "--out", "{file}"],
        ["eval", "{run}", "--out", "{file}"],
        ["complete", "{run}", "{file}", "--out", "{file}"],
        ["convert-official", "{file}", "{file}"],
    ],
)
def test_an_output_that_is_a_file_is_refused_in_one_line(tmp_path, capsys, command):
    # et demo ended in a traceback (NotADirectoryError); the others in "[Errno 17] File exists",
    # et eval of a graph run only after scoring every fold.
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "graph"}')
    args = [word.format(file=file, run=run) for word in command]
    assert main([*args, "--data", str(tmp_path)] if command[0] == "train" else args) == 2
    err = capsys.readouterr().err
    assert err == f"et: error: {file} is a file: the output goes to a folder, give one" + (
        " (ET_DEBUG=1 shows the traceback)\n"
    )
    assert file.read_text() == "mine"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("complete", "folder for the pictures (default: .)"),
        ("demo", "where everything goes (default: runs/demo)"),
        ("convert-official", "descent steps T (default: 12)"),
        ("eval", "cpu, cuda, cuda:1 or auto (default: auto)"),
    ],
)
def test_every_commands_help_shows_its_defaults(capsys, command, shown):
    # Only `et train TASK --help` did: et complete's pictures go to the current folder unsaid.
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert shown in " ".join(capsys.readouterr().out.split())


def test_a_resume_takes_the_options_it_is_not_given_from_the_run(tmp_path, capsys, one_thread):
    import json

    from image_fixtures import write_fake_mnist

    data = write_fake_mnist(tmp_path / "data", train=40, test=4)
    run = tmp_path / "run"
    first = ["train", "image", "--data", str(data), "--out", str(run), "--subset", "16"]
    first += ["--val-size", "8", "--batch-size", "8", "--steps", "2", "--epochs", "1"]
    assert main([*first, "--no-progress", "--device", "cpu"]) == 0
    assert json.loads((run / "config.json").read_text())["command"]["val_size"] == 8
    capsys.readouterr()
    # Only what changes: every other option is the run's own (its data, sizes and steps).
    again = ["train", "image", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]
    assert main(again) == 0
    out = capsys.readouterr().out
    assert f"resuming {run} with its own --data {data.resolve()} " in out
    assert "--steps 2" in out and "--val-size 8" in out and "--subset 16" in out
    assert "resuming at epoch 2/2" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["steps"] == 2 and config["extra"]["train_images"] == 16
    # An option given is taken as given: a change of setting is still refused.
    assert main([*again[:-1], "--epochs", "3", "--steps", "3", "--no-progress"]) == 2
    assert "holds a run of another model (steps 2 -> 3)" in capsys.readouterr().err


def test_a_graph_resume_finds_its_run_and_model_without_them_retyped(tmp_path, capsys):
    from graph_fixtures import write_toy

    root = write_toy(tmp_path / "data")
    out = tmp_path / "run"
    first = ["train", "graph", "--dataset", "TOY", "--data", str(root), "--model", "mlp"]
    first += ["--folds", "2", "--epochs", "1", "--lr", "0.01", "--out", str(out), "--no-progress"]
    assert main(first) == 0
    capsys.readouterr()
    # Without the record, --model et (the default) and the preset's lr would be refused.
    resume = ["train", "graph", "--dataset", "TOY", "--out", str(out), "--resume", "--no-progress"]
    assert main(resume) == 0
    printed = capsys.readouterr().out
    assert "with its own --model mlp --folds 2" in printed and "--lr 0.01" in printed
    assert "| TOY | mlp |" in printed


def test_a_resume_names_the_options_it_takes_as_one_would_type_them(tmp_path, capsys):
    # Flags showed their value ("--exclude-self False" is no option), and the recorded seed
    # list [5] showed as "--seeds 5", which et reads as 5 seeds (0..4).
    import json

    from energy_transformer.cli import _resume_options, build_parser

    run = tmp_path / "run"
    run.mkdir()
    record = {"model": ["et", "gcn"], "seeds": [5], "learn_beta": True, "no_self_loops": True}
    (run / "config.json").write_text(json.dumps({"task": "anomaly", "command": record}))
    argv = ["train", "anomaly", "--out", str(run), "--resume"]
    args = build_parser(argv).parse_args(argv)
    _resume_options(args, argv)
    assert (args.model, args.seeds, args.learn_beta, args.no_self_loops) == (
        ["et", "gcn"],
        [5],
        True,
        True,
    )
    shown = "--model et,gcn --seeds 5, --learn-beta --no-self-loops"
    assert capsys.readouterr().out == f"resuming {run} with its own {shown}\n"
    # A --no-... flag of a recorded False; a --seeds list that reads as itself has no comma.
    (run / "config.json").write_text(
        json.dumps({"task": "image", "command": {"exclude_self": False}})
    )
    argv = ["train", "image", "--out", str(run), "--resume"]
    args = build_parser(argv).parse_args(argv)
    _resume_options(args, argv)
    assert args.exclude_self is False
    assert capsys.readouterr().out == f"resuming {run} with its own --no-exclude-self\n"
    record = {"seeds": [0, 1, 2]}
    (run / "config.json").write_text(json.dumps({"task": "anomaly", "command": record}))
    argv = ["train", "anomaly", "--out", str(run), "--resume"]
    _resume_options(build_parser(argv).parse_args(argv), argv)
    assert capsys.readouterr().out == f"resuming {run} with its own --seeds 0,1,2\n"


def test_a_resume_into_a_checkpoint_file_is_refused_before_its_run_is_read(tmp_path, capsys):
    # --out naming a file of a run printed "resuming ... with its own ..." (the options of the
    # run beside it), then refused the file.
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "image", "command": {"epochs": 9}}))
    (run / "last.safetensors").write_bytes(b"weights")
    argv = ["train", "image", "--out", str(run / "last.safetensors"), "--resume"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "last.safetensors is a file: the output goes to a folder" in captured.err


def test_version_names_the_package_and_torch(capsys):
    import torch

    from energy_transformer import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == (
        f"et (energy-transformer) {__version__}, torch {torch.__version__}\n"
    )


@pytest.mark.parametrize(
    ("found", "command", "error"),
    [
        ("graph", ["train", "image"], "holds a run of task 'graph', not 'image'"),
        ("image", ["train", "graph", "--dataset", "TOY"], "holds a run of task 'image', not"),
    ],
)
def test_a_resume_takes_no_options_from_a_run_of_another_task(
    tmp_path, capsys, found, command, error
):
    # A graph run's record was taken by `et train image --resume` ("resuming ... with its own
    # --preset cpu --dataset TOY ... --weight-decay None"), and an image run's preset made
    # `et train graph --resume` fail on "unknown preset 'fashion-mnist'" instead of the task.
    import json

    run = tmp_path / "run"
    run.mkdir()
    record = {"preset": "fashion-mnist" if found == "image" else "cpu", "dataset": "TOY"}
    record |= {"epochs": 2, "weight_decay": None, "steps": 1}
    (run / "config.json").write_text(json.dumps({"task": found, "command": record}))
    assert main([*command, "--out", str(run), "--resume"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert error in captured.err


def test_the_options_a_resume_prints_paste_back_as_they_were(tmp_path, capsys):
    # A path with a space (or a quote) was printed bare: pasted back, it split into words.
    # A value the task derived, not one the option accepts (anomaly's --dataset named after a
    # graph file, "mygraph"), was printed and set as if typed: pasted back, argparse refused it.
    import json
    import shlex

    from energy_transformer.cli import _resume_options, build_parser

    run = tmp_path / "run"
    run.mkdir()
    data = tmp_path / "my data's" / "mygraph.npz"
    record = {"dataset": "mygraph", "data": str(data), "seeds": [3], "hidden": 8}
    (run / "config.json").write_text(json.dumps({"task": "anomaly", "command": record}))
    argv = ["train", "anomaly", "--out", str(run), "--resume"]
    args = build_parser(argv).parse_args(argv)
    _resume_options(args, argv)
    assert (args.dataset, args.data, args.seeds, args.hidden) == (None, data, [3], 8)
    printed = capsys.readouterr().out
    assert "--dataset" not in printed
    taken = printed.removeprefix(f"resuming {run} with its own ").rstrip("\n")
    again = ["train", "anomaly", *shlex.split(taken)]
    pasted = build_parser(again).parse_args(again)
    assert (pasted.data, pasted.seeds, pasted.hidden) == (data, [3], 8)


@pytest.mark.parametrize("task", ["image", "graph", "anomaly"])
def test_the_resume_help_says_where_the_options_not_given_come_from(task, capsys):
    # It said only "continue OUT/last.safetensors" (or "an interrupted run"): nothing of the
    # options a resume takes from the run, nor, for graph, that --model names its folder.
    with pytest.raises(SystemExit):
        main(["train", task, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "options not given (but --device, --no-progress) take the values it was" in text
    assert ("--dataset and --model name" in text) == (task == "graph")
