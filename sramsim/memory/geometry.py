"""Memory array geometry and fault kinds: the vocabulary every fault source shares."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sramsim.errors import InputError

# Fault kinds as stored in profiles (/faults/kind): 0 reads inverted, 1 reads 0, 2 reads 1.
FLIP, STUCK0, STUCK1 = 0, 1, 2
KIND_CODES = {"flip": FLIP, "stuck0": STUCK0, "stuck1": STUCK1}
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}


# The largest memory modelled: 2^48 bits (32 TiB). Bit addresses are uint64 and the kernels do
# signed 64-bit arithmetic on them; the bound leaves that headroom and is far above any memory
# whose faults fit in a machine.
MAX_CAPACITY_BITS = 2 ** 48


class Sizes:
    """Sizes every memory geometry derives from its `capacity_bits` and `word_bits`."""

    word_bits: int

    @property
    def capacity_bits(self) -> int:
        """Bits in the memory (each geometry derives it from its own dimensions)."""
        raise NotImplementedError

    def check_capacity(self, product: str) -> None:
        """Refuse a geometry above MAX_CAPACITY_BITS, naming the `product` that gives its size."""
        if self.capacity_bits > MAX_CAPACITY_BITS:
            raise InputError(f"geometry capacity {product} = {self.capacity_bits:.3g} bits is "
                             f"above the largest memory modelled, 2^48 bits (32 TiB)")

    @property
    def capacity_bytes(self) -> int:
        """Bytes in the memory (the size of one dense per-byte mask)."""
        return self.capacity_bits // 8

    @property
    def capacity_words(self) -> int:
        """Words of `word_bits` bits in the memory (the modulus of placement offsets)."""
        return self.capacity_bits // self.word_bits


@dataclass(frozen=True)
class Geometry(Sizes):
    """`rows x cols` bits per bank, `banks` banks, read in words of `word_bits` bits.

    Bit address = ((bank * rows) + row) * cols + col. The technology is a label so the same
    geometry serves SRAM, DRAM, ... without SRAM-only assumptions.
    """

    rows: int
    cols: int
    banks: int = 1
    word_bits: int = 8
    technology: str = "sram"

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "banks", "word_bits"):
            value = getattr(self, name)
            # bool is an int in Python, and 128.0 or "128" would be coerced: all refused.
            if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
                    or value <= 0):
                raise InputError(f"geometry {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.technology, str) or not self.technology:
            raise InputError("geometry technology must be a non-empty label, "
                             f"got {self.technology!r}")
        if self.word_bits % 8:
            raise InputError(f"word_bits must be a multiple of 8, got {self.word_bits}")
        self.check_capacity("rows*cols*banks")
        if self.capacity_bits % self.word_bits:
            raise InputError("capacity (rows*cols*banks) must be a whole number of words")

    @property
    def capacity_bits(self) -> int:
        """Bits in the memory: rows * cols * banks."""
        return self.rows * self.cols * self.banks


    def split(self, address: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bit addresses -> (bank, row, col)."""
        a = np.asarray(address, dtype=np.uint64)
        col = a % np.uint64(self.cols)
        rest = a // np.uint64(self.cols)
        return rest // np.uint64(self.rows), rest % np.uint64(self.rows), col


def parse_kinds(kinds: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """{"flip": 0.5, "stuck0": 0.25, ...} -> (codes uint8, probabilities summing to 1)."""
    kinds = kinds or {"flip": 1.0}
    unknown = set(kinds) - set(KIND_CODES)
    if unknown:
        raise InputError(f"unknown fault kind(s) {sorted(unknown)}; use flip, stuck0, stuck1")
    weights = np.array([float(w) for w in kinds.values()])
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise InputError("fault kind proportions must be finite, non-negative and not all zero")
    codes = np.array([KIND_CODES[k] for k in kinds], dtype=np.uint8)
    return codes, weights / weights.sum()


def draw_kinds(rng: np.random.Generator, n: int, kinds: dict[str, float] | None) -> np.ndarray:
    """n fault kinds in the given proportions (all flips without touching the RNG)."""
    codes, probs = parse_kinds(kinds)
    if len(codes) == 1:
        return np.full(n, codes[0], dtype=np.uint8)
    return codes[np.searchsorted(np.cumsum(probs)[:-1], rng.random(n), side="right")]
