"""Random fault positions and pairings in O(#faults): no per-bit draws, no argsort."""
from __future__ import annotations

import math

import numpy as np

from sramsim.memory import kernels


def bernoulli_positions(rng: np.random.Generator, nbits: int, p: float) -> np.ndarray:
    """Sorted uint64 indices of the bits in [0, nbits) that fail, each independently with prob. p.

    Deterministic in the generator's state: draws come in chunks whose sizes depend only on
    (nbits, p), never on timing or threads.
    """
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"bit error rate must lie in [0, 1], got {p!r}")
    if nbits <= 0 or p == 0.0:
        return np.empty(0, dtype=np.uint64)
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


def random_order_uniforms(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly random permutation `order` of range(n) and n i.i.d. U(0,1) values `u` sorted
    ascending, such that item order[i] gets u[i].

    One sort of packed 64-bit keys (32 random bits | index) does both jobs: it is several times
    faster than argsort of floats plus a separate shuffle.
    """
    if n >= 2 ** 32:
        raise ValueError("too many faults for one chip (>= 2**32)")
    key = rng.integers(0, 2 ** 32, n, dtype=np.uint64) << np.uint64(32)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    order = key & np.uint64(0xFFFFFFFF)
    key >>= np.uint64(32)
    u = key.astype(np.float64)
    u += 0.5
    u *= 1.0 / 2 ** 32
    return order, u
