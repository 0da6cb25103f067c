"""Numba kernels of the memory layer: drawing fault positions and building a chip's byte masks.

Arrays and scalars only; callers check arguments. Compiled with cache=True (no JIT on CLI starts).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def build_byte_masks(address, kind, xor_mask, clear_mask, set_mask):
    """Scatter bit faults into per-byte masks (bit j of byte b = bit address 8*b + j).

    Kinds: 0 flip, 1 stuck0, 2 stuck1. Masks must be zeroed (or hold earlier faults: masks of a
    lower voltage are built by adding the faults between the two voltages).
    """
    for i in range(address.shape[0]):
        a = address[i]
        b = a >> 3
        bit = np.uint8(1) << np.uint8(a & 7)
        k = kind[i]
        if k == 0:
            xor_mask[b] |= bit
        elif k == 1:
            clear_mask[b] |= bit
        else:
            set_mask[b] |= bit


@njit(cache=True)
def geometric_positions(exponential, rate, limit, start):
    """Ascending positions of independent Bernoulli(p) successes in (start, limit).

    With E ~ Exp(1) and rate = -log(1 - p), the gap to the next success is 1 + floor(E / rate)
    (the geometric law), so positions come out sorted in O(#successes). Returns
    (positions, last position, finished); when the draws run out before `limit`, call again with
    more, starting at the last position.
    """
    pos = np.empty(exponential.shape[0], dtype=np.uint64)
    cur = start
    n = 0
    inv_rate = 1.0 / rate
    for i in range(exponential.shape[0]):
        cur += 1.0 + np.floor(exponential[i] * inv_rate)
        if cur >= limit:
            return pos[:n], cur, True
        pos[n] = np.uint64(cur)
        n += 1
    return pos[:n], cur, False
