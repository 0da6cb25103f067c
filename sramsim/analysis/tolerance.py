"""Tolerable bit error rate of a model: the largest BER (so the lowest supply voltage) at which its
mean accuracy over K fault maps stays within a margin of a reference accuracy (by default its own
fault-free quantized accuracy; `sramsim.analysis.operating_point.Reference` names the others,
e.g. a control model's clean accuracy).

The search is a *measurement* on the evaluation split (test data): nothing is trained or selected
on it; it reports where the accuracy falls. How it runs:

1. the fault-free quantized accuracy `clean` (no faults);
2. a log-spaced BER grid (default 1e-6 .. 1e-1, one point per decade), from low to high BER; at each
   point K fault maps are evaluated and the point *passes* when mean accuracy >= reference -
   margin (`operating_point.passes`); the scan stops at the first failing point. With
   `maps_max` > K the number of maps is sequential: while the 95% Student-t interval of a
   point's mean still contains reference - margin, K more maps are added (up to `maps_max`),
   so points near the threshold get the maps that decide them and far ones stay cheap; the pass
   test is still the mean (each point records `n` and `decided_by`);
3. bisection in log10(BER) between the last passing and the first failing grid point
   (`bisect_steps` halvings, or until their voltages are closer than 10 uV); the tolerable BER is
   the highest BER that passed, its voltage the curve's inverse `curve.voltage(ber)`.

Fault maps (which maps, so a result can be reproduced and compared):
- source "random": map k at BER b is the k-th pattern of `RandomBitErrors(b, seed=seed)` over the
  image's bits (`sramsim.inject.draws.fixed_draws(..., purpose="test")`, the rule `fusion eval`
  and `sramsim vuln` use), so map k is the same random stream at every BER;
- source "dram": map k at BER b is the DRAM chip `dram_chip(geometry, curve, v_floor=V(b),
  seed=seed + k, error_model=error_model)` read at V(b) = curve.voltage(b), with the weights laid
  into the part by the DRAM mapping policy `mapping` (`MemoryLayout(mapping=...)`,
  `sramsim.inject.dram_mapping`), so the faults each weight sees are those of the cells it
  lands on.

Resume: points go to a sweep `ResultStore` (DIR/config.json + points.jsonl, written as each map
finishes). Its key is (voltage, map, 0), with the voltage V(b) of the point's BER on the curve
(rounded to 1 uV; the curve is one-to-one, and bisection stops before two points share a key), so
a re-run with the same model, data, source and seed reuses every finished map, whatever the
margin, reference or K. The maps of one point run on the executor of `execution` (this
process, a spawned local pool, or Ray actors; `sramsim.analysis.executors`).

Each map is evaluated through `sramsim.nn.evaluation.Evaluator` (in place: its faults written
into a copy of the model and restored, O(faults)); accuracy and loss are bit-identical to
evaluating the weights dequantized from the whole faulty image (`ToleranceWorker.faulty_image`,
kept as the reference the tests compare with).

Energy: per DRAM mapping policy, the DRAM energy of one inference (every weight read once from the
part, `placement.inference_energy`) at nominal voltage and at the tolerable voltage, and the saving.
error-aware's energy ranks subarrays by the error model's expected BER (`mapping_energies`).
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sramsim.analysis.dram_energy import DramEnergy
from sramsim.analysis.executors import Execution, pinned_threads
from sramsim.analysis.operating_point import Reference, check_margin, passes
from sramsim.analysis.store import open_store, write_json
from sramsim.errors import InputError, check_ber
from sramsim.memory.chip import Chip, Faults
from sramsim.memory.dram import DEFAULT_PART
from sramsim.memory.dram_curves import DEFAULT_DRAM_CURVE, dram_curve, dram_nominal_voltage
from sramsim.progress import duration, progress
from sramsim.stats import ci95_halfwidth, mean_std

if TYPE_CHECKING:
    from torch import nn

    from sramsim.analysis.executors import Workload
    from sramsim.inject.dram_mapping import DramMapping
    from sramsim.inject.layout import MemoryLayout
    from sramsim.memory.curves import BerCurve
    from sramsim.memory.dram import DramGeometry
    from sramsim.nn.data import Dataset

SOURCES = ("random", "dram")
DEFAULT_LOW, DEFAULT_HIGH = 1e-6, 1e-1
VOLTAGE_RESOLUTION = 1e-5      # bisection stops when bracket voltages are this close (V)


def ber_grid(low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH,
             per_decade: int = 1) -> list[float]:
    """Log-spaced BERs from `low` to `high` (both included), `per_decade` points per decade."""
    low, high = check_ber(low, "lowest BER", allow_one=False), check_ber(high, "highest BER",
                                                                         allow_one=False)
    if not 0 < low < high:
        raise InputError(f"BER grid needs 0 < low < high, got {low:g} and {high:g}")
    if isinstance(per_decade, bool) or int(per_decade) != per_decade or per_decade < 1:
        raise InputError(f"points per decade must be a positive integer, got {per_decade!r}")
    n = max(1, math.ceil(round(per_decade * math.log10(high / low), 9)))
    return [float(10.0 ** (math.log10(low) + i * math.log10(high / low) / n)) for i in range(n + 1)]


@dataclass(frozen=True)
class FaultSpec:
    """Where a point's fault maps come from (travels to pool workers; its `identity` goes into
    the store's config so a resumed search uses the same maps)."""

    source: str = "random"
    seed: int = 0
    curve: str = DEFAULT_DRAM_CURVE
    part: str = DEFAULT_PART
    error_model: int = 0
    mapping: str = "drmap"
    geometry: dict | None = field(default=None)   # DramGeometry overrides (tests: a small part)

    def identity(self) -> dict:
        """What makes two searches' maps the same (JSON)."""
        d = asdict(self)
        if self.source == "random":
            for k in ("part", "error_model", "mapping", "geometry"):
                d.pop(k)
        return d

    def dram_geometry(self) -> DramGeometry:
        """The DRAM part's geometry (with the `geometry` overrides)."""
        from sramsim.memory.dram import DramGeometry
        return DramGeometry.from_part(self.part, **(self.geometry or {}))

    def layout(self) -> MemoryLayout:
        """How the weights are stored: the DRAM mapping of the chips, or linear for random
        errors over the image's own bits."""
        from sramsim.inject.layout import MemoryLayout
        return MemoryLayout(mapping=self.mapping if self.source == "dram" else "linear")


# ------------------------------------------------------------------------------ one map

class ToleranceWorker:
    """Evaluates fault maps of a search; holds the model, data and quantized image."""

    def __init__(self, workload: Workload, spec: FaultSpec):
        from sramsim.inject.quantized_model import QuantizedModel
        from sramsim.nn.evaluation import Evaluator
        self.workload, self.spec = workload, spec
        self.model = workload.load_model()
        self.dataset = workload.load_dataset()
        self.qm = QuantizedModel(self.model, workload.bits, workload.scheme, workload.clip,
                                 include_bias=workload.include_bias)
        self.curve = dram_curve(spec.curve)
        self.layout = spec.layout()
        self.evaluator = Evaluator(self.qm, self.layout)
        self._out = np.empty_like(self.qm.image)

    def clean(self) -> dict:
        """The fault-free quantized evaluation, as a store record."""
        from sramsim.nn.evaluation import evaluate
        r = self.evaluator.clean(self.dataset, self.workload.batch_size)
        unquantized = evaluate(self.model, self.dataset, None, self.workload.batch_size)
        return {"clean": True, "accuracy": r["accuracy"], "loss": r["loss"],
                "float_accuracy": unquantized["accuracy"], "n_samples": len(self.dataset)}

    def run(self, ber: float, k: int) -> dict:
        """Map `k` at BER `ber`: its record (accuracy, loss, faults that hit the image)."""
        t0 = time.perf_counter()
        voltage = float(self.curve.voltage(ber))
        source, v = self.source(ber, voltage, k)
        wrong = changed_bits(self.qm.image, self.fault_map(ber, voltage, k))
        t1 = time.perf_counter()
        r = self.evaluator.evaluate(self.dataset, source, v, batch_size=self.workload.batch_size)
        return {"voltage": round(voltage, 6), "chip_index": int(k), "offset_index": 0,
                "ber": float(ber), "map": int(k), "wrong_bits": wrong,
                "image_ber": wrong / self.qm.n_bits, "accuracy": r["accuracy"],
                "loss": r["loss"], "n_samples": len(self.dataset), "t_faults": t1 - t0,
                "t_eval": time.perf_counter() - t1}

    def source(self, ber: float, voltage: float, k: int) -> tuple[Faults | Chip, float | None]:
        """Map k at BER `ber` as the (fault source, voltage) the layout reads: the k-th random
        pattern (no voltage), or map k's DRAM chip at `voltage`."""
        if self.spec.source == "random":
            from sramsim.inject.draws import fixed_draws
            draws = fixed_draws(self.qm.n_bits, k + 1, ber=ber, seed=self.spec.seed)
            return next(itertools.islice(draws, k, None)), None
        from sramsim.memory.dram_errors import dram_chip
        chip = dram_chip(self.spec.dram_geometry(), self.curve, v_floor=voltage,
                         seed=self.spec.seed + int(k), error_model=self.spec.error_model)
        return chip, voltage

    def fault_map(self, ber: float, voltage: float, k: int) -> Faults:
        """Map k at BER `ber` (voltage `voltage` on the curve) as the `Faults` it puts on the
        image's bits (image bit addresses, ascending, distinct)."""
        from sramsim.inject import dram_mapping as P
        source, v = self.source(ber, voltage, k)
        if isinstance(source, Faults):              # random: the pattern itself, no voltage
            return source
        assert v is not None                        # a DRAM chip is read at its voltage
        return P.placed_faults(source, v, self.layout.dram_mapping(self.qm, source, v))

    def faulty_image(self, ber: float, voltage: float, k: int) -> np.ndarray:
        """The image read back through map k at BER `ber` (voltage `voltage` on the curve): the
        functional path (whole image), the reference `run`'s in-place path is tested against."""
        source, v = self.source(ber, voltage, k)
        return self.layout.read(self.qm, source, v, 0, self._out)[0]


class _MapTasks:
    """A ToleranceWorker as an executor's worker: task (ber, k) -> [map k's record]."""

    def __init__(self, workload: Workload, spec: FaultSpec):
        self.worker = ToleranceWorker(workload, spec)

    def run(self, task: tuple) -> list[dict]:
        """[map k's record at BER ber] for task (ber, k)."""
        return [self.worker.run(*task)]


def changed_bits(image: np.ndarray, faults: Faults) -> int:
    """Bits of `image` that `faults` (distinct image bit addresses) change: every flip, a stuck-at
    only where the stored bit differs from it. O(faults); equals popcount(image ^ faulty)."""
    from sramsim.memory.kernels import changed_bits as count
    return int(count(image, faults.address, faults.kind))


def placed(n_bytes: int, geometry: DramGeometry, policy: str, layer_bytes: Sequence[int],
           chip: Chip | None = None, voltage: float | None = None,
           tolerance: float | None = None,
           partition_ber: np.ndarray | None = None) -> DramMapping:
    """The weights' placement in the part. error-aware: every layer given the same tolerable BER
    `tolerance`, the part's subarrays ordered by `partition_ber` (default: `chip`'s empirical BER
    at `voltage`), so the image fills the most reliable subarrays first."""
    from sramsim.inject import dram_mapping as P
    if policy != "error-aware":
        return P.place(n_bytes, geometry, policy)
    if tolerance is None:
        raise InputError("the error-aware placement needs a tolerable BER")
    if partition_ber is None:
        if chip is None or voltage is None:
            raise InputError("the error-aware placement needs partition BERs, or a chip and a "
                             "voltage to measure them at")
        partition_ber = P.partition_bers(chip, voltage, "subarray")
    return P.place(n_bytes, geometry, policy, layer_bytes=list(layer_bytes),
                   partition_ber=partition_ber,
                   layer_tolerance=[tolerance] * len(layer_bytes), partition="subarray")


# ------------------------------------------------------------------------------ the search

def search(model: str | os.PathLike | nn.Module, dataset: str | os.PathLike | Dataset, *,
           margin: float = 0.01, reference: Reference | None = None,
           maps: int = 5, maps_max: int | None = None, low: float = DEFAULT_LOW,
           high: float = DEFAULT_HIGH, per_decade: int = 1, bisect_steps: int = 4,
           source: str = "random",
           error_model: int = 0, mapping: str = "drmap", curve: str = DEFAULT_DRAM_CURVE,
           part: str = DEFAULT_PART, geometry: dict | None = None, seed: int = 0,
           limit: int | None = None, bits: int | None = None, scheme: str | None = None,
           clip: float | None = None, batch_size: int = 1000,
           out_dir: str | os.PathLike | None = None, execution: Execution | None = None,
           log: Callable[[str], None] | None = None) -> dict:
    """Find the tolerable BER of `model` on `dataset` (see the module docstring); returns a dict
    with the tolerable BER, its voltage and interval, every evaluated point, and the DRAM energy
    per inference and saving for each mapping policy.

    model/dataset: as `sramsim.analysis.sweep.run_sweep` (a checkpoint path or nn.Module; a
    dataset spec or Dataset). margin: allowed drop of mean accuracy below the reference, in
    (0, 1). reference: what the accuracy must stay within the margin of (default: the model's
    own clean accuracy; `Reference.given(acc, label)` for a control model's). maps: K fault maps
    per point; maps_max: the sequential rule's cap (default K: fixed K maps per point). out_dir:
    a folder to store points in (resumable), or None to keep them in memory.
    execution: where the maps run (`sramsim.analysis.executors.Execution`; the result does not
    depend on it at a fixed `threads`); with its `progress`, one step per fault map on stderr.
    log: called with a line per finished point (and, when the fault-free pass ran here, the
    expected time of the rest).
    """
    from sramsim.analysis import sweep as S
    t_start = time.perf_counter()
    reference = reference or Reference.own_clean()
    execution = execution or Execution()
    margin = check_margin(margin)
    maps = _positive_int(maps, "maps")
    maps_max = maps if maps_max is None else _positive_int(maps_max, "maps_max", minimum=maps)
    if maps_max > maps and maps < 2:
        raise InputError("maps must be >= 2 when maps_max adds maps (an interval needs 2)")
    bisect_steps = _positive_int(bisect_steps, "bisect_steps", minimum=0)
    grid = ber_grid(low, high, per_decade)
    spec = FaultSpec(source, int(seed), curve, part, int(error_model), mapping,
                     dict(geometry) if geometry else None)
    curve_obj, nominal, dram_geometry = _check_spec(spec, grid)
    workload, model_obj, arch, ds = S.load_workload(
        model, dataset, [], S.SweepSettings(limit=limit, bits=bits, scheme=scheme, clip=clip,
                                            batch_size=batch_size))
    from sramsim.inject.dram_mapping import image_layer_bytes
    from sramsim.inject.quantized_model import QuantizedModel
    qm = QuantizedModel(model_obj, workload.bits, workload.scheme, workload.clip)
    require_fits(qm.image.size, dram_geometry, part)
    config: dict[str, Any] = {
        "kind": "tolerance",
        "model": {"arch": arch, "sha256": S.model_sha256(model_obj)},
        "data": {"name": ds.name, "n": len(ds), "sha256": S.tensor_sha256([ds.x, ds.y])},
        "quantization": {"bits": workload.bits, "scheme": workload.scheme, "clip": workload.clip,
                         "include_bias": workload.include_bias},
        "faults": spec.identity(),
    }
    store = open_store(out_dir, config)
    reused = sum(1 for k in store.records if k != ("clean",))
    say: Callable[[str], None] = log or (lambda text: None)
    most = (len(grid) + bisect_steps) * maps            # the grid may stop early: an upper bound
    bar = progress(total=most, desc="tolerance", unit="map", enabled=execution.progress)
    bar.update(min(reused, most))
    try:
        with execution.open(functools.partial(_MapTasks, workload, spec)) as ex:
            if not store.done(("clean",)):
                t0 = time.perf_counter()
                with pinned_threads(execution.threads):
                    store.append([ToleranceWorker(workload, spec).clean()])
                each, left = time.perf_counter() - t0, most - reused
                say(f"at most {left} fault maps of {len(ds)} images to evaluate, ~{each:.1f} s "
                    f"each (as the fault-free pass): expect up to "
                    f"~{duration(left * each / max(1, execution.workers or 1))}")
            clean = store.records[("clean",)]["accuracy"]
            target = reference.value(clean)
            say(f"fault-free quantized accuracy {100 * clean:.2f}%; reference "
                f"{reference.label} {100 * target:.2f}%")

            def on_result(records: list[dict]) -> None:
                store.append(records)
                bar.update(len(records))

            def point(ber: float, phase: str) -> dict:
                v = round(float(curve_obj.voltage(ber)), 6)
                n = 0
                while True:
                    n = min(n + maps, maps_max)
                    ex.run([(ber, k) for k in range(n) if not store.done((v, k, 0))],
                           on_result)
                    p = summarize_point(ber, v, [store.records[(v, k, 0)] for k in range(n)],
                                        target, margin, phase)
                    p["decided_by"] = decided_by(p, target - margin, n, maps, maps_max)
                    if p["decided_by"] != "more maps":
                        break
                say(f"BER {ber:.3g} (V {v:.4f}): accuracy {100 * p['accuracy_mean']:.2f}% "
                    f"± {100 * p['ci95']:.2f} over {n} maps -> "
                    f"{'pass' if p['passes'] else 'fail'} ({p['decided_by']})")
                return p

            points, last_pass, first_fail = scan(grid, point)
            points += bisect(last_pass, first_fail, bisect_steps, point)
            last_pass, first_fail = _bracket(points)
    finally:
        bar.close()
        store.close()
    computed = sum(1 for k in store.records if k != ("clean",)) - reused
    result = _result(last_pass, first_fail, points, clean, reference, margin, maps, grid,
                     bisect_steps, spec, curve, nominal)
    result["maps_max"] = maps_max
    result["maps_rule"] = maps_per_point_rule(maps, maps_max)
    result.update({
        "float_accuracy": store.records[("clean",)]["float_accuracy"],
        "model": str(model) if isinstance(model, (str, os.PathLike)) else arch,
        "data": str(dataset) if isinstance(dataset, (str, os.PathLike)) else ds.name,
        "n_samples": len(ds), "limit": limit, "quantization": config["quantization"],
        "weight_bytes": int(qm.image.size),
        "energy": mapping_energies(qm.image.size, image_layer_bytes(qm), dram_geometry,
                                   DramEnergy.from_part(part), result["voltage"],
                                   tolerable_ber=result["tolerable_ber"], curve=curve_obj,
                                   seed=int(seed), error_model=int(error_model)),
        **execution.describe(),
        "computed_maps": computed, "reused_maps": reused,
        "elapsed_s": round(time.perf_counter() - t_start, 3),
        "out": None if store.dir is None else str(store.dir),
    })
    if store.dir is not None:
        write_json(store.dir / "tolerance.json", result)
    return result


def _check_spec(spec: FaultSpec, grid: list[float]) -> tuple[BerCurve, float, DramGeometry]:
    """(curve, nominal voltage, DRAM geometry) of a search's fault spec, checked: a known source,
    error model and mapping, and every grid BER at or below nominal voltage on the curve."""
    if spec.source not in SOURCES:
        raise InputError(f"fault source must be one of {', '.join(SOURCES)}, got "
                         f"{spec.source!r}")
    curve_obj = dram_curve(spec.curve)
    nominal = dram_nominal_voltage(spec.curve)
    dram_geometry = spec.dram_geometry()
    if spec.source == "dram":
        from sramsim.memory.dram_errors import resolve_params
        resolve_params(dram_geometry, spec.error_model, {})
        spec.layout()                                 # a known mapping policy
    _check_voltages(grid, curve_obj, nominal, spec.curve)
    return curve_obj, nominal, dram_geometry


def scan(grid: list[float],
         point: Callable[[float, str], dict]) -> tuple[list[dict], dict | None, dict | None]:
    """Evaluate `point(ber, "grid")` from low to high BER until one fails: (points, last
    passing, first failing)."""
    points: list[dict] = []
    last_pass: dict | None = None
    first_fail: dict | None = None
    for ber in grid:
        p = point(ber, "grid")
        points.append(p)
        if not p["passes"]:
            first_fail = p
            break
        last_pass = p
    return points, last_pass, first_fail


def bisect(last_pass: dict | None, first_fail: dict | None, steps: int,
           point: Callable[[float, str], dict]) -> list[dict]:
    """Halve the bracket in log10(BER) `steps` times (or until its voltages are closer than
    VOLTAGE_RESOLUTION); the points evaluated."""
    points: list[dict] = []
    if last_pass is None or first_fail is None:
        return points
    lo, hi = last_pass, first_fail
    for _ in range(steps):
        if abs(lo["voltage"] - hi["voltage"]) < VOLTAGE_RESOLUTION:
            break
        p = point(float(10.0 ** ((math.log10(lo["ber"]) + math.log10(hi["ber"])) / 2)),
                  "bisect")
        points.append(p)
        lo, hi = (p, hi) if p["passes"] else (lo, p)
    return points


def _bracket(points: list[dict]) -> tuple[dict | None, dict | None]:
    """(highest BER that passed below the first failure, lowest BER that failed)."""
    fails = [p for p in points if not p["passes"]]
    first_fail = min(fails, key=lambda p: p["ber"]) if fails else None
    passes = [p for p in points if p["passes"]
              and (first_fail is None or p["ber"] < first_fail["ber"])]
    return (max(passes, key=lambda p: p["ber"]) if passes else None), first_fail


def _result(best: dict | None, first_fail: dict | None, points: list[dict], clean: float,
            reference: Reference, margin: float, maps: int, grid: list[float],
            bisect_steps: int, spec: FaultSpec, curve: str, nominal: float) -> dict:
    """The search's answer and its points, as JSON."""
    return {
        "tolerable_ber": None if best is None else best["ber"],
        "voltage": None if best is None else best["voltage"],
        "accuracy_mean": None if best is None else best["accuracy_mean"],
        "ci95": None if best is None else best["ci95"],
        "first_failing_ber": None if first_fail is None else first_fail["ber"],
        "first_failing": None if first_fail is None else
        {k: first_fail[k] for k in ("ber", "voltage", "accuracy_mean", "ci95", "n")},
        "next_grid_point": _next_grid_point(best, points),
        "bound": ("below the lowest BER scanned" if best is None else
                  "at the highest BER scanned (the model may tolerate more)" if first_fail is None
                  else None),
        "clean_accuracy": clean,
        "reference": reference.describe(clean),
        "margin": margin, "maps": maps,
        "grid": grid, "bisect_steps": bisect_steps,
        "points": sorted(points, key=lambda q: q["ber"]),
        "faults": {**spec.identity(), "maps_rule": _maps_rule(spec)},
        "curve": curve, "nominal_voltage": nominal, "voltage_unit": "V",
    }


def _next_grid_point(best: dict | None, points: list[dict]) -> dict | None:
    """The grid point just above the tolerable BER (the lowest grid BER above it; with no
    tolerable BER, the lowest grid point), as ber / voltage / accuracy_mean / ci95 / n / passes;
    None if the scan never went past it."""
    above = [p for p in points if p["phase"] == "grid" and (best is None or p["ber"] > best["ber"])]
    if not above:
        return None
    p = min(above, key=lambda q: q["ber"])
    return {k: p[k] for k in ("ber", "voltage", "accuracy_mean", "ci95", "n", "passes")}


def summarize_point(ber: float, voltage: float, records: list[dict], reference_accuracy: float,
                    margin: float, phase: str) -> dict:
    """One BER's row: mean / std / 95% interval of accuracy over its maps, and whether it passes
    (within `margin` of `reference_accuracy`, `operating_point.passes`)."""
    acc = [r["accuracy"] for r in records]
    mean, std = mean_std(acc)
    return {"ber": float(ber), "voltage": voltage, "phase": phase, "accuracy_mean": mean,
            "accuracy_std": std, "ci95": ci95_halfwidth(acc), "n": len(acc),
            "accuracy_drop": reference_accuracy - mean,
            "passes": passes(mean, reference_accuracy, margin),
            "image_ber_mean": float(np.mean([r["image_ber"] for r in records]))}


def decided_by(point: dict, threshold: float, n: int, maps: int, maps_max: int) -> str:
    """Why a point's pass/fail stands after `n` maps: "fixed" (K maps, no sequential rule),
    "interval" (the 95% interval of its mean lies on one side of `threshold`), "maps_max" (the
    cap reached with the threshold still inside the interval: decided by the mean), or
    "more maps" (add maps: the interval still contains the threshold)."""
    if maps_max == maps:
        return "fixed"
    lo, hi = point["accuracy_mean"] - point["ci95"], point["accuracy_mean"] + point["ci95"]
    if not lo <= threshold <= hi:
        return "interval"
    return "maps_max" if n >= maps_max else "more maps"


def maps_per_point_rule(maps: int, maps_max: int) -> str:
    """The maps-per-point rule in words (reports)."""
    if maps_max == maps:
        return f"{maps} maps at every point; pass = mean accuracy >= reference - margin"
    return (f"sequential: {maps} maps, then {maps} more at a time while the 95% Student-t "
            f"interval of the mean contains reference - margin, at most {maps_max}; pass = mean "
            "accuracy >= reference - margin")


def require_fits(n_bytes: int, geometry: DramGeometry, part: str) -> None:
    """Refuse weights larger than the DRAM part (naming both sizes)."""
    if n_bytes > geometry.capacity_bytes:
        raise InputError(f"the model's weights ({n_bytes} bytes) do not fit in DRAM part {part} "
                         f"({geometry.capacity_bytes} bytes)")


def mapping_energies(n_bytes: int, layer_bytes: Sequence[int], geometry: DramGeometry,
                     energy: DramEnergy, voltage: float | None,
                     tolerable_ber: float | None = None, curve: BerCurve | None = None,
                     seed: int = 0, error_model: int = 0,
                     policies: Iterable[str] | None = None) -> dict:
    """Per placement policy (`policies`, default all): access counts of one inference (every
    weight burst read once), its DRAM energy at nominal voltage and at `voltage` (J), and the
    saving 1 - E(V) / E(nominal).

    error-aware orders the subarrays by their *expected* BER at the tolerable BER on the chip
    `dram_chip(geometry, curve, voltage, seed, error_model)` (`placement.expected_partition_bers`:
    the chip's own line multipliers, no cell drawn: 4 Gb part, any BER, <= 0.14 s, 2-3.5 s for
    model 1's 8.4 M bitlines; drawing the chip took 16-28 s at 1e-2 and, at 1e-1, ~26 GiB, more
    than a 24 GiB machine: benchmarks/bench_eval_paths.py), equal expectations in drmap order
    (`placement.partition_order`), every layer given the tolerable BER; without a voltage it is
    left out (no operating point to order partitions at). The energy depends on the ranking only
    through the banks and rows the image's subarrays occupy."""
    from sramsim.inject import dram_mapping as P
    out: dict[str, dict] = {}
    for policy in P.POLICIES if policies is None else policies:
        if policy == "error-aware":
            if voltage is None:
                out[policy] = {"skipped": "no tolerable voltage: partitions have no BER to "
                                          "order by"}
                continue
            if curve is None:
                raise InputError("the error-aware placement needs the curve that gives the "
                                 "partitions' BER at the voltage")
            pber = P.expected_partition_bers(geometry, float(curve.ber(voltage)), seed,
                                             error_model, "subarray")
            placement = placed(n_bytes, geometry, policy, layer_bytes, voltage=voltage,
                               tolerance=tolerable_ber, partition_ber=pber)
        else:
            placement = placed(n_bytes, geometry, policy, layer_bytes)
        nominal = P.inference_energy(placement, energy, None)
        row: dict[str, Any] = {"counts": nominal["counts"], "energy_nominal_J": nominal["energy_j"],
               "warnings": list(placement.warnings)}
        if voltage is not None:
            low = P.inference_energy(placement, energy, voltage)["energy_j"]
            row.update({"voltage": voltage, "energy_J": low,
                        "saving": 1.0 - low / nominal["energy_j"]})
        out[policy] = row
    return out


def _maps_rule(spec: FaultSpec) -> str:
    if spec.source == "random":
        return (f"map k at BER b: the k-th pattern of RandomBitErrors(b, seed={spec.seed}) over "
                "the image bits (fixed_draws, purpose='test')")
    return (f"map k at BER b: dram_chip({spec.part}, {spec.curve}, v_floor=V(b), "
            f"seed={spec.seed}+k, error_model={spec.error_model}) read at V(b), weights placed by "
            f"{spec.mapping}")


def _positive_int(value: object, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_voltages(grid: list[float], curve: BerCurve, nominal: float, name: str) -> None:
    """Every grid BER must have a voltage on the curve at or below nominal."""
    v = float(curve.voltage(grid[0]))
    if v > nominal:
        raise InputError(f"BER {grid[0]:g} lies at {v:.4g} V on curve {name!r}, above its "
                         f"nominal {nominal:g} V: raise the lowest BER")
