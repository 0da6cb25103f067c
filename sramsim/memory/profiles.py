"""Chip profiles: import measured bitmaps, summarise chips, and the profile functions users call.

The HDF5 schema itself (writing, reading, checking) is owned by `sramsim.memory.profile_file` and
written down in sramsim/data/profiles/README.md; `load_chip` / `save_chip` / `validate` here are
the same operations as `Chip.load` / `chip.save` / `profile_file.validate`. Measured profiles
are built from per-voltage observations of failing bits by `import_bitmaps`.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sramsim.errors import InputError
from sramsim.memory import profile_file
from sramsim.memory.chip import Chip
from sramsim.memory.dram import DramGeometry
from sramsim.memory.geometry import FLIP, KIND_NAMES, STUCK0, STUCK1, Geometry
from sramsim.memory.profile_file import (  # noqa: F401
    FAULT_DATASETS,
    FORMAT,
    GEOMETRY_ATTRS,
    ROOT_ATTRS,
    SOURCES,
    VERSION,
    VOLTAGE_UNITS,
)


# --- reading and writing (the schema lives in profile_file) ---------------------------------
def save_chip(chip: Chip, path: str | os.PathLike) -> None:
    """Write `chip` as a v1 profile (same as `chip.save(path)`)."""
    chip.save(path)


def load_chip(path: str | os.PathLike) -> Chip:
    """Read and check a profile (same as `Chip.load(path)`); any problem raises
    `ProfileError("<path>: <problem>")`."""
    return Chip.load(path)


def validate(path: str | os.PathLike, strict: bool = False) -> list[str]:
    """All problems found in the profile at `path`, one line each (empty: valid); `strict=True`
    raises the first as `ProfileError` naming the file instead."""
    return profile_file.validate(path, strict=strict)


# --- importing measured bitmaps -----------------------------------------------------------------
DIRECTIONS = ("0to1", "1to0")
_FILE_RE = re.compile(r"^v([0-9]+(?:\.[0-9]+)?)(?:_(0to1|1to0))?\.npy$")
# Direction bits seen for a bit: 0->1 means the cell reads 1 (stuck1), 1->0 reads 0 (stuck0).
_SEEN_0TO1, _SEEN_1TO0 = 1, 2
_KIND_OF_SEEN = np.array([FLIP, STUCK1, STUCK0, FLIP], dtype=np.uint8)

Observation = np.ndarray | Mapping[str, np.ndarray]


def load_bitmap_dir(directory: str | os.PathLike) -> dict[float, dict[str, np.ndarray]]:
    """Read a folder of per-voltage observations into {voltage: {direction: array}}.

    Files are named `v<voltage>.npy` (direction unknown) or `v<voltage>_0to1.npy` /
    `v<voltage>_1to0.npy` (seen failing in that direction), e.g. `v0.850.npy`. Each holds the
    failing bit addresses (1-D integer array) or a boolean map with one entry per bit (any shape
    of `capacity` elements, C order = bit address). Other `.npy` names are an error; files with
    other extensions are ignored. The direction key of an undirected file is "any". Files that
    spell the same voltage differently (`v0.900.npy`, `v0.90.npy`) with the same direction are
    merged (the union of their failing bits), never dropped.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{directory}: not a directory of per-voltage .npy observations")
    out: dict[float, dict[str, tuple[Path, np.ndarray]]] = {}
    for p in sorted(d.iterdir()):
        if p.suffix != ".npy":
            continue
        m = _FILE_RE.match(p.name)
        if not m:
            raise InputError(f"{p}: file name not understood; expected v<voltage>.npy or "
                             "v<voltage>_0to1.npy / v<voltage>_1to0.npy (e.g. v0.850.npy)")
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{p}: not a readable .npy array "
                             f"({' '.join(str(exc).split())})") from None
        parts = out.setdefault(float(m.group(1)), {})
        direction = m.group(2) or "any"
        if direction in parts:      # the same voltage spelled twice (v0.900.npy, v0.90.npy)
            first, _ = parts[direction]
            parts[direction] = (first, _merge(parts[direction][1], arr, first, p))
        else:
            parts[direction] = (p, arr)
    if not out:
        raise InputError(f"{directory}: no v<voltage>.npy observation files found")
    return {v: {d: arr for d, (_, arr) in parts.items()} for v, parts in out.items()}


def _merge(a: np.ndarray, b: np.ndarray, path_a: Path, path_b: Path) -> np.ndarray:
    """Two files with the same voltage and direction -> one observation: the union of their
    failing bits (boolean maps OR-ed, address lists concatenated). Never drops either file."""
    what = f"{path_b}: same voltage and direction as {path_a.name}"
    if a.dtype == np.bool_ and b.dtype == np.bool_:
        if a.size != b.size:
            raise InputError(f"{what}, but boolean maps of {b.size} and {a.size} entries")
        return a.ravel() | b.ravel()
    lists = [x for x in (a, b) if x.dtype.kind in "iu" and x.ndim == 1]
    if len(lists) != 2:
        raise InputError(f"{what}: to merge them both must be boolean maps or both 1-D integer "
                         f"arrays of bit addresses, got {a.dtype}{list(a.shape)} and "
                         f"{b.dtype}{list(b.shape)}")
    return np.concatenate([a.astype(np.int64), b.astype(np.int64)])


def import_bitmaps(source: str | os.PathLike | Mapping[float, Observation], geometry: Geometry, *,
                   name: str | None = None, voltage_unit: str = "normalized",
                   nominal_voltage: float = 1.0) -> Chip:
    """A measured chip from per-voltage observations of failing bits.

    `source` is a folder (see `load_bitmap_dir`) or a dict {voltage: observation}; an observation
    is failing bit addresses (integer array) or a boolean map of `capacity` bits (direction
    unknown), or a dict {"0to1": ..., "1to0": ..., "any": ...} of those. Every voltage in it counts
    as tested, also when nothing failed there.

    A bit's vfail is the highest tested voltage at which it failed. Its kind: seen failing only
    0->1: stuck1; only 1->0: stuck0; both ways, or with the direction unknown: flip. Bits that
    failed at V but not at some lower tested voltage break nesting; they keep vfail = highest
    failing voltage and are counted in `chip.attrs["non_nested"]` (a count of bits).
    Voltages are stored (and compared, see `Chip`) in float32.
    """
    label = str(source) if isinstance(source, (str, os.PathLike)) else "observations"
    obs = load_bitmap_dir(source) if isinstance(source, (str, os.PathLike)) else source
    if voltage_unit not in VOLTAGE_UNITS:
        raise InputError(f"voltage unit must be one of {list(VOLTAGE_UNITS)}, got {voltage_unit!r}")
    if not (math.isfinite(nominal_voltage) and nominal_voltage > 0):
        raise InputError(f"nominal voltage must be a positive number, got {nominal_voltage!r}")
    if not obs:
        raise InputError(f"{label}: no tested voltages")
    voltages = np.array([float(v) for v in obs], dtype=np.float64)
    if not np.all(np.isfinite(voltages)) or np.any(voltages <= 0):
        raise InputError(f"{label}: tested voltages must be positive numbers")
    v32 = voltages.astype(np.float32)
    if np.unique(v32).size != v32.size:
        raise InputError(f"{label}: tested voltages too close to tell apart in float32")

    addr_parts, vidx_parts, seen_parts = [], [], []
    for i, (v, ob) in enumerate(obs.items()):
        parts = ob if isinstance(ob, Mapping) else {"any": ob}
        for direction, arr in parts.items():
            if direction not in (*DIRECTIONS, "any"):
                raise InputError(f"{label}: voltage {v:g}: unknown direction {direction!r}; "
                                 "use '0to1', '1to0' or 'any'")
            a = _addresses(arr, geometry, f"{label}: voltage {v:g} ({direction})")
            code = {"0to1": _SEEN_0TO1, "1to0": _SEEN_1TO0}.get(direction, _SEEN_0TO1 | _SEEN_1TO0)
            addr_parts.append(a)
            vidx_parts.append(np.full(a.size, i, dtype=np.int64))
            seen_parts.append(np.full(a.size, code, dtype=np.uint8))
    address = np.concatenate(addr_parts)
    vidx = np.concatenate(vidx_parts)
    seen = np.concatenate(seen_parts)

    # Rank tested voltages from high (0) to low, group observations by bit, highest voltage first.
    rank_of = np.empty(voltages.size, dtype=np.int64)
    rank_of[np.argsort(-voltages, kind="stable")] = np.arange(voltages.size)
    rank = rank_of[vidx]
    order = np.lexsort((rank, address))
    address, rank, seen = address[order], rank[order], seen[order]
    new_bit = np.ones(address.size, dtype=bool)
    new_bit[1:] = address[1:] != address[:-1]
    first = np.flatnonzero(new_bit)
    bits = address[first]
    top_rank = rank[first]                      # rank of the highest failing voltage
    seen_any = np.bitwise_or.reduceat(seen, first) if first.size else seen[:0]
    # Distinct voltages each bit failed at; nested iff it failed at every tested voltage below
    # vfail.
    new_v = new_bit.copy()
    new_v[1:] |= rank[1:] != rank[:-1]
    distinct = np.add.reduceat(new_v.astype(np.int64), first) if first.size else np.zeros(0,
                                                                                          np.int64)
    non_nested = int(np.count_nonzero(distinct < voltages.size - top_rank))

    v_desc = np.sort(v32)[::-1]
    out = np.lexsort((bits, top_rank))          # vfail descending, then address ascending
    chip = Chip(geometry, bits[out], v_desc[top_rank[out]], _KIND_OF_SEEN[seen_any[out]],
                float(voltages.min()), name=name or (Path(label).name if label != "observations"
                                                     else "measured"),
                source="measured", voltage_unit=voltage_unit,
                nominal_voltage=float(nominal_voltage), measured_voltages=v_desc,
                attrs={"non_nested": non_nested})
    return chip


def _addresses(arr: Any, geometry: Geometry, what: str) -> np.ndarray:
    """An observation (bit addresses or a boolean map) -> distinct uint64 addresses."""
    a = np.asarray(arr)
    cap = geometry.capacity_bits
    if a.dtype == np.bool_:
        if a.size != cap:
            raise InputError(f"{what}: boolean map has {a.size} entries, the chip has {cap} bits")
        return np.flatnonzero(a.ravel()).astype(np.uint64)
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise InputError(f"{what}: expected a 1-D integer array of bit addresses or a boolean map, "
                         f"got {a.dtype} with shape {a.shape}")
    if a.size and (a.min() < 0 or int(a.max()) >= cap):
        raise InputError(f"{what}: bit addresses must lie in [0, {cap}), got "
                         f"{int(a.min())}..{int(a.max())}")
    return np.unique(a.astype(np.uint64))


# --- summaries for the CLI and users ------------------------------------------------------------
def summary(chip: Chip, voltages: Iterable[float] | None = None) -> dict:
    """A JSON-ready description: geometry, fault counts by kind, and BER at a few voltages."""
    g = chip.geometry
    if voltages is None:
        voltages = default_voltages(chip)
    rows = []
    for v in voltages:
        faults = chip.faults(v)
        row = {"voltage": float(v), "faults": len(faults), "ber": len(faults) / g.capacity_bits,
               "kinds": faults.counts()}
        if chip.curve is not None:
            try:
                row["curve_ber"] = float(chip.curve.ber(v))
            except ValueError:
                row["curve_ber"] = None
        rows.append(row)
    counts = {KIND_NAMES[c]: int(np.count_nonzero(chip.kind == c)) for c in sorted(KIND_NAMES)}
    return {
        "name": chip.name, "source": chip.source, "technology": g.technology,
        "voltage_unit": chip.voltage_unit, "nominal_voltage": chip.nominal_voltage,
        "v_floor": chip.v_floor,
        "geometry": {"rows": g.rows, "cols": g.cols, "banks": getattr(g, "total_banks", g.banks),
                     "word_bits": g.word_bits, "capacity_bits": g.capacity_bits,
                     **({"dram": g.as_dict()} if isinstance(g, DramGeometry) else {})},
        "faults": len(chip), "kinds": counts,
        "max_vfail": decimal_voltage(chip.vfail[0]) if len(chip) else None,
        "non_nested": chip.attrs.get("non_nested"),
        "curve": chip.curve.name if chip.curve is not None else None,
        "measured_voltages": (None if chip.measured_voltages is None
                              else [decimal_voltage(v) for v in chip.measured_voltages]),
        "attrs": {k: v for k, v in chip.attrs.items() if _jsonable(v)},
        "voltages": rows,
    }


def default_voltages(chip: Chip) -> list[float]:
    """Voltages worth reporting: the measured ones, else the curve's table points down to
    v_floor."""
    if chip.measured_voltages is not None:
        return sorted({decimal_voltage(v) for v in chip.measured_voltages}, reverse=True)
    if chip.curve is not None and chip.curve.mu is None:
        v, _ = chip.curve.table()
        points = [float(x) for x in v if x >= chip.v_floor]
    else:
        top = float(chip.vfail[0]) if len(chip) else chip.nominal_voltage
        points = list(np.linspace(chip.v_floor, max(top, chip.v_floor), 5))
    return sorted(set(points) | {float(chip.v_floor)}, reverse=True)


def decimal_voltage(v32: float) -> float:
    """A stored float32 voltage as the shortest decimal that selects the same faults (0.7, not
    0.699999988079071), for reports a user can paste back."""
    return float(np.format_float_positional(np.float32(v32), unique=True))


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
