import gzip

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one torch (and numba) thread avoids wake-ups that dominate on a busy 2-core machine."""
    from sramsim.analysis.executors import pinned_threads
    with pinned_threads(1):
        yield


def numba_thread_counts() -> list[int]:
    """1, 2 and 3 threads, those numba's pool holds in this process (NUMBA_NUM_THREADS defaults
    to the core count: 2 here). tests/test_determinism.py runs every parallel kernel at 1, 2 and
    3 threads in processes whose pools hold them; in-process checks use what the pool has."""
    import numba
    return [t for t in (1, 2, 3) if t <= numba.config.NUMBA_NUM_THREADS]


@pytest.fixture
def cnn_checkpoint(tmp_path):
    """An untrained default CNN saved as a 28x28 Fashion-MNIST checkpoint: (path, model)."""
    from sramsim.nn import models
    model = models.build("cnn", in_channels=1, num_classes=10)
    path = tmp_path / "cnn.pt"
    models.save_checkpoint(path, model, {"arch": "cnn", "in_channels": 1, "num_classes": 10,
                                         "norm": "batch", "bits": 8, "scheme": "symmetric",
                                         "clip": None, "dataset": "fashion-mnist",
                                         "image_size": [28, 28]})
    return path, model


def naive_apply(image: np.ndarray, fault_bits: dict[int, int], capacity_bytes: int,
                offset_bytes: int = 0) -> np.ndarray:
    """Reference semantics, one bit at a time: image byte b sits at chip byte
    (b + offset_bytes) % capacity_bytes; fault_bits maps chip bit address -> kind (0 flip, 1 stuck0, 2 stuck1)."""
    out = image.copy()
    for b in range(image.size):
        chip_byte = (b + offset_bytes) % capacity_bytes
        for j in range(8):
            kind = fault_bits.get(chip_byte * 8 + j)
            if kind is None:
                continue
            bit = 1 << j
            if kind == 0:
                out[b] ^= bit
            elif kind == 1:
                out[b] &= ~bit & 0xFF
            else:
                out[b] |= bit
    return out


def write_idx(path, array) -> None:
    """A gzipped IDX file (the MNIST/Fashion-MNIST format) holding a uint8 `array`."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_quadrants(root, n_train: int, n_test: int, noise: int = 60, bright: int = 180):
    """16x16 four-class images as gzipped IDX files in `root`: the class's quadrant is `bright`
    above uniform noise in [0, noise), the rest noise only. Returns `root`."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 4
        x = rng.integers(0, noise, (n, 16, 16))
        for c in range(4):
            r, col = divmod(c, 2)
            x[y == c, 8 * r:8 * r + 8, 8 * col:8 * col + 8] += bright
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def small_world():
    """A two-layer model (~900 weights, 8-bit) and 40 random 1x8x8 samples."""
    from sramsim.nn.data import Dataset
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12),
                                torch.nn.ReLU(), torch.nn.Linear(12, 4)).eval()
    g = torch.Generator().manual_seed(1)
    ds = Dataset(torch.rand(40, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 4, (40,),
                 generator=g), 4, "toy")
    return model, ds


def quadrant_world(n: int = 400):
    """A hand-made classifier of 16x16 images by their bright quadrant (4 classes, ~100%
    accurate fault-free) and its data."""
    from sramsim.nn.data import Dataset
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.uniform(-1, -0.5, (n, 1, 16, 16))
    for c in range(4):
        r, col = divmod(c, 2)
        x[y == c, :, 8 * r:8 * r + 8, 8 * col:8 * col + 8] += 1.2
    w = np.zeros((4, 256), np.float32)
    for c in range(4):
        r, col = divmod(c, 2)
        m = np.zeros((16, 16), np.float32)
        m[8 * r:8 * r + 8, 8 * col:8 * col + 8] = 1 / 64
        w[c] = m.ravel()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4),
                                torch.nn.Linear(4, 4, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(w))
        model[1].bias.zero_()
        model[2].weight.copy_(torch.eye(4))
    return model, Dataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y), 4, "quadrants")


def write_striped_digits(root, n_train: int, n_test: int):
    """28x28 ten-class gzipped IDX files in `root` (Fashion-MNIST's shape): class c is a bright
    horizontal band at rows 2c..2c+5 over noise, so a small CNN can learn it. Returns `root`."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for c in range(10):
            x[y == c, 2 * c:2 * c + 6, :] += 150
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(scope="module")
def digits_world(tmp_path_factory):
    """{"data": a 28x28 ten-class data folder (write_striped_digits, 120 train / 60 test),
    "ckpt": an untrained default CNN checkpoint for it (seed 0)}."""
    from sramsim.nn import models
    root = tmp_path_factory.mktemp("digits")
    data = root / "data"
    data.mkdir()
    write_striped_digits(data, 120, 60)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.build("cnn")
    ckpt = root / "cnn.pt"
    models.save_checkpoint(ckpt, model, {
        "arch": "cnn", "in_channels": 1, "num_classes": 10, "norm": "batch", "bits": 8,
        "scheme": "symmetric", "clip": None, "dataset": str(data), "image_size": [28, 28]})
    return {"root": root, "data": str(data), "ckpt": str(ckpt)}


def alive(pid: int) -> bool:
    """Whether process `pid` runs (exists and is not a zombie), read from /proc."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
