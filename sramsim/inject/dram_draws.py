"""Fresh DRAM-model bit errors over a placed image: the fault source of fault-aware training.

Evaluation reads weights through a persistent `dram_chip` (a whole part's map, ~1 s per 4 Gb
map at BER 1e-3, more at higher BER). Training needs a *new* map every step, and only the cells
under the image matter, so `DramBitErrors` draws those cells directly from the same error model:
each draw is a fresh chip (new line multipliers: new weak partitions / bitlines / wordlines) and
a fresh set of faulty cells, with the per-cell probability `dram_chip` uses,

    P(cell faulty at BER b) = min(1, b * f(line of the cell)),

where f is the multiplier of the cell's line (`sramsim.memory.dram_errors`, models 0-3). Work is
O(faults * f_max): candidate cells come at rate min(1, b * f_max) by geometric gaps over the
image's bits, and each is kept with probability min(1, b f) / min(1, b f_max) (thinning).
The multipliers of one draw are drawn only for the lines the image touches; for models 1 and 2
the normal/weak multipliers use the *expected* weak fraction for the chip-wide normalisation
(`dram_chip` uses the realised one: over a part's millions of lines they differ by ~0.1%).
Fault kinds: model 3's data-dependent direction from the cell's row; otherwise the model's kinds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from sramsim.errors import InputTypeError, check_ber
from sramsim.memory.chip import Faults
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_errors import data_dependent_kinds, line_index, resolve_params
from sramsim.memory.geometry import draw_kinds
from sramsim.memory.sampling import bernoulli_positions, check_seed
from sramsim.memory.sizes import require_memory

if TYPE_CHECKING:
    from sramsim.inject.dram_mapping import DramMapping


class DramBitErrors:
    """Fresh DRAM error-model faults over the bits of an image laid into a part by `placement`.

    `draw(ber, seed)` gives `Faults` addressed by image bit (ascending, distinct), ready for
    `sramsim.inject.mapping.apply_bit_faults`; the same (ber, seed) gives the same faults.
    """

    def __init__(self, placement: DramMapping, model: int | str = 0, **params: Any) -> None:
        geometry = placement.geometry
        if not isinstance(geometry, DramGeometry):
            raise InputTypeError("placement must lay the image into a DramGeometry")
        self.placement, self.geometry = placement, geometry
        self.model, self.params = resolve_params(geometry, model, params)
        self.n_bits = placement.n_bytes * 8
        require_memory(self.n_bits * 32.0, f"DRAM fault lines of a {placement.n_bytes}-byte image")
        lines = line_index(geometry, self.chip_address(np.arange(self.n_bits, dtype=np.int64)),
                           self.model, **self.params)
        self._lines, inverse = np.unique(lines, return_inverse=True)
        self._line_of_bit = inverse.astype(np.uint32).ravel()

    def chip_address(self, image_bit: ArrayLike) -> np.ndarray:
        """DRAM bit address (uint64) of each image bit under the placement."""
        bit = np.asarray(image_bit, dtype=np.int64)
        bpu = self.placement.unit_bytes * 8
        slot = np.asarray(self.placement.chip_unit, dtype=np.int64)[bit // bpu]
        return (slot * bpu + bit % bpu).astype(np.uint64)

    def line_factors(self, rng: np.random.Generator) -> np.ndarray:
        """Multipliers of the lines the image touches, for one freshly drawn chip."""
        m, prm, g = self.model, self.params, self.geometry
        if m == 0:
            z = np.exp(prm["spread"] * rng.standard_normal(g.n_partitions(prm["partition"])))
            return (z / z.mean())[self._lines.astype(np.intp)]
        if m in (1, 2):
            frac, factor = prm["weak_fraction"], prm["weak_factor"]
            normal = 1.0 / (frac * factor + 1.0 - frac)
            weak = rng.random(self._lines.shape[0]) < frac
            return np.where(weak, factor * normal, normal)
        return np.ones(self._lines.shape[0])

    def draw(self, ber: float, seed: int) -> Faults:
        """A fresh chip's faults at chip-wide BER `ber` on the image's bits."""
        ber = check_ber(ber, "BER")
        rng = np.random.default_rng(np.random.SeedSequence(check_seed(seed)))
        factors = self.line_factors(rng)
        p_line = np.minimum(1.0, ber * factors)
        p_max = float(p_line.max()) if p_line.size else 0.0
        candidates = bernoulli_positions(rng, self.n_bits, p_max)
        if p_max > 0 and candidates.size:
            keep = rng.random(candidates.size) * p_max < p_line[self._line_of_bit[candidates]]
            bits = candidates[keep]
        else:
            bits = candidates
        if self.model == 3:
            kind = data_dependent_kinds(self.geometry, self.chip_address(bits),
                                        self.params["group_rows"])
        else:
            kind = draw_kinds(rng, bits.shape[0], self.params.get("kinds"))
        return Faults(bits.astype(np.uint64), kind)

    def describe(self) -> dict:
        """The source as JSON (training state compares it on resume)."""
        stored = {k: v for k, v in self.params.items() if v is not None}
        return {"kind": "dram", "model": self.model, "params": stored,
                "placement": self.placement.policy, "part_bits": self.geometry.capacity_bits}
