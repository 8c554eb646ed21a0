"""Every Python example of the README runs as written (a stale example is a bug report)."""

import os
import re
import shlex
from pathlib import Path

import pytest

from energy_transformer.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
# Examples that read a public dataset, and the file under $ET_DATA each needs.
DATA = {"load_tu(": "TUDataset/MUTAG.zip", "load_gad(": "gad/tolokers.npz"}


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_runs(code, one_thread):
    for call, file in DATA.items():
        root = os.environ.get("ET_DATA")
        if call in code and not (root and (Path(root) / file).is_file()):
            pytest.skip(f"needs $ET_DATA/{file}")
    exec(compile(code, str(README), "exec"), {})


def _commands() -> list[list[str]]:
    """The ``et`` arguments of every command in the README's shell examples."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["et"]:
                commands.append(words[1:])
            elif "energy_transformer.cli" in words:  # torchrun ... -m energy_transformer.cli
                commands.append(words[words.index("energy_transformer.cli") + 1 :])
    return commands


def test_every_shell_example_is_a_valid_command():
    commands = _commands()
    assert ["demo"] in commands and len(commands) >= 8
    parser = build_parser()
    for args in commands:
        parser.parse_args(args)  # an unknown sub-command or option exits here
