import sys
from pathlib import Path

# Test helpers that live next to the tests (e.g. tests/train/toy.py) import as plain modules.
for folder in Path(__file__).parent.rglob("*"):
    if folder.is_dir() and folder.name != "__pycache__":
        sys.path.insert(0, str(folder))
