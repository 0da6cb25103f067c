"""The high-BER hardened models of `stutz_highber.py` on the shipped chips: the voltage each buys.

`stutz_highber.py` trains the default CNN four ways (Normal; RQuant + GroupNorm; Clipping;
RandBET) on the first 50,000 Fashion-MNIST training images, 5 epochs each, with w_max and the
RandBET rate chosen on the last 10,000 training images and validation maps, and scores them on
random bit errors. This script puts the same four checkpoints on the five shipped finfet14 chips
(`profiles/finfet14-8192x128-s*.h5`, never used by any choice) over a fixed voltage grid, all
10,000 test images, and reads, per model, the lowest voltage whose mean accuracy stays within
1 point of (a) its own fault-free accuracy and (b) the fault-free accuracy of the Normal model,
with the weight-memory saving there ((V/Vnom)^2 per read; none of these models adds reads).
It complements `equal_energy.py`, whose hardened models had a far smaller training budget.

Run after stutz_highber.py: `.venv/bin/python benchmarks/stutz_on_chips.py`
  -> benchmarks/results/stutz_chips.json + png (sweep folders in benchmarks/.cache/stutz_chips/)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, repo_path, write_result  # noqa: E402
from sramsim.memory.shipped import SHIPPED_DIR  # noqa: E402
from protection_sweep import MARGIN, accuracy_vs_voltage, lowest_within  # noqa: E402

STUTZ = Path(__file__).resolve().parent / ".cache" / "stutz"
CACHE = Path(__file__).resolve().parent / ".cache" / "stutz_chips"
MODELS = {"Normal": "normal.pt", "Normal-RQ-GN": "normal-rq-gn.pt",
          "Clipping": "clipping.pt", "RandBET": "randbet.pt"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voltages", default="0.9,0.875,0.85,0.825,0.8,0.7875,0.775,0.7625,0.75")
    ap.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    args = ap.parse_args()
    from sramsim.analysis.executors import Execution
    from sramsim.analysis.sweep import SweepSettings, parse_voltages, run_sweep
    from sramsim.nn.models import load_checkpoint
    missing = [f for f in MODELS.values() if not (STUTZ / f).is_file()]
    if missing:
        sys.exit(f"missing {', '.join(missing)} in {STUTZ}: run benchmarks/stutz_highber.py first")
    profiles = sorted(str(p) for p in SHIPPED_DIR.glob("finfet14-8192x128-s*.h5"))
    voltages = sorted(parse_voltages(args.voltages), reverse=True)
    rows, t0 = {}, time.perf_counter()
    for name, file in MODELS.items():
        t = time.perf_counter()
        meta = load_checkpoint(STUTZ / file)[1]
        s = run_sweep(str(STUTZ / file), "fashion-mnist", profiles, voltages, CACHE / name,
                      SweepSettings(limit=args.limit), Execution(progress=False))
        points = [{k: p[k] for k in ("voltage", "ber", "accuracy_mean", "ci95", "n", "saving")}
                  for p in s["points"]]
        rows[name] = {"checkpoint": repo_path(STUTZ / file), "clean_accuracy": s["clean_accuracy"],
                      "recipe": meta.get("bench_config"),
                      "train_wall_s": meta.get("train_wall_s"), "train_cpu_s": meta.get("train_cpu_s"),
                      "points": points, "seconds_this_run": round(time.perf_counter() - t, 1)}
        print(f"{name}: clean {s['clean_accuracy']:.4f}; " + ", ".join(
            f"{p['voltage']:g} V {p['accuracy_mean']:.4f}" for p in points), flush=True)
    normal = rows["Normal"]["clean_accuracy"]
    for r in rows.values():
        r["lowest_within_own_clean"] = lowest_within(r["points"], r["clean_accuracy"])
        r["lowest_within_normal_clean"] = lowest_within(r["points"], normal)
    result = {"what": __doc__.splitlines()[0], "profiles": [repo_path(p) for p in profiles],
              "n_test_images": args.limit or 10000, "voltages": voltages, "margin": MARGIN,
              "models": rows,
              "wall_s_this_run": round(time.perf_counter() - t0, 1)}  # a resumed run skips done points
    plot(rows, RESULTS / "stutz_chips.png")
    write_result("stutz_chips.json", result)


def plot(rows: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    accuracy_vs_voltage(ax, rows)
    ax.set_title("stutz_highber.py's models on the shipped chips", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
