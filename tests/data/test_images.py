import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import fake_images, idx_bytes, write_fake_mnist, write_idx

from energy_transformer.data.images import (
    ImageFolder,
    load_fashion_mnist,
    load_image_file,
    parse_idx,
    read_idx,
)


@pytest.mark.parametrize("dtype", ["uint8", "int8", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == "uint8":
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / "a.idx", array, compress)
    out = read_idx(path)
    assert out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)
    assert out.dtype.isnative


def test_idx_header_is_big_endian():
    # 2 images of 1 x 3 pixels: dims are big-endian uint32 after the magic 0x00000803.
    data = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (1).to_bytes(4, "big")
    data += (3).to_bytes(4, "big") + bytes([1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(parse_idx(data), [[[1, 2, 3]], [[4, 5, 6]]])


def test_bad_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[0] = 0x1F
    with pytest.raises(ValueError, match="bad IDX magic"):
        parse_idx(bytes(data), "x.idx")


def test_unknown_type_code():
    data = bytes([0, 0, 0x07, 1]) + (1).to_bytes(4, "big") + b"\x00"
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        parse_idx(data)


def test_truncated_data_names_the_file(tmp_path):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=r"train-images.*truncated.*3136 bytes.*found 3126"):
        read_idx(path)


def test_truncated_header_and_gzip(tmp_path):
    with pytest.raises(ValueError, match="truncated IDX header"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0]))
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((8, 8), np.uint8)))[:20])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(path)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "missing.gz")


def test_fashion_mnist_from_explicit_root(tmp_path):
    write_fake_mnist(tmp_path, train=20, test=7)
    images, labels = load_fashion_mnist("train", tmp_path)
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]
    assert load_fashion_mnist("test", tmp_path)[0].shape == (7, 1, 28, 28)
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("val", tmp_path)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist("train", tmp_path)


def test_shared_fashion_mnist():
    root = os.environ.get("ET_DATA")
    if not root or not (Path(root) / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("ET_DATA with fashion-mnist/ not available")
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [1000] * 10
    # The published pixel statistics of the test split.
    assert abs(images.float().mean().item() / 255 - 0.2868) < 1e-3


def _png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    _png(tmp_path / "cat" / "a.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    _png(tmp_path / "dog" / "b.png", np.full((30, 30), 255, np.uint8))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path, image_size=16, channels=3)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    image, label = ds[1]
    assert image.shape == (3, 16, 16) and label == 1
    torch.testing.assert_close(image, torch.ones(3, 16, 16))
    grey = load_image_file(tmp_path / "cat" / "a.png", 8, channels=1)
    assert grey.shape == (1, 8, 8) and grey.min() >= 0 and grey.max() <= 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path)
    bad = tmp_path / "c" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image_file(bad, 8)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_by_its_depth(tmp_path, channels):
    # convert("L") would clip every value above 255: uniform 16-bit noise would read as white.
    noise = np.random.default_rng(0).integers(0, 65536, (64, 64), dtype=np.uint16)
    path = _png(tmp_path / "deep.png", noise)
    from PIL import Image

    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # "I" in older Pillow
    image = load_image_file(path, 32, channels=channels)
    assert image.shape == (channels, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert abs(float(image.mean()) - 0.5) < 0.02
    assert float(image.std()) > 0.1  # still noise after resizing, not a flat grey
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    loaded = load_image_file(_png(tmp_path / "ramp.png", ramp), 16, channels=channels)
    # No resampling at 16 -> 16: exact up to float32 (65535 is 1.0, not 65535 / 65536).
    torch.testing.assert_close(loaded[0, 0], torch.linspace(0, 1, 16), atol=1e-6, rtol=0)


def test_32_bit_integer_image_is_scaled_by_its_depth(tmp_path):
    from PIL import Image

    values = np.array([[0, 2**30], [2**31 - 1, 2**30]], dtype=np.int32)
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    image = load_image_file(path, 2, channels=1)
    expected = torch.tensor([[0.0, 0.5], [1.0, 0.5]])
    torch.testing.assert_close(image[0], expected, atol=1e-3, rtol=0)


def test_idx_labels_that_do_not_match_the_images_are_refused(tmp_path):
    write_fake_mnist(tmp_path, train=20, test=7)
    folder = tmp_path / "fashion-mnist"
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(ValueError, match=r"fashion-mnist: 20 images but labels have shape \(19,\)"):
        load_fashion_mnist("train", tmp_path)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((7, 784), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: expected \(n, rows, cols\)"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_mnist_pixels_and_labels_exact(tmp_path):
    write_fake_mnist(tmp_path, train=20, test=7)
    images, labels = load_fashion_mnist("test", tmp_path)
    assert labels.dtype == torch.int64
    np.testing.assert_array_equal(images[:, 0].numpy(), fake_images(7, seed=1))


def _rgb_pattern(height: int, width: int) -> np.ndarray:
    """Red follows the row, green the column, blue the reverse of the row: any flip, transpose
    or off-centre crop changes the pixels."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 20, cols * 20, 255 - rows * 20], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(("height", "width"), [(12, 8), (8, 12)])
def test_image_file_is_centre_cropped_channels_first(tmp_path, height, width):
    array = _rgb_pattern(height, width)
    path = _png(tmp_path / "p.png", array)
    # The shorter side is already 8: no resampling, only the centre 8 x 8 crop.
    top, left = (height - 8) // 2, (width - 8) // 2
    expected = torch.from_numpy(array[top : top + 8, left : left + 8]).permute(2, 0, 1) / 255
    torch.testing.assert_close(load_image_file(path, 8), expected.float(), atol=1e-6, rtol=0)
    grey = load_image_file(path, 8, channels=1)
    assert grey.shape == (1, 8, 8)


def test_image_folder_extensions_are_case_insensitive(tmp_path):
    _png(tmp_path / "b" / "x.PNG", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "a" / "y.png", np.full((4, 4), 255, np.uint8))
    ds = ImageFolder(tmp_path, image_size=4, channels=1)
    assert ds.classes == ["a", "b"] and len(ds) == 2
    assert [label for _, label in ds.samples] == [0, 1]
    assert ds[0][0].min() == 1.0 and ds[1][0].max() == 0.0


def test_idx_with_trailing_bytes_is_refused():
    # A wrong header (or two files concatenated) leaves extra bytes: refuse, do not ignore them.
    data = idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00"
    with pytest.raises(ValueError, match=r"x.idx: .*shape \(2, 3\) needs 6 bytes of data, found 7"):
        parse_idx(data, "x.idx")
