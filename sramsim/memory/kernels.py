"""Numba kernels of the memory layer: the fault semantics of a stored byte, the byte masks that
carry them, fault-position draws and fault-list checks.

The byte rule lives here and only here (for numba; `sramsim.inject.torch_backend` has the torch
twin): a stored byte reads back as ((stored ^ xor) & ~clear) | set, where a flip sets its bit in
`xor`, a stuck-at-0 in `clear` and a stuck-at-1 in `set` (`add_fault`). Every kernel that builds
masks calls `add_fault`; every kernel that reads a faulty byte calls `read_byte`.

Arrays and scalars only; callers check arguments. Compiled with cache=True (no JIT on CLI starts).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def read_byte(stored: np.uint8, xor: np.uint8, clear: np.uint8, set_: np.uint8) -> np.uint8:
    """A stored byte as it reads back through its fault masks: flips, then stuck-at 0, then
    stuck-at 1 (a cell has one kind, so the order only matters for masks that share a bit)."""
    return np.uint8(((stored ^ xor) & ~clear) | set_)


@njit(cache=True, inline="always")
def fault_masks(kind: int, bit: np.uint8) -> tuple[np.uint8, np.uint8, np.uint8]:
    """(xor, clear, set) of one faulty `bit` (a one-bit uint8) by its kind: 0 flip, 1 stuck-at 0,
    2 stuck-at 1."""
    zero = np.uint8(0)
    if kind == 0:
        return bit, zero, zero
    if kind == 1:
        return zero, bit, zero
    return zero, zero, bit


@njit(cache=True, inline="always")
def add_fault(kind: int, bit: np.uint8, xor: np.ndarray, clear: np.ndarray, set_: np.ndarray,
              i: int) -> bool:
    """OR faulty `bit` of `kind` into slot i of the masks (`fault_masks` in place): only the
    kind's own mask is touched, so the masks of kinds that never occur may be empty arrays.
    Returns whether the fault is stuck-at."""
    if kind == 0:
        xor[i] |= bit
        return False
    if kind == 1:
        clear[i] |= bit
    else:
        set_[i] |= bit
    return True


@njit(cache=True, nogil=True)
def build_byte_masks(address: np.ndarray, kind: np.ndarray, xor_mask: np.ndarray,
                     clear_mask: np.ndarray, set_mask: np.ndarray) -> None:
    """Scatter bit faults into per-byte masks (bit j of byte b = bit address 8*b + j).

    Masks must be zeroed (or hold earlier faults: masks of a lower voltage are built by adding
    the faults between the two voltages).
    """
    for i in range(address.shape[0]):
        a = address[i]
        add_fault(kind[i], np.uint8(1) << np.uint8(a & 7), xor_mask, clear_mask, set_mask, a >> 3)


@njit(cache=True)
def geometric_positions(exponential: np.ndarray, rate: float, limit: float,
                        start: float) -> tuple[np.ndarray, float, bool]:
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
BAD_VFAIL_NOT_FINITE, BAD_VFAIL_RISES, BAD_ADDRESS_RANGE, BAD_ADDRESS_REPEATS = 1, 2, 3, 4
BAD_KIND = 5
EMPTY_SLOT = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def first_bad_fault(address: np.ndarray, vfail: np.ndarray, kind: np.ndarray, capacity: int,
                    bitset: np.ndarray, table: np.ndarray) -> tuple[int, int]:
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
def group_by_byte(address: np.ndarray, kind: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Bit faults with distinct ascending addresses -> per faulty byte (ascending): byte index
    and xor / clear / set masks, and whether any is stuck-at. One pass; the sparse counterpart
    of `build_byte_masks`."""
    return group_in_order(address, np.arange(address.shape[0]), kind, address.shape[0])


@njit(cache=True, nogil=True)
def group_in_order(address: np.ndarray, order: np.ndarray, kind: np.ndarray,
                   n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """`group_by_byte` of the faults with index < n, visited in address order (address
    ascending, order[j] the fault index of address[j]): (byte, xor, clear, set, any stuck-at).
    A stream through both; only the kinds (1 byte each) are gathered."""
    byte = np.empty(n, dtype=np.int64)
    xor = np.zeros(n, dtype=np.uint8)
    clear = np.zeros(n, dtype=np.uint8)
    set_ = np.zeros(n, dtype=np.uint8)
    m = -1
    prev = -1
    stuck = False
    for j in range(order.shape[0]):
        i = order[j]
        if i >= n:
            continue
        a = address[j]
        b = np.int64(a >> 3)
        if b != prev:
            m += 1
            byte[m] = b
            prev = b
        if add_fault(kind[i], np.uint8(1) << np.uint8(a & 7), xor, clear, set_, m):
            stuck = True
    m += 1
    return byte[:m], xor[:m], clear[:m], set_[:m], stuck


@njit(cache=True, nogil=True)
def changed_bits(image: np.ndarray, address: np.ndarray, kind: np.ndarray) -> int:
    """Bits of `image` that bit faults at `address` (distinct image bit addresses) change: every
    flip, a stuck-at only where the stored bit differs from it. O(faults)."""
    n = 0
    for i in range(address.shape[0]):
        a = address[i]
        stored = image[a >> 3]
        x, c, s = fault_masks(kind[i], np.uint8(1) << np.uint8(a & 7))
        if read_byte(stored, x, c, s) != stored:
            n += 1
    return n
