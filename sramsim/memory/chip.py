"""A chip: a persistent per-bit failure map over voltage, stored sparse and nested by design."""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from sramsim.errors import InputError, InputTypeError, ProfileError, check_number
from sramsim.memory import kernels, profile_file
from sramsim.memory.curves import BerCurve
from sramsim.memory.geometry import FLIP, KIND_CODES, Geometry, Sizes, draw_kinds
from sramsim.memory.sampling import bernoulli_positions, check_seed, key_uniforms, shuffled_by_keys
from sramsim.memory.sizes import CHIP_BUILD_BYTES_PER_FAULT, expected_faults, require_memory

if TYPE_CHECKING:
    from sramsim.memory.dram import DramGeometry

VOLTAGE_TOLERANCE = 1e-9
# Failure voltages computed at once by Chip.random (elementwise: any chunking gives the same map).
VFAIL_CHUNK = 1 << 16
# byte_faults: sort keys (8, twice while merging), byte index (8) and three masks per fault
BYTE_FAULTS_BYTES_PER_FAULT = 35


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
        """Number of faults of each kind: {"flip": n, "stuck0": n, "stuck1": n}."""
        return {name: int(np.count_nonzero(self.kind == code)) for name, code in KIND_CODES.items()}


@dataclass
class ByteMasks:
    """Dense per-byte masks of a chip at one voltage (what the streaming kernels read)."""

    xor: np.ndarray
    clear: np.ndarray | None = None   # None when the chip has no stuck-at faults at this voltage
    set: np.ndarray | None = None
    count: int = 0                    # faults included (a prefix of the chip's fault list)

    def copy(self) -> ByteMasks:
        """An independent copy (the cache extends a copy, never the cached masks themselves)."""
        return ByteMasks(self.xor.copy(), None if self.clear is None else self.clear.copy(),
                         None if self.set is None else self.set.copy(), self.count)


@dataclass(frozen=True)
class ByteFaults:
    """The faulty bytes of a memory, ascending, with their masks: byte `byte[i]` reads back as
    `kernels.read_byte(stored, xor[i], clear[i], set[i])`. clear and set are None when no fault
    is stuck-at."""

    byte: np.ndarray                  # int64, strictly ascending
    xor: np.ndarray                   # uint8
    clear: np.ndarray | None = None
    set: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.byte.shape[0])

    @classmethod
    def from_sorted(cls, address: np.ndarray, kind: np.ndarray) -> ByteFaults:
        """Group bit faults with distinct ascending addresses by byte (one numba pass)."""
        byte, xor, clear, set_, stuck = kernels.group_by_byte(address, kind)
        return cls(byte, xor, clear, set_) if stuck else cls(byte, xor)


@dataclass
class Chip:
    """Per-bit failure map: each faulty cell fails at every voltage <= its `vfail`.

    Faults are sorted by `vfail` descending, so the faults at V are a prefix and nesting over
    voltage holds by construction. Voltages are compared in float32, the precision vfail is
    stored in: a cell is faulty at V when vfail >= float32(V). `v_floor` is the lowest voltage
    the map is valid for, `nominal_voltage` the highest: every vfail lies between them.

    The constructor checks these invariants in one O(n) pass and raises InputError naming the
    first fault that breaks one: vfail finite and sorted descending, v_floor <= vfail <= nominal,
    addresses below the capacity and distinct, kind codes 0 (flip), 1 (stuck0), 2 (stuck1).
    Two chips are == when geometry, faults, floor, curve and metadata are all equal.
    """

    geometry: Geometry | DramGeometry
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
    _sorted_cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    # byte_faults by the voltage asked for, for those in _sorted_cache: the voltage was checked
    # and counted when it was added (one dict lookup where a sweep asks again; see byte_faults)
    _sorted_at: dict = field(default_factory=dict, repr=False, compare=False)
    # Threads may share a chip: the lock guards the caches (byte_masks, byte_faults); not pickled.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)
    # The faults in address order: (addresses ascending, the index of each in the fault list,
    # uint32). Chip.random gets both free; other chips sort once when byte_faults needs them.
    _by_address: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False,
                                                              repr=False, compare=False)

    # Chip.random's addresses are distinct by construction (strictly increasing gaps, then a
    # permutation): it skips only the repeat check, the one pass that is a random scatter.
    distinct_by_construction: InitVar[bool] = False

    MASK_CACHE_SIZE = 3

    # --- construction -------------------------------------------------------------------------
    @staticmethod
    def check_random_fits(geometry: Geometry, curve: BerCurve, v_floor: float) -> float:
        """The BER at `v_floor` of a random chip `Chip.random` would draw, after refusing one
        whose faults cannot fit in this machine's memory (so a sweep refuses it before any work)."""
        if not isinstance(geometry, Sizes):
            raise InputTypeError(f"geometry must be a Geometry or DramGeometry, got "
                                 f"{type(geometry).__name__}")
        if not isinstance(curve, BerCurve):
            raise InputTypeError(f"curve must be a BerCurve (e.g. BerCurve.builtin('finfet14')), "
                                 f"got {type(curve).__name__}")
        v_floor = check_number(v_floor, "v_floor")
        if not 0.0 < v_floor <= 1.0:
            raise InputError(f"v_floor must be a positive finite voltage at most the nominal "
                             f"1.0, got {v_floor!r}")
        p_floor = float(curve.ber(v_floor))
        n_max = expected_faults(geometry.capacity_bits, p_floor)
        require_memory(n_max * CHIP_BUILD_BYTES_PER_FAULT,
                       f"a random chip of {geometry.capacity_bits} bits with BER {p_floor:g} at "
                       f"v_floor {v_floor:g} (~{geometry.capacity_bits * p_floor:.3g} faults)")
        return p_floor

    @classmethod
    def random(cls, geometry: Geometry, curve: BerCurve, v_floor: float, seed: int,
               kinds: dict[str, float] | None = None, name: str | None = None) -> Chip:
        """A synthetic chip whose cells fail independently with P(fail at V) = curve.ber(V).

        O(#faults at v_floor): fault positions from geometric gaps (sorted, distinct), failure
        voltages from sorted uniform order statistics, paired by a random permutation.
        Deterministic in `seed` (a non-negative integer) on any machine and thread count. A cell
        that fails even at the nominal voltage 1.0 (possible with the Gaussian model) gets
        vfail = 1.0: the map describes voltages from v_floor up to nominal. A chip whose faults
        cannot fit in this machine's memory is refused before anything is drawn.
        """
        seed = check_seed(seed)
        v_floor = float(v_floor)
        p_floor = cls.check_random_fits(geometry, curve, v_floor)
        rng = np.random.default_rng(seed)
        positions = bernoulli_positions(rng, geometry.capacity_bits, p_floor)
        # Given a cell fails at v_floor, P(vfail >= V) = ber(V) / ber(v_floor): vfail is the curve's
        # inverse at u * ber(v_floor), u ~ U(0, 1). Ascending u -> descending vfail, and a random
        # pairing of positions with u keeps addresses independent of failure voltages.
        address, order, key = shuffled_by_keys(rng, positions)
        n = address.shape[0]
        # the inverse a chunk at a time: float64 temporaries stay chunk-sized (bench_scale's peak)
        vfail = np.empty(n, dtype=np.float32)
        lo, hi = np.float32(v_floor), np.float32(1.0)
        for s in range(0, n, VFAIL_CHUNK):
            u = key_uniforms(key[s:s + VFAIL_CHUNK])
            v = np.asarray(curve.voltage(u * p_floor), dtype=np.float64).astype(np.float32)
            vfail[s:s + VFAIL_CHUNK] = np.clip(v, lo, hi)
        del key
        kind = draw_kinds(rng, n, kinds)
        chip = cls(geometry, address, vfail, kind, v_floor,
                   name=name or f"{curve.name}-{geometry.rows}x{geometry.cols}-s{seed}",
                   curve=curve, attrs={"seed": seed}, distinct_by_construction=True)
        chip._by_address = (positions, order)    # the address order comes free with the draw
        return chip

    def __post_init__(self, distinct_by_construction: bool = False) -> None:
        self.address = _as_array(self.address, np.uint64, "address", integer=True)
        self.vfail = _as_array(self.vfail, np.float32, "vfail", integer=False)
        self.kind = _as_array(self.kind, np.uint8, "kind", integer=True)
        n = self.address.shape[0]
        if self.vfail.shape != (n,) or self.kind.shape != (n,):
            raise InputError("address, vfail and kind must be 1-D arrays of equal length, got "
                             f"shapes {self.address.shape}, {self.vfail.shape}, {self.kind.shape}")
        self.v_floor = float(self.v_floor)
        self.nominal_voltage = float(self.nominal_voltage)
        if not (np.isfinite(self.nominal_voltage) and self.nominal_voltage > 0):
            raise InputError("chip nominal_voltage must be a positive number, got "
                             f"{self.nominal_voltage!r}")
        if not (np.isfinite(self.v_floor) and 0 < self.v_floor <= self.nominal_voltage):
            raise InputError(f"chip v_floor must be a positive voltage at most the nominal "
                             f"voltage {self.nominal_voltage:g}, got {self.v_floor!r}")
        _check_faults(self, check_repeats=not distinct_by_construction)

    # --- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.address.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chip):
            return NotImplemented
        measured = (self.measured_voltages is None and other.measured_voltages is None) or (
            self.measured_voltages is not None and other.measured_voltages is not None
            and np.array_equal(self.measured_voltages, other.measured_voltages))
        return (self.same_faults(other) and measured and self.v_floor == other.v_floor
                and (self.name, self.source, self.voltage_unit, self.nominal_voltage)
                == (other.name, other.source, other.voltage_unit, other.nominal_voltage)
                and self.curve == other.curve and self.attrs == other.attrs)

    # mutable: not a dict key (a class that defines __eq__ and no __hash__ gets __hash__ = None)

    def check_voltage(self, v: float) -> float:
        """`v` as a float if this chip's map covers it, else VoltageError (NaN, below the floor /
        lowest measured voltage, or above the nominal voltage: never extrapolated)."""
        v = float(v)
        if not math.isfinite(v):
            raise VoltageError(f"voltage must be a finite number, got {v!r}")
        # Refused only if below v_floor also in float32, the precision faults are compared in
        # (so a stored float32 voltage such as float32(0.7) < 0.7 is still accepted).
        if v < self.v_floor - VOLTAGE_TOLERANCE and np.float32(v) < np.float32(self.v_floor):
            what = "lowest measured voltage" if self.source == "measured" else "v_floor"
            raise VoltageError(f"voltage {v:g} is below chip {self.name!r}'s "
                               f"{what} {self.v_floor:g}")
        if v > self.nominal_voltage + VOLTAGE_TOLERANCE and \
                np.float32(v) > np.float32(self.nominal_voltage):
            raise VoltageError(f"voltage {v:g} is above chip {self.name!r}'s nominal voltage "
                               f"{self.nominal_voltage:g} (nothing is known above it)")
        return v

    def count(self, v: float) -> int:
        """Number of faulty bits at voltage v (length of the prefix with vfail >= v)."""
        v = self.check_voltage(v)
        ascending = self.vfail[::-1]
        return len(self) - int(np.searchsorted(ascending, np.float32(v), side="left"))

    def faults(self, v: float) -> Faults:
        """The faulty bits at voltage v: the prefix of the fault list with vfail >= float32(v)."""
        n = self.count(v)
        return Faults(self.address[:n], self.kind[:n])

    def ber(self, v: float) -> float:
        """Empirical bit error rate at voltage v."""
        return self.count(v) / self.geometry.capacity_bits

    def byte_masks(self, v: float) -> ByteMasks:
        """Dense per-byte masks at voltage v, cached; built from the nearest cached higher voltage.

        Lowering the voltage only adds faults, so the masks at V' < V are the masks at V plus the
        faults with vfail in [V', V): a sweep pays each fault once. Masks that cannot fit in this
        machine's memory (a 10^12-bit chip) are refused before allocating, with the size named.
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
        new = slice(cache[base].count if base is not None else 0, n)
        kinds = self.kind[new]
        has_stuck = bool(np.any(kinds != FLIP))
        stuck = has_stuck or (base is not None and cache[base].clear is not None)
        require_memory(self.geometry.capacity_bytes * (3 if stuck else 1),
                       f"building the byte masks of chip {self.name!r} "
                       f"({self.geometry.capacity_bits} bits)")
        masks = cache[base].copy() if base is not None else self._empty_masks()
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

    def byte_faults(self, v: float) -> ByteFaults:
        """The faulty bytes at voltage v in ascending order with their masks (cached per voltage).

        What the in-place path walks through: sorted, a fault map is a stream through memory.
        With the chip's address order (`_by_address`: free from Chip.random, else one sort, made
        when a voltage needs at least a quarter of the faults) one streaming pass picks the
        faults present at v in address order: O(#faults) with no sort per voltage. Otherwise (a
        few faults of a large profile) the prefix is sorted, from the nearest cached higher
        voltage: its sorted faults and the newly added ones are merged, so a sweep that lowers
        the voltage sorts each fault once. Never O(capacity). A voltage asked for before is
        looked up first (with caches cold, counting the faults costs as much as ~8,000 faulty
        bytes written in place, per fault map).
        """
        try:
            found = self._sorted_at.get(v)
        except TypeError:                       # unhashable: count() says what is wrong with it
            found = None
        if found is not None:
            return found
        n = self.count(v)
        with self._lock:
            cache = self._sorted_cache
            if n in cache:
                cache.move_to_end(n)
            else:
                require_memory(n * BYTE_FAULTS_BYTES_PER_FAULT,
                               f"sorting the {n} faults of chip {self.name!r} by address")
                if self._by_address is not None or 4 * n >= len(self):
                    cache[n] = (None, self._byte_faults_in_order(n))
                else:
                    cache[n] = self._byte_faults_sorted(n)
                while len(cache) > self.MASK_CACHE_SIZE:
                    cache.popitem(last=False)
                    self._sorted_at.clear()     # holds no faults the cache let go
            if len(self._sorted_at) >= 4 * self.MASK_CACHE_SIZE:
                self._sorted_at.clear()
            self._sorted_at[float(v)] = cache[n][1]
            return cache[n][1]

    def _byte_faults_in_order(self, n: int) -> ByteFaults:
        """byte_faults of the first n faults, picked in address order; caller holds the lock."""
        if self._by_address is None:
            order = np.argsort(self.address, kind="stable")
            self._by_address = (self.address[order],
                                order.astype(np.uint32) if len(self) < 2 ** 32 else order)
        byte, xor, clear, set_, stuck = kernels.group_in_order(*self._by_address, self.kind, n)
        return ByteFaults(byte, xor, clear, set_) if stuck else ByteFaults(byte, xor)

    def _byte_faults_sorted(self, n: int) -> tuple[np.ndarray, ByteFaults]:
        """(sort keys, byte_faults) of the first n faults by sorting them; caller holds the lock."""
        cache = self._sorted_cache
        base = max((k for k, (key, _) in cache.items() if k <= n and key is not None),
                   default=None)
        start = base if base is not None else 0
        # address and kind in one key, so one sort orders both
        key = (self.address[start:n] << np.uint64(2)) | self.kind[start:n].astype(np.uint64)
        key.sort()
        if base is not None and start < n:
            key = np.concatenate((cache[base][0], key))
            key.sort(kind="stable")
        elif base is not None:
            key = cache[base][0]
        return key, ByteFaults.from_sorted(key >> np.uint64(2),
                                           (key & np.uint64(3)).astype(np.uint8))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]                      # a lock cannot be pickled; each copy gets its own
        state["_mask_cache"] = OrderedDict()
        state["_sorted_cache"] = OrderedDict()
        state["_sorted_at"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_sorted_at", {})
        self._lock = threading.Lock()

    def _empty_masks(self) -> ByteMasks:
        return ByteMasks(np.zeros(self.geometry.capacity_bytes, dtype=np.uint8))

    def same_faults(self, other: Chip) -> bool:
        """Same geometry and fault list (addresses, failure voltages, kinds), bit for bit."""
        return (self.geometry == other.geometry and np.array_equal(self.address, other.address)
                and np.array_equal(self.vfail, other.vfail) and np.array_equal(self.kind,
                                                                               other.kind))

    # --- persistence (HDF5 profile, schema in sramsim/data/profiles/README.md) ----------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this chip as an HDF5 profile (checked before it appears under `path`)."""
        profile_file.write(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Chip:
        """Read and check an HDF5 profile; any problem is a ProfileError naming the file."""
        fields = profile_file.load(path)
        try:
            return cls(**fields)
        except InputError as exc:     # an invariant the reader has no problem line for
            raise ProfileError(f"{path}: {exc}") from None

    def __repr__(self) -> str:
        g = self.geometry
        return (f"Chip({self.name!r}, {g.rows}x{g.cols}x{g.banks} bits, {len(self)} faults "
                f"down to V={self.v_floor:g})")


def _as_array(values: ArrayLike, dtype: type[np.generic], what: str,
              integer: bool) -> np.ndarray:
    """A chip field as a contiguous array of `dtype`; values the cast would change are refused
    (a float address, a negative kind), never wrapped or truncated."""
    a = np.asarray(values)
    if a.size == 0:
        return np.ascontiguousarray(a, dtype=dtype)
    if integer and a.dtype.kind not in "iu":
        raise InputError(f"chip {what} must be integers, got dtype {a.dtype}")
    if not integer and a.dtype.kind not in "iuf":
        raise InputError(f"chip {what} must be numbers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.min() < 0:
        raise InputError(f"chip {what} must be non-negative, got {a.min()} at index "
                         f"{int(np.argmin(a))}")
    return np.ascontiguousarray(a, dtype=dtype)


_INVARIANTS = {
    kernels.BAD_VFAIL_NOT_FINITE: "vfail must be finite",
    kernels.BAD_VFAIL_RISES: "vfail must be sorted descending",
    kernels.BAD_ADDRESS_RANGE: "addresses must be below the capacity",
    kernels.BAD_ADDRESS_REPEATS: "addresses must be distinct",
    kernels.BAD_KIND: "kind codes must be 0 (flip), 1 (stuck0) or 2 (stuck1)",
}


def _check_faults(chip: Chip, check_repeats: bool = True) -> None:
    """The fault list's invariants in one O(n) pass (numba); InputError naming the first bad
    index."""
    n = len(chip)
    if n == 0:
        return
    cap = chip.geometry.capacity_bits
    slots = 1 << max(1, (2 * n - 1).bit_length())      # power of two >= 2n
    if not check_repeats:
        bitset, table = np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint64)
    elif (cap + 7) // 8 <= 8 * slots:                     # bitset no bigger than the hash table
        bitset, table = np.zeros((cap + 7) // 8, dtype=np.uint8), np.empty(0, dtype=np.uint64)
    else:
        bitset, table = np.empty(0, dtype=np.uint8), np.full(slots, kernels.EMPTY_SLOT)
    code, i = kernels.first_bad_fault(chip.address, chip.vfail, chip.kind, np.uint64(cap),
                                      bitset, table)
    if code:
        a, v, k = int(chip.address[i]), float(chip.vfail[i]), int(chip.kind[i])
        detail = {kernels.BAD_VFAIL_NOT_FINITE: f"vfail[{i}] = {v!r}",
                  kernels.BAD_VFAIL_RISES: f"vfail[{i}] = {v:g} > vfail[{i - 1}] = "
                                           f"{float(chip.vfail[i - 1]) if i else 0:g}",
                  kernels.BAD_ADDRESS_RANGE: f"address[{i}] = {a} >= capacity {cap}",
                  kernels.BAD_ADDRESS_REPEATS: f"address[{i}] = {a} appeared earlier",
                  kernels.BAD_KIND: f"kind[{i}] = {k}"}[code]
        raise InputError(f"chip {chip.name!r}: {_INVARIANTS[code]}; first bad fault: {detail}")
    top, low = chip.vfail[0], chip.vfail[-1]
    if top > np.float32(chip.nominal_voltage):
        raise InputError(f"chip {chip.name!r}: vfail must not exceed the nominal voltage "
                         f"{chip.nominal_voltage:g}; first bad fault: vfail[0] = {float(top):g}")
    if low < np.float32(chip.v_floor):
        j = int(np.searchsorted(-chip.vfail, -np.float32(chip.v_floor), side="right"))
        raise InputError(f"chip {chip.name!r}: vfail must not lie below v_floor {chip.v_floor:g}; "
                         f"first bad fault: vfail[{j}] = {float(chip.vfail[j]):g}")
