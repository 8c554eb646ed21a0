"""energy_transformer.data.paths: downloads verified against their SHA-256, never half-written.

Downloads here read local files through file:// URLs: no network is touched."""

import hashlib

import pytest

from energy_transformer.data.paths import DataNotFoundError, RemoteFile, download

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
