"""DRAM energy per inference of the default CNN under each weight placement, at nominal voltage and
at its tolerable voltage, and the speed of drawing a DRAM chip map for the whole 4 Gb part.

(a) tolerable BER: `sramsim.analysis.tolerance.search` on the model (margin 1 point, K maps per
    BER, random bit errors by default or `--error-model M` DRAM chips, first --limit test images),
    then the DRAM energy of one inference (every weight burst read once) per mapping policy at
    nominal VDD2 (1.2 V) and at the tolerable voltage on the default curve "lpddr3-illustrative"
    (an illustrative curve, not a measurement: the voltage, so the saving, follow from it).
(b) speed: `dram_chip` of the default part MICRON_4Gb_LPDDR3-1600_32bit_A (2^32 bits) with EDEN
    model 0 down to the voltage of BER 1e-3 (~4.3 M faults): median wall time of 3 draws and the
    peak memory traced while drawing (tracemalloc; numpy's allocations are traced), per fault.

The model: --checkpoint, else benchmarks/.cache/bench_sweep_cnn.pt (the quickly trained CNN of
bench_sweep.py: 1 epoch on the first 6,000 training images), trained now if absent (the JSON says
which). Run: `.venv/bin/python benchmarks/dram_energy.py` -> benchmarks/results/dram_energy.json
and dram_energy.png.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, repo_path, write_result  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
DEFAULT_CHECKPOINT = CACHE / "bench_sweep_cnn.pt"


def model_info(path: Path) -> dict:
    """Where the model came from (trained now if the checkpoint is absent)."""
    if path.exists():
        return {"checkpoint": repo_path(path), "trained_now": False,
                "trained": "given" if path != DEFAULT_CHECKPOINT else
                "bench_sweep.py's CNN: 1 epoch on the first 6000 Fashion-MNIST training images"}
    from sramsim.nn.training import TrainOptions, train_base
    CACHE.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    train_base("cnn", "fashion-mnist", path, TrainOptions(epochs=1), limit=6000, progress=False,
               log=None)
    return {"checkpoint": repo_path(path), "trained_now": True,
            "trained": "1 epoch on the first 6000 Fashion-MNIST training images (train_base, "
                       "8-bit QAT), trained by this run",
            "train_s": round(time.perf_counter() - t0, 1)}


def chip_speed(repeat: int = 3) -> dict:
    """Time and traced peak memory of drawing the full default part at BER 1e-3."""
    from sramsim.memory.dram import DramGeometry
    from sramsim.memory.dram_curves import dram_curve
    from sramsim.memory.dram_errors import dram_chip
    geometry, curve = DramGeometry.from_part(), dram_curve()
    v = float(curve.voltage(1e-3))
    dram_chip(geometry, curve, v_floor=v, seed=99, error_model=0)          # warm-up (numba, caches)
    times, n = [], None
    for s in range(repeat):
        t0 = time.perf_counter()
        chip = dram_chip(geometry, curve, v_floor=v, seed=s, error_model=0)
        times.append(time.perf_counter() - t0)
        n = len(chip)
        del chip
    tracemalloc.start()
    chip = dram_chip(geometry, curve, v_floor=v, seed=0, error_model=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stored = chip.address.nbytes + chip.vfail.nbytes + chip.kind.nbytes
    return {"part_bits": geometry.capacity_bits, "ber": 1e-3, "v_floor_V": v, "error_model": 0,
            "faults": n, "times_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3), "target_s": 2.0,
            "meets_target": statistics.median(times) <= 2.0,
            "peak_traced_bytes": peak, "peak_bytes_per_fault": round(peak / len(chip), 1),
            "stored_bytes_per_fault": round(stored / len(chip), 1),
            "dense_bitmap_bytes_would_be": geometry.capacity_bits // 8}


def plot(result: dict, path: Path) -> None:
    """Energy per inference per mapping (nominal vs tolerable V) and accuracy vs BER."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tol = result["tolerance"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    pts = tol["points"]
    ax1.errorbar([p["ber"] for p in pts], [100 * p["accuracy_mean"] for p in pts],
                 yerr=[100 * p["ci95"] for p in pts], fmt="o", capsize=3)
    ax1.axhline(100 * (tol["clean_accuracy"] - tol["margin"]), color="grey", ls="--",
                label="fault-free - margin")
    if tol["tolerable_ber"]:
        ax1.axvline(tol["tolerable_ber"], color="green", ls=":", label="tolerable BER")
    ax1.set_xscale("log")
    ax1.set_xlabel("bit error rate")
    ax1.set_ylabel(f"accuracy % (mean ± 95% CI, {tol['maps']} maps)")
    ax1.legend()
    rows = {k: v for k, v in result["energy_per_inference"].items() if "skipped" not in v}
    names = list(rows)
    x = range(len(names))
    ax2.bar([i - 0.2 for i in x], [1e6 * rows[n]["energy_nominal_J"] for n in names], 0.4,
            label="nominal 1.2 V")
    if tol["voltage"]:
        ax2.bar([i + 0.2 for i in x], [1e6 * rows[n]["energy_J"] for n in names], 0.4,
                label=f"tolerable {tol['voltage']:.3f} V")
    ax2.set_xticks(list(x), names)
    ax2.set_ylabel("DRAM energy per inference (uJ)")
    ax2.legend()
    fig.suptitle(f"{result['model']['checkpoint']}: curve {tol['curve']} (illustrative)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model checkpoint")
    ap.add_argument("--maps", type=int, default=5, help="fault maps per BER (default 5)")
    ap.add_argument("--limit", type=int, default=2000, help="test images (default 2000)")
    ap.add_argument("--error-model", type=int, default=None,
                    help="DRAM chips from EDEN error model 0-3 instead of random bit errors")
    args = ap.parse_args()
    from sramsim.analysis.executors import pinned_threads
    from sramsim.analysis.tolerance import search
    info = model_info(Path(args.checkpoint).resolve())
    t0 = time.perf_counter()
    with pinned_threads(1):
        tol = search(str(ROOT / info["checkpoint"]), "fashion-mnist", margin=0.01, maps=args.maps,
                     limit=args.limit,
                     source="random" if args.error_model is None else "dram",
                     error_model=args.error_model or 0, log=print)
    tol["model"] = info["checkpoint"]
    tol_s = time.perf_counter() - t0
    e = tol.pop("energy")
    naive, drmap = e["naive"]["energy_nominal_J"], e["drmap"]["energy_nominal_J"]
    comparison = {
        "drmap_vs_naive_nominal": drmap / naive - 1.0,
        "drmap_less_than_naive": drmap < naive,
        "why": {p: {"hit": e[p]["counts"]["hit"], "miss": e[p]["counts"]["miss"],
                    "conflict": e[p]["counts"]["conflict"]} for p in ("naive", "drmap")},
    }
    speed = chip_speed()
    print(f"tolerable BER {tol['tolerable_ber']}, V {tol['voltage']}; drmap/naive - 1 = "
          f"{comparison['drmap_vs_naive_nominal']:.4%}; chip map {speed['median_s']} s, "
          f"{speed['peak_bytes_per_fault']} B/fault peak")
    result = {
        "what": __doc__.splitlines()[0],
        "model": info,
        "tolerance": tol,
        "tolerance_s": round(tol_s, 1),
        "energy_per_inference": e,
        "drmap_vs_naive": comparison,
        "chip_map_speed": speed,
    }
    plot(result, RESULTS / "dram_energy.png")
    write_result("dram_energy.json", result)


if __name__ == "__main__":
    main()
