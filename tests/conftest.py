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
