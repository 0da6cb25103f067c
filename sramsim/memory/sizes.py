"""Sizes that cannot fit are refused before anything is allocated, with the size named.

One place estimates what an operation will allocate (expected faults x bytes per fault for sparse
fault lists, capacity_bytes per dense mask) and compares it with the machine's physical memory,
so a 10^12-bit chip is an `InputError` naming the size instead of a numpy MemoryError minutes in.
An operation that fits but needs more than `LARGE_BYTES` says its size first (a `MemoryNote`
warning), so a 4 Gb DRAM map at a high BER does not take gigabytes silently.
"""
from __future__ import annotations

import math
import os
import warnings

from sramsim.errors import InputError

# Peak bytes per fault while `Chip.random` builds a chip (measured with tracemalloc: positions,
# draws, sort keys, uniforms and the kept address/vfail/kind arrays; 56 B at 18 M faults).
CHIP_BUILD_BYTES_PER_FAULT = 56
# Peak bytes per fault while drawing random positions (exponential draws + positions, 8 B each).
POSITIONS_BYTES_PER_FAULT = 16
# Above this an operation says its size before allocating.
LARGE_BYTES = 2 ** 30


class MemoryNote(UserWarning):
    """An operation is about to allocate more than LARGE_BYTES (it fits this machine)."""


def physical_memory_bytes() -> int:
    """This machine's physical memory in bytes (os.sysconf): the most one operation could use."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def expected_faults(nbits: int, p: float) -> float:
    """A generous upper estimate of the faults among `nbits` bits failing with probability p
    (mean + 6 standard deviations), for sizing before drawing."""
    mean = float(nbits) * float(p)
    return mean + 6.0 * math.sqrt(mean * max(0.0, 1.0 - float(p))) + 64.0


def format_bytes(nbytes: float) -> str:
    """Bytes as a short human size: '196 GiB', '1.5 GiB', '12 MiB'."""
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{int(nbytes)} B"


def require_memory(nbytes: float, what: str) -> None:
    """Refuse (InputError) an operation `what` that would allocate about `nbytes`, more than this
    machine's physical memory (the message names both sizes); above LARGE_BYTES, warn
    (`MemoryNote`) with the size before the caller allocates."""
    total = physical_memory_bytes()
    if nbytes > total:
        raise InputError(f"{what} needs ~{format_bytes(nbytes)}, more than this machine's "
                         f"{format_bytes(total)} of memory")
    if nbytes > LARGE_BYTES:
        warnings.warn(f"{what} needs ~{format_bytes(nbytes)} of memory (of this machine's "
                      f"{format_bytes(total)})", MemoryNote, stacklevel=3)
