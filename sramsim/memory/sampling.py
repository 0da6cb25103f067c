"""Random fault positions and pairings in O(#faults): no per-bit draws, no argsort."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from sramsim.errors import InputError, check_ber
from sramsim.memory import kernels
from sramsim.memory.sizes import POSITIONS_BYTES_PER_FAULT, expected_faults, require_memory


def check_seed(seed: object, what: str = "seed") -> int:
    """`seed` as a non-negative int (Python or numpy integer, not bool), else an InputError naming
    `what`: a seed of 1.5 or "3" is refused, never rounded."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"{what} must be a non-negative integer, got {seed!r}")
    if seed < 0:
        raise InputError(f"{what} must be a non-negative integer, got {seed!r}")
    return int(seed)


def bernoulli_positions(rng: np.random.Generator, nbits: int, p: float) -> np.ndarray:
    """Sorted uint64 indices of the bits in [0, nbits) that fail, each independently with prob. p.

    Deterministic in the generator's state: draws come in chunks whose sizes depend only on
    (nbits, p), never on timing or threads. Refuses (InputError) a draw whose positions could not
    fit in this machine's memory, before drawing.
    """
    p = check_ber(p)
    if nbits <= 0 or p == 0.0:
        return np.empty(0, dtype=np.uint64)
    require_memory((nbits if p == 1.0 else expected_faults(nbits, p)) * POSITIONS_BYTES_PER_FAULT,
                   f"drawing random faults over {nbits} bits at BER {p:g}")
    if p == 1.0:
        return np.arange(nbits, dtype=np.uint64)
    rate = -math.log1p(-p)
    expected = nbits * p
    chunk = int(expected + 6.0 * math.sqrt(expected) + 64)
    parts = []
    cur = -1.0
    while True:
        pos, cur, done = kernels.geometric_positions(rng.standard_exponential(chunk), rate,
                                                     float(nbits), cur)
        parts.append(pos)
        if done:
            break
        chunk = max(64, chunk // 4)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def shuffled_by_keys(rng: np.random.Generator,
                     items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`items` in a uniformly random order, with what a chip needs of that order.

    Returns (shuffled, rank, key): key is sorted, item shuffled[i] drew key[i] (its top 32 bits
    are i.i.d. random, see `key_uniforms`), and item j went to place rank[j] (uint32), so
    shuffled[rank[j]] == items[j]. One sort of packed 64-bit keys (32 random bits | index) does
    the shuffle: several times faster than argsort of floats plus a separate shuffle. Packing
    and unpacking are one pass each (numba), with no index array in between.
    """
    n: int = items.shape[0]
    if n >= 2 ** 32:
        raise InputError(f"too many faults for one chip ({n} >= 2**32)")
    key = rng.integers(0, 2 ** 32, size=n, dtype=np.uint64)
    _pack_keys(key)
    key.sort()
    shuffled = np.empty_like(items)
    rank = np.empty(n, dtype=np.uint32)
    _unpack_keys(key, items, shuffled, rank)
    return shuffled, rank, key


def key_uniforms(key: np.ndarray) -> np.ndarray:
    """The i.i.d. U(0, 1) value each key of `shuffled_by_keys` carries: (its random top 32 bits
    + 0.5) / 2**32, ascending along sorted keys. Works on any slice of them."""
    u = np.empty(key.shape[0], dtype=np.float64)
    _key_uniforms(key, u)
    return u


@njit(cache=True)
def _pack_keys(key: np.ndarray) -> None:
    """key[i] = key[i] << 32 | i, in place (random high half, index low half)."""
    for i in range(key.shape[0]):
        key[i] = (key[i] << np.uint64(32)) | np.uint64(i)


@njit(cache=True)
def _unpack_keys(key: np.ndarray, items: np.ndarray, shuffled: np.ndarray,
                 rank: np.ndarray) -> None:
    """shuffled[i] = items[j] and rank[j] = i, with j the index in key[i]."""
    for i in range(key.shape[0]):
        j = key[i] & np.uint64(0xFFFFFFFF)
        shuffled[i] = items[j]
        rank[j] = i


@njit(cache=True)
def _key_uniforms(key: np.ndarray, u: np.ndarray) -> None:
    scale = 1.0 / 2 ** 32
    for i in range(key.shape[0]):
        u[i] = (np.float64(key[i] >> np.uint64(32)) + 0.5) * scale
