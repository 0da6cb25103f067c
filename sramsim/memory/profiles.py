"""Chip profiles on disk (HDF5, schema v1): the one module that reads, writes and checks them.

The schema is written down in profiles/README.md. Readers check everything before a `Chip` is
built, so a bad file fails when it is opened, with one line naming the file and the problem.
Measured profiles are built from per-voltage observations of failing bits by `import_bitmaps`.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sramsim.memory.chip import Chip
from sramsim.memory.curves import BerCurve
from sramsim.errors import InputError, ProfileError
from sramsim.memory.geometry import FLIP, KIND_NAMES, STUCK0, STUCK1, Geometry

FORMAT = "sramsim.chip"
VERSION = 1
SOURCES = ("synthetic", "measured")
VOLTAGE_UNITS = ("normalized", "V")
ROOT_ATTRS = ("format", "version", "name", "source", "technology", "voltage_unit",
              "nominal_voltage", "v_floor")
GEOMETRY_ATTRS = ("rows", "cols", "banks", "word_bits")
FAULT_DATASETS = ("address", "vfail", "kind")
_COMPRESSION = {"compression": "gzip", "compression_opts": 6, "shuffle": True}


# --- writing ----------------------------------------------------------------------------------
def save_chip(chip: Chip, path: str | os.PathLike) -> None:
    """Write `chip` as a v1 profile. Written to a temporary name and renamed, so a crash never
    leaves a half-written profile under the final name."""
    path = Path(path)
    clash = set(chip.attrs) & (set(ROOT_ATTRS) | set(GEOMETRY_ATTRS))
    if clash:
        raise ValueError(f"chip attrs {sorted(clash)} would overwrite schema attributes")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            _write(f, chip)
        problems = _read(tmp)[1]        # never leave a file behind that readers would reject
        if problems:
            raise ProfileError(f"{path}: refusing to write an invalid profile: {problems[0]}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(f: h5py.File, chip: Chip) -> None:
    g = chip.geometry
    f.attrs["format"] = FORMAT
    f.attrs["version"] = np.int64(VERSION)
    f.attrs["name"] = str(chip.name)
    f.attrs["source"] = str(chip.source)
    f.attrs["technology"] = str(g.technology)
    f.attrs["voltage_unit"] = str(chip.voltage_unit)
    f.attrs["nominal_voltage"] = np.float64(chip.nominal_voltage)
    f.attrs["v_floor"] = np.float64(chip.v_floor)
    for key, value in chip.attrs.items():
        f.attrs[key] = value
    geo = f.create_group("geometry")
    for key in GEOMETRY_ATTRS:
        geo.attrs[key] = np.int64(getattr(g, key))
    faults = f.create_group("faults")
    for key, data in (("address", chip.address), ("vfail", chip.vfail), ("kind", chip.kind)):
        faults.create_dataset(key, data=data, **(_COMPRESSION if len(data) else {}))
    if chip.measured_voltages is not None:
        measured = np.sort(np.asarray(chip.measured_voltages, dtype=np.float32))[::-1]
        f.create_group("measured").create_dataset("voltages", data=measured)
    if chip.curve is not None:
        v, b = chip.curve.table()
        grp = f.create_group("ber_curve")
        grp.create_dataset("voltage", data=np.asarray(v, dtype=np.float64))
        grp.create_dataset("ber", data=np.asarray(b, dtype=np.float64))
        grp.attrs["name"] = str(chip.curve.name)
        if chip.curve.mu is not None:   # analytic curve: keep it exact, the table is for plotting
            grp.attrs["mu"] = np.float64(chip.curve.mu)
            grp.attrs["sigma"] = np.float64(chip.curve.sigma)


# --- reading and checking ---------------------------------------------------------------------
class _Invalid(Exception):
    """A problem that stops further checks of a file (internal; turned into a message)."""


def load_chip(path: str | os.PathLike) -> Chip:
    """Read and check a profile; any problem raises `ProfileError("<path>: <problem>")`."""
    chip, problems = _read(path)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ProfileError(f"{path}: {problems[0]}{more}")
    return chip


def validate(path: str | os.PathLike, strict: bool = False) -> list[str]:
    """All problems found in the profile at `path` (an empty list means valid).

    Each problem is one line without the file name. With `strict=True` the first problem is
    raised as `ProfileError` naming the file instead.
    """
    if strict:
        load_chip(path)
        return []
    return _read(path)[1]


def _read(path: str | os.PathLike) -> tuple[Chip | None, list[str]]:
    p = Path(path)
    if not p.exists():
        return None, ["no such file"]
    if p.is_dir():
        return None, ["is a directory, not a profile file"]
    if not os.access(p, os.R_OK):
        return None, ["permission denied"]
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        text = str(exc)
        reason = ("truncated file" if "truncated" in text else
                  "not an HDF5 file" if "signature" in text else
                  "damaged or locked HDF5 file (" + " ".join(text.split()) + ")")
        return None, [f"cannot open as a chip profile: {reason}"]
    problems: list[str] = []
    try:
        with f:
            chip = _check(f, problems)
    except _Invalid as exc:
        return None, problems + [str(exc)]
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # unreadable data
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return None, problems + [f"unreadable data (damaged or truncated file): {detail}"]
    return (chip if not problems else None), problems


def _check(f: h5py.File, problems: list[str]) -> Chip | None:
    """Check the whole file; fatal problems raise _Invalid, others are appended to `problems`."""
    if "format" not in f.attrs:
        raise _Invalid("not a sramsim chip profile (root attribute 'format' is missing)")
    fmt = _as_str(f.attrs["format"])
    if fmt != FORMAT:
        raise _Invalid(f"not a sramsim chip profile (format is {fmt!r}, expected {FORMAT!r})")
    version = _attr(f, "version", int)
    if version != VERSION:
        raise _Invalid(f"unsupported profile version {version} (this sramsim reads version {VERSION})")
    name = _attr(f, "name", str)
    source = _attr(f, "source", str)
    technology = _attr(f, "technology", str)
    unit = _attr(f, "voltage_unit", str)
    nominal = _attr(f, "nominal_voltage", float)
    v_floor = _attr(f, "v_floor", float)
    if source not in SOURCES:
        problems.append(f"root attribute 'source' is {source!r}, expected one of {list(SOURCES)}")
    if unit not in VOLTAGE_UNITS:
        problems.append(f"root attribute 'voltage_unit' is {unit!r}, expected one of "
                        f"{list(VOLTAGE_UNITS)}")
    if not (math.isfinite(nominal) and nominal > 0):
        problems.append(f"root attribute 'nominal_voltage' must be a positive number, got {nominal!r}")
    if not math.isfinite(v_floor):
        raise _Invalid(f"root attribute 'v_floor' must be a finite number, got {v_floor!r}")

    geo = _group(f, "geometry")
    try:
        geometry = Geometry(*(_attr(geo, k, int, "/geometry") for k in GEOMETRY_ATTRS),
                            technology=technology)
    except ValueError as exc:
        raise _Invalid(f"bad /geometry: {exc}") from None

    faults = _group(f, "faults")
    arrays = {k: _dataset(faults, k, "/faults") for k in FAULT_DATASETS}
    lengths = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise _Invalid("length mismatch in /faults: " + ", ".join(f"{k}={n}" for k, n in lengths.items()))
    address, vfail, kind = arrays["address"], arrays["vfail"], arrays["kind"]
    for key, arr, want in (("address", address, "iu"), ("vfail", vfail, "f"), ("kind", kind, "iu")):
        if arr.dtype.kind not in want:
            raise _Invalid(f"/faults/{key} has dtype {arr.dtype}, expected "
                           f"{'a float' if want == 'f' else 'an integer'} type")
    if address.dtype.kind == "i" and np.any(address < 0):
        problems.append("/faults/address has negative entries")
    address = address.astype(np.uint64)
    if np.any(address >= np.uint64(geometry.capacity_bits)):
        bad = int(np.count_nonzero(address >= np.uint64(geometry.capacity_bits)))
        problems.append(f"{bad} address(es) in /faults/address >= capacity {geometry.capacity_bits}")
    dup = _duplicates(address)
    if dup:
        problems.append(f"{dup} duplicate address(es) in /faults/address")
    vfail64 = vfail.astype(np.float64)
    if not np.all(np.isfinite(vfail64)):
        problems.append(f"{int(np.count_nonzero(~np.isfinite(vfail64)))} NaN/infinite voltage(s) "
                        "in /faults/vfail")
    else:
        if np.any(np.diff(vfail64) > 0):
            problems.append("/faults/vfail is not sorted descending")
        if vfail.size and vfail.astype(np.float32).min() < np.float32(v_floor):
            problems.append(f"/faults/vfail has voltage(s) below v_floor {v_floor:g} "
                            f"(lowest {vfail64.min():g})")
    if np.any(kind.astype(np.int64) > 2) or np.any(kind.astype(np.int64) < 0):
        problems.append("/faults/kind has codes outside 0 (flip), 1 (stuck0), 2 (stuck1)")

    measured = None
    if "measured" in f or source == "measured":
        measured = _dataset(_group(f, "measured"), "voltages", "/measured").astype(np.float32)
        _check_measured(measured, vfail, v_floor, problems)
    curve = _read_curve(f, problems) if "ber_curve" in f else None
    attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in ROOT_ATTRS}
    if problems:
        return None
    return Chip(geometry, address, vfail.astype(np.float32, copy=False),
                kind.astype(np.uint8, copy=False), v_floor, name=name, source=source,
                voltage_unit=unit, nominal_voltage=nominal, curve=curve,
                measured_voltages=measured, attrs=attrs)


def _check_measured(measured: np.ndarray, vfail: np.ndarray, v_floor: float,
                    problems: list[str]) -> None:
    if measured.ndim != 1 or measured.size == 0:
        problems.append("/measured/voltages must be a non-empty 1-D array")
        return
    if not np.all(np.isfinite(measured)):
        problems.append("NaN/infinite voltage(s) in /measured/voltages")
        return
    if np.unique(measured).size != measured.size:
        problems.append("/measured/voltages has repeated voltages")
    if np.float32(v_floor) < measured.min():
        problems.append(f"v_floor {v_floor:g} is below the lowest measured voltage "
                        f"{float(measured.min()):g}")
    if vfail.size and np.all(np.isfinite(vfail)) and not np.all(np.isin(vfail, measured)):
        problems.append("/faults/vfail has voltages that are not in /measured/voltages")


def _read_curve(f: h5py.File, problems: list[str]) -> BerCurve | None:
    grp = _group(f, "ber_curve")
    v = _dataset(grp, "voltage", "/ber_curve").astype(np.float64)
    b = _dataset(grp, "ber", "/ber_curve").astype(np.float64)
    name = _as_str(grp.attrs.get("name", "table"))
    try:
        if "mu" in grp.attrs and "sigma" in grp.attrs:
            curve = BerCurve.gaussian(float(grp.attrs["mu"]), float(grp.attrs["sigma"]))
        else:
            curve = BerCurve.from_table(v, b, name=name)
    except ValueError as exc:
        problems.append(f"bad /ber_curve: {exc}")
        return None
    curve.name = name
    return curve


def _group(parent: h5py.Group, key: str) -> h5py.Group:
    where = f"{parent.name.rstrip('/')}/{key}"
    if key not in parent:
        raise _Invalid(f"missing group {where}")
    obj = parent[key]
    if not isinstance(obj, h5py.Group):
        raise _Invalid(f"{where} is not a group")
    return obj


def _dataset(grp: h5py.Group, key: str, where: str) -> np.ndarray:
    if key not in grp:
        raise _Invalid(f"missing dataset {where}/{key}")
    obj = grp[key]
    if not isinstance(obj, h5py.Dataset):
        raise _Invalid(f"{where}/{key} is not a dataset")
    if obj.ndim != 1:
        raise _Invalid(f"{where}/{key} must be 1-D, has shape {obj.shape}")
    if obj.dtype.kind not in "iuf":
        raise _Invalid(f"{where}/{key} has non-numeric dtype {obj.dtype}")
    return obj[()]


def _attr(obj: h5py.HLObject, key: str, kind: type, where: str = "root") -> Any:
    if key not in obj.attrs:
        raise _Invalid(f"missing {where} attribute {key!r}")
    value = obj.attrs[key]
    try:
        if kind is str:
            if not isinstance(value, (str, bytes, np.str_, np.bytes_)):
                raise TypeError
            return _as_str(value)
        if np.ndim(value) != 0 or isinstance(value, (str, bytes)):
            raise TypeError
        if kind is int:
            if float(value) != int(value):
                raise TypeError
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        raise _Invalid(f"{where} attribute {key!r} has the wrong type ({value!r}), "
                       f"expected {kind.__name__}") from None


def _as_str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _plain(value: Any) -> Any:
    """HDF5 attribute -> plain Python value (numpy scalars -> int/float/bool, bytes -> str)."""
    if isinstance(value, (bytes, np.bytes_)):
        return _as_str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _duplicates(address: np.ndarray) -> int:
    s = np.sort(address)
    return int(np.count_nonzero(s[1:] == s[:-1]))


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
    other extensions are ignored. The direction key of an undirected file is "any".
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{directory}: not a directory of per-voltage .npy observations")
    out: dict[float, dict[str, np.ndarray]] = {}
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
            raise InputError(f"{p}: not a readable .npy array ({' '.join(str(exc).split())})") from None
        out.setdefault(float(m.group(1)), {})[m.group(2) or "any"] = arr
    if not out:
        raise InputError(f"{directory}: no v<voltage>.npy observation files found")
    return out


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
            seen = {"0to1": _SEEN_0TO1, "1to0": _SEEN_1TO0}.get(direction, _SEEN_0TO1 | _SEEN_1TO0)
            addr_parts.append(a)
            vidx_parts.append(np.full(a.size, i, dtype=np.int64))
            seen_parts.append(np.full(a.size, seen, dtype=np.uint8))
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
    # Distinct voltages each bit failed at; nested iff it failed at every tested voltage below vfail.
    new_v = new_bit.copy()
    new_v[1:] |= rank[1:] != rank[:-1]
    distinct = np.add.reduceat(new_v.astype(np.int64), first) if first.size else np.zeros(0, np.int64)
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
def summary(chip: Chip, voltages=None) -> dict:
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
        "geometry": {"rows": g.rows, "cols": g.cols, "banks": g.banks, "word_bits": g.word_bits,
                     "capacity_bits": g.capacity_bits},
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
    """Voltages worth reporting: the measured ones, else the curve's table points down to v_floor."""
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
