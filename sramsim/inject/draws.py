"""Fault draws: fault maps drawn one at a time for training and evaluation, and how they land.

A *sampler* draws fault maps one at a time from a seeded numpy generator whose state can be saved
and restored (so a resumed training run sees the same maps):
- `RandomSampler(ber)`: fresh independent bit errors over the image on every draw.
- `ChipPool(chips, voltage)`: a persistent chip from the pool at a random placement offset.
A draw is a plain record (`Faults` over the image's bits, or chip + voltage + offset). Applying it is
a separate step with two interchangeable paths, bit-identical by test:
- `apply_numpy` (here): sramsim's numba kernels on the numpy image (CPU);
- `sramsim.inject.torch_backend.TorchApplier`: torch ops on a uint8 image tensor on any device
  (XOR / AND-NOT / OR masks built from the fault addresses), so on a GPU the faults never leave it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sramsim import Chip, Faults, RandomBitErrors
from sramsim.errors import InputError
from sramsim.inject.mapping import apply_bit_faults, apply_faults


@dataclass(frozen=True)
class ChipDraw:
    """One placement of a chip's faults at a voltage (offset in chip words)."""

    chip: Chip
    voltage: float
    offset: int


class RandomSampler:
    """Fresh random bit errors at rate `ber` on every draw (the source of `--ber P`)."""

    def __init__(self, ber: float, seed: int = 0, kinds: dict[str, float] | None = None):
        ber = float(ber)
        if not 0.0 <= ber <= 1.0:
            raise InputError(f"--ber must lie in [0, 1], got {ber!r}")
        self.source = RandomBitErrors(ber, kinds=kinds, seed=seed)

    @property
    def ber(self) -> float:
        return self.source.ber

    def draw(self, nbits: int) -> Faults:
        return self.source.draw(nbits)

    def describe(self) -> dict:
        return {"kind": "random", "ber": self.ber, "kinds": self.source.kinds}

    def state(self) -> dict:
        return self.source.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.source.rng.bit_generator.state = state


class ChipPool:
    """Persistent chips at one voltage; each draw picks a chip and a placement offset at random."""

    def __init__(self, chips: list[Chip], voltage: float, seed: int = 0, random_offsets: bool = True):
        if not chips:
            raise InputError("no chip profiles given")
        self.chips = list(chips)
        self.voltage = float(voltage)
        for chip in self.chips:
            chip.check_voltage(self.voltage)     # VoltageError (an InputError) names the chip
        self.random_offsets = random_offsets
        self.rng = np.random.default_rng(seed)

    def draw(self, nbits: int) -> ChipDraw:
        i = int(self.rng.integers(len(self.chips)))
        chip = self.chips[i]
        offset = int(self.rng.integers(chip.geometry.capacity_words)) if self.random_offsets else 0
        return ChipDraw(chip, self.voltage, offset)

    def ber(self) -> float:
        """Mean empirical bit error rate of the pool at its voltage."""
        return float(np.mean([c.ber(self.voltage) for c in self.chips]))

    def describe(self) -> dict:
        return {"kind": "chips", "voltage": self.voltage, "chips": [c.name for c in self.chips],
                "ber": self.ber()}

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def apply_numpy(image: np.ndarray, draw, out: np.ndarray) -> np.ndarray:
    """The image read back through one draw, written into `out` (numba kernels)."""
    if isinstance(draw, ChipDraw):
        return apply_faults(image, draw.chip, draw.voltage, draw.offset, out)
    return apply_bit_faults(image, draw, out, checked=True)
