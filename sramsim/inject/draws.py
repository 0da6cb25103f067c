"""Fault draws: fault maps drawn one at a time for training and evaluation, and how they land.

A *sampler* draws fault maps one at a time from a seeded numpy generator whose state can be saved
and restored (so a resumed training run sees the same maps):
- `RandomSampler(ber)`: fresh independent bit errors over the image on every draw.
- `ChipPool(chips, voltage)`: a persistent chip from the pool at a random placement offset.
`fixed_draws` gives the *fixed* maps of an evaluation, a vulnerability analysis or a validation
set (one selection rule for all of them; validation maps never coincide with evaluation maps).
A draw is a plain record (`Faults` over the image's bits, or chip + voltage + offset). Applying it
is a separate step with two interchangeable paths, bit-identical by test:
- `apply_numpy` (here): sramsim's numba kernels on the numpy image (CPU);
- `sramsim.inject.torch_backend.TorchApplier`: torch ops on a uint8 image tensor on any device
  (XOR / AND-NOT / OR masks built from the fault addresses), so on a GPU the faults never leave it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from sramsim.errors import InputError, check_ber
from sramsim.inject.mapping import FaultSource, apply_bit_faults, apply_faults
from sramsim.memory.chip import Chip, Faults
from sramsim.memory.random_errors import RandomBitErrors


@dataclass(frozen=True)
class ChipDraw:
    """One placement of a chip's faults at a voltage (offset in chip words)."""

    chip: Chip
    voltage: float
    offset: int


def as_source(draw: ChipDraw | FaultSource) -> tuple[FaultSource, float | None, int]:
    """A draw as the (source, voltage, offset) every read path takes: a ChipDraw's chip, voltage
    and offset; anything else (Faults, RandomBitErrors) as the source with no voltage."""
    if isinstance(draw, ChipDraw):
        return draw.chip, draw.voltage, draw.offset
    return draw, None, 0


class RandomSampler:
    """Fresh random bit errors at rate `ber` on every draw (the source of `--ber P`)."""

    def __init__(self, ber: float, seed: int = 0, kinds: dict[str, float] | None = None):
        self.source = RandomBitErrors(check_ber(ber, "ber"), kinds=kinds, seed=seed)

    @property
    def ber(self) -> float:
        """The bit error rate every draw is made at."""
        return self.source.ber

    def draw(self, nbits: int) -> Faults:
        """A fresh fault pattern over `nbits` image bits (addresses ascending)."""
        return self.source.draw(nbits)

    def describe(self) -> dict:
        """The source as JSON (checkpoints compare it on resume)."""
        return {"kind": "random", "ber": self.ber, "kinds": self.source.kinds}

    def state(self) -> dict[str, Any]:
        """The numpy generator state (saved in checkpoints so a resumed run draws the same maps)."""
        return dict(self.source.rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        """Restore a state from `state()`."""
        self.source.rng.bit_generator.state = state


class ChipPool:
    """Persistent chips at one voltage; each draw picks a chip and a placement offset at random."""

    def __init__(self, chips: list[Chip], voltage: float, seed: int = 0,
                 random_offsets: bool = True) -> None:
        if not chips:
            raise InputError("no chip profiles given")
        self.chips = list(chips)
        self.voltage = float(voltage)
        for chip in self.chips:
            chip.check_voltage(self.voltage)     # VoltageError (an InputError) names the chip
        self.random_offsets = random_offsets
        self.rng = np.random.default_rng(seed)

    def draw(self, nbits: int) -> ChipDraw:
        """A chip of the pool at a random offset (`nbits` is unused: the chip is the map)."""
        i = int(self.rng.integers(len(self.chips)))
        chip = self.chips[i]
        offset = int(self.rng.integers(chip.geometry.capacity_words)) if self.random_offsets else 0
        return ChipDraw(chip, self.voltage, offset)

    def ber(self) -> float:
        """Mean empirical bit error rate of the pool at its voltage."""
        return float(np.mean([c.ber(self.voltage) for c in self.chips]))

    def describe(self) -> dict:
        """The source as JSON (checkpoints compare it on resume)."""
        return {"kind": "chips", "voltage": self.voltage, "chips": [c.name for c in self.chips],
                "ber": self.ber()}

    def state(self) -> dict[str, Any]:
        """The numpy generator state (saved in checkpoints so a resumed run draws the same maps)."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        """Restore a state from `state()`."""
        self.rng.bit_generator.state = state


# What draws fault maps for a run: fresh random errors, or a pool of persistent chips.
Sampler: TypeAlias = RandomSampler | ChipPool

PURPOSES = ("test", "validation")


def fixed_draws(nbits: int, n: int, *, ber: float | None = None,
                chips: Sequence[Chip] | None = None, voltage: float | None = None,
                seed: int = 0, purpose: str = "test") -> Iterator:
    """The `n` fixed fault maps of an evaluation ("test") or a validation set, one at a time.

    Random errors (`ber`): the pattern sequence of `RandomBitErrors(ber, seed=seed)` over `nbits`
    image bits (validation and evaluation use different seeds). Chips (`chips` at `voltage`):
    map k is chip k mod len(chips). Test maps put each chip at offset 0 first (the chip as
    built), then at seeded *even* placement offsets; validation maps use seeded *odd* offsets
    only, so no validation map is ever an evaluation map, whatever the seeds and counts.
    Draws are `Faults` (random) or `ChipDraw` records, for `apply_numpy` / `TorchApplier`.
    """
    if purpose not in PURPOSES:
        raise InputError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise InputError(f"models must be a positive integer, got {n!r}")
    n = int(n)
    if chips:
        if voltage is None:
            raise InputError("chip profiles need a voltage")
        chips = list(chips)
        for chip in chips:
            chip.check_voltage(voltage)     # VoltageError (an InputError) names the chip
        if purpose == "validation":
            small = [c.name for c in chips if c.geometry.capacity_words < 2]
            if small:
                raise InputError(f"chip {small[0]!r} has a single word: no validation placement "
                                 f"differs from the evaluation one")
        return _chip_draws(chips, float(voltage), n, seed, purpose)
    if ber is None:
        raise InputError("give a bit error rate (ber) or chip profiles with a voltage")
    return _random_draws(RandomSampler(ber, seed=seed), nbits, n)


def _random_draws(sampler: RandomSampler, nbits: int, n: int) -> Iterator[Faults]:
    for _ in range(n):
        yield sampler.draw(nbits)


def _chip_draws(chips: list[Chip], voltage: float, n: int, seed: int,
                purpose: str) -> Iterator[ChipDraw]:
    rng = np.random.default_rng(seed)
    for k in range(n):
        chip = chips[k % len(chips)]
        words = chip.geometry.capacity_words
        if purpose == "validation":
            offset = 2 * int(rng.integers(words // 2)) + 1          # odd: 1, 3, ... < words
        elif k < len(chips):
            offset = 0
        else:
            offset = 2 * int(rng.integers((words + 1) // 2))        # even: 0, 2, ... < words
        yield ChipDraw(chip, voltage, offset)


def apply_numpy(image: np.ndarray, draw: ChipDraw | Faults, out: np.ndarray) -> np.ndarray:
    """The image read back through one draw, written into `out` (numba kernels)."""
    if isinstance(draw, ChipDraw):
        return apply_faults(image, draw.chip, draw.voltage, draw.offset, out)
    return apply_bit_faults(image, draw, out, checked=True)
