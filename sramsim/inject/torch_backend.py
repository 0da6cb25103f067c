"""The torch fault backend: fault draws applied to a uint8 image tensor on any device (GPU too).

Bit-identical to the numba path (`sramsim.inject.draws.apply_numpy`) by test; on a GPU the image and
the masks never leave the device.
"""
from __future__ import annotations

import numpy as np
import torch

from sramsim.inject.draws import ChipDraw
from sramsim.inject.mapping import check_offset
from sramsim.memory.chip import Faults
from sramsim.memory.geometry import FLIP, STUCK0, STUCK1


class TorchApplier:
    """Applies draws to a uint8 image tensor with torch ops on the image's device.

    Random faults: byte index = address >> 3, bit = 1 << (address & 7); the masks are sums of
    distinct bits per byte (addresses are distinct), i.e. their OR. Chips: the chip's dense byte
    masks (cached on the device per chip and voltage), gathered at (byte + offset) mod capacity.
    """

    def __init__(self, image: torch.Tensor) -> None:
        if image.dtype != torch.uint8 or image.dim() != 1:
            raise TypeError("image must be a 1-D uint8 tensor")
        self.image = image
        self.device = image.device
        self._positions = torch.arange(image.shape[0], device=self.device)
        self._chip_masks: dict = {}     # (chip id, #faults) -> device masks; a pool is small

    def __call__(self, draw: ChipDraw | Faults) -> torch.Tensor:
        """The image read back through `draw` (a `Faults` record or a `ChipDraw`), a new tensor."""
        if isinstance(draw, ChipDraw):
            return self._apply_chip(draw)
        return self._apply_bits(draw)

    def _apply_bits(self, faults: Faults) -> torch.Tensor:
        if len(faults) == 0:
            return self.image.clone()
        # index_add_ is an OR only for distinct bits (a repeated bit would carry into the next
        # one): checked on the host, before anything reaches the device.
        a = faults.address
        if a.shape[0] > 1 and np.any(a[1:] <= a[:-1]):
            raise ValueError("fault addresses must be distinct and ascending (as drawn)")
        if int(a[-1]) >= self.image.shape[0] * 8:
            raise ValueError("fault address beyond the end of the image")
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
        offset_bytes = (check_offset(draw.offset) % g.capacity_words) * (g.word_bits // 8)
        idx = (self._positions + offset_bytes) % g.capacity_bytes
        return _combine(self.image, xor[idx], None if clear is None else clear[idx],
                        None if set_ is None else set_[idx])


def _combine(image: torch.Tensor, xor: torch.Tensor | None, clear: torch.Tensor | None,
             set_: torch.Tensor | None) -> torch.Tensor:
    """The byte rule on uint8 tensors: ((image ^ xor) & ~clear) | set_, any mask None for none;
    masks broadcast against the image (one mask row for many stored copies). A new tensor."""
    out = image ^ xor if xor is not None else image.clone()
    if clear is not None:
        out &= ~clear
    if set_ is not None:
        out |= set_
    return out


combine = _combine      # the public name (the activation buffer's torch path uses it too)
