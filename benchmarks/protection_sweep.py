"""The protections that need no training, side by side on the shipped chips: none, ECC (SECDED
(72,64) and (13,8), `keep` policy) and fault-aware bit placement (shuffle, skip-faulty-words).

One `run_sweep` per method over the five shipped profiles (`shipped:finfet14-8192x128-s*`)
and the same voltages, same model, same first --limit test images. Per method and voltage: mean
accuracy with its 95% interval over the chips and the weight-memory energy saving per read as the
sweep computes it (ECC: n/k cells read plus the illustrative decoder energy; bit placement: its
remap table is NOT charged -- see README "Fault-aware bit placement"). Per method, the lowest
swept voltage whose mean accuracy stays within 1 point of (a) the method's own fault-free accuracy
and (b) the unprotected fault-free accuracy, and the saving there. This is a measurement over a
fixed grid, not a choice of recipe: nothing is tuned on these numbers.

The model: benchmarks/.cache/bench_sweep_cnn.pt (dram_energy.py's / bench_sweep.py's CNN: 1 epoch
on the first 6,000 training images), trained now if absent. Sweep folders live in
benchmarks/.cache/protection/ (a re-run resumes). Run:
`.venv/bin/python benchmarks/protection_sweep.py` -> benchmarks/results/protection.json + png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, repo_path, write_result  # noqa: E402

from sramsim.analysis import operating_point  # noqa: E402
from sramsim.analysis.executors import Execution  # noqa: E402
from sramsim.analysis.sweep import SweepSettings  # noqa: E402
from sramsim.inject.layout import MemoryLayout  # noqa: E402
from sramsim.memory.shipped import SHIPPED_DIR  # noqa: E402
from dram_energy import DEFAULT_CHECKPOINT, model_info  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "protection"
METHODS = {                      # name -> MemoryLayout keyword arguments
    "none": {},
    "secded72": {"ecc": "secded72"},
    "secded13": {"ecc": "secded13"},
    "shuffle": {"bit_placement": "shuffle"},
    "skip-faulty-words": {"bit_placement": "skip-faulty-words"},
}
MARGIN = 0.01


def lowest_within(points: list[dict], reference: float) -> dict | None:
    """The lowest voltage of a descending sweep whose mean accuracy, and that of every voltage
    above it, stays within MARGIN of `reference` (`sramsim.analysis.operating_point`); None if
    the highest one already fails."""
    best = operating_point.lowest_within(points, reference, MARGIN)
    if best is None:
        return None
    return {"voltage": best["voltage"], "ber": best["ber"], "accuracy_mean": best["accuracy_mean"],
            "saving": best["saving"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voltages", default="0.875:0.775:-0.025")
    ap.add_argument("--limit", type=int, default=2000, help="test images")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    from sramsim.analysis.sweep import run_sweep
    profiles = sorted(str(p) for p in SHIPPED_DIR.glob("finfet14-8192x128-s*.h5"))
    model = model_info(DEFAULT_CHECKPOINT)
    rows, t0 = {}, time.perf_counter()
    from sramsim.analysis.sweep import parse_voltages
    from sramsim.errors import InputError
    for name in args.methods.split(","):
        t = time.perf_counter()
        voltages, refused = sorted(parse_voltages(args.voltages), reverse=True), []
        while True:     # skip-faulty-words refuses voltages where the good words are too few
            try:
                s = run_sweep(str(DEFAULT_CHECKPOINT), "fashion-mnist", profiles, voltages,
                              CACHE / name, SweepSettings(limit=args.limit,
                                                          layout=MemoryLayout(**METHODS[name])),
                              Execution(progress=False))
                break
            except InputError as exc:
                if name != "skip-faulty-words" or len(voltages) < 2:
                    raise
                refused.append({"voltage": voltages.pop(), "refused": str(exc)})
        points = [{k: p[k] for k in ("voltage", "ber", "accuracy_mean", "ci95", "n", "saving")}
                  for p in s["points"]]
        rows[name] = {"clean_accuracy": s["clean_accuracy"], "points": points,
                      "refused_voltages": refused,
                      "seconds_this_run": round(time.perf_counter() - t, 1),
                      "computed_points": s["computed_points"]}
        print(f"{name}: clean {s['clean_accuracy']:.4f}; " + ", ".join(
            f"{p['voltage']:g} V {p['accuracy_mean']:.4f} ({100 * p['saving']:.1f}%)"
            for p in points), flush=True)
    unprotected = rows["none"]["clean_accuracy"] if "none" in rows else None
    for r in rows.values():
        r["lowest_within_own_clean"] = lowest_within(r["points"], r["clean_accuracy"])
        r["lowest_within_unprotected_clean"] = (None if unprotected is None else
                                                lowest_within(r["points"], unprotected))
    result = {"what": __doc__.splitlines()[0], "model": model,
              "profiles": [repo_path(p) for p in profiles], "n_test_images": args.limit,
              "voltages": args.voltages, "margin": MARGIN, "methods": rows,
              "not_charged": {"shuffle": "3-bit rotation per 8-bit word (remap table)",
                              "skip-faulty-words": "good-word bitmap and address translation"},
              "total_wall_s": round(time.perf_counter() - t0, 1)}
    plot(rows, RESULTS / "protection.png")
    write_result("protection.json", result)


def accuracy_vs_voltage(ax, rows: dict) -> None:
    """One line per method: mean accuracy over the chips with its 95% interval."""
    for name, r in rows.items():
        pts = sorted(r["points"], key=lambda p: p["voltage"])
        ax.errorbar([p["voltage"] for p in pts], [100 * p["accuracy_mean"] for p in pts],
                    yerr=[100 * p["ci95"] for p in pts], marker="o", ms=3, capsize=2, label=name)
    ax.set_xlabel("supply voltage (V / V_nom, finfet14)")
    ax.set_ylabel("accuracy % (mean ± 95% CI over 5 chips)")
    ax.legend(fontsize=8)


def plot(rows: dict, path: Path) -> None:
    """Accuracy vs voltage per method (95% CI over chips) and saving at the lowest voltage within
    1 point of the method's own clean accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    accuracy_vs_voltage(ax, rows)
    names = list(rows)
    savings = [100 * (r["lowest_within_own_clean"] or {"saving": 0})["saving"] for r in rows.values()]
    bx.bar(names, savings)
    bx.set_ylabel("saving at the lowest voltage within 1 point (%)")
    bx.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
