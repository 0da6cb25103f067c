"""Tolerable bit error rate of a model: the largest BER (so the lowest supply voltage) at which its
mean accuracy over K fault maps stays within a margin of the fault-free quantized accuracy.

The search is a *measurement* on the evaluation split (test data): nothing is trained or selected
on it; it reports where the accuracy falls. How it runs:

1. the fault-free quantized accuracy `clean` (no faults);
2. a log-spaced BER grid (default 1e-6 .. 1e-1, one point per decade), from low to high BER; at each
   point K fault maps are evaluated and the point *passes* when mean accuracy >= clean - margin;
   the scan stops at the first failing point;
3. bisection in log10(BER) between the last passing and the first failing grid point
   (`bisect_steps` halvings, or until their voltages are closer than 10 uV); the tolerable BER is
   the highest BER that passed, its voltage the curve's inverse `curve.voltage(ber)`.

Fault maps (which maps, so a result can be reproduced and compared):
- source "random": map k at BER b is the k-th pattern of `RandomBitErrors(b, seed=seed)` over the
  image's bits (`sramsim.inject.draws.fixed_draws(..., purpose="test")`, the rule `fusion eval`
  and `sramsim vuln` use), so map k is the same random stream at every BER;
- source "dram": map k at BER b is the DRAM chip `dram_chip(geometry, curve, v_floor=V(b),
  seed=seed + k, error_model=error_model)` read at V(b) = curve.voltage(b), with the weights laid into
  the part by the placement policy `mapping` (`sramsim.inject.placement`), so the faults each
  weight sees are those of the cells it lands on.

Resume: points go to a sweep `ResultStore` (DIR/config.json + points.jsonl, written as each map
finishes). Its key is (voltage, map, 0), with the voltage V(b) of the point's BER on the curve
(rounded to 1 uV; the curve is one-to-one, and bisection stops before two points share a key), so
a re-run with the same model, data, source and seed reuses every finished map, whatever the
margin or K. The sweep's Workload/SweepWorker evaluate chips at a voltage through the plain
word-offset mapping, which fits neither random errors nor placed DRAM weights; the maps of one
point run on a small process pool of the same kind (spawned, thread-pinned, exiting with the
parent), or in this process with workers=1.

Each map is evaluated in place (`FaultyModel`: its faults, as image bit addresses, written into a
copy of the model and restored, O(faults)); accuracy and loss are bit-identical to evaluating the
weights dequantized from the whole faulty image (`ToleranceWorker.faulty_image`, kept as the
reference the tests compare with).

Energy: per placement policy, the DRAM energy of one inference (every weight read once from the
part, `placement.inference_energy`) at nominal voltage and at the tolerable voltage, and the saving.
error-aware's energy ranks subarrays by the error model's expected BER (`mapping_energies`).
"""
from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from sramsim.errors import InputError, check_ber
from sramsim.memory.dram import DEFAULT_PART
from sramsim.memory.dram_curves import DEFAULT_DRAM_CURVE, dram_curve, dram_nominal_voltage
from sramsim.stats import ci95_halfwidth, mean_std

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

    def dram_geometry(self):
        """The DRAM part's geometry (with the `geometry` overrides)."""
        from sramsim.memory.dram import DramGeometry
        return DramGeometry.from_part(self.part, **(self.geometry or {}))


# ------------------------------------------------------------------------------ one map

class ToleranceWorker:
    """Evaluates fault maps of a search; holds the model, data and quantized image.

    Each map is evaluated on the in-place path (`FaultyModel`: the map's faults written into a
    copy of the model, O(faults), and restored), never by dequantizing every weight again; its
    accuracy is bit-identical to evaluating `qm.dequantize(self.faulty_image(...))`."""

    def __init__(self, workload, spec: FaultSpec, layer_bytes: list[int] | None = None):
        from sramsim.inject.quantized_model import QuantizedModel
        self.workload, self.spec = workload, spec
        self.model = workload.load_model()
        self.dataset = workload.load_dataset()
        self.qm = QuantizedModel(self.model, workload.bits, workload.scheme, workload.clip,
                                 include_bias=workload.include_bias)
        self.curve = dram_curve(spec.curve)
        self._out = np.empty_like(self.qm.image)
        self._placement = None
        self._layer_bytes = layer_bytes
        self._faulty = None
        self._clean = None

    def _clean_eval(self) -> dict:
        """{"accuracy", "loss"} of the fault-free quantized weights (computed once)."""
        if self._clean is None:
            from sramsim.nn.evaluation import evaluate
            self._clean = evaluate(self.model, self.dataset, self.qm.clean_weights(),
                                   self.workload.batch_size)
        return self._clean

    def clean(self) -> dict:
        """The fault-free quantized evaluation, as a store record."""
        from sramsim.nn.evaluation import evaluate
        r = self._clean_eval()
        unquantized = evaluate(self.model, self.dataset, None, self.workload.batch_size)
        return {"clean": True, "accuracy": r["accuracy"], "loss": r["loss"],
                "float_accuracy": unquantized["accuracy"], "n_samples": len(self.dataset)}

    def run(self, ber: float, k: int) -> dict:
        """Map `k` at BER `ber`: its record (accuracy, loss, faults that hit the image)."""
        from sramsim.nn.evaluation import FaultyModel, evaluate
        t0 = time.perf_counter()
        voltage = float(self.curve.voltage(ber))
        faults = self.fault_map(ber, voltage, k)
        wrong = changed_bits(self.qm.image, faults)
        if self._faulty is None:
            self._faulty = FaultyModel(self.qm, self.model)
        t1 = time.perf_counter()
        with self._faulty.faults(faults) as (weights, changed):
            # no bit of the image reads back differently: the fault-free evaluation
            r = evaluate(self._faulty.model, self.dataset, weights, self.workload.batch_size) \
                if changed else self._clean_eval()
        return {"voltage": round(voltage, 6), "chip_index": int(k), "offset_index": 0,
                "ber": float(ber), "map": int(k), "wrong_bits": wrong,
                "image_ber": wrong / self.qm.n_bits, "accuracy": r["accuracy"],
                "loss": r["loss"], "n_samples": len(self.dataset), "t_faults": t1 - t0,
                "t_eval": time.perf_counter() - t1}

    def fault_map(self, ber: float, voltage: float, k: int):
        """Map k at BER `ber` (voltage `voltage` on the curve) as the `Faults` it puts on the
        image's bits (image bit addresses, ascending, distinct)."""
        from sramsim.inject import placement as P
        if self.spec.source == "random":
            return self._random_draw(ber, k)
        chip, placement = self._chip_and_placement(ber, voltage, k)
        return P.placed_faults(chip, voltage, placement)

    def faulty_image(self, ber: float, voltage: float, k: int) -> np.ndarray:
        """The image read back through map k at BER `ber` (voltage `voltage` on the curve): the
        functional path (whole image), the reference `run`'s in-place path is tested against."""
        from sramsim.inject import placement as P
        from sramsim.inject.draws import apply_numpy
        if self.spec.source == "random":
            return apply_numpy(self.qm.image, self._random_draw(ber, k), self._out)
        chip, placement = self._chip_and_placement(ber, voltage, k)
        return P.apply_placed(self.qm.image, chip, voltage, placement, out=self._out)

    def _random_draw(self, ber: float, k: int):
        from sramsim.inject.draws import fixed_draws
        draws = fixed_draws(self.qm.n_bits, k + 1, ber=ber, seed=self.spec.seed)
        return next(itertools.islice(draws, k, None))

    def _chip_and_placement(self, ber: float, voltage: float, k: int):
        """Map k's DRAM chip (drawn down to `voltage`) and the weights' placement in it."""
        from sramsim.memory.dram_errors import dram_chip
        geometry = self.spec.dram_geometry()
        chip = dram_chip(geometry, self.curve, v_floor=voltage, seed=self.spec.seed + int(k),
                         error_model=self.spec.error_model)
        if self.spec.mapping == "error-aware":
            return chip, placed(self.qm.image.size, geometry, "error-aware", self._layer_bytes,
                                chip, voltage, ber)
        if self._placement is None:
            self._placement = placed(self.qm.image.size, geometry, self.spec.mapping,
                                     self._layer_bytes)
        return chip, self._placement


def changed_bits(image: np.ndarray, faults) -> int:
    """Bits of `image` that `faults` (distinct image bit addresses) change: every flip, a stuck-at
    only where the stored bit differs from it. O(faults); equals popcount(image ^ faulty)."""
    from sramsim.memory.geometry import FLIP, STUCK1
    address = faults.address.astype(np.int64)
    stored = (image[address >> 3] >> (address & 7).astype(np.uint8)) & 1
    kind = faults.kind
    return int(np.count_nonzero((kind == FLIP) | ((kind != FLIP) & (stored != (kind == STUCK1)))))


def placed(n_bytes: int, geometry, policy: str, layer_bytes, chip=None, voltage=None,
           tolerance: float | None = None, partition_ber=None):
    """The weights' placement in the part. error-aware: every layer given the same tolerable BER
    `tolerance`, the part's subarrays ordered by `partition_ber` (default: `chip`'s empirical BER
    at `voltage`), so the image fills the most reliable subarrays first."""
    from sramsim.inject import placement as P
    if policy != "error-aware":
        return P.place(n_bytes, geometry, policy)
    if partition_ber is None:
        partition_ber = P.partition_bers(chip, voltage, "subarray")
    return P.place(n_bytes, geometry, policy, layer_bytes=list(layer_bytes),
                   partition_ber=partition_ber,
                   layer_tolerance=[tolerance] * len(layer_bytes), partition="subarray")


# ------------------------------------------------------------------------------ the pool

_WORKER: ToleranceWorker | None = None     # per-process state of a pool child, never the parent's


def _pool_init(workload, spec, layer_bytes, threads: int, parent: int) -> None:
    global _WORKER
    import signal
    from sramsim.analysis.executors import exit_with_parent, set_threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
    set_threads(threads)
    _WORKER = ToleranceWorker(workload, spec, layer_bytes)


def _pool_run(ber: float, k: int) -> dict:
    return _WORKER.run(ber, k)


class _Runner:
    """Runs maps here (workers=1) or on a spawned process pool; results in submission order."""

    def __init__(self, workload, spec, layer_bytes, workers: int, threads: int):
        self.args = (workload, spec, layer_bytes)
        self.workers, self.threads = workers, threads
        self._local = None
        self._pool = None

    def local(self) -> ToleranceWorker:
        """The in-process worker (clean evaluation, and every map when workers=1)."""
        if self._local is None:
            self._local = ToleranceWorker(*self.args)
        return self._local

    def run(self, jobs: list[tuple[float, int]], on_result) -> None:
        """Evaluate (ber, k) jobs; `on_result(record)` as each finishes."""
        if self.workers == 1 or len(jobs) == 1:
            from sramsim.analysis.executors import pinned_threads
            with pinned_threads(self.threads):
                for ber, k in jobs:
                    on_result(self.local().run(ber, k))
            return
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                initargs=(*self.args, self.threads, os.getpid()))
        from concurrent.futures import FIRST_COMPLETED, wait
        pending = {self._pool.submit(_pool_run, ber, k) for ber, k in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(fut.result())

    def close(self) -> None:
        """Shut the pool down (if one was started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# ------------------------------------------------------------------------------ the search

def search(model, dataset, *, margin: float = 0.01, maps: int = 5, low: float = DEFAULT_LOW,
           high: float = DEFAULT_HIGH, per_decade: int = 1, bisect_steps: int = 4,
           source: str = "random", error_model: int = 0, mapping: str = "drmap",
           curve: str = DEFAULT_DRAM_CURVE, part: str = DEFAULT_PART, geometry: dict | None = None,
           seed: int = 0, limit: int | None = None, bits: int | None = None,
           scheme: str | None = None, clip: float | None = None, batch_size: int = 1000,
           out_dir=None, workers: int = 1, threads: int = 1, log=None,
           progress: bool = False) -> dict:
    """Find the tolerable BER of `model` on `dataset` (see the module docstring); returns a dict
    with the tolerable BER, its voltage and interval, every evaluated point, and the DRAM energy
    per inference and saving for each placement policy.

    model/dataset: as `sramsim.analysis.sweep.run_sweep` (a checkpoint path or nn.Module; a
    dataset spec or Dataset). margin: allowed drop of mean accuracy, in (0, 1). maps: K fault maps
    per point. out_dir: a folder to store points in (resumable), or None to keep them in memory.
    log: called with a line of text per finished point (and, when the fault-free pass ran here,
    the expected time of the rest); progress: one step per fault map on stderr.
    """
    from sramsim.analysis import sweep as S
    from sramsim.analysis.dram_energy import DramEnergy
    t_start = time.perf_counter()
    margin = _check_margin(margin)
    maps = _positive_int(maps, "maps")
    bisect_steps = _positive_int(bisect_steps, "bisect_steps", minimum=0)
    workers = _positive_int(workers, "workers")
    threads = _positive_int(threads, "threads")
    if source not in SOURCES:
        raise InputError(f"fault source must be one of {', '.join(SOURCES)}, got {source!r}")
    grid = ber_grid(low, high, per_decade)
    curve_obj = dram_curve(curve)
    nominal = dram_nominal_voltage(curve)
    spec = FaultSpec(source, int(seed), curve, part, int(error_model), mapping,
                     dict(geometry) if geometry else None)
    energy = DramEnergy.from_part(part)
    from sramsim.memory.dram import DramGeometry
    dram_geometry = DramGeometry.from_part(part, **(geometry or {}))
    if source == "dram":
        from sramsim.inject.placement import POLICIES
        from sramsim.memory.dram_errors import resolve_params
        resolve_params(dram_geometry, error_model, {})
        if mapping not in POLICIES:
            raise InputError(f"mapping must be one of {', '.join(POLICIES)}, got {mapping!r}")
    _check_voltages(grid, curve_obj, nominal, curve)

    workload, model_obj, arch, ds = S._workload(model, dataset, [], 1, limit, bits, scheme, clip,
                                               batch_size)
    from sramsim.inject.quantized_model import QuantizedModel
    qm = QuantizedModel(model_obj, workload.bits, workload.scheme, workload.clip)
    from sramsim.inject.placement import image_layer_bytes
    layer_bytes = image_layer_bytes(qm)
    require_fits(qm.image.size, dram_geometry, part)

    config = {
        "kind": "tolerance",
        "model": {"arch": arch, "sha256": S.model_sha256(model_obj)},
        "data": {"name": ds.name, "n": len(ds), "sha256": S.tensor_sha256([ds.x, ds.y])},
        "quantization": {"bits": workload.bits, "scheme": workload.scheme, "clip": workload.clip,
                         "include_bias": workload.include_bias},
        "faults": spec.identity(),
    }
    store = _Store(out_dir, config)
    runner = _Runner(workload, spec, layer_bytes, workers, threads)
    say = log or (lambda text: None)
    from sramsim.progress import duration, progress as reporter
    most = (len(grid) + bisect_steps) * maps            # the grid may stop early: an upper bound
    bar = reporter(total=most, desc="tolerance", unit="map", enabled=progress)
    bar.update(min(store.reused, most))
    try:
        if not store.done(("clean",)):
            from sramsim.analysis.executors import pinned_threads
            t0 = time.perf_counter()
            with pinned_threads(threads):
                store.append([runner.local().clean()])
            each = time.perf_counter() - t0
            left = most - store.reused
            say(f"at most {left} fault maps of {len(ds)} images to evaluate, ~{each:.1f} s each "
                f"(as the fault-free pass): expect up to ~{duration(left * each / workers)}")
        clean = store.records[("clean",)]["accuracy"]
        say(f"fault-free quantized accuracy {100 * clean:.2f}%")

        def point(ber: float, phase: str) -> dict:
            v = round(float(curve_obj.voltage(ber)), 6)
            jobs = [(ber, k) for k in range(maps) if not store.done((v, k, 0))]
            runner.run(jobs, lambda rec: (store.append([rec]), bar.update(1)))
            p = summarize_point(ber, v, [store.records[(v, k, 0)] for k in range(maps)], clean,
                                margin, phase)
            say(f"BER {ber:.3g} (V {v:.4f}): accuracy {100 * p['accuracy_mean']:.2f}% "
                f"± {100 * p['ci95']:.2f} -> {'pass' if p['passes'] else 'fail'}")
            return p

        points, last_pass, first_fail = [], None, None
        for ber in grid:
            p = point(ber, "grid")
            points.append(p)
            if p["passes"]:
                last_pass = p
            else:
                first_fail = p
                break
        if last_pass is not None and first_fail is not None:
            lo, hi = last_pass, first_fail
            for _ in range(bisect_steps):
                if abs(lo["voltage"] - hi["voltage"]) < VOLTAGE_RESOLUTION:
                    break
                mid = float(10.0 ** ((math.log10(lo["ber"]) + math.log10(hi["ber"])) / 2))
                p = point(mid, "bisect")
                points.append(p)
                if p["passes"]:
                    lo = p
                else:
                    hi = p
            last_pass, first_fail = lo, hi
    finally:
        bar.close()
        runner.close()
        store.close()

    best = last_pass
    result = {
        "tolerable_ber": None if best is None else best["ber"],
        "voltage": None if best is None else best["voltage"],
        "accuracy_mean": None if best is None else best["accuracy_mean"],
        "ci95": None if best is None else best["ci95"],
        "first_failing_ber": None if first_fail is None else first_fail["ber"],
        "bound": ("below the lowest BER scanned" if best is None else
                  "at the highest BER scanned (the model may tolerate more)" if first_fail is None
                  else None),
        "clean_accuracy": clean,
        "float_accuracy": store.records[("clean",)]["float_accuracy"],
        "margin": margin, "maps": maps,
        "grid": grid, "bisect_steps": bisect_steps,
        "points": sorted(points, key=lambda q: q["ber"]),
        "faults": {**spec.identity(), "maps_rule": _maps_rule(spec)},
        "curve": curve, "nominal_voltage": nominal, "voltage_unit": "V",
        "model": str(model) if isinstance(model, (str, os.PathLike)) else arch,
        "data": str(dataset) if isinstance(dataset, (str, os.PathLike)) else ds.name,
        "n_samples": len(ds), "limit": limit, "quantization": config["quantization"],
        "weight_bytes": int(qm.image.size),
        "energy": mapping_energies(qm.image.size, layer_bytes, dram_geometry, energy,
                                   None if best is None else best["voltage"],
                                   tolerable_ber=None if best is None else best["ber"],
                                   curve=curve_obj, seed=int(seed),
                                   error_model=int(error_model)),
        "workers": workers, "threads": threads,
        "computed_maps": store.new, "reused_maps": store.reused,
        "elapsed_s": round(time.perf_counter() - t_start, 3),
        "out": None if store.dir is None else str(store.dir),
    }
    store.write_summary(result)
    return result


def summarize_point(ber: float, voltage: float, records: list[dict], clean: float, margin: float,
                    phase: str) -> dict:
    """One BER's row: mean / std / 95% interval of accuracy over its maps, and pass or fail."""
    acc = [r["accuracy"] for r in records]
    mean, std = mean_std(acc)
    return {"ber": float(ber), "voltage": voltage, "phase": phase, "accuracy_mean": mean,
            "accuracy_std": std, "ci95": ci95_halfwidth(acc), "n": len(acc),
            "accuracy_drop": clean - mean, "passes": bool(mean >= clean - margin - 1e-12),
            "image_ber_mean": float(np.mean([r["image_ber"] for r in records]))}


def require_fits(n_bytes: int, geometry, part: str) -> None:
    """Refuse weights larger than the DRAM part (naming both sizes)."""
    if n_bytes > geometry.capacity_bytes:
        raise InputError(f"the model's weights ({n_bytes} bytes) do not fit in DRAM part {part} "
                         f"({geometry.capacity_bytes} bytes)")


def mapping_energies(n_bytes: int, layer_bytes, geometry, energy, voltage: float | None,
                     tolerable_ber: float | None = None, curve=None, seed: int = 0,
                     error_model: int = 0, policies=None) -> dict:
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
    from sramsim.inject import placement as P
    out = {}
    for policy in P.POLICIES if policies is None else policies:
        if policy == "error-aware":
            if voltage is None:
                out[policy] = {"skipped": "no tolerable voltage: partitions have no BER to "
                                          "order by"}
                continue
            pber = P.expected_partition_bers(geometry, float(curve.ber(voltage)), seed,
                                             error_model, "subarray")
            placement = placed(n_bytes, geometry, policy, layer_bytes, voltage=voltage,
                               tolerance=tolerable_ber, partition_ber=pber)
        else:
            placement = placed(n_bytes, geometry, policy, layer_bytes)
        nominal = P.inference_energy(placement, energy, None)
        row = {"counts": nominal["counts"], "energy_nominal_J": nominal["energy_j"],
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


def _check_margin(margin) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise InputError(f"--margin must be a number in (0, 1), got {margin!r}") from None
    if not (math.isfinite(m) and 0.0 < m < 1.0):
        raise InputError(f"--margin must lie in (0, 1), got {margin!r}")
    return m


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_voltages(grid, curve, nominal: float, name: str) -> None:
    """Every grid BER must have a voltage on the curve at or below nominal."""
    v = float(curve.voltage(grid[0]))
    if v > nominal:
        raise InputError(f"BER {grid[0]:g} lies at {v:.4g} V on curve {name!r}, above its "
                         f"nominal {nominal:g} V: raise the lowest BER")


class _Store:
    """The sweep ResultStore when a folder is given, else the same interface in memory."""

    def __init__(self, out_dir, config: dict):
        from sramsim.analysis.store import ResultStore
        self._store = None if out_dir is None else ResultStore(out_dir, config)
        self.records = {} if self._store is None else self._store.records
        self.dir = None if self._store is None else self._store.dir
        self.reused = sum(1 for k in self.records if k != ("clean",))
        self.new = 0

    def done(self, key) -> bool:
        """Whether point `key` is finished."""
        return key in self.records

    def append(self, records: list[dict]) -> None:
        """Keep (and write, with a folder) finished records."""
        from sramsim.analysis.store import point_key
        if self._store is not None:
            self._store.append(records)
        else:
            for r in records:
                self.records[point_key(r)] = r
        self.new += sum(1 for r in records if not r.get("clean"))

    def close(self) -> None:
        """Close points.jsonl."""
        if self._store is not None:
            self._store.close()

    def write_summary(self, result: dict) -> None:
        """DIR/tolerance.json (atomically), with a folder."""
        if self.dir is None:
            return
        import json
        path = self.dir / "tolerance.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
