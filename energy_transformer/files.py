"""Files written whole or not at all: a crash, or another process writing the same file (the
fold workers of one run share its folder), never leaves a half-written one behind. And ``.npz``
files read without ever unpickling."""

from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


# Read once, at import, before any thread could create a file while it is briefly 0.
_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends
    without an error, and is removed otherwise. Its name is unique to this process and call, so
    concurrent writers each publish a whole file (the last one wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        # Some writers (safetensors) create private 0600 files: give the file the mode a plain
        # open() would, so that a run folder is readable as a whole by whoever may read it.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def recorded_path(path: str | os.PathLike | None) -> str | None:
    """``path`` as a run records it: absolute, so that a later command run from another folder
    finds it (``None`` stays ``None``)."""
    return None if path is None else str(Path(path).resolve())


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, read with ``allow_pickle=False``: a file that
    would need pickle (object arrays) is refused, as is one that is not a zip of ``.npy`` arrays,
    with a ``ValueError`` naming the file (``FileNotFoundError`` when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a readable .npz file: not a zip archive of .npy arrays")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({err})") from err
