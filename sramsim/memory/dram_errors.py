"""EDEN's DRAM error models as persistent per-bit failure maps over voltage (a DRAM `Chip`).

EDEN (Koppula et al., MICRO 2019) characterised reduced-voltage/latency DRAM chips and describes
their errors with four models; the structure of each model below follows EDEN, the numeric
defaults are OURS and ILLUSTRATIVE (EDEN fits the parameters per chip; no fitted values are
bundled), so pass your own when you have measurements.

Every model gives each cell a multiplier f of the curve's BER, from the line (partition, bitline
or wordline) it belongs to, and a cell is faulty at voltage V with probability
P(V) = min(1, curve.ber(V) * f). The multipliers of one chip are normalised to average 1 over the
chip's cells, so the chip-wide expected BER equals curve.ber(V) (less where min(1, .) caps a line).

model 0, "uniform" -- uniformly random weak cells, each partition with its own BER (EDEN model 0).
    partition = "bank" (default) or "subarray": the unit with its own rate.
    spread = 0.5 (illustrative): log-sd of the log-normal partition multipliers,
        f_p = exp(spread * Z_p) / mean over partitions; 0 gives every partition the curve's BER.
    kinds = {"flip": 1.0}: fault kind proportions (as in `Chip.random`).
model 1, "bitline" -- bitline-correlated (EDEN model 1): a bitline (one bit position of the row,
    i.e. same column and bit, across the rows of a partition) is weak or not.
    partition = "subarray" (default; a bitline physically spans one subarray) or "bank".
    weak_fraction = 0.01 (illustrative): probability that a bitline is weak.
    weak_factor = 50.0 (illustrative): a weak bitline's BER over a normal one's.
        Multipliers of one chip: normal l = N / (n_weak * weak_factor + N - n_weak), weak
        weak_factor * l, over its N bitlines of which n_weak are weak.
    kinds = {"flip": 1.0}.
model 2, "wordline" -- wordline-correlated (EDEN model 2): the same per row (a row of a bank).
    weak_fraction = 0.01, weak_factor = 50.0 (illustrative), kinds = {"flip": 1.0}.
model 3, "data-dependent" -- a cell fails only towards one value (EDEN model 3). Positions are
    uniform (f = 1); true-cells (charged = 1) fail 1 -> 0 (kind stuck0), anti-cells fail 0 -> 1
    (kind stuck1), so a stored bit that already holds the failure value is unaffected.
    group_rows = the geometry's subarray_rows (illustrative; real parts alternate true/anti cells
        by blocks of rows, the block size is part-specific): rows [0, g) of each bank are
        true-cells, [g, 2g) anti-cells, and so on ((row // group_rows) even -> stuck0).

How a map is drawn (work and memory O(#faults at v_floor), never a per-bit array of the part):
cells with the same multiplier are exchangeable, so each group of equal-multiplier lines is one
concatenated run of cells in which the faulty cells at v_floor come from geometric gaps
(`sampling.bernoulli_positions`); the index in the run maps back to a bit address. Given a cell
is faulty at v_floor with p = min(1, ber(v_floor) f), P(faulty at V) / p = min(1, ber(V) f) / p, so
vfail = curve.voltage(u * p / f), u ~ U(0, 1) -- nested over voltage by construction (a cell that
the curve makes fail even at the nominal voltage gets vfail = nominal: the map covers v_floor up to
nominal). Work on the default 4 Gb part at BER 1e-3 (~4.3 M faults): ~0.9 s of CPU. The line
multipliers and the cells come from two independent streams of `np.random.SeedSequence(seed)`:
the same seed gives the same map on any machine and any numba thread count.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sramsim.errors import InputError, check_number
from sramsim.memory.chip import Chip
from sramsim.memory.curves import BerCurve
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_curves import DEFAULT_DRAM_CURVE, DRAM_CURVES, dram_curve
from sramsim.memory.geometry import STUCK0, STUCK1, draw_kinds, parse_kinds
from sramsim.memory.sampling import bernoulli_positions, check_seed
from sramsim.memory.sizes import expected_faults, require_memory

MODEL_NAMES = {0: "uniform", 1: "bitline", 2: "wordline", 3: "data-dependent"}

# Documented defaults per model (origins in the module docstring). group_rows None = subarray_rows.
DEFAULTS: dict[int, dict[str, Any]] = {
    0: {"partition": "bank", "spread": 0.5, "kinds": None},
    1: {"partition": "subarray", "weak_fraction": 0.01, "weak_factor": 50.0, "kinds": None},
    2: {"weak_fraction": 0.01, "weak_factor": 50.0, "kinds": None},
    3: {"group_rows": None},
}

# Peak bytes per fault while drawing (positions, line indices, uniforms, sort keys, the kept
# address/vfail/kind): an estimate for refusing maps that cannot fit, checked with tracemalloc.
BYTES_PER_FAULT = 64


def _error_model(error_model: int | str, model: int | str | None, where: str) -> int | str:
    """`error_model`, or the deprecated keyword `model=` of sramsim <= 0.1 (with a FutureWarning):
    one name, "error model", in the CLI (--error-model), Python and the docs."""
    if model is None:
        return error_model
    warnings.warn(f"{where}(model=...) is deprecated: use error_model=", FutureWarning,
                  stacklevel=3)
    if error_model not in (0, model):
        raise InputError(f"{where}: give error_model only (model= is its old name)")
    return model


def dram_chip(geometry: DramGeometry, curve: BerCurve | str | None = None,
              v_floor: float | None = None, seed: int = 0, error_model: int | str = 0,
              nominal_voltage: float | None = None, name: str | None = None, *,
              model: int | str | None = None, **params: Any) -> Chip:
    """A synthetic DRAM chip drawn from EDEN error model `error_model` (0-3 or its name) down to
    `v_floor` volts: cell faulty at V with P = min(1, curve.ber(V) x its line's multiplier).
    (`model=` is the deprecated name of `error_model`.)

    `curve`: a BerCurve in volts, a bundled DRAM curve name, or None for "lpddr3-illustrative".
    `nominal_voltage`: the lowered supply's nominal voltage; defaults to the bundled curve's
    (required for a user curve). `params`: the model's parameters (see the module docstring).
    """
    if not isinstance(geometry, DramGeometry):
        raise InputError(f"geometry must be a DramGeometry, got {type(geometry).__name__}")
    curve, nominal = _resolve_curve(curve, nominal_voltage)
    v_floor = _check_v_floor(v_floor, curve, nominal)
    seed = check_seed(seed)
    model, params = resolve_params(geometry, _error_model(error_model, model, "dram_chip"), params)

    ber_floor = float(curve.ber(v_floor))
    n_max = expected_faults(geometry.capacity_bits, ber_floor)
    require_memory(n_max * BYTES_PER_FAULT,
                   f"a DRAM chip map of {geometry.capacity_bits} bits with BER {ber_floor:g} at "
                   f"v_floor {v_floor:g} V (~{geometry.capacity_bits * ber_floor:.3g} faults)")
    if n_max >= 2 ** 32:
        raise InputError(f"a DRAM chip map with ~{n_max:.3g} faults at v_floor {v_floor:g} V: "
                         "too many for one chip (>= 2**32)")

    lines_rng, cells_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    layout = _layout(geometry, model, params)
    groups = _groups(geometry, layout, model, params, lines_rng)
    addresses, ratio, counts = [], [], []
    for factor, n_lines, line_of in groups:
        p = min(1.0, ber_floor * factor)
        pos = bernoulli_positions(cells_rng, n_lines * layout.cells, p)
        if pos.size:
            cells = np.uint64(layout.cells)
            addresses.append(layout.address(line_of(pos // cells), pos % cells))
            ratio.append(p / factor)
            counts.append(pos.size)
    n = int(sum(counts))
    address = np.concatenate(addresses) if len(addresses) > 1 else \
        (addresses[0] if addresses else np.empty(0, dtype=np.uint64))
    # ber(vfail) = u * p / f, uniform in (0, p / f) for a cell of its group.
    target = cells_rng.random(n)
    start = 0
    for r, c in zip(ratio, counts, strict=True):
        target[start:start + c] *= r
        start += c
    vfail = np.asarray(curve.voltage(target), dtype=np.float64).astype(np.float32)
    del target
    # A cell failing even at nominal (possible for a Gaussian curve) gets vfail = nominal.
    np.clip(vfail, np.float32(v_floor), np.float32(nominal), out=vfail)
    order, vfail = _descending(vfail)
    address = address[order]
    del order
    if model == 3:
        kind = data_dependent_kinds(geometry, address, params["group_rows"])
    else:
        kind = draw_kinds(cells_rng, n, params["kinds"])
    stored = {k: v for k, v in params.items() if v is not None}
    attrs = {"seed": seed, "error_model": model, "error_model_name": MODEL_NAMES[model],
             "error_model_params": json.dumps(stored, sort_keys=True), "curve_name": curve.name}
    return Chip(geometry, address, vfail, kind, v_floor,
                name=name or f"{curve.name}-dram-m{model}-s{seed}", source="synthetic",
                voltage_unit="V", nominal_voltage=nominal, curve=curve, attrs=attrs)


# --- parameters -------------------------------------------------------------------------------
def resolve_params(geometry: DramGeometry, model: int | str,
                   params: dict) -> tuple[int, dict]:
    """(model number, its full parameter dict with defaults filled in), checked; InputError on a
    bad model, an unknown parameter name or an out-of-range value."""
    model = _check_model(model)
    unknown = sorted(set(params) - set(DEFAULTS[model]))
    if unknown:
        raise InputError(f"DRAM error model {model} ({MODEL_NAMES[model]}) has no parameter(s) "
                         f"{', '.join(unknown)}; it takes {', '.join(sorted(DEFAULTS[model]))}")
    out = dict(DEFAULTS[model])
    out.update(params)
    if "partition" in out:
        geometry.n_partitions(out["partition"])     # InputError for anything but bank/subarray
    if "spread" in out:
        out["spread"] = check_number(out["spread"], "spread", low=0.0)
    if "weak_fraction" in out:
        out["weak_fraction"] = check_number(out["weak_fraction"], "weak_fraction", low=0.0,
                                            high=1.0)
    if "weak_factor" in out:
        out["weak_factor"] = check_number(out["weak_factor"], "weak_factor", low=1.0)
    if "kinds" in out and out["kinds"] is not None:
        try:
            parse_kinds(out["kinds"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"kinds: {exc}") from None
        out["kinds"] = {str(k): float(v) for k, v in out["kinds"].items()}
    if model == 3:
        g = geometry.subarray_rows if out["group_rows"] is None else out["group_rows"]
        if isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, np.integer)) \
                or not 0 < g <= geometry.rows:
            raise InputError(f"group_rows must be an integer in [1, {geometry.rows}] (rows per "
                             f"bank), got {g!r}")
        out["group_rows"] = int(g)
    return model, out


def _check_model(model: object) -> int:
    by_name = {v: k for k, v in MODEL_NAMES.items()}
    if isinstance(model, str) and model in by_name:
        return by_name[model]
    if not isinstance(model, (bool, np.bool_)) and isinstance(model, (int, np.integer)) \
            and int(model) in MODEL_NAMES:
        return int(model)
    choices = ", ".join(f"{k} ({v})" for k, v in MODEL_NAMES.items())
    raise InputError(f"unknown DRAM error model {model!r}; models: {choices}")


def _resolve_curve(curve: BerCurve | str | None,
                   nominal_voltage: float | None) -> tuple[BerCurve, float]:
    if curve is None:
        curve = DEFAULT_DRAM_CURVE
    if isinstance(curve, str):
        curve = dram_curve(curve)
    if not isinstance(curve, BerCurve):
        raise InputError(f"curve must be a BerCurve or a bundled DRAM curve name, got "
                         f"{type(curve).__name__}")
    if nominal_voltage is None:
        if curve.name not in DRAM_CURVES:
            raise InputError(f"nominal_voltage is needed for curve {curve.name!r} (not a bundled "
                             f"DRAM curve): the nominal voltage of the supply it lowers")
        nominal_voltage = DRAM_CURVES[curve.name][2]
    nominal = check_number(nominal_voltage, "nominal_voltage", low=0.0)
    if nominal == 0:
        raise InputError("nominal_voltage must be a positive voltage in volts, got 0")
    return curve, nominal


def _check_v_floor(v_floor: float | None, curve: BerCurve, nominal: float) -> float:
    if v_floor is None:
        raise InputError("v_floor (the lowest voltage the map must cover, in volts) is required")
    v = check_number(v_floor, "v_floor", low=-math.inf)
    if not v > 0:
        raise InputError(f"v_floor must be a positive voltage in volts, got {v_floor!r}")
    if v > nominal:
        raise InputError(f"v_floor {v:g} V is above the nominal voltage {nominal:g} V")
    try:
        curve.ber(v)
    except ValueError as exc:
        raise InputError(f"v_floor {v:g} V: {exc}") from None
    return v


# --- lines: which cells share a multiplier ----------------------------------------------------
class _Layout:
    """Lines of a model: n_lines lines of `cells` cells each, and (line, cell) -> bit address."""

    def __init__(self, n_lines: int, cells: int,
                 address: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.n_lines, self.cells, self.address = n_lines, cells, address


def _layout(g: DramGeometry, model: int, params: dict) -> _Layout:
    cols = np.uint64(g.cols)
    if model == 0:
        size = g.capacity_bits // g.n_partitions(params["partition"])
        return _Layout(g.n_partitions(params["partition"]), size,
                       lambda line, i: line * np.uint64(size) + i)
    if model == 1:
        rows = g.rows if params["partition"] == "bank" else g.subarray_rows
        # Partitions are contiguous runs of rows: global row = partition * rows + i.
        return _Layout(g.n_partitions(params["partition"]) * g.cols, rows,
                       lambda line, i: ((line // cols) * np.uint64(rows) + i) * cols + line % cols)
    if model == 2:
        return _Layout(g.total_banks * g.rows, g.cols, lambda line, i: line * cols + i)
    return _Layout(1, g.capacity_bits, lambda line, i: i)


def _groups(g: DramGeometry, layout: _Layout, model: int, params: dict,
            rng: np.random.Generator) -> list:
    """[(multiplier, lines in the group, group line j -> line index)], in a fixed order."""
    if model == 0:
        factors = _partition_factors(rng, layout.n_lines, params["spread"])
        return [(float(f), 1, _one_line(p)) for p, f in enumerate(factors)]
    if model in (1, 2):
        weak, f_weak, f_normal = _weak_lines(rng, layout.n_lines, params["weak_fraction"],
                                             params["weak_factor"])
        shifted = weak - np.arange(weak.size, dtype=np.uint64)
        groups = [(f_weak, weak.size, lambda j: weak[j.astype(np.intp)]),
                  (f_normal, layout.n_lines - weak.size,
                   lambda j: j + np.searchsorted(shifted, j, side="right").astype(np.uint64))]
        return [grp for grp in groups if grp[1] > 0]
    return [(1.0, 1, lambda j: j)]


def _one_line(p: int) -> Callable[[np.ndarray], np.ndarray]:
    """Group line j -> line p (a group of one line; the result keeps j's shape)."""
    line = np.uint64(p)
    return lambda j: j * np.uint64(0) + line


def _partition_factors(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    z = rng.standard_normal(n)
    g = np.exp(spread * z)
    return g / g.mean()


def _weak_lines(rng: np.random.Generator, n_lines: int, fraction: float,
                factor: float) -> tuple[np.ndarray, float, float]:
    weak = bernoulli_positions(rng, n_lines, fraction)
    normal = n_lines / (weak.size * factor + n_lines - weak.size)
    return weak, factor * normal, normal


def line_factors(geometry: DramGeometry, seed: int, error_model: int | str = 0, *,
                 model: int | str | None = None, **params: Any) -> np.ndarray:
    """The multiplier of every line of the chip `dram_chip(geometry, ..., seed, error_model,
    **params)` (index = `line_index`): per partition (0), bitline (1), wordline (2); one line for
    error model 3.

    For inspection and tests: an array over all lines (model 1 on a full part has millions)."""
    seed = check_seed(seed)
    model, params = resolve_params(geometry, _error_model(error_model, model, "line_factors"),
                                   params)
    lines_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    layout = _layout(geometry, model, params)
    out = np.empty(layout.n_lines, dtype=np.float64)
    for factor, n_lines, line_of in _groups(geometry, layout, model, params, lines_rng):
        out[line_of(np.arange(n_lines, dtype=np.uint64)).astype(np.intp)] = factor
    return out


def line_index(geometry: DramGeometry, address: ArrayLike, error_model: int | str = 0, *,
               model: int | str | None = None, **params: Any) -> np.ndarray:
    """Line (partition / bitline / wordline; 0 for model 3) of each bit address under the error
    model."""
    model, params = resolve_params(geometry, _error_model(error_model, model, "line_index"),
                                   params)
    a = np.asarray(address, dtype=np.uint64)
    cols = np.uint64(geometry.cols)
    if model == 0:
        return geometry.partition_index(a, by=params["partition"])
    if model == 1:
        return geometry.partition_index(a, by=params["partition"]) * cols + a % cols
    if model == 2:
        return a // cols
    return np.zeros(a.shape, dtype=np.uint64)


def data_dependent_kinds(geometry: DramGeometry, address: ArrayLike,
                         group_rows: int) -> np.ndarray:
    """Model 3's fault kind of each bit: stuck0 (true-cell, fails 1 -> 0) where
    (row in bank // group_rows) is even, stuck1 (anti-cell, fails 0 -> 1) where it is odd."""
    a = np.asarray(address, dtype=np.uint64)
    row = (a // np.uint64(geometry.cols)) % np.uint64(geometry.rows)
    anti = (row // np.uint64(group_rows)) % np.uint64(2) == 1
    return np.where(anti, np.uint8(STUCK1), np.uint8(STUCK0)).astype(np.uint8)


def _descending(vfail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, vfail[order]) with positive float32 `vfail` sorted descending, ties by index: one
    sort of packed 64-bit keys (inverted float bits << 32 | index); the sorted keys give back the
    sorted values without a gather."""
    n = vfail.shape[0]
    key = (np.uint64(0xFFFFFFFF) - vfail.view(np.uint32).astype(np.uint64)) << np.uint64(32)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    order = (key & np.uint64(0xFFFFFFFF)).astype(np.intp)
    key >>= np.uint64(32)
    bits = (np.uint64(0xFFFFFFFF) - key).astype(np.uint32)
    return order, bits.view(np.float32)
