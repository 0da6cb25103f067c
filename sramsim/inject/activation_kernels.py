"""Numba kernel of the activation buffer: stored activation bytes read back through the buffer's
per-address fault masks, with the memory layer's byte rule (`sramsim.memory.kernels.read_byte`).

Arrays only; `sramsim.inject.activations` checks arguments and picks this or the torch twin.
"""
from __future__ import annotations

from numba import njit

from sramsim.memory.kernels import read_byte


@njit(cache=True, nogil=True)
def read_rows(stored, xor, clear, set_, out):
    """out[i, j] = stored[i, j] read through the masks of address j (xor[j], clear[j], set_[j]).

    Every row (one inference's copy of a layer's output) sits on the same buffer cells, so all
    rows share the masks: the map is persistent across inferences.
    """
    for i in range(stored.shape[0]):
        for j in range(stored.shape[1]):
            out[i, j] = read_byte(stored[i, j], xor[j], clear[j], set_[j])
