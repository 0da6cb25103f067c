"""Dataset loaders on tiny files written here in each on-disk format, plus the real Fashion-MNIST."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sramsim.nn.data import FASHION_MNIST_DIR, load_dataset, read_idx
from sramsim.errors import DataError, InputError


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) \
        + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    data = idx_bytes(arr)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_dir(root: Path, gz: bool, n_train=7, n_test=5, size=(4, 3)) -> dict:
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_scaling_and_limit(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz)
    ds = load_dataset(str(tmp_path), "test")
    images, labels = arrays["t10k"]
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.x.shape == (5, 1, 4, 3) and ds.in_channels == 1 and ds.image_size == (4, 3)
    expected = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]
    assert torch.allclose(ds.x, expected, atol=1e-6)
    assert torch.equal(ds.y, torch.from_numpy(labels.astype(np.int64)))
    assert ds.num_classes == 5   # labels 0..4 in this split
    train = load_dataset(str(tmp_path), "train", limit=3)
    assert len(train) == 3
    assert torch.equal(train.y, torch.tensor([0, 1, 2]))
    assert torch.allclose(train.x[:, 0], torch.from_numpy(arrays["train"][0][:3] / 127.5 - 1).float())


def test_idx_extremes_map_to_minus_one_and_one(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.array([[[0, 255]], [[255, 0]]], np.uint8), True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1], np.uint8), True)
    ds = load_dataset(str(tmp_path))
    assert ds.x.flatten().tolist() == [-1.0, 1.0, 1.0, -1.0]


def test_idx_bad_magic_is_one_line_data_error(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D   # float data type
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not unsigned byte") as info:
        load_dataset(str(tmp_path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_bytes(b"\x12\x34" + bytes(raw[2:]))
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)


def test_idx_truncated_and_count_mismatch(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path) as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-1])
    with pytest.raises(DataError, match="size mismatch"):
        load_dataset(str(tmp_path))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 4, 3), np.uint8), gz=True)
    with pytest.raises(DataError, match="4 images but 5 labels"):
        load_dataset(str(tmp_path))


def test_corrupt_gzip_is_data_error(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read IDX"):
        load_dataset(str(tmp_path))


def cifar_batch(rng, n, key, n_classes):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, n_classes, n)]
    return {b"data": data, key: labels, b"batch_label": b"x"}


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(2)
    batches = {f"data_batch_{i}": cifar_batch(rng, 3, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, 4, b"labels", 10)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, b in batches.items():
        with open(root / name, "wb") as f:
            pickle.dump(b, f, protocol=2)
    train = load_dataset(str(tmp_path), "train")   # the parent dir is found too
    assert train.name == "cifar-10" and train.num_classes == 10
    assert train.x.shape == (15, 3, 32, 32)
    order = [f"data_batch_{i}" for i in range(1, 6)]
    want = np.concatenate([batches[k][b"data"] for k in order]).reshape(-1, 3, 32, 32)
    assert torch.allclose(train.x, torch.from_numpy(want / 127.5 - 1).float(), atol=1e-6)
    assert train.y.tolist() == sum((batches[k][b"labels"] for k in order), [])
    test = load_dataset(str(root), "test", limit=2)
    assert test.y.tolist() == batches["test_batch"][b"labels"][:2]
    # channel-major rows: pixel (c=1, h=0, w=0) is byte 1024 of the row
    assert test.x[0, 1, 0, 0] == pytest.approx(batches["test_batch"][b"data"][0, 1024] / 127.5 - 1)


def test_cifar100_and_unsafe_pickle(tmp_path):
    rng = np.random.default_rng(3)
    for split, n in (("train", 6), ("test", 3)):
        with open(tmp_path / split, "wb") as f:
            pickle.dump(cifar_batch(rng, n, b"fine_labels", 100), f)
    ds = load_dataset(str(tmp_path), "train")
    assert ds.name == "cifar-100" and ds.num_classes == 100 and len(ds) == 6

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "test", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError, match="not a CIFAR python batch"):
        load_dataset(str(tmp_path), "test")


def write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_rgb_round_robin_and_limit(tmp_path):
    rng = np.random.default_rng(4)
    pixels = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for k in range(n):
                arr = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
                write_png(tmp_path / split / cls / f"{k:02d}.png", arr)
                pixels[(split, cls, k)] = arr
    ds = load_dataset(str(tmp_path), "train")
    assert ds.x.shape == (6, 3, 5, 6) and ds.num_classes == 2
    assert ds.y.tolist() == [0, 1, 0, 1, 0, 1]          # round robin over classes
    assert torch.allclose(ds.x[1], torch.from_numpy(pixels[("train", "dog", 0)] / 127.5 - 1)
                          .float().permute(2, 0, 1), atol=1e-6)
    test = load_dataset(str(tmp_path), "test", limit=3)
    assert test.y.tolist() == [0, 1, 0]


def test_image_folder_grayscale_resize_and_mismatch(tmp_path):
    write_png(tmp_path / "train" / "a" / "x.png", np.full((8, 8), 255, np.uint8))
    write_png(tmp_path / "train" / "b" / "y.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "test" / "a" / "z.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="pass an image size"):
        load_dataset(str(tmp_path), "train")
    ds = load_dataset(str(tmp_path), "train", image_size=4)
    assert ds.x.shape == (2, 1, 4, 4)
    assert torch.all(ds.x[0] == 1.0) and torch.all(ds.x[1] == -1.0)
    write_png(tmp_path / "test" / "zebra" / "q.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="zebra"):
        load_dataset(str(tmp_path), "test")


def test_missing_and_bad_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("SRAMSIM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    assert "nowhere" in msg and "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg
    with pytest.raises(DataError, match="no such dataset directory"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset directory"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="split"):
        load_dataset("fashion-mnist", "validation")
    with pytest.raises(InputError, match="limit"):
        load_dataset("fashion-mnist", limit=0)


def test_sramsim_data_overrides_default(tmp_path, monkeypatch):
    make_idx_dir(tmp_path, gz=True)
    monkeypatch.setenv("SRAMSIM_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", "train")
    assert ds.name == "fashion-mnist" and len(ds) == 7


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split(monkeypatch):
    monkeypatch.delenv("SRAMSIM_DATA", raising=False)
    ds = load_dataset("fashion-mnist", "test")
    assert ds.x.shape == (10000, 1, 28, 28) and ds.num_classes == 10
    assert torch.bincount(ds.y).tolist() == [1000] * 10
    assert float(ds.x.min()) == -1.0 and float(ds.x.max()) == 1.0
