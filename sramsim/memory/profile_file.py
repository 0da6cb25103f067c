"""The HDF5 chip profile file (schema v1): the one module that writes, reads and checks it.

The schema is written down in sramsim/data/profiles/README.md. This module knows the file, not
the `Chip` class: `write` takes any object with a chip's fields, `read` returns the constructor
fields (`Chip(**fields)`), so `Chip.save` / `Chip.load` call it without an import circle.
Readers check everything before the fields are returned, so a bad file fails when it is opened,
with one line naming the file and the problem. Only what h5py raises while reading a damaged
file is reported as "unreadable data"; an exception anywhere else is a bug and surfaces as one.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from sramsim.errors import InputError, ProfileError
from sramsim.memory.curves import BerCurve
from sramsim.memory.dram import DramGeometry
from sramsim.memory.geometry import Geometry
from sramsim.memory.shipped import resolve_profile

if TYPE_CHECKING:
    from sramsim.memory.chip import Chip

FORMAT = "sramsim.chip"
VERSION = 1
SOURCES = ("synthetic", "measured")
VOLTAGE_UNITS = ("normalized", "V")
ROOT_ATTRS = ("format", "version", "name", "source", "technology", "voltage_unit",
              "nominal_voltage", "v_floor")
GEOMETRY_ATTRS = ("rows", "cols", "banks", "word_bits")
# technology="dram": the DramGeometry constructor arguments (sramsim/memory/dram.py)
DRAM_GEOMETRY_ATTRS = ("channels", "ranks", "banks", "rows", "columns", "device_width",
                       "subarray_rows", "burst_length", "word_bits")
FAULT_DATASETS = ("address", "vfail", "kind")
_COMPRESSION = {"compression": "gzip", "compression_opts": 6, "shuffle": True}
# What h5py raises when the bytes of an opened file are damaged (checked around its calls only).
_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


# --- writing ----------------------------------------------------------------------------------
def write(chip: Chip, path: str | os.PathLike) -> None:
    """Write a chip (any object with `Chip`'s fields) as a v1 profile at `path`.

    Written to a temporary name, read back with the same checks as `read`, and renamed: a crash
    or an invalid chip never leaves a file under the final name that readers would reject.
    """
    path = Path(path)
    clash = set(chip.attrs) & (set(ROOT_ATTRS) | set(GEOMETRY_ATTRS))
    if clash:
        raise InputError(f"chip attrs {sorted(clash)} would overwrite schema attributes")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            _write(f, chip)
        problems = read(tmp)[1]
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
    for key in DRAM_GEOMETRY_ATTRS if isinstance(g, DramGeometry) else GEOMETRY_ATTRS:
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


def load(path: str | os.PathLike) -> dict:
    """The `Chip` constructor fields stored in the profile at `path`, checked; any problem raises
    `ProfileError("<path>: <problem>")`."""
    fields, problems = read(path)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ProfileError(f"{path}: {problems[0]}{more}")
    assert fields is not None                   # read gives fields whenever it finds no problem
    return fields


def validate(path: str | os.PathLike, strict: bool = False) -> list[str]:
    """All problems found in the profile at `path` (an empty list means valid).

    Each problem is one line without the file name. With `strict=True` the first problem is
    raised as `ProfileError` naming the file instead.
    """
    if strict:
        load(path)
        return []
    return read(path)[1]


def read(path: str | os.PathLike) -> tuple[dict | None, list[str]]:
    """(constructor fields, []) for a valid profile, (None, problems) otherwise. `path` may also
    be `shipped:NAME`, a profile that ships with sramsim."""
    try:
        p = resolve_profile(path)
    except InputError as exc:
        return None, [str(exc)]
    try:
        exists = p.exists()
    except OSError as exc:              # a name too long, a loop of links
        return None, [f"cannot access: {exc.strerror or exc}"]
    if not exists:
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
            _check_self_contained(f)
            fields = _check(f, problems)
    except _Invalid as exc:
        return None, problems + [str(exc)]
    return (fields if not problems else None), problems


@contextmanager
def _h5read() -> Iterator[None]:
    """Around h5py calls only: what they raise on damaged bytes becomes a one-line problem."""
    try:
        yield
    except _H5_ERRORS as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise _Invalid(f"unreadable data (damaged or truncated file): {detail}") from None


def _check_self_contained(f: h5py.File) -> None:
    """Refuse, before reading any data, a file that reaches outside itself (or aliases its own
    objects): external and soft links, datasets stored in external raw files, virtual datasets.
    A profile written by sramsim has none; following them would read another file's faults."""
    def link(name: str, obj: object) -> str | None:
        if isinstance(obj, h5py.ExternalLink):
            return f"/{name} is an external link to {obj.filename}:{obj.path}"
        if isinstance(obj, h5py.SoftLink):
            return f"/{name} is a soft link to {obj.path}"
        return None

    def storage(name: str, obj: object) -> str | None:
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            return f"/{name} is a virtual dataset (its data lives in other files)"
        if isinstance(obj, h5py.Dataset) and obj.external:
            return f"/{name} is stored in external file(s) {[e[0] for e in obj.external]}"
        return None

    with _h5read():
        found = f.visititems_links(link) or f.visititems(storage)
    if found:
        raise _Invalid(f"refused: {found}; a chip profile must be self-contained")


def _check(f: h5py.File, problems: list[str]) -> dict | None:
    """Check the whole file; fatal problems raise _Invalid, others are appended to `problems`.
    Returns the Chip's fields when there is no problem."""
    root = _check_root(f, problems)
    geometry = _read_geometry(f, root["technology"])
    address, vfail, kind = _check_faults(f, geometry, root, problems)
    measured = None
    with _h5read():
        has_measured, has_curve = "measured" in f, "ber_curve" in f
    if has_measured or root["source"] == "measured":
        measured = _dataset(_group(f, "measured"), "voltages", "/measured").astype(np.float32)
        _check_measured(measured, vfail, root["v_floor"], problems)
    curve = _read_curve(f, problems) if has_curve else None
    with _h5read():
        extra = {k: v for k, v in f.attrs.items() if k not in ROOT_ATTRS}
    if problems:
        return None
    return dict(geometry=geometry, address=address, vfail=vfail.astype(np.float32, copy=False),
                kind=kind.astype(np.uint8, copy=False), v_floor=root["v_floor"],
                name=root["name"], source=root["source"], voltage_unit=root["unit"],
                nominal_voltage=root["nominal"], curve=curve, measured_voltages=measured,
                attrs={k: _plain(v) for k, v in extra.items()})


def _check_root(f: h5py.File, problems: list[str]) -> dict:
    """The root attributes: format and version (fatal when foreign), name, source, technology,
    voltage unit, nominal voltage and v_floor."""
    with _h5read():
        has_format = "format" in f.attrs
    if not has_format:
        raise _Invalid("not a sramsim chip profile (root attribute 'format' is missing)")
    fmt = _attr(f, "format", str)
    if fmt != FORMAT:
        raise _Invalid(f"not a sramsim chip profile (format is {fmt!r}, expected {FORMAT!r})")
    version = _attr(f, "version", int)
    if version != VERSION:
        raise _Invalid(f"unsupported profile version {version} (this sramsim "
                       f"reads version {VERSION})")
    root = {"name": _attr(f, "name", str), "source": _attr(f, "source", str),
            "technology": _attr(f, "technology", str), "unit": _attr(f, "voltage_unit", str),
            "nominal": _attr(f, "nominal_voltage", float), "v_floor": _attr(f, "v_floor", float)}
    if root["source"] not in SOURCES:
        problems.append(f"root attribute 'source' is {root['source']!r}, expected one of "
                        f"{list(SOURCES)}")
    if root["unit"] not in VOLTAGE_UNITS:
        problems.append(f"root attribute 'voltage_unit' is {root['unit']!r}, expected one of "
                        f"{list(VOLTAGE_UNITS)}")
    nominal, v_floor = root["nominal"], root["v_floor"]
    root["nominal_ok"] = math.isfinite(nominal) and nominal > 0
    if not root["nominal_ok"]:
        problems.append("root attribute 'nominal_voltage' must be a positive "
                        f"number, got {nominal!r}")
    if not (math.isfinite(v_floor) and v_floor > 0):
        raise _Invalid(f"root attribute 'v_floor' must be a positive finite voltage, got "
                       f"{v_floor!r}")
    if root["nominal_ok"] and v_floor > nominal:
        problems.append(f"v_floor {v_floor:g} is above the nominal voltage {nominal:g}")
    return root


def _read_geometry(f: h5py.File, technology: str) -> Geometry | DramGeometry:
    """/geometry as a Geometry, or a DramGeometry when it has DRAM attributes (fatal when bad)."""
    geo = _group(f, "geometry")
    try:
        if "channels" in geo.attrs:    # a DramGeometry (technology "dram")
            return DramGeometry(**{k: _attr(geo, k, int, "/geometry")
                                   for k in DRAM_GEOMETRY_ATTRS})
        return Geometry(**{k: _attr(geo, k, int, "/geometry") for k in GEOMETRY_ATTRS},
                        technology=technology)
    except ValueError as exc:
        raise _Invalid(f"bad /geometry: {exc}") from None


def _check_faults(f: h5py.File, geometry: Geometry | DramGeometry, root: dict,
                  problems: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """/faults: equal lengths and numeric types (fatal), then addresses inside the capacity and
    distinct, voltages finite, sorted descending and between v_floor and nominal, known kinds."""
    faults = _group(f, "faults")
    arrays = {k: _dataset(faults, k, "/faults") for k in FAULT_DATASETS}
    lengths = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise _Invalid("length mismatch in /faults: " + ", ".join(f"{k}={n}" for k,
                                                                  n in lengths.items()))
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
        problems.append(f"{bad} address(es) in /faults/address >= capacity "
                        f"{geometry.capacity_bits}")
    dup = _duplicates(address)
    if dup:
        problems.append(f"{dup} duplicate address(es) in /faults/address")
    _check_vfail(vfail, root, problems)
    if np.any(kind.astype(np.int64) > 2) or np.any(kind.astype(np.int64) < 0):
        problems.append("/faults/kind has codes outside 0 (flip), 1 (stuck0), 2 (stuck1)")
    return address, vfail, kind


def _check_vfail(vfail: np.ndarray, root: dict, problems: list[str]) -> None:
    """Failure voltages: finite, sorted descending, between v_floor and the nominal voltage."""
    vfail64 = vfail.astype(np.float64)
    if not np.all(np.isfinite(vfail64)):
        problems.append(f"{int(np.count_nonzero(~np.isfinite(vfail64)))} NaN/infinite voltage(s) "
                        "in /faults/vfail")
        return
    v_floor, nominal = root["v_floor"], root["nominal"]
    if np.any(np.diff(vfail64) > 0):
        problems.append("/faults/vfail is not sorted descending")
    if vfail.size and vfail.astype(np.float32).min() < np.float32(v_floor):
        problems.append(f"/faults/vfail has voltage(s) below v_floor {v_floor:g} "
                        f"(lowest {vfail64.min():g})")
    if root["nominal_ok"] and vfail.size and vfail.astype(np.float32).max() > np.float32(nominal):
        bad = int(np.count_nonzero(vfail.astype(np.float32) > np.float32(nominal)))
        problems.append(f"{bad} voltage(s) in /faults/vfail above the nominal voltage "
                        f"{nominal:g} (highest {vfail64.max():g})")


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
    with _h5read():
        gattrs = dict(grp.attrs)
    name = _as_str(gattrs.get("name", "table"))
    try:
        if "mu" in gattrs and "sigma" in gattrs:
            curve = BerCurve.gaussian(float(gattrs["mu"]), float(gattrs["sigma"]))
        else:
            curve = BerCurve.from_table(v, b, name=name)
    except ValueError as exc:
        problems.append(f"bad /ber_curve: {exc}")
        return None
    curve.name = name
    return curve


def _group(parent: h5py.Group, key: str) -> h5py.Group:
    where = f"{parent.name.rstrip('/')}/{key}"
    with _h5read():
        present = key in parent
        obj = parent[key] if present else None
    if not present:
        raise _Invalid(f"missing group {where}")
    if not isinstance(obj, h5py.Group):
        raise _Invalid(f"{where} is not a group")
    return obj


def _dataset(grp: h5py.Group, key: str, where: str) -> np.ndarray:
    with _h5read():
        present = key in grp
        obj = grp[key] if present else None
    if not present:
        raise _Invalid(f"missing dataset {where}/{key}")
    if not isinstance(obj, h5py.Dataset):
        raise _Invalid(f"{where}/{key} is not a dataset")
    with _h5read():
        ndim, shape, dtype = obj.ndim, obj.shape, obj.dtype
    if ndim != 1:
        raise _Invalid(f"{where}/{key} must be 1-D, has shape {shape}")
    if dtype.kind not in "iuf":
        raise _Invalid(f"{where}/{key} has non-numeric dtype {dtype}")
    with _h5read():
        return obj[()]


def _attr(obj: h5py.HLObject, key: str, kind: type, where: str = "root") -> Any:
    with _h5read():
        present = key in obj.attrs
        value: Any = obj.attrs[key] if present else None
    if not present:
        raise _Invalid(f"missing {where} attribute {key!r}")
    wrong = _Invalid(f"{where} attribute {key!r} has the wrong type ({value!r}), "
                     f"expected {kind.__name__}")
    if kind is str:
        if not isinstance(value, (str, bytes, np.str_, np.bytes_)):
            raise wrong
        return _as_str(value)
    if np.ndim(value) != 0 or isinstance(value, (str, bytes, np.str_, np.bytes_)):
        raise wrong
    try:
        number = float(value)
    except (TypeError, ValueError):     # a value that is no number (e.g. a compound scalar)
        raise wrong from None
    if kind is int:
        if not number.is_integer():
            raise wrong
        return int(value)
    return number


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
