"""DRAM mappings: where a model's memory image sits in a DRAM part (a mapping policy), and what
follows from it: the faults its bytes read back and the row-buffer access trace of one inference.
(`sramsim.inject.layout.MemoryLayout(mapping=...)` selects a policy for every read path.)

Unit of placement: one burst (device_width x burst_length bits, `unit_bytes`). Image unit k
(image bytes [k * unit_bytes, (k + 1) * unit_bytes)) sits in chip burst slot `chip_unit[k]`, i.e.
chip bytes [chip_unit[k] * unit_bytes, ...); byte j of a unit is byte j of its slot and bit i of a
byte is chip bit address byte * 8 + i (the rule `sramsim.inject.mapping` uses for SRAM, so "naive"
from start 0 reads the same faults as `apply_faults(..., offset=0)`). With bpr = columns //
burst_length bursts per row, slot s is in flat bank s // (rows * bpr), row (s // bpr) % rows,
burst column s % bpr (`sramsim.memory.dram.DramGeometry`'s bit address layout).

Policies (`POLICIES`), each an order over the chip's slots; the image fills it from `start`:
  naive        consecutive slots: bank 0 row 0 burst by burst, then row 1, ...; then bank 1.
  drmap        DRMap (Putra et al., DAC 2020): fill a row buffer, then the same row in the next
               bank (bank-level parallelism), then the next subarray (row + subarray_rows,
               subarray-level parallelism), then the next row inside the subarrays.
  error-aware  EDEN (Koppula et al., MICRO 2019): partitions (banks or subarrays) sorted by their
               BER at the operating voltage (equal BERs in drmap order: `partition_order`),
               layers sorted by their tolerable BER; the most sensitive layer takes the most
               reliable partitions, each partition filled in drmap order. A layer no remaining
               partition meets goes to the most reliable remaining ones and the DramMapping's
               `warnings` say so. (A burst shared by two layers follows the
               more sensitive one.)

The same `chip_unit` gives the faults (`apply_placed`) and the access trace (`access_counts`):
one code path decides both.
"""
from __future__ import annotations

import functools
import numbers
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from sramsim.errors import InputError, InputTypeError, check_ber
from sramsim.inject.mapping import apply_bit_faults
from sramsim.memory.chip import Chip, Faults
from sramsim.memory.dram import DramGeometry
from sramsim.memory.sizes import require_memory

if TYPE_CHECKING:
    from sramsim.inject.layout import ImageModel

POLICIES = ("naive", "drmap", "error-aware")
PARTITIONS = ("bank", "subarray")
ACCESS_KINDS = ("hit", "miss", "conflict")


@dataclass(frozen=True, eq=False)
class DramMapping:
    """A memory image of `n_bytes` laid into a DRAM part: image burst k sits in chip burst
    `chip_unit[k]` (distinct slots, read-only array; checked on construction)."""

    geometry: DramGeometry
    policy: str
    n_bytes: int
    unit_bytes: int
    chip_unit: np.ndarray                      # int64 [n_units], distinct chip burst slots
    start: int = 0
    partition: str | None = None               # error-aware: "bank" or "subarray"
    layer_partitions: tuple = ()               # error-aware: partitions each layer occupies
    warnings: tuple = field(default_factory=tuple)

    @property
    def n_units(self) -> int:
        """Bursts the image occupies (the last one may be partly used)."""
        return int(self.chip_unit.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DramMapping):
            return NotImplemented
        return ((self.geometry, self.policy, self.n_bytes, self.unit_bytes, self.start,
                 self.partition, self.layer_partitions, self.warnings)
                == (other.geometry, other.policy, other.n_bytes, other.unit_bytes, other.start,
                    other.partition, other.layer_partitions, other.warnings)
                and np.array_equal(self.chip_unit, other.chip_unit))

    # __eq__ without __hash__: unhashable (Python sets __hash__ = None)

    def __post_init__(self) -> None:
        g = self.geometry
        if not isinstance(g, DramGeometry):
            raise InputError(f"geometry must be a DramGeometry, got {type(g).__name__}")
        if self.unit_bytes * 8 != g.burst_bits:
            raise InputError(f"unit_bytes must be one burst ({g.burst_bits // 8} bytes), "
                             f"got {self.unit_bytes}")
        units = np.array(self.chip_unit, dtype=np.int64, copy=True).reshape(-1)
        if units.shape[0] != -(-self.n_bytes // self.unit_bytes):
            raise InputError(f"chip_unit has {units.shape[0]} bursts; an image of {self.n_bytes} "
                             f"bytes needs {-(-self.n_bytes // self.unit_bytes)}")
        total = g.capacity_bytes // self.unit_bytes
        if units.size and (units.min() < 0 or units.max() >= total):
            raise InputError(f"chip_unit must lie in [0, {total}) (the part's bursts)")
        ordered = np.sort(units)
        if np.any(ordered[1:] == ordered[:-1]):
            raise InputError("chip_unit lists a chip burst twice (two image bursts in one place)")
        units.setflags(write=False)
        object.__setattr__(self, "chip_unit", units)

    def locations(self) -> dict[str, np.ndarray]:
        """Per image burst: flat bank, row in the bank, subarray in the bank, burst column."""
        g = self.geometry
        bpr = bursts_per_row(g)
        s = self.chip_unit
        row = (s // bpr) % g.rows
        return {"bank": s // (g.rows * bpr), "row": row, "subarray": row // g.subarray_rows,
                "column": s % bpr}

    @cached_property
    def runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first image burst, first chip slot, length) of each run of consecutive slots."""
        s = self.chip_unit
        if s.shape[0] == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        breaks = np.flatnonzero(np.diff(s) != 1) + 1
        first = np.concatenate(([0], breaks)).astype(np.int64)
        length = np.diff(np.concatenate((first, [s.shape[0]]))).astype(np.int64)
        return first, s[first], length

    def summary(self) -> dict:
        """JSON-ready description (policy, sizes, banks/rows touched, warnings)."""
        loc = self.locations()
        rows = np.unique(loc["bank"] * self.geometry.rows + loc["row"]).shape[0]
        return {"policy": self.policy, "n_bytes": self.n_bytes, "unit_bytes": self.unit_bytes,
                "bursts": self.n_units, "start": self.start, "partition": self.partition,
                "banks_used": int(np.unique(loc["bank"]).shape[0]), "rows_used": int(rows),
                "layer_partitions": [list(p) for p in self.layer_partitions],
                "warnings": list(self.warnings)}


def bursts_per_row(geometry: DramGeometry) -> int:
    """Bursts in one row buffer (columns // burst_length); the geometry must divide evenly."""
    if geometry.columns % geometry.burst_length:
        raise InputError(f"DRAM geometry: columns ({geometry.columns}) must be a multiple of "
                         f"burst_length ({geometry.burst_length}) to place bursts in rows")
    return geometry.columns // geometry.burst_length


def _whole(value: object, what: str, minimum: int = 0) -> int:
    """`value` as an int >= minimum (bools, floats and strings refused), else InputError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --- policies: position in the policy's order -> chip burst slot --------------------------------
def _naive_slots(g: DramGeometry, p: np.ndarray) -> np.ndarray:
    """Naive order: slot = position (rows of bank 0, then bank 1, ...)."""
    return p


def _drmap_slots(g: DramGeometry, p: np.ndarray) -> np.ndarray:
    """DRMap order over the whole part: burst column, then bank, then subarray, then row."""
    bpr, nb, nsub = bursts_per_row(g), g.total_banks, g.subarrays_per_bank
    col, q = p % bpr, p // bpr
    bank, q = q % nb, q // nb
    sub, r = q % nsub, q // nsub
    row = sub * g.subarray_rows + r
    return (bank * g.rows + row) * bpr + col


def _partition_slots(g: DramGeometry, by: str, part: np.ndarray, local: np.ndarray) -> np.ndarray:
    """DRMap order inside partition `part` (a bank: column, subarray, row; a subarray: column,
    row): local position -> chip burst slot."""
    bpr, nsub = bursts_per_row(g), g.subarrays_per_bank
    col, q = local % bpr, local // bpr
    if by == "bank":
        bank, sub, r = part, q % nsub, q // nsub
    else:
        bank, sub, r = part // nsub, part % nsub, q
    row = sub * g.subarray_rows + r
    return (bank * g.rows + row) * bpr + col


def partition_units(geometry: DramGeometry, by: str) -> int:
    """Chip bursts in one partition ("bank" or "subarray")."""
    rows = geometry.rows if by == "bank" else geometry.subarray_rows
    return rows * bursts_per_row(geometry)


def place(n_bytes: int, geometry: DramGeometry, policy: str = "naive", *,
          layer_bytes: Sequence[int] | None = None, partition_ber: ArrayLike | None = None,
          layer_tolerance: Sequence[float] | None = None, partition: str = "subarray",
          start: int = 0) -> DramMapping:
    """Lay an image of `n_bytes` into `geometry` by `policy` (see the module docstring).

    start: bursts of the policy's order left empty before the image (naive and drmap; a second
    placement for averaging). error-aware needs `partition_ber` (one BER per partition of
    `partition`, e.g. `partition_bers(chip, V, partition)`), `layer_bytes` (bytes of each layer
    in image order, summing to n_bytes) and `layer_tolerance` (tolerable BER per layer, in (0, 1]).
    An image larger than the part is an InputError naming both sizes.
    """
    if not isinstance(geometry, DramGeometry):
        raise InputError(f"geometry must be a DramGeometry, got {type(geometry).__name__}")
    if policy not in POLICIES:
        raise InputError(f"unknown mapping policy {policy!r}; choose one of {', '.join(POLICIES)}")
    n_bytes = _whole(n_bytes, "image size n_bytes", 1)
    start = _whole(start, "start (bursts)", 0)
    unit_bytes = geometry.burst_bits // 8
    if geometry.burst_bits % 8:
        raise InputError(f"DRAM burst of {geometry.burst_bits} bits is not a whole number of bytes")
    n_units = -(-n_bytes // unit_bytes)
    total_units = geometry.capacity_bytes // unit_bytes
    bursts_per_row(geometry)
    if n_units + start > total_units:
        at = f" from burst {start}" if start else ""
        raise InputError(f"model image of {n_bytes} bytes{at} does not fit the DRAM of "
                         f"{geometry.capacity_bytes} bytes")
    layers = None if layer_bytes is None else _check_layer_bytes(layer_bytes, n_bytes)
    if policy != "error-aware":
        if partition_ber is not None or layer_tolerance is not None:
            raise InputError(f"partition_ber and layer_tolerance apply to the error-aware policy, "
                             f"not {policy!r}")
        require_memory(n_units * 24, f"placing {n_units} bursts")
        p = np.arange(start, start + n_units, dtype=np.int64)
        slots = (_naive_slots if policy == "naive" else _drmap_slots)(geometry, p)
        return DramMapping(geometry, policy, n_bytes, unit_bytes, slots, start=start)
    if start:
        raise InputError("start applies to the naive and drmap policies; error-aware places by "
                         "partition BER (start must be 0)")
    if partition not in PARTITIONS:
        raise InputError(f"partition must be one of {', '.join(PARTITIONS)}, got {partition!r}")
    if layers is None or layer_tolerance is None or partition_ber is None:
        raise InputError("the error-aware policy needs layer_bytes, layer_tolerance and "
                         "partition_ber")
    tol = _check_tolerances(layer_tolerance, len(layers))
    pber = _check_partition_ber(partition_ber, geometry.n_partitions(partition), partition)
    return _error_aware(geometry, n_bytes, unit_bytes, n_units, layers, tol, pber, partition)


@functools.lru_cache(maxsize=16)
def cached_mapping(n_bytes: int, geometry: DramGeometry, policy: str,
                   start: int = 0) -> DramMapping:
    """`place(n_bytes, geometry, policy, start=start)` for naive / drmap, made once per process
    (a DramMapping is immutable; every fault map of a study reads through the same one)."""
    return place(n_bytes, geometry, policy, start=start)


def _check_layer_bytes(layer_bytes: Iterable[object], n_bytes: int) -> list[int]:
    """Layer sizes as ints >= 0 summing to n_bytes, else InputError."""
    try:
        values = list(layer_bytes)
    except TypeError:
        raise InputError(f"layer_bytes must be a list of byte counts, "
                         f"got {layer_bytes!r}") from None
    if not values:
        raise InputError("layer_bytes is empty")
    sizes = [_whole(v, f"layer_bytes[{i}]", 0) for i, v in enumerate(values)]
    if sum(sizes) != n_bytes:
        raise InputError(f"layer_bytes sum to {sum(sizes)} bytes, not the image's {n_bytes}")
    return sizes


def _check_tolerances(layer_tolerance: Iterable[object], n_layers: int) -> np.ndarray:
    """Tolerable BER per layer, each in (0, 1], one per layer, else InputError."""
    try:
        values = list(layer_tolerance)
    except TypeError:
        raise InputError(f"layer_tolerance must be a list of BERs, "
                         f"got {layer_tolerance!r}") from None
    if len(values) != n_layers:
        raise InputError(f"layer_tolerance has {len(values)} values for {n_layers} layers")
    out = np.empty(n_layers, dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = check_ber(v, f"layer_tolerance[{i}]")
        except InputError:
            out[i] = 0.0
        if out[i] <= 0.0:
            raise InputError(f"layer_tolerance[{i}] must lie in (0, 1], got {v!r}")
    return out


def _check_partition_ber(partition_ber: ArrayLike, n_parts: int, by: str) -> np.ndarray:
    """One BER in [0, 1] per partition, else InputError."""
    values = np.asarray(partition_ber, dtype=object).reshape(-1)
    if values.shape[0] != n_parts:
        raise InputError(f"partition_ber has {values.shape[0]} values; the part has {n_parts} "
                         f"{by} partitions")
    return np.array([check_ber(v, f"partition_ber[{i}]") for i, v in enumerate(values)],
                    dtype=np.float64)


def _error_aware(g: DramGeometry, n_bytes: int, unit_bytes: int, n_units: int, layers: list,
                 tol: np.ndarray, pber: np.ndarray, by: str) -> DramMapping:
    """EDEN's placement: bursts sorted by their layer's tolerance fill partitions sorted by BER."""
    # Each burst follows the most sensitive layer among those it holds bytes of.
    unit_layer = np.full(n_units, -1, dtype=np.int64)
    unit_tol = np.full(n_units, np.inf)
    begin = 0
    for i, size in enumerate(layers):
        if size:
            a, b = begin // unit_bytes, (begin + size - 1) // unit_bytes + 1
            better = tol[i] < unit_tol[a:b]
            unit_tol[a:b][better] = tol[i]
            unit_layer[a:b][better] = i
        begin += size
    order = np.argsort(unit_tol, kind="stable")          # most sensitive first, image order within
    parts_by_ber = partition_order(g, pber, by)          # most reliable first
    per_part = partition_units(g, by)
    pos = np.arange(n_units, dtype=np.int64)
    rank = pos // per_part
    chip_unit = np.empty(n_units, dtype=np.int64)
    chip_unit[order] = _partition_slots(g, by, parts_by_ber[rank], pos % per_part)
    used, warnings = [], []
    layer_of_pos = unit_layer[order]
    for i in range(len(layers)):
        ranks = np.unique(rank[layer_of_pos == i])
        parts = tuple(int(p) for p in parts_by_ber[ranks])
        used.append(parts)
        if parts and pber[parts_by_ber[ranks[-1]]] > tol[i]:
            worst = float(pber[parts_by_ber[ranks[-1]]])
            warnings.append(f"layer {i} (tolerable BER {tol[i]:g}): not enough {by} partitions "
                            f"meet it; placed in the most reliable remaining ones, BER up to "
                            f"{worst:g}")
    return DramMapping(g, "error-aware", n_bytes, unit_bytes, chip_unit, partition=by,
                     layer_partitions=tuple(used), warnings=tuple(warnings))


def partition_order(geometry: DramGeometry, partition_ber: ArrayLike,
                    by: str = "subarray") -> np.ndarray:
    """Partitions from the most reliable to the least: by BER, partitions of equal BER in DRMap
    order (subarray s of every bank before subarray s + 1 of any: bank-level parallelism first),
    so equally reliable partitions cost what drmap costs. Banks: by BER, then bank index."""
    pber = np.asarray(partition_ber, dtype=np.float64)
    index = np.arange(pber.shape[0], dtype=np.int64)
    if by == "subarray":
        nsub = geometry.subarrays_per_bank
        index = (index % nsub) * geometry.total_banks + index // nsub
    return np.lexsort((index, pber))


def expected_partition_bers(geometry: DramGeometry, ber: float, seed: int = 0,
                            model: int | str = 0, by: str = "subarray",
                            **params: Any) -> np.ndarray:
    """Expected BER of each partition ("bank" or "subarray") of the chip `dram_chip(geometry,
    curve, v, seed, model, **params)` at a voltage v where curve.ber(v) = `ber`: what
    `partition_bers(chip, v, by)` converges to as the partitions grow, without drawing a cell.

    A cell of line multiplier f is faulty with probability min(1, ber * f) (`dram_errors`), so a
    partition's expectation is the mean of that over its cells; the multipliers are the chip's
    own (`line_factors`, the same seed stream). O(lines): partitions (model 0), bitlines of the
    part (model 1: 8.4 M on the 4 Gb part, 2-3.5 s on a loaded 2-core machine), wordlines
    (model 2), one (model 3).
    Where the model gives partitions the same expectation (model 3; model 0's subarrays of one
    bank with its default bank partition), they tie and `partition_order` takes them in drmap
    order."""
    from sramsim.memory.dram_errors import line_factors, resolve_params
    if not isinstance(geometry, DramGeometry):
        raise InputError(f"geometry must be a DramGeometry, got {type(geometry).__name__}")
    if by not in PARTITIONS:
        raise InputError(f"partition must be one of {', '.join(PARTITIONS)}, got {by!r}")
    ber = check_ber(ber, "BER")
    model, full = resolve_params(geometry, model, params)
    n_parts = geometry.n_partitions(by)
    if model == 3:
        return np.full(n_parts, min(1.0, ber))
    own = full.get("partition", "bank")         # model 2's lines are wordlines (global rows)
    n_lines = {0: geometry.n_partitions(own), 1: geometry.n_partitions(own) * geometry.cols,
               2: geometry.total_banks * geometry.rows}[model]
    require_memory(n_lines * 40, f"the {n_lines} line multipliers of DRAM error model {model}")
    p = np.minimum(1.0, ber * line_factors(geometry, seed, model, **params))
    if model == 0:
        return _regroup(geometry, p, own, by)
    # equal-size lines of a few distinct multipliers: count each value per partition, so equal
    # counts give bit-equal BERs whatever the order of the lines (a sum would round differently)
    values, which = np.unique(p, return_inverse=True)
    if model == 1:
        owner, line_parts = np.arange(n_lines, dtype=np.int64) // geometry.cols, own
    else:
        owner, line_parts = np.arange(n_lines, dtype=np.int64) // geometry.subarray_rows, "subarray"
    n_owner = geometry.n_partitions(line_parts)
    counts = np.bincount(owner * values.size + which.ravel(), minlength=n_owner * values.size)
    per = counts.reshape(n_owner, values.size) @ values / (n_lines // n_owner)
    return _regroup(geometry, per, line_parts, by)


def _regroup(geometry: DramGeometry, values: np.ndarray, have: str, want: str) -> np.ndarray:
    """Per-partition means of equal-size partitions `have` as partitions `want`."""
    if have == want:
        return np.asarray(values, dtype=np.float64)
    nsub = geometry.subarrays_per_bank
    if want == "subarray":                       # a bank's value for each of its subarrays
        return np.repeat(values, nsub)
    return values.reshape(geometry.total_banks, nsub) @ np.full(nsub, 1.0 / nsub)


def partition_bers(chip: Chip, voltage: float, by: str = "subarray") -> np.ndarray:
    """Empirical BER of each partition ("bank" or "subarray") of a DRAM chip at `voltage`:
    faults in the partition / its bits. O(faults at V) + O(partitions)."""
    g = _dram_geometry(chip)
    if by not in PARTITIONS:
        raise InputError(f"partition must be one of {', '.join(PARTITIONS)}, got {by!r}")
    faults = chip.faults(voltage)
    n_parts = g.n_partitions(by)
    index = g.partition_index(faults.address, by).astype(np.int64)
    counts = np.bincount(index, minlength=n_parts)
    return counts / float(g.capacity_bits // n_parts)


def image_layer_bytes(qm: ImageModel) -> list[int]:
    """Bytes of each quantized tensor of a QuantizedModel in image order (the `layer_bytes` of
    error-aware placement); a byte shared by two tensors (m < 8 bits) counts to the earlier one,
    the image's padding to the last."""
    ends = [-(-((s.start + s.count) * qm.bits) // 8) for s in qm.segments]
    ends[-1] = qm.image.size
    return [e - b for b, e in zip([0] + ends[:-1], ends, strict=True)]


# --- faults through a placement ----------------------------------------------------------------
class _FaultIndex:
    """A chip's faults sorted by address, with each fault's index in the chip's vfail order (the
    faults at V are those with index < chip.count(V)): built once per chip, any voltage."""

    def __init__(self, chip: Chip):
        n = len(chip)
        require_memory(n * 32, f"sorting the {n} faults of chip {chip.name!r} by address")
        rank_bits = max(1, (n - 1).bit_length())
        address_bits = max(1, (chip.geometry.capacity_bits - 1).bit_length())
        if address_bits + rank_bits <= 64:
            # Sorting packed (address, rank) keys is ~10x faster than an argsort (measured:
            # 5.8 M faults, 0.5 s vs 6.4 s on this loaded machine); addresses are distinct.
            key = (chip.address << np.uint64(rank_bits)) | np.arange(n, dtype=np.uint64)
            key.sort()
            self.rank = (key & np.uint64((1 << rank_bits) - 1)).astype(np.int64)
            key >>= np.uint64(rank_bits)
            self.address = key
        else:
            self.rank = np.argsort(chip.address, kind="stable")
            self.address = chip.address[self.rank]
        self.kind = chip.kind[self.rank]
        self._chip = weakref.ref(chip)
        self._arrays = (weakref.ref(chip.address), weakref.ref(chip.kind))

    def serves(self, chip: Chip) -> bool:
        """True while this index was built from `chip` as it is now (same fault arrays)."""
        return (self._chip() is chip and self._arrays[0]() is chip.address
                and self._arrays[1]() is chip.kind)


class _IndexCache:
    """The few most recently used `_FaultIndex`es, keyed by id(chip) (checked by weak reference,
    so a new chip at a recycled id is never served an old index). Thread-safe."""

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, chip: Chip) -> _FaultIndex:
        """The index of `chip`, built on first use."""
        key = id(chip)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.serves(chip):
                self._entries.move_to_end(key)
                return entry
        entry = _FaultIndex(chip)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry


# The one cache of address-sorted fault indexes (per process; a chip's index serves every voltage).
FAULT_INDEX = _IndexCache()


def placed_faults(chip: Chip, voltage: float, placement: DramMapping) -> Faults:
    """The chip's faults at `voltage` that fall on the image's bytes, as image bit addresses
    (ascending, distinct): O(placement runs * log faults + faults in the placed bursts)."""
    g = _dram_geometry(chip)
    if g != placement.geometry:
        raise InputError(f"chip {chip.name!r} has geometry {g}, the placement was made for "
                         f"{placement.geometry}")
    n = chip.count(voltage)
    empty = Faults(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint8))
    if n == 0:
        return empty
    index = FAULT_INDEX.get(chip)
    first, slot, length = placement.runs
    bpu = np.int64(placement.unit_bytes * 8)
    lo = np.searchsorted(index.address, (slot * bpu).astype(np.uint64), side="left")
    hi = np.searchsorted(index.address, ((slot + length) * bpu).astype(np.uint64), side="left")
    counts = (hi - lo).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return empty
    before = np.cumsum(counts) - counts
    sel = np.repeat(lo.astype(np.int64) - before, counts) + np.arange(total, dtype=np.int64)
    bit = index.address[sel].astype(np.int64) + np.repeat((first - slot) * bpu, counts)
    keep = (index.rank[sel] < n) & (bit < placement.n_bytes * 8)
    return Faults(bit[keep].astype(np.uint64), index.kind[sel][keep])


def check_placed(chip: Chip, voltage: float, placement: DramMapping, n_bytes: int) -> None:
    """The arguments of reading an image of `n_bytes` through `chip` at `voltage` laid out by
    `placement`, checked (TypeError / InputError / ValueError naming the problem)."""
    if not isinstance(placement, DramMapping):
        raise InputTypeError(f"placement must be a DramMapping, got {type(placement).__name__}")
    if n_bytes != placement.n_bytes:
        raise InputError(f"image of {n_bytes} bytes, the placement was made for "
                         f"{placement.n_bytes} bytes")
    if not isinstance(chip, Chip):
        raise InputTypeError(f"a placement places a Chip's faults, got {type(chip).__name__}")
    if voltage is None:
        raise InputError("a Chip needs a voltage")


def apply_placed(image: np.ndarray, chip: Chip, voltage: float, placement: DramMapping,
                 out: np.ndarray | None = None) -> np.ndarray:
    """`image` as read back from `chip` at `voltage` when laid out by `placement` (into `out` when
    given); the clean image is never modified. No dense mask of the part is built."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 1):
        raise InputTypeError("image must be a 1-D uint8 numpy array")
    check_placed(chip, voltage, placement, image.shape[0])
    if out is None:
        out = np.empty_like(image)
    elif not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
        raise InputError("out must be a uint8 array shaped like the image")
    return apply_bit_faults(image, placed_faults(chip, voltage, placement), out, checked=True)


def _dram_geometry(chip: object) -> DramGeometry:
    """The chip's DramGeometry, else InputError (placement is for DRAM chips)."""
    if not isinstance(chip, Chip):
        raise InputTypeError(f"expected a Chip, got {type(chip).__name__}")
    if not isinstance(chip.geometry, DramGeometry):
        raise InputError(f"chip {chip.name!r} is not a DRAM chip (geometry "
                         f"{type(chip.geometry).__name__}); placement needs a DramGeometry")
    return chip.geometry


# --- the access trace of one inference ---------------------------------------------------------
def access_counts(placement: DramMapping, subarray_parallel: bool = False) -> dict[str, int]:
    """Row-buffer hits / misses / conflicts when every burst of the image is read once, in image
    order: open-page policy, one open row per bank (per subarray of a bank with
    subarray_parallel, SALP), all banks closed at the start. {"hit", "miss", "conflict", "bursts"}.

    A read is a hit when its bank (subarray) has its row open, a miss when the bank has no open
    row, a conflict when another row is open. Vectorised: bursts grouped by bank (stable, so image
    order within a bank), each compared with the previous read of its bank.
    """
    if not isinstance(placement, DramMapping):
        raise InputTypeError(f"placement must be a DramMapping, got {type(placement).__name__}")
    loc = placement.locations()
    g = placement.geometry
    key = loc["bank"] * g.subarrays_per_bank + loc["subarray"] if subarray_parallel \
        else loc["bank"]
    order = np.argsort(key, kind="stable")
    k, row = key[order], loc["row"][order]
    n = int(k.shape[0])
    first = np.ones(n, dtype=bool)
    first[1:] = k[1:] != k[:-1]
    miss = int(np.count_nonzero(first))
    same_row = np.zeros(n, dtype=bool)
    same_row[1:] = row[1:] == row[:-1]
    hit = int(np.count_nonzero(same_row & ~first))
    return {"hit": hit, "miss": miss, "conflict": n - hit - miss, "bursts": n}


class AccessEnergy(Protocol):
    """What `inference_energy` reads of a DRAM energy model
    (`sramsim.analysis.dram_energy.DramEnergy`, a layer above)."""

    name: str
    burst_bits: int

    def access_energies(self, voltage: float | None = None) -> dict[str, float]:
        """Energy (J) of one burst read as a row hit, miss and conflict."""
        ...

    def trace_energy(self, counts: dict, voltage: float | None = None) -> float:
        """Energy (J) of a count of each access kind."""
        ...

    def check_voltage(self, voltage: float | None = None) -> float:
        """The lowered supply's voltage (V), checked; the nominal one for None."""
        ...


def inference_energy(placement: DramMapping, energy: AccessEnergy, voltage: float | None = None,
                     subarray_parallel: bool = False) -> dict:
    """DRAM read energy of one inference (every weight burst read once) under `placement`:
    {"counts": access_counts, "energy_j": total J, "per_access_j": {hit, miss, conflict} J,
    "voltage": the lowered supply (V), "policy", "subarray_parallel"}.

    energy: a `sramsim.analysis.dram_energy.DramEnergy` of the same part (burst size must agree);
    voltage: the lowered supply in volts (None = nominal).
    """
    if energy.burst_bits != placement.geometry.burst_bits:
        raise InputError(f"energy model {energy.name} moves {energy.burst_bits} bits per burst, "
                         f"the placement's geometry {placement.geometry.burst_bits}")
    counts = access_counts(placement, subarray_parallel)
    per = energy.access_energies(voltage)
    total = energy.trace_energy({k: counts[k] for k in ACCESS_KINDS}, voltage)
    return {"counts": counts, "energy_j": total, "per_access_j": per,
            "voltage": energy.check_voltage(voltage), "policy": placement.policy,
            "subarray_parallel": bool(subarray_parallel)}
