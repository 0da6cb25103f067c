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


# Codes returned by `first_bad_fault` (0: all invariants hold).
BAD_VFAIL_NOT_FINITE, BAD_VFAIL_RISES, BAD_ADDRESS_RANGE, BAD_ADDRESS_REPEATS, BAD_KIND = 1, 2, 3, 4, 5
EMPTY_SLOT = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def first_bad_fault(address, vfail, kind, capacity, bitset, table):
    """One pass over a chip's fault list: (code, index) of the first fault that breaks an
    invariant, (0, -1) when none does.

    Checked per fault i, in this order: vfail finite (code 1), vfail[i] <= vfail[i-1] (2),
    address < capacity (3), address not seen before (4), kind code <= 2 (5). Repeats are found
    in `bitset` (zeroed uint8, capacity bits) when it is non-empty, else in `table` (an
    open-addressing hash set: a power-of-two number >= 2n of slots filled with EMPTY_SLOT);
    both O(n), the caller picks the smaller. With both empty, repeats are not checked.
    """
    n = address.shape[0]
    mask = np.uint64(table.shape[0] - 1) if table.shape[0] else np.uint64(0)
    bits = 0
    while (1 << bits) < table.shape[0]:
        bits += 1
    shift = np.uint64(64 - bits) if bits else np.uint64(63)   # hash = the product's top bits
    use_bitset = bitset.shape[0] > 0
    use_table = table.shape[0] > 0
    prev = np.inf
    for i in range(n):
        v = vfail[i]
        if not np.isfinite(v):
            return 1, i
        if v > prev:
            return 2, i
        prev = v
        a = address[i]
        if a >= capacity:
            return 3, i
        if use_bitset:
            b = a >> np.uint64(3)
            bit = np.uint8(1) << np.uint8(a & np.uint64(7))
            if bitset[b] & bit:
                return 4, i
            bitset[b] |= bit
        elif use_table:
            h = (a * np.uint64(0x9E3779B97F4A7C15)) >> shift
            while True:
                t = table[h]
                if t == EMPTY_SLOT:
                    table[h] = a
                    break
                if t == a:
                    return 4, i
                h = (h + np.uint64(1)) & mask
        if kind[i] > 2:
            return 5, i
    return 0, -1


@njit(cache=True, nogil=True)
def group_by_byte(address, kind):
    """Bit faults with distinct ascending addresses -> per faulty byte (ascending): byte index
    and xor / clear / set masks (kinds 0 flip, 1 stuck0, 2 stuck1), and whether any is stuck-at.
    One pass; the sparse counterpart of `build_byte_masks`."""
    n = address.shape[0]
    byte = np.empty(n, dtype=np.int64)
    xor = np.zeros(n, dtype=np.uint8)
    clear = np.zeros(n, dtype=np.uint8)
    set_ = np.zeros(n, dtype=np.uint8)
    m = -1
    prev = -1
    stuck = False
    for i in range(n):
        a = address[i]
        b = np.int64(a >> 3)
        if b != prev:
            m += 1
            byte[m] = b
            prev = b
        bit = np.uint8(1) << np.uint8(a & 7)
        k = kind[i]
        if k == 0:
            xor[m] |= bit
        elif k == 1:
            clear[m] |= bit
            stuck = True
        else:
            set_[m] |= bit
            stuck = True
    m += 1
    return byte[:m], xor[:m], clear[:m], set_[:m], stuck
