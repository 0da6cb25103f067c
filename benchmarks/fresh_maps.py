"""NeuralFuse on Fashion-MNIST, the chosen recipes judged on fault maps no choice ever looked at.

The recipes in neuralfuse_fashion.json (lambda, training-BER factor, schedule, budget, restart seed)
were picked over ~24 runs scored on the same 10 test maps (EVAL_SEED), so their test numbers carry
selection bias. benchmarks/rerun_chosen.sh re-trains the two chosen generators; this script scores
them on the full test set (10,000 images) over fresh random maps drawn from FRESH_SEED, a stream
used by nothing else (evaluation 2024, validation 4099, training 1_000_003 + seed), paired
without / with G on the same maps, and (for comparison with the history) on the old 10 maps.

Headline per BER: CA, PA, PA(G) with 95% t-intervals over maps, the recovery in points (paired
interval) and the recovered fraction of the lost accuracy with its 95% interval (ratio of paired
means, delta method: the lost accuracy is estimated from the same maps, not treated as known).

Run: .venv/bin/python benchmarks/fresh_maps.py [--maps 40] -> benchmarks/results/neuralfuse_fresh.json
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, repo_path, write_result  # noqa: E402

from sramsim.stats import ci95_halfwidth, mean_std  # noqa: E402

FRESH_SEED = 90_210
BASE = ".cache/fashion_cnn_e2.pt"
# (evaluation BER, run folder written by rerun_chosen.sh)
RUNS = [(0.01, ".cache/fresh/UNetS-w0.25-ber0.01-train0.02-lam2-seed0"),
        (0.02, ".cache/fresh/UNetS-w0.25-ber0.02-train0.03-lam2-seed1")]


def interval(values) -> dict:
    """Mean, sample std and the 95% t-interval of the mean of per-map values."""
    mean, std = mean_std(values)
    half = ci95_halfwidth(values)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired_recovery(ca: float, pa, pa_nf) -> dict:
    """Recovery of G on paired maps: points (mean of pa_nf - pa) and fraction of the loss.

    The fraction is R = mean(pa_nf - pa) / mean(ca - pa); its 95% interval is the delta-method
    one, R +- t * sd(d - R * l) / (sqrt(n) * mean(l)) with d, l the per-map gain and loss.
    """
    pa, pa_nf = np.asarray(pa, dtype=np.float64), np.asarray(pa_nf, dtype=np.float64)
    if pa.shape != pa_nf.shape or pa.size < 2:
        raise ValueError("paired recovery needs the same >= 2 maps with and without G")
    gain, loss = pa_nf - pa, ca - pa
    if loss.mean() <= 0:
        raise ValueError("no accuracy lost on these maps: a recovered fraction is undefined")
    r = float(gain.mean() / loss.mean())
    half = ci95_halfwidth(gain - r * loss) / float(loss.mean())
    return {"recovery_points": interval(gain), "lost_points": interval(loss),
            "recovered_fraction": r, "recovered_fraction_ci95": [r - half, r + half]}


def score(job: dict) -> dict:
    """One generator over the given maps (runs in its own process, one thread)."""
    import numba
    import torch
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    from fusion.commands.common import load_base
    from fusion.evaluation import FaultSpec, evaluate
    from fusion.pipeline import GENERATOR_FILE
    from fusion.store import load_generator
    from sramsim.nn.data import load_dataset
    qm, _ = load_base(str(ROOT / BASE))
    if job["partial"]:
        generator, meta = best_so_far(ROOT / job["run"])
    else:
        generator, meta = load_generator(ROOT / job["run"] / GENERATOR_FILE)
    test = load_dataset("fashion-mnist", "test")
    t0 = time.perf_counter()
    r = evaluate(qm, test, FaultSpec(ber=job["ber"]), generator, job["maps"], seed=job["seed"])
    keep = ("ca", "ca_nf", "pa", "pa_nf", "n_models", "samples", "energy_saving",
            "energy_saving_base", "base_accesses", "generator_accesses", "faults")
    out = {k: r[k] for k in keep}
    out["eval_seconds"] = time.perf_counter() - t0
    out["training"] = {k: meta.get(k) for k in ("epochs", "epochs_done", "complete", "steps",
                                                 "train_samples", "train_seconds", "fault_source",
                                                 "config")}
    out["training"]["validation"] = {k: v for k, v in (meta.get("validation") or {}).items()}
    return out


def best_so_far(run: Path):
    """A run still training: the G that validated best so far, from its checkpoint (partial)."""
    from fusion import generators
    from fusion.eopm import CHECKPOINT, CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    from sramsim.nn.torch_files import read_torch_file
    ckpt = read_torch_file(run / CHECKPOINT, CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                           "EOPM checkpoint")                # weights_only, digest checked
    config = ckpt["config"]
    g = generators.build(config["generator"], 1, float(config["width"]))
    g.load_state_dict(ckpt["best"]["state"])
    meta = {"epochs": None, "epochs_done": ckpt["epoch"], "complete": False,
            "steps": sum(h["steps"] for h in ckpt["history"]), "train_seconds": ckpt["train_seconds"],
            "fault_source": ckpt["fault_source"], "config": config,
            "validation": {**ckpt["validation"], "best_score": ckpt["best"]["score"],
                           "best_epoch": ckpt["best"]["epoch"]}}
    return g.eval(), meta


def summary(ber: float, run: str, seed: int, r: dict) -> dict:
    """The numbers a reader needs for one BER, from the raw per-map accuracies."""
    return {"ber": ber, "run": run, "map_seed": seed, "maps": r["n_models"],
            "test_samples": r["samples"], "ca": r["ca"], "ca_nf": r["ca_nf"],
            "pa": interval(r["pa"]), "pa_nf": interval(r["pa_nf"]),
            **paired_recovery(r["ca"], r["pa"], r["pa_nf"]),
            "energy_saving_base": r["energy_saving_base"], "energy_saving": r["energy_saving"],
            "energy_cost_points": 100 * (r["energy_saving_base"] - r["energy_saving"]),
            "per_map": {"pa": r["pa"], "pa_nf": r["pa_nf"]}, "eval_seconds": r["eval_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=40, help="fresh fault maps per BER (>= 30)")
    ap.add_argument("--seed", type=int, default=FRESH_SEED, help="seed of the fresh map stream")
    ap.add_argument("--old-maps", type=int, default=10,
                    help="also score on the first K maps of the old EVAL_SEED stream (0: skip)")
    ap.add_argument("--jobs", type=int, default=2, help="evaluations side by side, one thread each")
    ap.add_argument("--partial", action="store_true",
                    help="runs still training: score the best-validated G of their checkpoints and "
                         "write .cache/fresh/neuralfuse_fresh_partial.json (not a result to commit)")
    args = ap.parse_args()
    from fusion.evaluation import EVAL_SEED, VAL_SEED
    if args.seed in (EVAL_SEED, VAL_SEED) or args.seed >= 1_000_000:
        raise SystemExit(f"--seed {args.seed}: a stream the choices or the training used")
    if args.maps < 30:
        raise SystemExit(f"--maps {args.maps}: the headline needs >= 30 fresh maps")
    need = "checkpoint.pt" if args.partial else "generator.pt"
    for _, run in RUNS:
        if not (ROOT / run / need).exists():
            raise SystemExit(f"{run}/{need} missing: run benchmarks/rerun_chosen.sh first")
    jobs = [{"ber": b, "run": run, "maps": args.maps, "seed": args.seed, "kind": "fresh",
             "partial": args.partial} for b, run in RUNS]
    if args.old_maps:
        jobs += [{"ber": b, "run": run, "maps": args.old_maps, "seed": EVAL_SEED, "kind": "old",
                  "partial": args.partial} for b, run in RUNS]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    t0 = time.perf_counter()
    from sramsim.analysis.executors import exit_with_parent
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"),
                             initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        results = list(pool.map(score, jobs))
    headline, old, training = {}, {}, {}
    for job, r in zip(jobs, results):
        s = summary(job["ber"], job["run"], job["seed"], r)
        (headline if job["kind"] == "fresh" else old)[str(job["ber"])] = s
        training[str(job["ber"])] = {"run": job["run"], **r["training"]}
        print(f"BER {job['ber']:g} ({job['kind']} maps, seed {job['seed']}, {s['maps']} maps): "
              f"PA {100 * s['pa']['mean']:.1f}% -> PA(G) {100 * s['pa_nf']['mean']:.1f}%, recovered "
              f"{100 * s['recovered_fraction']:.1f}% [{100 * s['recovered_fraction_ci95'][0]:.1f}, "
              f"{100 * s['recovered_fraction_ci95'][1]:.1f}] of the loss", flush=True)
    name = "neuralfuse_fresh_partial.json" if args.partial else "neuralfuse_fresh.json"
    write_result(name, {
        "benchmark": "NeuralFuse on Fashion-MNIST: the chosen recipes re-trained and scored on "
                     "fresh fault maps",
        "base": {"checkpoint": repo_path(ROOT / BASE), "recipe": "sramsim train-base --model cnn "
                 "--epochs 2 --seed 0 (8-bit symmetric)"},
        "recipe_script": "benchmarks/rerun_chosen.sh",
        "fresh_map_seed": args.seed, "old_map_seed": EVAL_SEED, "validation_map_seed": VAL_SEED,
        "headline_fresh_maps": headline, "same_10_old_maps": old, "training": training,
        "complete": not args.partial, "wall_seconds": time.perf_counter() - t0,
    }, results=ROOT / ".cache" / "fresh" if args.partial else None)


if __name__ == "__main__":
    main()
