import numpy as np
import pytest

from energy_transformer.files import atomic_path, read_npz, write_text_atomic


def test_atomic_path_publishes_the_whole_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "folds.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["folds.csv"]


def test_concurrent_writers_each_publish_a_whole_file(tmp_path):
    # Fold workers of one run rewrite the same folds.csv: a shared temporary name would let one
    # writer publish the other's half-written file, or fail when its own file was moved away.
    target = tmp_path / "folds.csv"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_text("A" * 1000)
        b.write_text("B" * 1000)
    assert target.read_text() == "A" * 1000  # the last to finish wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["folds.csv"]


def test_read_npz_round_trip_and_refusals(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.arange(3), b=np.eye(2))
    arrays = read_npz(tmp_path / "ok.npz")
    assert sorted(arrays) == ["a", "b"] and arrays["b"].tolist() == [[1, 0], [0, 1]]
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="text.npz is not a readable .npz file: not a zip archive"):
        read_npz(tmp_path / "text.npz")
    np.savez(tmp_path / "pickled.npz", a=np.array([object()]))
    with pytest.raises(ValueError, match=r"pickled.npz is not a readable .npz file \(Object"):
        read_npz(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError, match="none.npz: no such file"):
        read_npz(tmp_path / "none.npz")


def test_a_private_temporary_file_is_published_with_the_usual_mode(tmp_path):
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
        os.chmod(tmp, 0o600)  # as private as a writer may make it
    mode = stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode)


def test_write_text_atomic_that_fails_keeps_the_previous_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    # A lone surrogate cannot be encoded: the write fails after the file was opened.
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "new \udcff")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_recorded_path_is_absolute(tmp_path, monkeypatch):
    from energy_transformer.files import recorded_path

    monkeypatch.chdir(tmp_path)
    assert recorded_path("data/tu") == str(tmp_path.resolve() / "data" / "tu")
    assert recorded_path(tmp_path / "x" / ".." / "y") == str(tmp_path.resolve() / "y")
    assert recorded_path(None) is None


def test_the_published_mode_follows_the_umask(tmp_path, monkeypatch):
    import os
    import stat

    from energy_transformer import files

    old = os.umask(0o077)
    try:
        monkeypatch.setattr(files, "_UMASK", 0o077)  # the module reads the umask once, at import
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        write_text_atomic(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
