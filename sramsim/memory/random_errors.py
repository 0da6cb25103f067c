"""Random, non-persistent bit errors: a fresh pattern every time they are applied."""
from __future__ import annotations

import numpy as np

from sramsim.errors import check_ber
from sramsim.memory.chip import Faults
from sramsim.memory.geometry import draw_kinds, parse_kinds
from sramsim.memory.sampling import bernoulli_positions, check_seed


class RandomBitErrors:
    """Each stored bit independently faulty with probability `ber` (RandBET / EOPM's random source).

    Same statistics as a random chip at the voltage where the chip's BER equals `ber`, but every
    `draw` gives a new pattern; the sequence of patterns is fixed by `seed` (a non-negative
    integer).
    """

    def __init__(self, ber: float, kinds: dict[str, float] | None = None, seed: int = 0):
        self.ber = check_ber(ber)
        parse_kinds(kinds)  # validate early
        self.kinds = dict(kinds) if kinds else {"flip": 1.0}
        self.seed = check_seed(seed)
        self.rng = np.random.default_rng(self.seed)

    def draw(self, nbits: int) -> Faults:
        """A fresh fault pattern over `nbits` bits, addresses ascending (O(#faults)); refused
        (InputError naming the size) when the pattern could not fit in this machine's memory."""
        address = bernoulli_positions(self.rng, int(nbits), self.ber)
        return Faults(address, draw_kinds(self.rng, address.shape[0], self.kinds))

    def __repr__(self) -> str:
        return f"RandomBitErrors(ber={self.ber:g}, kinds={self.kinds}, seed={self.seed})"
