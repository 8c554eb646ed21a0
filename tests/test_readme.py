"""Every Python example of the README runs as written (a stale example is a bug report)."""

import os
import re
from pathlib import Path

import pytest

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
