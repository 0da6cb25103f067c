"""Fault source -> memory image: where each stored word sits on the chip, and the kernel call.

Mapping contract: memory word k of the image sits at chip word (k + offset) mod capacity_words
(the chip is tiled when the model is larger than it); bit j (LSB = 0) of chip word w is chip bit
address w * word_bits + j. Words are whole bytes, so this is the byte-level rule
image byte b -> chip byte (b + offset * word_bytes) mod capacity_bytes.
The clean image is never modified.
"""
from __future__ import annotations

from typing import Protocol, TypeAlias, runtime_checkable

import numpy as np

from sramsim.errors import InputError, InputTypeError
from sramsim.inject import image_kernels as kernels
from sramsim.memory.chip import Chip, Faults


@runtime_checkable
class BitErrorSource(Protocol):
    """A source of fresh (non-persistent) bit errors, e.g. `sramsim.RandomBitErrors`: each read
    draws a new fault pattern over the bits it is given."""

    def draw(self, nbits: int) -> Faults:
        """A fault pattern over `nbits` bits: distinct ascending bit addresses and kinds."""
        ...


# What every read path takes as its fault source: a persistent chip map (read at a voltage), a
# source of fresh bit errors, or a fixed Faults record addressed into the image itself.
FaultSource: TypeAlias = Chip | BitErrorSource | Faults


def apply_faults(image: np.ndarray, source: FaultSource, voltage: float | None = None,
                 offset: int = 0,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Return `image` as read back from faulty memory; written into `out` when given.

    source: a `Chip` (needs `voltage`; persistent faults, placed with `offset`), a
    `RandomBitErrors` (fresh faults over the image's own bits), or a `Faults` record whose
    addresses are bit indices into the image itself. `offset` (chip words) must be an integer
    (Python or numpy; any sign, taken mod the chip's capacity): 1.5 or "3" is refused, not rounded.
    (A DRAM placement instead of the offset rule: `sramsim.inject.dram_mapping.apply_placed`.)
    """
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 1):
        raise InputTypeError("image must be a 1-D uint8 numpy array")
    if out is None:
        out = np.empty_like(image)
    elif not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
        raise InputError("out must be a uint8 array shaped like the image")
    offset = check_offset(offset)
    if isinstance(source, Chip):
        if voltage is None:
            raise InputError("a Chip needs a voltage")
        return _apply_chip(image, source, voltage, offset, out)
    if isinstance(source, Faults):
        return apply_bit_faults(image, source, out)
    if isinstance(source, BitErrorSource):
        return apply_bit_faults(image, source.draw(image.shape[0] * 8), out, checked=True)
    raise InputTypeError(f"unknown fault source {type(source).__name__}; use Chip, "
                         "RandomBitErrors or Faults")


def check_offset(offset: object) -> int:
    """`offset` as a Python int; a non-integer (float, str, bool) is a TypeError naming it."""
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
        raise InputTypeError(f"offset must be an integer (chip words), got {offset!r}")
    return int(offset)


def _apply_chip(image: np.ndarray, chip: Chip, voltage: float, offset: int,
                out: np.ndarray) -> np.ndarray:
    masks = chip.byte_masks(voltage)
    g = chip.geometry
    offset_bytes = (offset % g.capacity_words) * (g.word_bits // 8)
    if masks.count == 0:
        np.copyto(out, image)
    elif masks.clear is None:
        kernel = kernels.pick(kernels.apply_xor_tiled, kernels.apply_xor_tiled_serial, image.size)
        kernel(image, out, masks.xor, offset_bytes)
    else:
        assert masks.set is not None                # a chip's clear and set masks come together
        masks_kernel = kernels.pick(kernels.apply_masks_tiled, kernels.apply_masks_tiled_serial,
                                    image.size)
        masks_kernel(image, out, masks.xor, masks.clear, masks.set, offset_bytes)
    return out


def apply_bit_faults(image: np.ndarray, faults: Faults, out: np.ndarray,
                     checked: bool = False) -> np.ndarray:
    """Copy `image` into `out` and apply faults addressed by bit index into the image.

    `checked=True` promises distinct ascending addresses inside the image (fresh random draws);
    otherwise they are put in order by `sorted_bit_faults`.
    """
    if not checked:
        faults = sorted_bit_faults(faults, image.shape[0] * 8)
    address, kind = faults.address, faults.kind
    np.copyto(out, image)
    if address.shape[0] == 0:
        return out
    if not np.any(kind):
        kernels.pick(kernels.apply_sparse_flips_inplace, kernels.apply_sparse_flips_inplace_serial,
                     image.size)(out, address)
    else:
        kernels.pick(kernels.apply_sparse_inplace, kernels.apply_sparse_inplace_serial,
                     image.size)(out, address, kind)
    return out


def sorted_bit_faults(faults: Faults, nbits: int) -> Faults:
    """`faults` (bit addresses into an image of `nbits` bits) in ascending address order.

    An address beyond the image or one given twice (which the kernels would apply twice: two
    flips cancel) is a ValueError.
    """
    address = faults.address
    kind = faults.kind
    if address.shape[0] and int(address.max()) >= nbits:
        raise InputError("fault address beyond the end of the image")
    if address.shape[0] > 1:
        if np.any(address[1:] < address[:-1]):
            order = np.argsort(address, kind="stable")
            address, kind = address[order], kind[order]
        if np.any(address[1:] == address[:-1]):
            raise InputError("fault addresses repeat (each faulty bit must be listed once)")
    return faults if address is faults.address else Faults(address, kind)
