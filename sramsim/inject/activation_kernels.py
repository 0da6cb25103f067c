"""Numba kernels of the activation buffer: stored activation bytes read back through the buffer's
per-address fault masks, with the memory layer's byte rule (`sramsim.memory.kernels.read_byte`).

Arrays only; `sramsim.inject.activations` checks arguments and picks this or the torch twin.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from sramsim.memory.kernels import read_byte


@njit(cache=True, nogil=True)
def read_rows(stored: np.ndarray, xor: np.ndarray, clear: np.ndarray, set_: np.ndarray,
              out: np.ndarray) -> None:
    """out[i, j] = stored[i, j] read through the masks of address j (xor[j], clear[j], set_[j]).

    Every row (one inference's copy of a layer's output) sits on the same buffer cells, so all
    rows share the masks: the map is persistent across inferences.
    """
    for i in range(stored.shape[0]):
        for j in range(stored.shape[1]):
            out[i, j] = read_byte(stored[i, j], xor[j], clear[j], set_[j])


@njit(cache=True, nogil=True)
def store_read(x: np.ndarray, scale: np.float32, xor: np.ndarray, clear: np.ndarray,
               set_: np.ndarray, out: np.ndarray) -> None:
    """out[i, j] = x[i, j] quantized to a signed 8-bit code, stored at buffer address j, read back
    through that address's masks, and dequantized -- one pass over float32 values (the hook's
    quantize -> read_rows -> multiply, fused: the three torch passes and their int8 and uint8
    temporaries cost more than the layers of a small CNN). Zero-length masks: a fault-free
    buffer (quantized only).

    The code is clamp(rint(x / scale), -127, 127) in float32 with ties to even (as
    `torch.round`), NaN stored as 0; the value read back is float32(code) * scale.
    """
    faulty = xor.shape[0] > 0
    lo = np.float32(-127.0)
    hi = np.float32(127.0)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            q = np.float32(x[i, j] / scale)
            if q != q:
                q = np.float32(0.0)
            q = min(max(np.float32(np.rint(q)), lo), hi)
            code = int(q)
            if faulty:
                byte = read_byte(np.uint8(code & 0xFF), xor[j], clear[j], set_[j])
                code = int(byte) - 256 if byte > 127 else int(byte)
            out[i, j] = np.float32(code) * scale
