"""Where datasets live, and fetching them from their canonical source when online.

Resolution order: an explicit path, else ``$ET_DATA``, else the user cache folder
(``$XDG_CACHE_HOME/energy-transformer`` or ``~/.cache/energy-transformer``). Loaders never write
into ``$ET_DATA`` or an explicit path: downloads go to the cache folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from energy_transformer.files import atomic_path


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


def cache_dir() -> Path:
    """The per-user cache folder where downloads go."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "energy-transformer"


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders to search, in order: ``root`` if given, else ``$ET_DATA`` then the cache."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    if os.environ.get("ET_DATA"):
        roots.append(Path(os.environ["ET_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


@dataclass(frozen=True)
class RemoteFile:
    """A file of a public dataset: its name, its canonical URL and (when known) its SHA-256."""

    name: str
    url: str
    sha256: str | None = None


def sha256sum(path: Path) -> str:
    """The SHA-256 of the file ``path``, as hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(remote: RemoteFile, dest: Path, timeout: float = 30.0) -> Path:
    """Download ``remote`` to ``dest`` atomically (temp file + rename), verifying its checksum.

    ``timeout``: seconds to wait on the connection and on each read. A wrong checksum raises
    :class:`DataNotFoundError` (``dest`` is then not written); network failures raise
    :mod:`urllib`'s errors.
    """
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as r:
            shutil.copyfileobj(r, out)
        if remote.sha256 is not None and sha256sum(tmp) != remote.sha256:
            raise DataNotFoundError(
                f"checksum mismatch for {remote.url}: the download is corrupt or the file changed"
            )
    return dest


def locate(
    subdir: str,
    files: list[RemoteFile],
    root: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> Path:
    """Return the folder holding all ``files`` of a dataset under ``subdir``.

    Searches :func:`data_roots`; when no root has them, downloads the missing ones into the cache
    folder (only when ``root`` was not given explicitly and ``allow_download``). Offline, or
    with nothing to download from, raises a :class:`DataNotFoundError` saying which files to
    put where.
    """
    roots = data_roots(root)
    for base in roots:
        folder = base / subdir
        if all((folder / f.name).is_file() for f in files):
            return folder
    target = cache_dir() / subdir
    if root is None and allow_download:
        try:
            for f in files:
                if not (target / f.name).is_file():
                    download(f, target / f.name)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = f" (download failed: {err})"
    else:
        reason = ""
    names = ", ".join(f.name for f in files)
    searched = ", ".join(str(b / subdir) for b in roots)
    raise DataNotFoundError(
        f"dataset files not found{reason}. Put {names} into one of: {searched}"
        f" (or set ET_DATA to a folder holding {subdir}/)."
    )
