"""Does planning voltages per domain pay? `sramsim plan` against the best single voltage, same
memories, same budget, same reference, on the default CNN and resnet20 (Fashion-MNIST).

Cases (each model):
  a  weights per layer: every quantized tensor in its own voltage domain, 4 random finfet14
     weight chips (CNN: 256 KB; resnet20: 512 KB, so no two layers share a cell);
  b  a + an activation buffer: every conv/linear output stored 8-bit in 4 random finfet14
     64 KB buffer chips (one more domain; one write and one read per value and inference);
  c  the banks of a chip profile: the shipped profiles (`sramsim profile list`) have one bank
     each (checked and recorded below), so 4 profiles of the same size (1 Mibit) are
     synthesized with 8 banks of 1024 x 128 bits -- `sramsim profile synth --curve finfet14
     --rows 1024 --cols 128 --banks 8 --v-floor 0.75 --seed S` (seeds 0-3), the code below --
     and each bank is a domain;
  d  the weight memory of (a) split by bit significance instead: each bit of the 8-bit codes
     in its own column group and voltage domain ("bit7", the sign, ... "bit0"; the
     significance-driven SRAM of Srinivasan et al., DATE 2016, with one domain per bit).
Budget for every case: within MARGIN of the fault-free accuracy as stored (own clean reference,
on the validation images for the choice and on the test images for the report). Validation: the
last `val_images` training images (the models train on the first 10,000) and validation maps
(chips at odd placements); confirmation: the `check_images` training images before them and
`check_maps` other validation maps; test: the first `limit` test images and test maps. Pass test
(for both the plan and the single voltage): every validation map within the margin; with
`--accept mean` the mean over the maps (-> plan_mean.json, plan_mean.png, run folders "-mean").
The JSON has, per model and case, `saving_single` and `saving_planned` at that same reference,
with the test accuracies, 95% intervals and how many test maps each holds the budget on, and
the exact `sramsim plan` command.

Models: trained here once (2 epochs on the first 10,000 training images, 8-bit QAT) and cached in
benchmarks/.cache/plan/; every plan's evaluations are cached there too (a re-run resumes).
Run: `.venv/bin/python benchmarks/plan_study.py` -> benchmarks/results/plan.json + plan.png
(two runs at a time, each in its own process: `--parallel`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, repo_path, write_result  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "plan"
MARGIN = 0.01
ACCEPTS = {"every-map": "plan", "mean": "plan_mean"}    # pass test -> results name
VOLTAGES = "1.0,0.95,0.925,0.9,0.8875,0.875,0.8625,0.85,0.8375,0.825,0.8125,0.8,0.775,0.75"
# Per model: weight chip size, then the sizes of each run (they bound its cost: about 25
# evaluations per domain on the search maps, each over val_images; the confirmation maps and
# 2 x test_maps evaluations over `limit` test images). Confirmation maps (check_maps) are cheap
# (a few assignments) and catch the rare bad chip that a couple of search maps hide, so there are
# more of them than search maps. All six runs take about 40 min on two quiet CPU cores.
MODELS = {
    "cnn": {"rows": 1024, "cols": 2048, "val_images": 2000, "check_images": 2000, "val_maps": 4,
            "check_maps": 8, "test_maps": 8, "limit": 5000},
    "resnet20": {"rows": 2048, "cols": 2048, "val_images": 1000, "check_images": 1000,
                 "val_maps": 4, "check_maps": 8, "test_maps": 8, "limit": 2000},
}
CASES = {"a": "weights per layer", "b": "weights per layer + activation buffer",
         "c": "banks of 8-bank 1 Mibit profiles", "d": "weights per bit significance"}
BANK_PROFILES = 4


def checkpoint(arch: str) -> Path:
    """The cached model (trained now if absent)."""
    from sramsim.nn.training import TrainOptions, train_base
    path = CACHE / f"{arch}.pt"
    train_base(arch, "fashion-mnist", path, TrainOptions(epochs=2), limit=10000, progress=False)
    return path


def shipped_banks() -> list[dict[str, object]]:
    """Banks of every shipped profile."""
    from sramsim.memory.chip import Chip
    from sramsim.memory.shipped import shipped_profiles
    return [{"profile": repo_path(p), "banks": Chip.load(p).geometry.banks}
            for p in shipped_profiles()]


def bank_profiles() -> list[Path]:
    """4 synthetic 8-bank finfet14 profiles (what `sramsim profile synth --banks 8` writes)."""
    from sramsim import BerCurve, Chip, Geometry
    paths = []
    for seed in range(BANK_PROFILES):
        path = CACHE / f"finfet14-1024x128x8-s{seed}.h5"
        if not path.exists():
            Chip.random(Geometry(1024, 128, banks=8), BerCurve.builtin("finfet14"), 0.75, seed,
                        {"flip": 1.0}, name=path.stem).save(path)
        paths.append(path)
    return paths


def command(arch: str, case: str, threads: int, accept: str = "every-map") -> list[str]:
    """The `sramsim plan` arguments of one run."""
    m = MODELS[arch]
    out = run_dir(arch, case, accept)
    cmd = ["plan", "--model", str(CACHE / f"{arch}.pt"), "--voltages", VOLTAGES,
           "--margin", str(MARGIN), "--val-images", str(m["val_images"]),
           "--check-images", str(m["check_images"]),
           "--val-maps", str(m["val_maps"]), "--check-maps", str(m["check_maps"]),
           "--test-maps", str(m["test_maps"]), "--accept", accept,
           "--limit", str(m["limit"]), "--out", str(out), "--threads", str(threads),
           "--no-progress"]
    if case in ("a", "b", "d"):
        cmd += ["--chips", "4", "--rows", str(m["rows"]), "--cols", str(m["cols"]),
                "--domains", "bit" if case == "d" else "layer"]
    if case == "b":
        cmd += ["--activations"]
    if case == "c":
        cmd += ["--profile", *map(str, bank_profiles()), "--domains", "bank"]
    return cmd


def run_dir(arch: str, case: str, accept: str = "every-map") -> Path:
    """The run's folder (its evaluations, plan.json, plan.png)."""
    return CACHE / f"{arch}-{case}{'' if accept == 'every-map' else '-' + accept}"


def summary(report: dict) -> dict:
    """What the JSON keeps of one plan.json."""
    keep = ("assignment", "energy", "saving", "test", "passes_test", "test_maps_within_budget",
            "table")
    return {"saving_single": report["saving_single"], "saving_planned": report["saving_planned"],
            "gain": report["gain"], "reference": report["reference"], "clean": report["clean"],
            "single_voltage": report["single"]["voltage"],
            "single": {k: report["single"][k] for k in keep},
            "planned": {k: report["planned"][k] for k in keep},
            "accept": report["accept"],
            "search": report["search"], "single_curve": report["single_curve"],
            "evaluations_run": report["evaluations"], "images": report["images"],
            "maps": report["maps"]}


def plot(results: dict, path: Path, accept: str = "every-map") -> None:
    """Saving of the best single voltage vs the plan, per model and case; a plan that misses the
    budget on the test maps is hatched and says so (its saving is not one at the budget)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    short = {"a": "(a) per layer", "b": "(b) + activations", "c": "(c) banks",
             "d": "(d) per bit"}
    labels, single, planned, missed = [], [], [], []
    for arch, cases in results.items():
        for case, r in cases.items():
            labels.append(f"{arch}\n{short[case]}")
            single.append(100 * r["saving_single"])
            planned.append(100 * r["saving_planned"])
            missed.append(not r["planned"]["passes_test"])
    fig, ax = plt.subplots(figsize=(10, 4))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], single, 0.4, label="best single voltage")
    ax.bar([i + 0.2 for i in x], planned, 0.4, label="planned per domain",
           hatch=["//" if m else "" for m in missed], edgecolor="white")
    for i, (s, p, m) in enumerate(zip(single, planned, missed, strict=True)):
        note = f"+{p - s:.1f}" + ("\nmisses\nbudget" if m else "")
        ax.annotate(note, (i + 0.2, p), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("memory energy saved (%)")
    ax.set_ylim(0, 1.25 * max(planned + single))
    ax.set_title(f"budget: within {100 * MARGIN:g} point of the fault-free accuracy ({accept} "
                 "pass test); hatched: the plan misses it on the test maps", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(name: str) -> None:
    """Draw RESULTS/<name>.png again from RESULTS/<name>.json (the plot is a view of the JSON)."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    plot(data["results"], RESULTS / f"{name}.png", data["settings"]["accept"])


def run_case(arch: str, case: str, threads: int, accept: str) -> tuple[dict, dict]:
    """One `sramsim plan` run (resumes from its folder): (summary, how it ran)."""
    from sramsim.commands.main import main as sramsim
    cmd = command(arch, case, threads, accept)
    t0 = time.perf_counter()
    rc = sramsim(cmd)
    if rc != 0:
        raise SystemExit(f"{arch} case {case}: sramsim plan exited {rc}")
    wall = time.perf_counter() - t0
    report = json.loads((run_dir(arch, case, accept) / "plan.json").read_text())
    print(f"{arch} ({case}): single {100 * report['saving_single']:.1f}%, planned "
          f"{100 * report['saving_planned']:.1f}% ({wall:.0f} s)", flush=True)
    return ({"case": CASES[case], **summary(report)},
            {"sramsim": " ".join(["sramsim"] + [a.replace(str(ROOT) + "/", "") for a in cmd]),
             "wall_s": round(wall, 1), "load_average_after": [round(x, 2)
                                                               for x in os.getloadavg()]})


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--parallel", type=int, default=2,
                    help="runs at a time, each in its own process (default 2)")
    ap.add_argument("--accept", default="every-map", choices=list(ACCEPTS),
                    help="the pass test (default every-map -> plan.json; mean -> plan_mean.json)")
    ap.add_argument("--replot", action="store_true",
                    help="only draw the png again from the JSON written before")
    args = ap.parse_args()
    if args.replot:
        replot(ACCEPTS[args.accept])
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    archs, cases = args.models.split(","), args.cases.split(",")
    for arch in archs:
        t0 = time.perf_counter()
        checkpoint(arch)
        print(f"{arch}: model ready in {time.perf_counter() - t0:.0f} s", flush=True)
    bank_profiles()
    # the longest runs first (resnet20's), so the two processes finish close together
    order = sorted(((a, c) for a in archs for c in cases),
                   key=lambda ac: (ac[0] != "resnet20", ac[1] != "b", ac[1]))
    from sramsim.analysis.executors import exit_with_parent
    # each run's process ends with this one (a killed study leaves no run writing its folder)
    with ProcessPoolExecutor(max(1, args.parallel), mp_context=get_context("spawn"),
                             initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {ac: pool.submit(run_case, *ac, args.threads, args.accept) for ac in order}
        done = {ac: f.result() for ac, f in futures.items()}
    results: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    for arch in archs:
        for case in cases:
            results.setdefault(arch, {})[case], runs.setdefault(arch, {})[case] = \
                done[(arch, case)]
    RESULTS.mkdir(exist_ok=True)
    name = ACCEPTS[args.accept]
    plot(results, RESULTS / f"{name}.png", args.accept)
    gains = [r["gain"] for cs in results.values() for r in cs.values()]
    write_result(f"{name}.json", {
        "margin": MARGIN, "voltages": VOLTAGES,
        "budgets": {a: MODELS[a] for a in archs}, "cases": CASES,
        "settings": {"parallel_runs": args.parallel, "torch_threads_per_run": args.threads,
                     "sizes": "per model in `budgets`: validation (search) images = the last "
                              "val_images training images x val_maps maps; confirmation = the "
                              "check_images training images before them x check_maps other "
                              "validation maps; report = the first `limit` test images x "
                              "test_maps fresh test maps",
                     "accept": args.accept},
        "shipped_profiles": shipped_banks(),
        "bank_profiles": {"files": [repo_path(p) for p in bank_profiles()],
                          "made_as": "Chip.random(Geometry(1024, 128, banks=8), finfet14, "
                                     "v_floor=0.75, seed, kinds flip=1) = sramsim profile synth "
                                     "--rows 1024 --cols 128 --banks 8 --v-floor 0.75"},
        "models": {a: {"checkpoint": repo_path(CACHE / f"{a}.pt"),
                       "trained": "2 epochs on the first 10,000 Fashion-MNIST training images "
                                  "(sramsim.nn.training.train_base, 8-bit QAT)"}
                   for a in results},
        "results": results, "runs": runs,
        "bar": {"planned_ge_single_everywhere": all(g >= 0 for g in gains),
                "largest_gain": max(gains), "gain_ge_0.05_somewhere": max(gains) >= 0.05,
                "planned_passes_test_everywhere": all(r["planned"]["passes_test"]
                                                      for cs in results.values()
                                                      for r in cs.values()),
                "test_maps_within_budget": {
                    f"{a}-{c}": {k: r[k]["test_maps_within_budget"] for k in ("single", "planned")}
                    for a, cs in results.items() for c, r in cs.items()}},
        "plot": repo_path(RESULTS / f"{name}.png")})


if __name__ == "__main__":
    main()
