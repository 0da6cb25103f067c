"""In-place vs functional evaluation per fault map in `fusion eval` and `dram tolerance`, and the
error-aware energy ranking without a chip draw.

The default 8-bit CNN (benchmarks/bench_sweep.py's quickly trained one, cached in
benchmarks/.cache/), Fashion-MNIST test images (--limit, default all 10,000), batch 1000, one
torch/numba thread. Each comparison runs both paths in this process on the same maps and checks
the results are equal (they must be: the weights are bit-identical).

(a) fusion eval (`fusion.evaluation.evaluate`, no generator): random errors at BER 1e-2 and the
    shipped finfet14 chips at 0.8; wall time per map = (evaluate - its clean pass) / maps, old =
    the functional path (`inplace.inplace_fits` patched to False: every weight dequantized
    per map), new = in place; after a warm-up of both, the faster of two alternating runs each. Also the per-map weight setup alone (median): old
    `dequantize_stack(ws.images([draw]))`, new entering and leaving `Evaluator.faults(draw)`.
(b) dram tolerance (`ToleranceWorker`), default 4 Gb LPDDR3 part, drmap, EDEN model 0, and random
    errors: per map, fault map (chip draw + its placed faults, shared) / weight setup /
    evaluation; old = `dequantize(faulty image)` + evaluate, new = what `run` does (`Evaluator`).
(c) the per-map weight setup alone on larger untrained models (resnet20, resnet18), random errors.
(d) `mapping_energies` error-aware on the 4 Gb part: old (whole chip drawn at the tolerable BER,
    ranked by `partition_bers`) vs new (`expected_partition_bers`), time and whether the access
    counts agree, for the CNN's image and a 20 MB one; the old path up to --old-up-to BER (a chip
    at 1e-1 is ~430 M faults).
Finished pieces are cached in benchmarks/.cache/eval_paths/ (delete it to re-measure).
Run: `OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval_paths.py`
-> benchmarks/results/eval_paths.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sweep import CACHE, trained_model  # noqa: E402
from common import git_state, median_time, write_result  # noqa: E402
from sramsim.memory.shipped import SHIPPED_DIR  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

PIECES = CACHE / "eval_paths"


def cached(name: str, fn) -> dict:
    """fn()'s result, kept as PIECES/name.json so a re-run after a crash skips it."""
    path = PIECES / f"{name}.json"
    if path.exists():
        print(f"{name}: cached")
        return json.loads(path.read_text())
    r = {**fn(), "commit": git_state()["commit"]}     # a cached piece may predate the run
    PIECES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1) + "\n")
    print(f"{name}: {json.dumps(r)[:300]}")
    return r


@contextmanager
def functional_path():
    """The old evaluation: no model is written in place, every map dequantized whole."""
    from sramsim.inject import inplace
    with mock.patch.object(inplace, "inplace_fits", lambda qm, m: False):
        yield


def fusion_piece(checkpoint: str, limit: int, case: str, maps: int) -> dict:
    from fusion import evaluation as FE
    from sramsim import Chip, QuantizedModel
    from sramsim.inject.weight_sets import WeightSets, dequantize_stack
    from sramsim.nn.data import load_dataset
    from sramsim.nn.evaluation import Evaluator, accuracy
    from sramsim.nn.models import load_checkpoint
    model, meta = load_checkpoint(checkpoint)
    qm = QuantizedModel(model, meta.get("bits") or 8, meta.get("scheme") or "symmetric")
    data = load_dataset("fashion-mnist", "test", limit)
    if case == "random":
        faults = FE.FaultSpec(ber=1e-2)
    else:
        chips = [Chip.load(p) for p in sorted(SHIPPED_DIR.glob("finfet14-*.h5"))]
        faults = FE.FaultSpec(voltage=0.8, chips=chips)
    t0 = time.perf_counter()
    accuracy(qm.model, data, qm.clean_weights(), 1000)
    t_clean = time.perf_counter() - t0
    out = {"case": case, "faults": faults.describe(), "maps": maps, "samples": len(data),
           "weights": qm.n_codes, "image_bytes": int(qm.image.size), "t_clean_pass_s": t_clean}
    reports, walls = {}, {"old": [], "new": []}
    for name in ("old", "new"):                  # warm-up: JIT, allocator, first-call costs
        with functional_path() if name == "old" else nullcontext():
            FE.evaluate(qm, data, faults, n_models=1, batch_size=1000)
    for _ in range(2):                           # alternate, keep each path's faster run
        for name in ("old", "new"):
            with functional_path() if name == "old" else nullcontext():
                t0 = time.perf_counter()
                reports[name] = FE.evaluate(qm, data, faults, n_models=maps, batch_size=1000)
                walls[name].append(time.perf_counter() - t0)
    for name in ("old", "new"):
        out[f"{name}_wall_s"] = min(walls[name])
        out[f"{name}_per_map_s"] = (min(walls[name]) - t_clean) / maps
    out["equal_reports"] = reports["old"] == reports["new"]
    out["pa_mean"] = reports["new"]["pa_mean"]
    out["ca"] = reports["new"]["ca"]
    draw = faults.eval_draws(qm.n_bits, 1)[0]
    ws = WeightSets(qm, torch.device("cpu"))
    out["old_setup_s"] = median_time(lambda: dequantize_stack(qm, ws.images([draw])), 5)
    fm = Evaluator(qm)

    def enter_leave():
        with fm.faults(draw):
            pass
    out["new_setup_s"] = median_time(enter_leave, 5)
    out["speedup_per_map"] = out["old_per_map_s"] / out["new_per_map_s"]
    out["speedup_setup"] = out["old_setup_s"] / out["new_setup_s"]
    return out


def tolerance_piece(checkpoint: str, limit: int, source: str, ber: float, maps: int) -> dict:
    from sramsim.analysis import tolerance as T
    from sramsim.analysis.sweep import SweepSettings, load_workload
    from sramsim.inject.mapping import apply_bit_faults
    from sramsim.nn.evaluation import Evaluator, evaluate
    workload = load_workload(checkpoint, "fashion-mnist", [], SweepSettings(limit=limit, batch_size=1000))[0]
    spec = T.FaultSpec(source, seed=0, error_model=0, mapping="drmap")
    w = T.ToleranceWorker(workload, spec)
    v = float(w.curve.voltage(ber))
    rows = []
    fm = Evaluator(w.qm)
    evaluate(w.model, w.dataset, w.qm.clean_weights(), 1000)          # warm-up
    for k in range(maps):
        t0 = time.perf_counter()
        faults = w.fault_map(ber, v, k)          # chip draw + placed faults: both paths need it
        t_map = time.perf_counter() - t0
        t0 = time.perf_counter()
        image = apply_bit_faults(w.qm.image, faults, np.empty_like(w.qm.image), checked=True)
        weights = w.qm.dequantize(image)
        t_old_setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        old = evaluate(w.model, w.dataset, weights, 1000)
        t_old_eval = time.perf_counter() - t0
        del weights
        t0 = time.perf_counter()
        with fm.faults(faults) as run:                       # what ToleranceWorker.run does
            t_new_setup = time.perf_counter() - t0
            new = run.evaluate(w.dataset, 1000)
        t_new = time.perf_counter() - t0

        def enter_leave():
            with fm.faults(faults):
                pass
        rows.append({"map": k, "faults_on_image": int(len(faults)), "t_fault_map_s": t_map,
                     "old_setup_s": t_old_setup, "old_eval_s": t_old_eval,
                     "old_per_map_s": t_map + t_old_setup + t_old_eval,
                     "new_per_map_s": t_map + t_new, "new_setup_s": t_new_setup,
                     "new_setup_median_s": median_time(enter_leave, 3),
                     "equal": (old["accuracy"], old["loss"]) == (new["accuracy"], new["loss"]),
                     "accuracy": new["accuracy"]})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("t_fault_map_s", "old_setup_s", "new_setup_s", "old_eval_s", "old_per_map_s",
             "new_per_map_s")}
    return {"source": source, "ber": ber, "voltage": v, "maps": maps, "samples": len(w.dataset),
            "weights": w.qm.n_codes, "part": spec.part if source == "dram" else None,
            "mapping": "drmap" if source == "dram" else None, "per_map": rows, "mean": mean,
            "all_equal": all(r["equal"] for r in rows),
            "speedup_per_map": mean["old_per_map_s"] / mean["new_per_map_s"],
            "speedup_setup": mean["old_setup_s"] / mean["new_setup_s"]}


def setup_piece(arch: str, ber: float) -> dict:
    """Per-map weight setup alone on a larger (untrained) model: old = faulty image + dequantize
    every weight, new = write the map's faults in place and restore them (median of 5)."""
    from sramsim import QuantizedModel, RandomBitErrors
    from sramsim.inject.mapping import apply_bit_faults
    from sramsim.nn.evaluation import Evaluator
    from sramsim.nn.models import build
    torch.manual_seed(0)
    qm = QuantizedModel(build(arch, 3, 10).eval(), 8)
    faults = RandomBitErrors(ber, seed=0).draw(qm.n_bits)
    buf = np.empty_like(qm.image)
    old = median_time(lambda: qm.dequantize(apply_bit_faults(qm.image, faults, buf,
                                                             checked=True)), 5)
    fm = Evaluator(qm)

    def enter_leave():
        with fm.faults(faults):
            pass
    new = median_time(enter_leave, 5)
    return {"arch": arch, "weights": qm.n_codes, "ber": ber, "faults": int(len(faults)),
            "old_setup_s": old, "new_setup_s": new, "speedup_setup": old / new}


def energy_piece(ber: float, model: int, old: bool, n_bytes: int) -> dict:
    from sramsim.analysis import tolerance as T
    from sramsim.analysis.dram_energy import DramEnergy
    from sramsim.errors import InputError
    from sramsim.inject import dram_mapping as P
    from sramsim.memory.dram import DramGeometry
    from sramsim.memory.dram_curves import dram_curve
    from sramsim.memory.dram_errors import dram_chip
    geometry, energy, curve = DramGeometry.from_part(), DramEnergy.from_part(), dram_curve()
    v = round(float(curve.voltage(ber)), 6)
    layers = [n_bytes // 4, n_bytes - n_bytes // 4]
    t0 = time.perf_counter()
    new = T.mapping_energies(n_bytes, layers, geometry, energy, v, tolerable_ber=ber, curve=curve,
                             seed=0, error_model=model, policies=["error-aware"])["error-aware"]
    out = {"ber": ber, "error_model": model, "weight_bytes": n_bytes,
           "new_s": time.perf_counter() - t0, "new_counts": new["counts"],
           "new_energy_J": new["energy_J"]}
    if not old:
        return out
    t0 = time.perf_counter()
    try:
        chip = dram_chip(geometry, curve, v_floor=v, seed=0, error_model=model)
    except InputError as exc:
        return {**out, "old": f"refused: {exc}"}
    pber = P.partition_bers(chip, v, "subarray")
    del chip
    p = P.place(n_bytes, geometry, "error-aware", layer_bytes=layers, partition_ber=pber,
                layer_tolerance=[ber] * 2, partition="subarray")
    e = P.inference_energy(p, energy, v)
    return {**out, "old_s": time.perf_counter() - t0, "old_counts": e["counts"],
            "old_energy_J": e["energy_j"], "counts_equal": e["counts"] == new["counts"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=10_000, help="test images (default 10000)")
    ap.add_argument("--maps", type=int, default=3, help="fault maps per case (default 3)")
    ap.add_argument("--old-up-to", type=float, default=1e-2,
                    help="highest BER the old whole-chip ranking is timed at (default 1e-2)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    info = trained_model(CACHE / "bench_sweep_cnn.pt")
    ckpt = str(CACHE / "bench_sweep_cnn.pt")
    tag = f"l{args.limit}-m{args.maps}"
    fusion = [cached(f"fusion-{c}-{tag}", lambda c=c: fusion_piece(ckpt, args.limit, c, args.maps))
              for c in ("random", "chips")]
    tolerance = [cached(f"tolerance-{s}-{b:g}-{tag}",
                        lambda s=s, b=b: tolerance_piece(ckpt, args.limit, s, b, args.maps))
                 for s, b in (("random", 1e-3), ("dram", 1e-3), ("dram", 1e-2))]
    setup = [cached(f"setup-{a}-{b:g}", lambda a=a, b=b: setup_piece(a, b))
             for a in ("resnet20", "resnet18") for b in (1e-3, 1e-2)]
    # the CNN's image (one subarray) and a 20 MB one (10 of the part's 2 MB subarrays)
    energy = [cached(f"energy-{b:g}-m{m}-{n}",
                     lambda b=b, m=m, n=n: energy_piece(b, m, b <= args.old_up_to, n))
              for n in (tolerance[0]["weights"], 20_000_000)
              for b in (1e-3, 1e-2, 1e-1) for m in (0, 1, 2, 3)]
    write_result("eval_paths.json", {"model": info, "limit": args.limit, "maps": args.maps,
                                     "threads": 1, "fusion_eval": fusion,
                                     "dram_tolerance": tolerance, "setup_only": setup,
                                     "error_aware_energy": energy})


if __name__ == "__main__":
    main()
