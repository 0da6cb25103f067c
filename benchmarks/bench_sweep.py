"""Sweep cost: faults + dequantization vs evaluation per point, and points/s for 1 vs 2 workers.

The default 8-bit CNN on the Fashion-MNIST test set (10,000 images), random finfet14 chips of
256 KB (1024 x 2048 bits). The model is trained briefly with `sramsim.nn.training.train_base`
(1 epoch on the first 6,000 training images; cached in benchmarks/.cache/) unless --model names a
checkpoint: its accuracy is irrelevant to the timings, but the fault effects are real.

(a) per point, from the sweep's own per-point timings: t_faults (masks built incrementally as the
    voltage drops + applying them to the image + dequantization) vs t_eval (10,000 test images,
    batch 1000, 1 torch thread); target t_faults <= 5% of t_eval.
    Points whose faults all miss the model's words reuse the fault-free evaluation; they are
    counted but left out of the ratio.
(b) a small grid (first 5,000 test images) with --workers 1 (in-process) and --workers 2 (spawned
    pool): wall time including worker start-up, and whether every point came out bit-identical.
Run: `.venv/bin/python benchmarks/bench_sweep.py` -> benchmarks/results/sweep.json (~4 min on 2
cores, once the model is cached).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, repo_path, write_result  # noqa: E402

from sramsim.analysis import sweep as S  # noqa: E402
from sramsim.analysis.executors import Execution  # noqa: E402

LIMIT_B = 5000
CACHE = Path(__file__).resolve().parent / ".cache"
VOLTAGES = [0.95, 0.9, 0.85, 0.8, 0.75]


def trained_model(path: Path) -> dict:
    """A quickly trained default CNN (reused from the cache when present)."""
    from sramsim.nn.training import TrainOptions, train_base
    t0 = time.perf_counter()
    meta = train_base("cnn", "fashion-mnist", path, TrainOptions(epochs=1), limit=6000,
                      progress=False, log=None)
    return {"checkpoint": repo_path(path), "trained": "1 epoch on the first 6000 Fashion-MNIST training "
            "images (sramsim.nn.training.train_base, 8-bit QAT)",
            "quantized_test_accuracy_on_6000": meta.get("test_accuracy"),
            "train_or_load_s": round(time.perf_counter() - t0, 1)}


def sweep(model: str, chips, voltages, out: Path, workers: int,
          limit: int | None = None) -> tuple[dict, float, list[dict]]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = S.run_sweep(model, "fashion-mnist", chips, voltages, out, S.SweepSettings(limit=limit),
                          Execution(workers=workers, progress=False))
    wall = time.perf_counter() - t0
    import json
    with open(out / "points.jsonl") as f:
        points = [json.loads(line) for line in f]
    return summary, wall, points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint to use instead of the quickly trained CNN")
    ap.add_argument("--chips", type=int, default=3, help="chips in (a) (default 3)")
    args = ap.parse_args()
    if args.model:
        model_info = {"checkpoint": repo_path(args.model), "trained": "given"}
    else:
        CACHE.mkdir(exist_ok=True)
        model_info = trained_model(CACHE / "bench_sweep_cnn.pt")
    model = str(ROOT / model_info["checkpoint"])
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        # (a) faults + dequantization vs evaluation, per point
        chips = S.random_chips(args.chips, "finfet14", seed=100)
        summary, wall_a, points = sweep(model, chips, VOLTAGES, tmp / "a", workers=1)
        grid = [p for p in points if not p.get("clean") and not p["unchanged"]]
        skipped = sum(1 for p in points if p.get("unchanged"))
        ratios = [p["t_faults"] / p["t_eval"] for p in grid]
        per_voltage = []
        for v in VOLTAGES:
            ps = [p for p in grid if p["voltage"] == v]
            if not ps:          # every chip's faults missed the model's words at this voltage
                per_voltage.append({"voltage": v, "points_evaluated": 0})
                continue
            per_voltage.append({
                "voltage": v, "ber": statistics.mean(p["ber"] for p in ps),
                "faults_mean": statistics.mean(p["faults"] for p in ps),
                "t_faults_median_ms": 1e3 * statistics.median(p["t_faults"] for p in ps),
                "t_eval_median_ms": 1e3 * statistics.median(p["t_eval"] for p in ps),
                "ratio_median": statistics.median(p["t_faults"] / p["t_eval"] for p in ps),
                "accuracy_mean": next(q["accuracy_mean"] for q in summary["points"]
                                      if q["voltage"] == v)})
        part_a = {
            "grid": f"{len(VOLTAGES)} voltages x {args.chips} chips x 1 offset, "
                    f"{summary['n_samples']} test images",
            "chip": "finfet14 random, 1024 x 2048 bits (256 KB), seeds 100..",
            "t_faults_median_ms": 1e3 * statistics.median(p["t_faults"] for p in grid),
            "t_eval_median_ms": 1e3 * statistics.median(p["t_eval"] for p in grid),
            "ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
            "points_evaluated": len(grid), "points_without_faults_in_the_model": skipped,
            "target_ratio": 0.05, "meets_target": max(ratios) <= 0.05,
            "clean_accuracy": summary.get("clean_accuracy"), "wall_s": round(wall_a, 2),
            "per_voltage": per_voltage,
        }
        print(f"(a) faults+dequant {part_a['t_faults_median_ms']:.2f} ms vs eval "
              f"{part_a['t_eval_median_ms']:.0f} ms per point: ratio median "
              f"{100 * part_a['ratio_median']:.2f}%, max {100 * part_a['ratio_max']:.2f}%")

        # (b) points per second, 1 vs 2 workers, on the same grid
        chips_b = S.random_chips(3, "finfet14", seed=200)
        volts_b = [0.9, 0.85, 0.8]
        runs, picks = {}, {}
        for w in (1, 2):
            s, wall, pts = sweep(model, chips_b, volts_b, tmp / f"b{w}", workers=w, limit=LIMIT_B)
            n = s["computed_points"] + 1          # + the fault-free point
            runs[f"workers_{w}"] = {"points": n, "wall_s": round(wall, 2),
                                    "points_per_s": n / wall,
                                    "eval_s_sum": round(sum(p["t_eval"] or 0 for p in pts), 2)}
            picks[w] = sorted((p.get("voltage", 0), p.get("chip_index", -1), p["accuracy"],
                               p["loss"]) for p in pts)
            print(f"(b) workers={w}: {n} points in {wall:.1f} s = {n / wall:.2f} points/s")
        part_b = {"grid": f"{len(volts_b)} voltages x 3 chips x 1 offset + fault-free point, "
                          f"first {LIMIT_B} test images, 1 torch thread per worker",
                  **runs,
                  "speedup": runs["workers_2"]["points_per_s"] / runs["workers_1"]["points_per_s"],
                  "identical_points": picks[1] == picks[2]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result("sweep.json", {
        "what": __doc__.splitlines()[0],
        "model": model_info,
        "faults_vs_eval": part_a, "throughput": part_b,
    })


if __name__ == "__main__":
    main()
