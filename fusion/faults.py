"""Fault maps for training and evaluating generators: where they come from and how they land.

A *sampler* draws fault maps one at a time from a seeded numpy generator whose state can be saved
and restored (so a resumed training run sees the same maps):
- `RandomSampler(ber)`: fresh independent bit errors over the image on every draw.
- `ChipPool(chips, voltage)`: a persistent chip from the pool at a random placement offset.
A draw is a plain record (`Faults` over the image's bits, or chip + voltage + offset). Applying it is
a separate step with two interchangeable paths, bit-identical by test:
- `apply_numpy`: sramsim's numba kernels on the numpy image (CPU);
- `apply_torch`: torch ops on a uint8 image tensor on any device (XOR / AND-NOT / OR masks built
  from the fault addresses), so on a GPU the faults never leave it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sramsim import Chip, Faults, RandomBitErrors
from sramsim.errors import InputError
from sramsim.geometry import FLIP, STUCK0, STUCK1
from sramsim.mapping import apply_bit_faults, apply_faults


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


class TorchApplier:
    """Applies draws to a uint8 image tensor with torch ops on the image's device.

    Random faults: byte index = address >> 3, bit = 1 << (address & 7); the masks are sums of
    distinct bits per byte (addresses are distinct), i.e. their OR. Chips: the chip's dense byte
    masks (cached on the device per chip and voltage), gathered at (byte + offset) mod capacity.
    """

    def __init__(self, image: torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 1:
            raise TypeError("image must be a 1-D uint8 tensor")
        self.image = image
        self.device = image.device
        self._positions = torch.arange(image.shape[0], device=self.device)
        self._chip_masks: dict = {}     # (chip id, #faults) -> device masks; a pool is small

    def __call__(self, draw) -> torch.Tensor:
        if isinstance(draw, ChipDraw):
            return self._apply_chip(draw)
        return self._apply_bits(draw)

    def _apply_bits(self, faults: Faults) -> torch.Tensor:
        if len(faults) == 0:
            return self.image.clone()
        address = torch.from_numpy(faults.address.astype(np.int64)).to(self.device)
        kind = torch.from_numpy(faults.kind).to(self.device)
        byte = address >> 3
        bit = torch.ones_like(address, dtype=torch.uint8) << (address & 7).to(torch.uint8)
        n = self.image.shape[0]
        masks = []
        for code in (FLIP, STUCK0, STUCK1):
            sel = kind == code
            masks.append(torch.zeros(n, dtype=torch.uint8, device=self.device)
                         .index_add_(0, byte[sel], bit[sel]) if bool(sel.any()) else None)
        return _combine(self.image, *masks)

    def _apply_chip(self, draw: ChipDraw) -> torch.Tensor:
        chip = draw.chip
        key = (id(chip), chip.count(draw.voltage))
        if key not in self._chip_masks:
            m = chip.byte_masks(draw.voltage)
            to = lambda a: None if a is None else torch.from_numpy(a.copy()).to(self.device)  # noqa: E731
            self._chip_masks[key] = (chip, to(m.xor), to(m.clear), to(m.set))
        _, xor, clear, set_ = self._chip_masks[key]
        g = chip.geometry
        offset_bytes = (draw.offset % g.capacity_words) * (g.word_bits // 8)
        idx = (self._positions + offset_bytes) % g.capacity_bytes
        return _combine(self.image, xor[idx], None if clear is None else clear[idx],
                        None if set_ is None else set_[idx])


def _combine(image, xor, clear, set_):
    out = image ^ xor if xor is not None else image.clone()
    if clear is not None:
        out &= ~clear
    if set_ is not None:
        out |= set_
    return out


def load_chips(paths) -> list[Chip]:
    """Chip profiles from HDF5 files (ProfileError names a bad file)."""
    return [Chip.load(p) for p in paths]
