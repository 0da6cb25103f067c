"""Datasets as in-memory tensors: IDX (MNIST, Fashion-MNIST), CIFAR-10/100 batches, ImageFolder
trees.

Every loader returns a `Dataset` whose inputs are float32 [N, C, H, W] scaled to [-1, 1] (the range
the NeuralFuse generators assume) and int64 labels. Nothing is downloaded: a missing dataset is a
one-line `DataError` that says where it was looked for and how to get it.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sramsim.errors import DataError, InputError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_DIR = "/usr/share/datasets/mnist"
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08


@dataclass
class Dataset:
    """A labelled image set held in memory.

    x: float32 [N, C, H, W] in [-1, 1]; y: int64 [N]; num_classes: labels lie in [0, num_classes).
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.x.shape[2]), int(self.x.shape[3])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        c, (h, w) = self.in_channels, self.image_size
        return f"Dataset({self.name!r}, {len(self)} x {c}x{h}x{w}, {self.num_classes} classes)"


def load_dataset(spec: str, split: str = "test", limit: int | None = None,
                 image_size: int | tuple[int, int] | None = None) -> Dataset:
    """Load `split` of the dataset named by `spec`; `limit` keeps the first N samples.

    spec: "fashion-mnist" (Debian's dataset-fashion-mnist, or $SRAMSIM_DATA), "mnist"
    ($SRAMSIM_MNIST or /usr/share/datasets/mnist), or a directory holding IDX files, CIFAR-10/100
    python batches, or an ImageFolder tree (DIR/train/<class>/*.png, DIR/test/<class>/...).
    image_size: ImageFolder only; resize every image to (H, W) (an int means square). Without it
    all images must share one size.
    """
    if split not in SPLITS:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    key = str(spec).lower()
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _named_idx("fashion-mnist", os.environ.get("SRAMSIM_DATA") or FASHION_MNIST_DIR,
                          split, limit, "install Debian's dataset-fashion-mnist "
                          "(sudo apt-get install dataset-fashion-mnist) or set SRAMSIM_DATA to a "
                          "directory with the Fashion-MNIST IDX files")
    if key == "mnist":
        return _named_idx("mnist", os.environ.get("SRAMSIM_MNIST") or MNIST_DIR, split, limit,
                          "put the MNIST IDX files there (from http://yann.lecun.com/exdb/mnist/) "
                          "or set SRAMSIM_MNIST to their directory")
    root = Path(spec)
    if not root.exists():
        raise DataError(f"{spec}: no such dataset directory (use 'fashion-mnist', 'mnist' or a "
                        "directory with IDX files, CIFAR python batches or train/ and test/ "
                        "ImageFolder trees)")
    if not root.is_dir():
        raise DataError(f"{spec}: not a directory (datasets are directories: IDX files, CIFAR "
                        "python batches or an ImageFolder tree)")
    if _idx_files(root, split) is not None:
        return load_idx(root, split, limit)
    cifar = _cifar_root(root)
    if cifar is not None:
        return load_cifar(cifar, split, limit)
    if (root / "train").is_dir() or (root / "test").is_dir():
        return load_image_folder(root, split, limit, image_size)
    raise DataError(f"{spec}: not a dataset directory: found no {_IDX_PREFIX[split]}-images-idx3-"
                    "ubyte[.gz], no CIFAR batches (data_batch_1.., test_batch / train, test) and "
                    "no train/ or test/ ImageFolder subdirectories")


def _named_idx(name: str, directory: str, split: str, limit: int | None, how: str) -> Dataset:
    root = Path(directory)
    if _idx_files(root, split) is None:
        prefix = _IDX_PREFIX[split]
        raise DataError(f"{name} not found: looked for {root}/{prefix}-images-idx3-ubyte[.gz] and "
                        f"{prefix}-labels-idx1-ubyte[.gz]; {how}")
    ds = load_idx(root, split, limit)
    ds.name = name
    return ds


# ---------------------------------------------------------------- IDX (MNIST family)

def _find(root: Path, stem: str) -> Path | None:
    for suffix in ("", ".gz"):
        for sep in ("-", "."):
            p = root / (stem.replace("-idx", f"{sep}idx") + suffix)
            if p.is_file():
                return p
    return None


def _idx_files(root: Path, split: str) -> tuple[Path, Path] | None:
    prefix = _IDX_PREFIX[split]
    images = _find(root, f"{prefix}-images-idx3-ubyte")
    labels = _find(root, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images is not None and labels is not None else None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (raw or gzip) as a uint8 array; magic number and size are checked."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file ({' '.join(str(exc).split())})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"{path}: IDX size mismatch: header says {dims} ({expected} bytes), "
                        f"file has {len(raw)} bytes")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def load_idx(directory: str | os.PathLike, split: str = "test",
             limit: int | None = None) -> Dataset:
    """MNIST-style IDX pair `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` in `directory`."""
    root = Path(directory)
    files = _idx_files(root, split)
    if files is None:
        raise DataError(f"{root}: no {_IDX_PREFIX[split]}-images-idx3-ubyte[.gz] / "
                        f"{_IDX_PREFIX[split]}-labels-idx1-ubyte[.gz] pair")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3:
        raise DataError(f"{files[0]}: expected 3-D images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{files[1]}: expected 1-D labels, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    num_classes = int(labels.max()) + 1 if labels.size else 0
    n = _take(labels.shape[0], limit)
    return Dataset(_scale(images[:n, None]), torch.from_numpy(labels[:n].astype(np.int64)),
                   max(num_classes, 2), root.name or str(root))


# ---------------------------------------------------------------- CIFAR python batches

_CIFAR_SUBDIRS = ("cifar-10-batches-py", "cifar-100-python")
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


def _cifar_root(root: Path) -> Path | None:
    for d in (root, *(root / s for s in _CIFAR_SUBDIRS)):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return d
        if (d / "train").is_file() or (d / "test").is_file():
            return d
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what they contain (numpy arrays), nothing callable."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"{path}: cannot read CIFAR batch ({exc.strerror or exc})") from None
    except Exception as exc:  # corrupt pickles raise many types
        raise DataError(f"{path}: not a CIFAR python batch "
                        f"({' '.join(str(exc).split())})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR python batch (no dict inside)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_cifar(directory: str | os.PathLike, split: str = "test",
               limit: int | None = None) -> Dataset:
    """CIFAR-10 (`data_batch_1..5`, `test_batch`) or CIFAR-100 (`train`, `test`) python batches."""
    root = Path(directory)
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        numbered = [p.name for p in root.glob("data_batch_*") if p.name[11:].isdigit()]
        names = sorted(numbered, key=lambda s: int(s[11:])) if split == "train" else ["test_batch"]
        label_key, num_classes, name = "labels", 10, "cifar-10"
    else:
        names, label_key, num_classes, name = [split], "fine_labels", 100, "cifar-100"
    paths = [root / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise DataError(f"{root}: CIFAR {split} split missing "
                        f"({', '.join(missing) or 'no data_batch_*'})")
    xs, ys, have = [], [], 0
    for p in paths:
        batch = _read_batch(p)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{p}: CIFAR batch lacks 'data' or '{label_key}'")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{p}: CIFAR data must be uint8 [N, 3072], got "
                            f"{data.dtype} {data.shape}")
        if data.shape[0] != labels.shape[0]:
            raise DataError(f"{p}: {data.shape[0]} images but {labels.shape[0]} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{p}: labels outside [0, {num_classes})")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
        have += labels.shape[0]
        if limit is not None and have >= limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = _take(y.shape[0], limit)
    return Dataset(_scale(x[:n]), torch.from_numpy(y[:n]), num_classes, name)


# ---------------------------------------------------------------- ImageFolder trees

def load_image_folder(directory: str | os.PathLike, split: str = "test", limit: int | None = None,
                      image_size: int | tuple[int, int] | None = None) -> Dataset:
    """DIR/<split>/<class>/<image>: classes are the sorted subdirectory names of DIR/train.

    Samples are ordered round-robin over classes (the first of each class, then the second ...)
    so that `limit` keeps a class-balanced prefix. Grayscale-only trees load as 1 channel,
    anything else as RGB.
    """
    root = Path(directory)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{root}: ImageFolder tree has no {split}/ directory")
    class_dir = root / "train" if (root / "train").is_dir() else split_dir
    classes = sorted(p.name for p in class_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{class_dir}: no class subdirectories")
    index = {c: i for i, c in enumerate(classes)}
    extra = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and p.name not in index)
    if extra:
        raise DataError(f"{split_dir}: classes {', '.join(extra)} are not in {class_dir}")
    per_class = []
    for c in classes:
        d = split_dir / c
        files = (sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                 if d.is_dir() else [])
        per_class.append(files)
    order = [(k, files[k], label) for label,
             files in enumerate(per_class) for k in range(len(files))]
    order.sort(key=lambda t: (t[0], t[2]))
    if not order:
        raise DataError(f"{split_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    n = _take(len(order), limit)
    files = [t[1] for t in order[:n]]
    labels = torch.tensor([t[2] for t in order[:n]], dtype=torch.int64)
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = _decode_images(files, size)
    return Dataset(_scale(x), labels, len(classes), root.name or str(root))


def _decode_images(files: list[Path], size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    opened = []
    try:
        for f in files:
            try:
                opened.append(Image.open(f))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"{f}: cannot read image ({' '.join(str(exc).split())})") from None
        gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in opened)
        mode = "L" if gray else "RGB"
        if size is None:
            first = opened[0].size
            for f, im in zip(files, opened, strict=True):
                if im.size != first:
                    raise DataError(f"{f}: image is {im.size[0]}x{im.size[1]} but {files[0]} is "
                                    f"{first[0]}x{first[1]}; pass an image size to resize them")
            h, w = first[1], first[0]
        else:
            h, w = int(size[0]), int(size[1])
        out = np.empty((len(files), h, w, 1 if gray else 3), dtype=np.uint8)
        for k, (f, im) in enumerate(zip(files, opened, strict=True)):
            try:
                pic = im.convert(mode)
                if pic.size != (w, h):
                    pic = pic.resize((w, h), Image.Resampling.BILINEAR)
                out[k] = np.asarray(pic).reshape(h, w, -1)
            except OSError as exc:
                raise DataError(f"{f}: cannot decode image "
                                f"({' '.join(str(exc).split())})") from None
    finally:
        for im in opened:
            im.close()
    return out.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------- helpers

def _take(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, int(limit))


def _scale(u8: np.ndarray) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(u8, dtype=np.float32))
    return x.div_(127.5).sub_(1.0)
