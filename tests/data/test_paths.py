"""energy_transformer.data.paths: downloads verified against their SHA-256, never half-written.

Downloads here read local files through file:// URLs: no network is touched."""

import hashlib

import pytest

from energy_transformer.data.paths import (
    DataNotFoundError,
    RemoteFile,
    cache_dir,
    data_roots,
    download,
    locate,
)

PAYLOAD = b"node_features\x00\x01\x02 and more bytes\n" * 100


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source" / "graph.npz"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_download_with_the_right_checksum_writes_the_file(source, tmp_path):
    remote = RemoteFile("graph.npz", source.as_uri(), hashlib.sha256(PAYLOAD).hexdigest())
    dest = tmp_path / "cache" / "gad" / "graph.npz"
    assert download(remote, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["graph.npz"]  # no temp file left


def test_download_with_a_wrong_checksum_raises_and_leaves_nothing(source, tmp_path):
    wrong = hashlib.sha256(PAYLOAD + b"changed").hexdigest()
    remote = RemoteFile("graph.npz", source.as_uri(), wrong)
    dest = tmp_path / "cache" / "gad" / "graph.npz"
    with pytest.raises(DataNotFoundError, match="checksum mismatch for file://.*graph.npz"):
        download(remote, dest)
    assert list(dest.parent.iterdir()) == []  # neither the file nor a partial temp file
    # A good copy already there is not replaced by a corrupt download.
    dest.write_bytes(b"the good copy")
    with pytest.raises(DataNotFoundError, match="checksum mismatch"):
        download(remote, dest)
    assert dest.read_bytes() == b"the good copy"
    assert [p.name for p in dest.parent.iterdir()] == ["graph.npz"]


def test_data_roots_order_explicit_then_et_data_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ET_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "energy-transformer"
    assert data_roots() == [tmp_path / "shared", tmp_path / "xdg" / "energy-transformer"]
    assert data_roots(tmp_path / "mine") == [tmp_path / "mine"]  # nothing else searched
    monkeypatch.delenv("ET_DATA")
    assert data_roots() == [tmp_path / "xdg" / "energy-transformer"]


def _two_files(folder, text=b"x"):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a.bin", "b.bin"):
        (folder / name).write_bytes(text)
    return folder


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """ET_DATA and the cache under tmp_path; remotes a.bin, b.bin served through file:// URLs."""
    monkeypatch.setenv("ET_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    served = _two_files(tmp_path / "served", b"served")
    remotes = [RemoteFile(n, (served / n).as_uri()) for n in ("a.bin", "b.bin")]
    return tmp_path / "shared", tmp_path / "xdg" / "energy-transformer", remotes


def test_locate_prefers_et_data_over_the_cache(roots):
    shared, cache, remotes = roots
    _two_files(shared / "ds")
    _two_files(cache / "ds")
    assert locate("ds", remotes) == shared / "ds"
    # ET_DATA holding only one of the two files does not count: the complete cache copy wins.
    (shared / "ds" / "b.bin").unlink()
    assert locate("ds", remotes) == cache / "ds"


def test_explicit_root_is_the_only_place_searched_and_never_downloaded_into(roots, tmp_path):
    shared, cache, remotes = roots
    _two_files(shared / "ds")
    mine = tmp_path / "mine"
    with pytest.raises(DataNotFoundError, match=r"Put a.bin, b.bin into one of: .*mine[/\\]ds\b"):
        locate("ds", remotes, root=mine)
    assert not (cache / "ds").exists() and not mine.exists()


def test_locate_downloads_only_the_missing_files_into_the_cache(roots):
    shared, cache, remotes = roots
    (cache / "ds").mkdir(parents=True)
    (cache / "ds" / "a.bin").write_bytes(b"kept")
    assert locate("ds", remotes) == cache / "ds"
    assert (cache / "ds" / "a.bin").read_bytes() == b"kept"
    assert (cache / "ds" / "b.bin").read_bytes() == b"served"
    assert not shared.exists()  # nothing written into ET_DATA
    with pytest.raises(DataNotFoundError, match=r"Put a.bin, b.bin into one of: .*shared"):
        locate("other", remotes, allow_download=False)
