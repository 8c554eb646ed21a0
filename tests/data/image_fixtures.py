"""Small IDX files in the public MNIST layout, written by the tests themselves."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# numpy dtype -> IDX type code
_CODES = {
    np.dtype("uint8"): 0x08,
    np.dtype("int8"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (big-endian), independent of the library's reader."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    code = _CODES[np.dtype(big.dtype)]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def fake_images(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 28, 28)`` uint8 images: smooth bright blobs on black, like clothing silhouettes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    centre = rng.uniform(9, 19, size=(n, 2))
    radius = rng.uniform(4, 9, size=(n, 1, 1))
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    images = 255 * np.exp(-d2 / (2 * radius**2))
    return images.clip(0, 255).astype(np.uint8)


def write_fake_mnist(root: Path, subdir: str = "fashion-mnist", train: int = 64, test: int = 32):
    """The four IDX .gz files of an MNIST-style dataset under ``root/subdir``."""
    folder = root / subdir
    for prefix, n, seed in (("train", train, 0), ("t10k", test, 1)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", fake_images(n, seed))
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
