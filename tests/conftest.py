import sys
from pathlib import Path

import pytest
import torch

# Test helpers that live next to the tests (e.g. tests/train/toy.py) import as plain modules.
for folder in Path(__file__).parent.rglob("*"):
    if folder.is_dir() and folder.name != "__pycache__":
        sys.path.insert(0, str(folder))


def _single_thread():
    # Tiny models run faster on one thread, and far faster when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


one_thread = pytest.fixture(_single_thread)
one_thread_module = pytest.fixture(_single_thread, scope="module")
