"""Fault-aware bit placement (ReSpawn, Putra et al., ICCAD 2021): when a chip's map is known,
lay the weights out so that their most significant bits sit on good cells. No retraining.

The placement is planned once from the chip's faults at a *planning voltage* (the voltage the
memory will run at; the map is known there, e.g. a measured profile) and the model's offset. It
is fixed data, like a hardware remapping table: faults at any voltage are then applied through
it. Faults at a voltage above the planning voltage are a subset of the planned ones (nesting),
so the placement still avoids all of them; below it, new faults land wherever they land.

Policies (`POLICIES`):
- ``linear``: today's mapping (`sramsim.inject.mapping`): image word k -> chip word
  (k + offset) mod capacity_words, bit j of the word on cell j. The default.
- ``shuffle``: the same words, but each chip word's bits are stored rotated: logical bit i of
  the word sits on cell (i + r) mod word_bits, and the read rotates back. Per chip word, r is
  the rotation that minimises, lexicographically, the faults (at the planning voltage) on the
  bits of highest significance: first the number of faulty cells holding a code's MSB (bit m-1
  of each m-bit code: the sign bit of symmetric codes; with 4/2-bit packing every code of the
  word has its own MSB), then those holding bit m-2, and so on; ties go to the smallest r, so a
  fault-free word keeps r = 0. Rotations by a multiple of m leave every cell's significance
  unchanged, so r < m and the table stores ceil(log2 m) bits per word (3 bits for 8-bit codes,
  2 for 4-bit, 1 for 2-bit). Consequence: shuffle never puts more faults on any significance
  level's top than linear (per word, the cost of r = 0 is among those minimised).
  Stuck-at cells are treated like flips when planning: the remapper does not know the data, so a
  stuck-at cell whose stuck value happens to equal the stored bit is still avoided. When reading,
  each cell's fault kind acts on whatever logical bit is stored there, exactly.
- ``skip-faulty-words``: chip words with any fault at the planning voltage are skipped; the
  image is laid out on the fault-free words only, in order, starting at chip word `offset` and
  wrapping around the chip. Needs spare capacity: an image larger than the chip's good words is
  refused (InputError naming both counts); it is never tiled.

Overhead (`BitPlacement.overhead`): the table is assumed to live in fault-free metadata storage
(nominal voltage or hardened cells, as in ReSpawn), read alongside each word. shuffle: a dense
table of ceil(log2 m) bits per chip word, or sparse: one (word address, rotation) entry per
remapped word. skip-faulty-words: the skipped words (capacity that holds no weights) and a remap
table (the sorted list of skipped words, one address each). Neither adds cell reads in the
faulty memory; the metadata's read energy is not charged to the sweep's energy per read.

Work: planning is O(#faults at the planning voltage) numpy (a sort of the faulty words); applying
is O(#faults at the read voltage): the faults are moved to the logical bits they hit and applied
to a copy of the image by the sparse kernels of `sramsim.inject.mapping`. No loop over words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sramsim.errors import InputError, InputTypeError, check_choice
from sramsim.inject.mapping import apply_bit_faults, check_offset
from sramsim.memory.chip import Chip, Faults

POLICIES = ("linear", "shuffle", "skip-faulty-words")


def check_policy(policy: str, what: str = "--placement") -> str:
    """`policy` if it is one of POLICIES, else an InputError naming `what` and the choices."""
    return check_choice(policy, POLICIES, what)


@dataclass(frozen=True)
class BitPlacement:
    """A planned bit placement of an image of `n_words` chip words on one chip (its table).

    shuffle: `words` (int64, ascending) are the chip words stored rotated, `rotation` (uint8)
    their rotations. skip-faulty-words: `words` are the skipped chip words (ascending).
    linear: both empty.
    """

    policy: str
    voltage: float          # planning voltage
    offset: int             # chip word where image word 0 goes (before skipping)
    n_words: int            # chip words the image spans
    word_bits: int
    capacity_words: int
    bits: int               # code width m
    words: np.ndarray
    rotation: np.ndarray

    @property
    def table_bits_per_word(self) -> int:
        """Dense shuffle table: bits of rotation index per chip word (0 for the other policies)."""
        return math.ceil(math.log2(self.bits)) if self.policy == "shuffle" else 0

    def overhead(self) -> dict:
        """Storage overhead, as a JSON-ready dict (see the module docstring)."""
        address_bits = max(1, math.ceil(math.log2(self.capacity_words)))
        d = {"policy": self.policy, "planning_voltage": self.voltage}
        if self.policy == "shuffle":
            remapped = int(np.count_nonzero(self.rotation))
            d.update(remapped_words=remapped,
                     table_bits_per_word=self.table_bits_per_word,
                     dense_table_bits=self.table_bits_per_word * self.n_words,
                     sparse_table_bits=remapped * (address_bits + self.table_bits_per_word),
                     dense_table_share=self.table_bits_per_word / self.word_bits)
        elif self.policy == "skip-faulty-words":
            skipped = int(self.words.shape[0])
            d.update(skipped_words=skipped, skipped_share=skipped / self.capacity_words,
                     remap_table_bits=skipped * address_bits)
        return d


def plan(chip: Chip, voltage: float, policy: str, bits: int, n_words: int,
         offset: int = 0) -> BitPlacement:
    """Plan `policy` for an image of `n_words` chip words of m = `bits`-bit codes placed at
    `offset` on `chip`, from the chip's faults at `voltage` (the planning voltage)."""
    check_policy(policy, "bit placement")
    if not isinstance(chip, Chip):
        raise InputError(f"a bit placement needs a known chip map (a Chip), got "
                         f"{type(chip).__name__}")
    if bits not in (8, 4, 2):
        raise InputError(f"bits must be 8, 4 or 2, got {bits!r}")
    g = chip.geometry
    wb, cap = g.word_bits, g.capacity_words
    offset = check_offset(offset) % cap
    n_words = int(n_words)
    voltage = chip.check_voltage(voltage)
    empty = np.zeros(0, dtype=np.int64)
    if policy == "linear":
        return BitPlacement(policy, voltage, offset, n_words, wb, cap, bits, empty,
                            np.zeros(0, dtype=np.uint8))
    address = chip.faults(voltage).address.astype(np.int64)
    word = address // wb
    if policy == "skip-faulty-words":
        bad = np.unique(word)
        good = cap - bad.shape[0]
        if n_words > good:
            raise InputError(f"skip-faulty-words: the image needs {n_words} words but chip "
                             f"{chip.name!r} has only {good} fault-free words of {cap} at "
                             f"V={voltage:g}")
        return BitPlacement(policy, voltage, offset, n_words, wb, cap, bits, bad,
                            np.zeros(0, dtype=np.uint8))
    words, rotation = _rotations(word, address % wb, wb, bits)
    return BitPlacement(policy, voltage, offset, n_words, wb, cap, bits, words, rotation)


def _rotations(word: np.ndarray, cell: np.ndarray, word_bits: int,
               bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(faulty words ascending, best rotation of each) for faults at (word, cell).

    Cost of rotation r for one word: sum over its faulty cells of base^p, p = (cell - r) mod m
    the significance of the logical bit the cell then holds; base = codes per word + 1 exceeds
    any count of cells at one significance, so the order is lexicographic from the MSB down.
    """
    base = word_bits // bits + 1
    if base ** bits >= 2 ** 62:
        raise InputError(f"shuffle: {word_bits}-bit words of {bits}-bit codes are too wide")
    order = np.argsort(word, kind="stable")
    word, cell = word[order], cell[order]
    words, starts = np.unique(word, return_index=True)
    if words.shape[0] == 0:
        return words, np.zeros(0, dtype=np.uint8)
    r = np.arange(bits, dtype=np.int64)
    significance = (cell[:, None] - r[None, :]) % bits
    cost = np.add.reduceat(base ** significance, starts, axis=0)
    return words, np.argmin(cost, axis=1).astype(np.uint8)


def logical_faults(placement: BitPlacement, chip: Chip, voltage: float) -> Faults:
    """The chip's faults at `voltage` as bit addresses into the image (what each faulty cell
    corrupts after the read undoes the placement), in ascending order."""
    p = placement
    g = chip.geometry
    if (g.word_bits, g.capacity_words) != (p.word_bits, p.capacity_words):
        raise InputError("the bit placement was planned for a chip of another geometry")
    faults = chip.faults(voltage)
    address = faults.address.astype(np.int64)
    kind = faults.kind
    wb = p.word_bits
    word, cell = address // wb, address % wb
    if p.policy == "shuffle" and p.words.shape[0]:
        i = np.minimum(np.searchsorted(p.words, word), p.words.shape[0] - 1)
        r = np.where(p.words[i] == word, p.rotation[i].astype(np.int64), 0)
        cell = (cell - r) % wb
    if p.policy == "skip-faulty-words":
        keep = _not_in(word, p.words)
        word, cell, kind = word[keep], cell[keep], kind[keep]
        n_good = p.capacity_words - p.words.shape[0]
        rank = word - np.searchsorted(p.words, word)
        start = p.offset - int(np.searchsorted(p.words, p.offset))
        k = (rank - start) % n_good
        image_words = [(k, cell, kind)]
    else:
        k0 = (word - p.offset) % p.capacity_words
        tiles = -(-p.n_words // p.capacity_words)
        image_words = [(k0 + t * p.capacity_words, cell, kind) for t in range(tiles)]
    ks = np.concatenate([k for k, _, _ in image_words])
    cs = np.concatenate([c for _, c, _ in image_words])
    kinds = np.concatenate([x for _, _, x in image_words])
    image_address = ks * wb + cs
    inside = ks < p.n_words
    image_address, kinds = image_address[inside], kinds[inside]
    order = np.argsort(image_address, kind="stable")
    return Faults(image_address[order].astype(np.uint64), kinds[order])


def _not_in(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Boolean mask: values not in the ascending array `sorted_set`."""
    if sorted_set.shape[0] == 0:
        return np.ones(values.shape[0], dtype=bool)
    i = np.minimum(np.searchsorted(sorted_set, values), sorted_set.shape[0] - 1)
    return sorted_set[i] != values


def apply_placed_bits(image: np.ndarray, chip: Chip, voltage: float, placement: BitPlacement,
                      out: np.ndarray | None = None) -> np.ndarray:
    """`image` stored on `chip` through `placement` and read back at `voltage` (into `out`
    when given); the clean image is never modified."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 1):
        raise InputTypeError("image must be a 1-D uint8 numpy array")
    if -(-image.size * 8 // placement.word_bits) != placement.n_words:
        raise InputError(f"the bit placement was planned for {placement.n_words} words, the "
                         f"image spans {-(-image.size * 8 // placement.word_bits)}")
    if out is None:
        out = np.empty_like(image)
    elif not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
        raise InputError("out must be a uint8 array shaped like the image")
    faults = logical_faults(placement, chip, voltage)
    keep = faults.address < np.uint64(image.size * 8)     # a partial last word
    return apply_bit_faults(image, Faults(faults.address[keep], faults.kind[keep]), out,
                            checked=True)
