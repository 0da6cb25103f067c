"""The SparkXD study (`sramsim sparkxd`) for two network sizes, our numbers beside the published
ones: tolerable BER of the baseline and of the fault-aware trained (FAT) model, their ratio, the
DRAM energy per inference at the tolerable voltages, and the headline saving (FAT model at its
tolerable voltage with drmap placement, against the baseline at nominal voltage with naive).

Each size runs `sramsim.analysis.sparkxd.run_study` in benchmarks/.cache/sparkxd/<run>/ (a re-run
resumes every stage). Defaults are sized for a 2-core machine shared with others and stated in the
JSON: baseline --epochs 2 on the first --limit training images, FAT --fat-epochs 4 (log
curriculum 1e-5 -> 1e-2, EDEN model-0 DRAM faults over the drmap-placed weights), searches with
--maps 3 maps per BER on the first --eval-limit test images, grid 1e-6..1e-1 then 4 bisection
steps, DRAM chips of the default LPDDR3 part with --dram-rows rows per bank (2048 instead of
16384: a 512 Mbit part with the same banks, columns and 512-row subarrays, so a whole-part map at
BER 1e-1 holds ~54 M faults instead of ~430 M; the per-cell fault probabilities are the same, only
the number of partitions the error model's multipliers are normalised over is smaller; FAT itself
draws over the full part). The time of the whole study on the full 10,000-image
test set is estimated from the measured per-map times (scaled by 10,000 / images evaluated) plus
the measured training times; it is labelled an estimate.

Run: `.venv/bin/python benchmarks/reproduce_sparkxd.py [--models snn-fc400,snn-fc900]`
-> benchmarks/results/sparkxd.json and sparkxd.png.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, repo_path, write_result  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "sparkxd"
FULL_TEST_SET = 10_000


def family_available(model: str) -> bool:
    """Whether the module that builds `model` exists in this checkout."""
    from sramsim.nn.models import check_arch
    family, _ = check_arch(model)
    module = {"snn-fc": "snn", "snn-conv": "snn", "diehl-cook": "diehl_cook"}.get(family)
    return module is None or importlib.util.find_spec(f"sramsim.nn.models.{module}") is not None


def map_times(folder: Path) -> dict:
    """Measured per-map fault and evaluation times of one search (from its points.jsonl)."""
    faults, evals, n = [], [], None
    for line in (folder / "points.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("clean"):
            continue
        faults.append(r["t_faults"])
        evals.append(r["t_eval"])
        n = r["n_samples"]
    return {"maps": len(evals), "faults_s": round(sum(faults), 2), "eval_s": round(sum(evals), 2),
            "n_samples": n}


def one(model: str, args) -> dict:
    """Run (or resume) the study for one model; its settings, times and numbers."""
    from sramsim.analysis.sparkxd import StudyOptions, run_study
    run = f"{model}-L{args.limit}-E{args.epochs}-F{args.fat_epochs}-R{args.dram_rows}"
    out = CACHE / run
    opts = StudyOptions(out=str(out), model=model, margin=0.01, epochs=args.epochs,
                        fat_epochs=args.fat_epochs, maps=args.maps, limit=args.limit,
                        eval_limit=args.eval_limit, seed=args.seed,
                        geometry={"rows": args.dram_rows}, threads=args.threads)
    import torch
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    s = run_study(opts, progress=not args.no_progress, log=print)
    wall = time.perf_counter() - t0
    st = s["stages"]
    times = {k: map_times(out / f"tolerance-{k}") for k in ("baseline", "fat")}
    # estimate of the searches on the full test set: evaluation scales with the images
    est_search = sum(t["faults_s"] + t["eval_s"] * FULL_TEST_SET / t["n_samples"]
                     for t in times.values())
    trained = ("pretrain", "baseline", "fat")
    train_s = sum(st[k].get("train_seconds") or 0.0 for k in trained)
    settings = dict(s["settings"])
    settings["out"] = repo_path(out)
    return {
        "model": model, "run_folder": repo_path(out), "settings": settings,
        "stage_seconds_this_run": {k: st[k]["seconds"] for k in st},
        "stages_reused_this_run": {k: st[k]["skipped"] for k in st},
        "wall_s_this_run": round(wall, 1),
        "train_seconds": {k: st[k].get("train_seconds") for k in trained},
        "search_map_times": times,
        "estimated_full_test_set_study_s": round(train_s + est_search, 0),
        "clean_accuracy": {k: st[f"tolerance_{k}"]["clean_accuracy"] for k in ("baseline", "fat")},
        "pretrained_test_accuracy": st["pretrain"]["test_accuracy"],
        "weight_bytes": st["tolerance_baseline"]["weight_bytes"],
        "results": s["results"],
        "curves": {k: [{f: p[f] for f in ("ber", "voltage", "accuracy_mean", "ci95", "n",
                                          "passes")} for p in st[f"tolerance_{k}"]["points"]]
                   for k in ("baseline", "fat")},
    }


def plot(rows: list[dict], paper: dict, path: Path) -> None:
    """Tolerable BER (baseline vs FAT) and headline saving per model, SparkXD's 40% beside."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    names = [r["model"] for r in rows]
    x = range(len(rows))
    for off, key, label in ((-0.2, "baseline", "baseline"), (0.2, "fat", "FAT")):
        ax1.bar([i + off for i in x], [r["results"][key]["tolerable_ber"] or 0 for r in rows],
                0.4, label=label)
    ax1.set_yscale("log")
    ax1.set_ylim(bottom=0.1 * min(r["settings"]["low"] for r in rows))
    ax1.set_xticks(list(x), names)
    ax1.set_ylabel("tolerable BER (1-point margin)")
    ax1.legend()
    ax2.bar(list(x), [100 * (r["results"]["headline"]["saving"] or 0) for r in rows], 0.5,
            label="ours: FAT, its tolerable V, drmap vs baseline, nominal, naive")
    ax2.axhline(100 * paper["sparkxd"]["dram_energy_saving_mean"], color="k", ls="--",
                label="SparkXD (DAC 2021): ~40% mean")
    ax2.set_xticks(list(x), names)
    ax2.set_ylabel("DRAM energy saving per inference (%)")
    ax2.legend(fontsize=7)
    for r in rows:
        for key, ls in (("baseline", "-"), ("fat", "--")):
            c = r["curves"][key]
            ax3.errorbar([p["ber"] for p in c], [100 * p["accuracy_mean"] for p in c],
                         yerr=[100 * p["ci95"] for p in c], ls=ls, marker="o", ms=3, capsize=2,
                         label=f"{r['model']} {key}")
    ax3.set_xscale("log")
    ax3.set_xlabel("bit error rate")
    ax3.set_ylabel("accuracy % (mean ± 95% CI over maps)")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="snn-fc400,snn-fc900", help="comma-separated models")
    ap.add_argument("--limit", type=int, default=10_000, help="training (and test) images")
    ap.add_argument("--eval-limit", type=int, default=2_000, help="test images for the searches")
    ap.add_argument("--maps", type=int, default=3, help="fault maps per BER")
    ap.add_argument("--epochs", type=int, default=2, help="clean pretraining epochs")
    ap.add_argument("--fat-epochs", type=int, default=4,
                    help="FAT epochs (and the clean control's) from the pretrained model")
    ap.add_argument("--jobs", type=int, default=1,
                    help="studies run side by side, one process each (default 1)")
    ap.add_argument("--dram-rows", type=int, default=2048, help="rows per bank of the searches' part")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="evaluation threads")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    missing = [m for m in models if not family_available(m)]
    if missing:
        sys.exit(f"reproduce_sparkxd: the model family of {', '.join(missing)} is not in this "
                 "checkout yet (sramsim/nn/models/snn.py or diehl_cook.py); nothing run")
    from sramsim.analysis.sparkxd import PAPER
    t0 = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(args.jobs, len(models)),
                                 mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(one, models, [args] * len(models)))
    else:
        rows = [one(m, args) for m in models]
    for r in rows:
        res = r["results"]
        print(f"{r['model']}: tolerable BER baseline {res['baseline']['tolerable_ber']}, FAT "
              f"{res['fat']['tolerable_ber']} (ratio {res['tolerable_ber_ratio']}); saving "
              f"{res['headline']['saving']}; estimated full-test-set study "
              f"{r['estimated_full_test_set_study_s']} s")
    result = {"what": __doc__.splitlines()[0], "models": rows, "paper": PAPER,
              "total_wall_s": round(time.perf_counter() - t0, 1)}
    plot(rows, PAPER, RESULTS / "sparkxd.png")
    write_result("sparkxd.json", result)


if __name__ == "__main__":
    main()
