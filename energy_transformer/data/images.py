"""Image datasets from their public formats: MNIST-style IDX ``.gz`` files and class folders.

``load_fashion_mnist("train")`` finds the four IDX files through
:func:`energy_transformer.data.paths.locate` (explicit ``root``, else ``$ET_DATA``, else the user
cache; downloads from the canonical mirror with checksum when online). :class:`ImageFolder`
reads an ImageNet-style folder with one sub-folder per class, through Pillow.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from energy_transformer.data.paths import RemoteFile, locate
from energy_transformer.text import counted

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {
    "train": (
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            _FASHION_URL + "train-images-idx3-ubyte.gz",
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            _FASHION_URL + "train-labels-idx1-ubyte.gz",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
    ),
    "test": (
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            _FASHION_URL + "t10k-images-idx3-ubyte.gz",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
    ),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# The PyTorch-hosted mirror of LeCun's MNIST files (the original site often refuses downloads).
# No offline copy was available to hash, so these are fetched without a checksum.
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    split: tuple(RemoteFile(f.name, _MNIST_URL + f.name) for f in files)
    for split, files in FASHION_MNIST_FILES.items()
}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into an array.

    The IDX format: two zero bytes, a type code, the number of dimensions ``n``, then ``n``
    big-endian uint32 sizes and the values in row-major order, big-endian.

    Raises:
        ValueError: bad magic number, unknown type code, or a size that does not match the data.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{name}: truncated or corrupt IDX file: shape {shape} needs {expected} bytes of data,"
            f" found {len(data) - header}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or not, into a native-endian array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    return parse_idx(raw, str(path))


def _load_idx_pair(
    folder: Path, files: tuple[RemoteFile, RemoteFile], root_name: str
) -> tuple[Tensor, Tensor]:
    images = read_idx(folder / files[0].name)
    labels = read_idx(folder / files[1].name)
    if images.ndim != 3:
        raise ValueError(f"{folder / files[0].name}: expected (n, rows, cols), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{root_name}: {counted(images.shape[0], 'image')} but labels have shape {labels.shape}"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST from its four public IDX ``.gz`` files (folder ``fashion-mnist/``).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: folder holding ``fashion-mnist/`` (default: ``$ET_DATA``, else the user cache,
            downloading when online).

    Returns:
        ``images: (n, 1, 28, 28)`` uint8 and ``labels: (n,)`` int64.
    """
    _check_split(split)
    files = FASHION_MNIST_FILES[split]
    return _load_idx_pair(locate("fashion-mnist", list(files), root), files, "fashion-mnist")


def load_mnist(
    split: str = "train", root: str | os.PathLike | None = None
) -> tuple[Tensor, Tensor]:
    """MNIST from its four public IDX ``.gz`` files (folder ``mnist/``); see
    :func:`load_fashion_mnist`."""
    _check_split(split)
    files = MNIST_FILES[split]
    return _load_idx_pair(locate("mnist", list(files), root), files, "mnist")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _pillow():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow is in the [image] extra
        raise ImportError(
            "reading image files needs Pillow: pip install 'energy-transformer[image]'"
        ) from err
    return Image


def _integer_bits(img) -> int | None:
    """Bits per sample of a 16- or 32-bit integer grey image (modes ``I;16*``, ``I``), else None.

    Older Pillow opens 16-bit PNGs as mode ``I``: the raw mode of the not yet loaded tile
    (``I;16B``) tells them apart from true 32-bit images.
    """
    if img.mode.startswith("I;16"):
        return 16
    if img.mode != "I":
        return None
    return 16 if any("I;16" in str(tile[3]) for tile in img.tile) else 32


def _scaled_grey(img, bits: int) -> np.ndarray:
    """The values of an integer grey image scaled to [0, 1] by its bit depth, float32.

    ``convert("L")`` would clip every value above 255 (a 16-bit image turns white); mode ``I``
    is signed, so 32-bit images use 2**31 - 1 and negative values become 0.
    """
    top = 2**bits - 1 if bits == 16 else 2**31 - 1
    return (np.asarray(img, dtype=np.float64).clip(0, top) / top).astype(np.float32)


def load_image_file(path: str | os.PathLike, image_size: int, channels: int = 3) -> Tensor:
    """Read one image file: grey or RGB, shorter side resized to ``image_size``, centre crop.

    16- and 32-bit integer grey images are scaled by their bit depth (not clipped to 8 bits).

    Returns:
        ``(channels, image_size, image_size)`` float in [0, 1].
    """
    image_module = _pillow()
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with image_module.open(path) as img:
            bits = _integer_bits(img)
            if bits is None:
                img = img.convert("RGB" if channels == 3 else "L")
            else:
                img = image_module.fromarray(_scaled_grey(img, bits))  # mode "F"
            scale = image_size / min(img.size)
            size = (
                max(image_size, round(img.width * scale)),
                max(image_size, round(img.height * scale)),
            )
            img = img.resize(size, image_module.Resampling.BICUBIC)
            left = (img.width - image_size) // 2
            top = (img.height - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            if bits is None:
                array = np.asarray(img, dtype=np.uint8)
            else:  # bicubic may overshoot [0, 1]; grey repeated for RGB
                array = np.asarray(img, dtype=np.float32).clip(0, 1)
                array = array[..., None].repeat(3, axis=-1) if channels == 3 else array
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    pixels = torch.from_numpy(array.copy())
    pixels = pixels.float().div_(255) if bits is None else pixels
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)


class ImageFolder(Dataset):
    """An ImageNet-style folder: ``root/<class>/<image>``, one sub-folder per class.

    Each image is read by :func:`load_image_file`: converted to RGB (``channels=3``) or grey
    (``channels=1``), its shorter side resized to ``image_size`` and centre-cropped to a square.

    Args:
        root: the folder of class sub-folders.
        image_size: side of the returned square images.
        channels: 1 or 3.

    Returns per item:
        ``(image, label)`` with ``image: (channels, image_size, image_size)`` float in [0, 1].
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 224, channels: int = 3) -> None:
        _pillow()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.image_size, self.channels = image_size, channels
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).rglob("*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        ]
        if not self.samples:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders of {self.root}"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return load_image_file(path, self.image_size, self.channels), label
