"""A chip: a persistent per-bit failure map over voltage, stored sparse and nested by design."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from sramsim.memory import kernels
from sramsim.memory.curves import BerCurve
from sramsim.errors import InputError
from sramsim.memory.geometry import FLIP, Geometry, KIND_CODES, draw_kinds
from sramsim.memory.sampling import bernoulli_positions, random_order_uniforms

VOLTAGE_TOLERANCE = 1e-9


class VoltageError(InputError):
    """A voltage outside what a chip or profile knows (below its floor / lowest measurement)."""


@dataclass(frozen=True)
class Faults:
    """The faulty bits of a memory at one voltage: bit addresses and their kinds."""

    address: np.ndarray  # uint64
    kind: np.ndarray     # uint8: 0 flip, 1 stuck0, 2 stuck1

    def __len__(self) -> int:
        return int(self.address.shape[0])

    def counts(self) -> dict[str, int]:
        return {name: int(np.count_nonzero(self.kind == code)) for name, code in KIND_CODES.items()}


@dataclass
class ByteMasks:
    """Dense per-byte masks of a chip at one voltage (what the streaming kernels read)."""

    xor: np.ndarray
    clear: np.ndarray | None = None   # None when the chip has no stuck-at faults at this voltage
    set: np.ndarray | None = None
    count: int = 0                    # faults included (a prefix of the chip's fault list)

    def copy(self) -> "ByteMasks":
        return ByteMasks(self.xor.copy(), None if self.clear is None else self.clear.copy(),
                         None if self.set is None else self.set.copy(), self.count)


@dataclass
class Chip:
    """Per-bit failure map: each faulty cell fails at every voltage <= its `vfail`.

    Faults are sorted by `vfail` descending, so the faults at V are a prefix and nesting over
    voltage holds by construction. Voltages are compared in float32, the precision vfail is
    stored in: a cell is faulty at V when vfail >= float32(V). `v_floor` is the lowest voltage the map is valid for.
    """

    geometry: Geometry
    address: np.ndarray
    vfail: np.ndarray
    kind: np.ndarray
    v_floor: float
    name: str = "chip"
    source: str = "synthetic"
    voltage_unit: str = "normalized"
    nominal_voltage: float = 1.0
    curve: BerCurve | None = None
    measured_voltages: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)
    _mask_cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    # Threads may share a chip: the lock guards the mask cache (byte_masks); not pickled.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    MASK_CACHE_SIZE = 3

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def random(cls, geometry: Geometry, curve: BerCurve, v_floor: float, seed: int,
               kinds: dict[str, float] | None = None, name: str | None = None) -> "Chip":
        """A synthetic chip whose cells fail independently with P(fail at V) = curve.ber(V).

        O(#faults at v_floor): fault positions from geometric gaps (sorted, distinct), failure
        voltages from sorted uniform order statistics, paired by a random permutation.
        Deterministic in `seed` on any machine and thread count.
        """
        p_floor = float(curve.ber(v_floor))
        rng = np.random.default_rng(seed)
        positions = bernoulli_positions(rng, geometry.capacity_bits, p_floor)
        # Given a cell fails at v_floor, P(vfail >= V) = ber(V) / ber(v_floor): vfail is the curve's
        # inverse at u * ber(v_floor), u ~ U(0, 1). Ascending u -> descending vfail, and a random
        # pairing of positions with u keeps addresses independent of failure voltages.
        order, u_asc = random_order_uniforms(rng, positions.shape[0])
        address = positions[order]
        vfail = np.asarray(curve.voltage(u_asc * p_floor), dtype=np.float64).astype(np.float32)
        vfail = np.maximum(vfail, np.float32(v_floor))
        n = address.shape[0]
        kind = draw_kinds(rng, n, kinds)
        return cls(geometry, address, vfail, kind, float(v_floor),
                   name=name or f"{curve.name}-{geometry.rows}x{geometry.cols}-s{seed}",
                   curve=curve, attrs={"seed": int(seed)})

    def __post_init__(self):
        self.address = np.ascontiguousarray(self.address, dtype=np.uint64)
        self.vfail = np.ascontiguousarray(self.vfail, dtype=np.float32)
        self.kind = np.ascontiguousarray(self.kind, dtype=np.uint8)
        n = self.address.shape[0]
        if self.vfail.shape != (n,) or self.kind.shape != (n,):
            raise ValueError("address, vfail and kind must be 1-D arrays of equal length")

    # --- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.address.shape[0])

    def check_voltage(self, v: float) -> float:
        v = float(v)
        if not np.isfinite(v):
            raise VoltageError(f"voltage must be a finite number, got {v!r}")
        # Refused only if below v_floor also in float32, the precision faults are compared in
        # (so a stored float32 voltage such as float32(0.7) < 0.7 is still accepted).
        if v < self.v_floor - VOLTAGE_TOLERANCE and np.float32(v) < np.float32(self.v_floor):
            what = "lowest measured voltage" if self.source == "measured" else "v_floor"
            raise VoltageError(f"voltage {v:g} is below chip {self.name!r}'s {what} {self.v_floor:g}")
        return v

    def count(self, v: float) -> int:
        """Number of faulty bits at voltage v (length of the prefix with vfail >= v)."""
        v = self.check_voltage(v)
        ascending = self.vfail[::-1]
        return len(self) - int(np.searchsorted(ascending, np.float32(v), side="left"))

    def faults(self, v: float) -> Faults:
        n = self.count(v)
        return Faults(self.address[:n], self.kind[:n])

    def ber(self, v: float) -> float:
        """Empirical bit error rate at voltage v."""
        return self.count(v) / self.geometry.capacity_bits

    def byte_masks(self, v: float) -> ByteMasks:
        """Dense per-byte masks at voltage v, cached; built from the nearest cached higher voltage.

        Lowering the voltage only adds faults, so the masks at V' < V are the masks at V plus the
        faults with vfail in [V', V): a sweep pays each fault once.
        """
        n = self.count(v)
        with self._lock:
            return self._cached_masks(n)

    def _cached_masks(self, n: int) -> ByteMasks:
        """byte_masks for the first n faults; the caller holds self._lock."""
        cache = self._mask_cache
        if n in cache:
            cache.move_to_end(n)
            return cache[n]
        base = max((k for k in cache if k <= n), default=None)
        masks = cache[base].copy() if base is not None else self._empty_masks()
        new = slice(masks.count, n)
        kinds = self.kind[new]
        has_stuck = bool(np.any(kinds != FLIP))
        if has_stuck and masks.clear is None:
            masks.clear = np.zeros_like(masks.xor)
            masks.set = np.zeros_like(masks.xor)
        # Sorting the new faults by address turns the scatter into a stream through the masks.
        key = (self.address[new] << np.uint64(2)) | kinds.astype(np.uint64)
        key.sort()
        clear = masks.clear if masks.clear is not None else masks.xor[:0]
        set_ = masks.set if masks.set is not None else masks.xor[:0]
        kernels.build_byte_masks(key >> np.uint64(2), (key & np.uint64(3)).astype(np.uint8),
                                 masks.xor, clear, set_)
        masks.count = n
        cache[n] = masks
        while len(cache) > self.MASK_CACHE_SIZE:
            cache.popitem(last=False)
        return masks

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]                      # a lock cannot be pickled; each copy gets its own
        state["_mask_cache"] = OrderedDict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _empty_masks(self) -> ByteMasks:
        return ByteMasks(np.zeros(self.geometry.capacity_bytes, dtype=np.uint8))

    def same_faults(self, other: "Chip") -> bool:
        return (self.geometry == other.geometry and np.array_equal(self.address, other.address)
                and np.array_equal(self.vfail, other.vfail) and np.array_equal(self.kind, other.kind))

    # --- persistence (HDF5 profile, schema in profiles/README.md) --------------------------------
    def save(self, path) -> None:
        from sramsim.memory.profiles import save_chip
        save_chip(self, path)

    @classmethod
    def load(cls, path) -> "Chip":
        from sramsim.memory.profiles import load_chip
        return load_chip(path)

    def __repr__(self) -> str:
        g = self.geometry
        return (f"Chip({self.name!r}, {g.rows}x{g.cols}x{g.banks} bits, {len(self)} faults "
                f"down to V={self.v_floor:g})")
