"""Every mitigation at equal footing: the lowest voltage it tolerates on the test chips and the
net weight-memory saving there after its own costs, with the training time it needed.

Models: the default CNN (86,944 stored weights) and resnet20 (He et al. 2016's CIFAR ResNet,
270,608 stored weights at 1 input channel), Fashion-MNIST, 8-bit weights.
Methods (the `METHODS` table): none, secded72 (ECC), shuffle (bit placement), clipping,
RandBET, NeuralFuse (generator in front of the unprotected model), FAT (fault-aware training),
and the combinations RandBET+NeuralFuse, secded72+clipping, RandBET+shuffle, clipping+shuffle.

Protocol (the honesty rule): every knob -- clipping bound w_max, RandBET p, FAT target BER,
generator architecture/width -- is chosen on a validation split (the last VAL_SPLIT of the first
TRAIN_POOL training images; models train on the rest) read through validation chips (random
finfet14 chips with seeds VAL_CHIP_SEED.., the test chips' geometry and curve), never on test
images or test chips. Test chips: the shipped finfet14-8192x128-s0..s4 for the CNN; the
resnet20 image (265 KiB; 298 KiB with SECDED) does not fit that 128 KiB chip (it would be
tiled, two or three weights sharing every cell), so resnet20 is tested on five synthesized
32768x128 chips (512 KiB) drawn exactly like the shipped ones (finfet14, v_floor 0.75, flips,
seeds TEST_CHIP_SEED..+4). Each candidate is scored on validation by its net saving at the
lowest validation voltage within 1 point of max(own clean, unprotected clean) (ties: mean
validation accuracy over the grid); candidates and their validation results are in the JSON.

Net saving per read, relative to an unprotected read at nominal voltage (E(V) = (V/Vnom)^2):
the sweep's figure (ECC: n/k cell reads + decoder, `sramsim.analysis.energy`) minus the
method's reads at nominal voltage: NeuralFuse its generator's weight reads (8-bit) per base
read; shuffle its remap table, 3 bits per 8-bit word read beside every word (ReSpawn-style
table in a reliable memory at nominal voltage); both are also reported without that charge.
Training time: wall and CPU seconds of every model and generator the method needs (its base
model included), and of the whole candidate search that chose its knob.

Budget (shared 2-core machine, one torch/numba thread, ~60 min): TRAIN_POOL training images,
EPOCHS epochs, EOPM for EOPM_SECONDS per generator; per-model test/validation image counts in
`SETUP`. Models, generators and every sweep point are cached in benchmarks/.cache/mitigations/
equal_energy/ (a re-run resumes). Run:
  OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/compare_mitigations.py
  -> benchmarks/results/equal_energy.json + equal_energy.png
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, repo_path, write_result  # noqa: E402
from sramsim.memory.shipped import SHIPPED_DIR  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "mitigations" / "equal_energy"
VOLTAGES = [0.9, 0.875, 0.85, 0.8375, 0.825, 0.8125, 0.8, 0.775, 0.75]  # 0.75: v_floor
VAL_VOLTAGES = VOLTAGES    # was 0.875..0.75: no resnet20 candidate qualified there
MARGIN = 0.01
TRAIN_POOL, VAL_SPLIT, EPOCHS = 10_000, 2_000, 3
EOPM_SECONDS, EOPM_N, EOPM_LAMBDA, NF_TRAIN_VOLTAGE = 75.0, 4, 5.0, 0.8
GENERATOR_BITS = 8
SHUFFLE_TABLE_BITS = 3            # rotation of an 8-bit word: ceil(log2 8)
VAL_CHIPS, VAL_CHIP_SEED, TEST_CHIP_SEED = 3, 100, 10
SETUP = {   # per model: images and chip geometry
    "cnn": {"test_images": 2000, "val_images": 2000, "rows": 8192, "test_chips": "shipped"},
    "resnet20": {"test_images": 1000, "val_images": 1000, "rows": 32768,
                 "test_chips": "synthesized"},
}
CANDIDATES = {"clip": [0.2, 0.1, 0.05], "randbet_p": [0.01, 0.05], "fat_ber": [0.01, 0.05],
              "generator": [["ConvS", 0.5], ["UNetS", 0.25]]}
# method -> (model role, MemoryLayout keywords, generator role or None)
METHODS = {
    "none": ("base", {}, None),
    "secded72": ("base", {"ecc": "secded72"}, None),
    "shuffle": ("base", {"bit_placement": "shuffle"}, None),
    "clipping": ("clip", {}, None),
    "RandBET": ("randbet", {}, None),
    "FAT": ("fat", {}, None),
    "NeuralFuse": ("base", {}, "nf"),
    "RandBET+NeuralFuse": ("randbet", {}, "nf-randbet"),
    "secded72+clipping": ("clip", {"ecc": "secded72"}, None),
    "RandBET+shuffle": ("randbet", {"bit_placement": "shuffle"}, None),
    "clipping+shuffle": ("clip", {"bit_placement": "shuffle"}, None),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


# ------------------------------------------------------------------------------ chips and data

def chips_for(arch: str, purpose: str) -> list:
    """The test chips (shipped profiles or synthesized) or the validation chips of a model."""
    from sramsim.analysis.sweep import profile_chips, random_chips
    rows = SETUP[arch]["rows"]
    if purpose == "val":
        return random_chips(VAL_CHIPS, "finfet14", rows, 128, seed=VAL_CHIP_SEED, v_floor=0.75)
    if SETUP[arch]["test_chips"] == "shipped":
        return profile_chips(sorted(str(p) for p in SHIPPED_DIR.glob(
            f"finfet14-{rows}x128-s*.h5")))
    return random_chips(5, "finfet14", rows, 128, seed=TEST_CHIP_SEED, v_floor=0.75)


def chip_names(specs) -> list[str]:
    return [repo_path(s.path) if s.path else f"{s.name} (synthesized: finfet14, v_floor "
            f"{s.v_floor:g}, flips, seed {s.seed})" for s in specs]


def datasets() -> tuple:
    """(training split, validation split, full test set) of Fashion-MNIST."""
    from fusion.pipeline import hold_out
    from sramsim.nn.data import load_dataset
    train, val = hold_out(load_dataset("fashion-mnist", "train", TRAIN_POOL), VAL_SPLIT)
    return train, val, load_dataset("fashion-mnist", "test")


def head(ds, n: int):
    from sramsim.nn.data import Dataset
    return Dataset(ds.x[:n], ds.y[:n], ds.num_classes, ds.name)


# ------------------------------------------------------------------------------ training

def train_model(arch: str, key: str, options: dict, train_set) -> tuple[Path, dict]:
    """A model trained with TrainOptions(**options) from the common initial weights (cached)."""
    from sramsim.nn.models import build, load_checkpoint, save_checkpoint
    from sramsim.nn.training import TrainOptions, train
    opts = TrainOptions(epochs=EPOCHS, seed=0, **options)
    config = {"arch": arch, "options": opts.as_dict(), "train_images": len(train_set)}
    path = CACHE / arch / "models" / f"{key}.pt"
    if path.exists():
        _, meta = load_checkpoint(path)
        if meta.get("bench_config") == config:
            return path, meta
    torch.manual_seed(0)
    model = build(arch, 1, 10)
    state = path.with_name(path.name + ".partial")
    with Clock() as c:
        history = train(model, train_set, opts, state_path=state, tag=config, progress=False,
                        log=None)
    meta = {"arch": arch, "in_channels": 1, "num_classes": 10, "norm": "batch",
            "bits": opts.bits, "scheme": opts.scheme, "clip": opts.clip,
            "dataset": "fashion-mnist", "bench_config": config, "history": history,
            "train_wall_s": round(c.wall, 1), "train_cpu_s": round(c.cpu, 1)}
    save_checkpoint(path, model, meta)
    state.unlink(missing_ok=True)
    log(f"{arch}: trained {key} in {c.wall:.0f} s wall / {c.cpu:.0f} s CPU")
    return path, meta


def train_nf(arch: str, key: str, base_path: Path, gname: str, width: float,
             train_set) -> tuple[object, dict]:
    """A NeuralFuse generator trained with EOPM on the validation chips at NF_TRAIN_VOLTAGE in
    front of the frozen base model (cached); its weight reads and training time."""
    from fusion.commands.common import base_info, load_base
    from fusion.eopm import EopmConfig
    from fusion.evaluation import FaultSpec
    from fusion.pipeline import GENERATOR_FILE, train_generator
    from fusion.store import load_generator
    from sramsim.analysis.accesses import weight_accesses
    out = CACHE / arch / "generators" / key
    want = {"generator": gname, "width": width, "base": base_path.name,
            "base_bytes": base_path.stat().st_size, "voltage": NF_TRAIN_VOLTAGE,
            "chips": [s.identity() for s in chips_for(arch, "val")], "n": EOPM_N,
            "lam": EOPM_LAMBDA, "budget_s": EOPM_SECONDS, "train_images": len(train_set)}
    marker = out / "bench_config.json"
    if (out / GENERATOR_FILE).exists() and marker.exists() and \
            json.loads(marker.read_text())["want"] == want:
        gen, _ = load_generator(out / GENERATOR_FILE)
        return gen, json.loads(marker.read_text())["info"]
    if out.exists():
        import shutil
        shutil.rmtree(out)
    qm, meta = load_base(str(base_path))
    faults = FaultSpec(voltage=NF_TRAIN_VOLTAGE, chips=[s.build() for s in chips_for(arch, "val")])
    config = EopmConfig(generator=gname, width=width, n_perturbed=EOPM_N, lam=EOPM_LAMBDA,
                        batch_size=128, seed=0)
    with Clock() as c:
        result = train_generator(qm, base_info(str(base_path), meta, qm), train_set, faults,
                                 config, epochs=1, out_dir=out, progress=False,
                                 budget_seconds=EOPM_SECONDS)
    gen, _ = load_generator(out / GENERATOR_FILE)
    info = {"generator": gname, "width": width, "weight_reads": weight_accesses(gen, (1, 28, 28)),
            "eopm_steps": result["steps"], "epoch_complete": result["complete"],
            "train_wall_s": round(c.wall, 1), "train_cpu_s": round(c.cpu, 1)}
    marker.write_text(json.dumps({"want": want, "info": info}))
    log(f"{arch}: trained generator {key} ({gname} x{width:g}): {result['steps']} steps in "
        f"{c.wall:.0f} s")
    return gen, info


# ------------------------------------------------------------------------------ sweeps

def sweep(model_path: Path, dataset, specs, voltages, out: Path, protection: dict) -> dict:
    """One run_sweep (resumable in `out`): clean accuracy and the per-voltage points."""
    from sramsim.analysis.sweep import run_sweep
    from sramsim.analysis.executors import Execution
    from sramsim.analysis.sweep import SweepSettings
    from sramsim.inject.layout import MemoryLayout
    s = run_sweep(str(model_path), dataset, specs, voltages, out,
                  SweepSettings(layout=MemoryLayout(**protection)),
                  Execution(progress=False, threads=1))
    keep = ("voltage", "ber", "accuracy_mean", "ci95", "n", "saving")
    return {"clean_accuracy": s["clean_accuracy"],
            "points": [{k: p[k] for k in keep} for p in s["points"]],
            "computed_points": s["computed_points"]}


def with_costs(result: dict, extra_nominal: float) -> dict:
    """Net saving per point: the sweep's saving less `extra_nominal` reads at nominal voltage
    per base read (generator, remap table)."""
    for p in result["points"]:
        p["saving_before_extra"] = p["saving"]
        p["net_saving"] = p["saving"] - extra_nominal
    return result


def lowest_within(points: list[dict], reference: float) -> dict | None:
    """The lowest voltage whose mean accuracy, and that of every voltage above it, is at least
    reference - MARGIN (`sramsim.analysis.operating_point`); None if the highest swept voltage
    already fails."""
    from sramsim.analysis.operating_point import lowest_within as rule
    best = rule(points, reference, MARGIN)
    return None if best is None else dict(best)


def operating_points(result: dict, unprotected_clean: float) -> dict:
    """Lowest voltage within 1 point of own clean, of the unprotected clean, and of both."""
    from sramsim.analysis.operating_point import Reference
    own = result["clean_accuracy"]
    both = Reference.strictest({"own clean": own, "unprotected clean": unprotected_clean})
    return {"within_own_clean": lowest_within(result["points"], own),
            "within_unprotected_clean": lowest_within(result["points"], unprotected_clean),
            "within_both": lowest_within(result["points"], both.value(own))}


def val_score(result: dict, unprotected_clean: float, extra_nominal: float) -> list[float]:
    """Selection key on validation: (net saving at the lowest voltage within both references,
    or the cost at nominal voltage when none qualifies; mean accuracy over the grid)."""
    op = lowest_within(result["points"], max(result["clean_accuracy"], unprotected_clean))
    saving = op["net_saving"] if op else -extra_nominal
    return [round(saving, 6), round(float(np.mean([p["accuracy_mean"]
                                                   for p in result["points"]])), 6)]


# ------------------------------------------------------------------------------ one model

def run_model(arch: str, data: tuple) -> dict:
    """Train, choose knobs on validation, sweep every method on the test chips."""
    from fusion.evaluation import transformed
    from sramsim.analysis.accesses import weight_accesses
    from sramsim.nn.models import build
    train_set, val_full, test_full = data
    val = head(val_full, SETUP[arch]["val_images"])
    test = head(test_full, SETUP[arch]["test_images"])
    val_chips, test_chips = chips_for(arch, "val"), chips_for(arch, "test")
    base_reads = weight_accesses(build(arch, 1, 10), (1, 28, 28))
    root = CACHE / arch
    t_model = time.perf_counter()

    def validate(key, path, extra=0.0, dataset=None):
        return with_costs(sweep(path, val if dataset is None else dataset, val_chips,
                                VAL_VOLTAGES, root / "val" / key, {}), extra)

    models, gens, search = {}, {}, {}
    models["base"] = train_model(arch, "base", {"scheme": "symmetric"}, train_set)
    base_val = validate("base", models["base"][0])
    ref_val = base_val["clean_accuracy"]

    def choose(knob: str, keyed: dict, extra: dict | None = None,
               inputs: dict | None = None) -> str:
        """Validate each candidate (model path, meta), keep the best key; record all of them.
        extra: reads at nominal per base read by key; inputs: the validation images as the
        candidate's base model sees them (a generator's output) by key."""
        rows = {}
        for key, (path, meta) in keyed.items():
            e = (extra or {}).get(key, 0.0)
            clip = meta.get("clip") if meta.get("bench_config", {}).get("options", {}).get(
                "randbet_p") else None     # RandBET candidates depend on the chosen clip
            r = validate(key if clip is None else f"{key}-clip{clip:g}", path, e,
                         (inputs or {}).get(key))
            rows[key] = {"val_clean_accuracy": r["clean_accuracy"],
                         "val_points": r["points"], "score": val_score(r, ref_val, e),
                         "train_wall_s": meta["train_wall_s"], "train_cpu_s": meta["train_cpu_s"]}
        best = max(rows, key=lambda k: rows[k]["score"])
        search[knob] = {"candidates": rows, "chosen": best,
                        "search_wall_s": round(sum(r["train_wall_s"] for r in rows.values()), 1),
                        "search_cpu_s": round(sum(r["train_cpu_s"] for r in rows.values()), 1)}
        log(f"{arch}: {knob} -> {best} " + ", ".join(f"{k} {r['score']}" for k, r in rows.items()))
        return best

    clips = {f"clip{w:g}": train_model(arch, f"clip{w:g}", {"scheme": "rquant", "clip": w},
                                       train_set) for w in CANDIDATES["clip"]}
    models["clip"] = clips[choose("clip", clips)]
    w = models["clip"][1]["clip"]
    randbets = {f"randbet{p:g}": train_model(arch, f"randbet{p:g}", {
        "scheme": "rquant", "clip": w, "randbet_p": p}, train_set) for p in CANDIDATES["randbet_p"]}
    models["randbet"] = randbets[choose("randbet_p", randbets)]
    fats = {f"fat{b:g}": train_model(arch, f"fat{b:g}", {
        "scheme": "symmetric", "fat_ber": b, "fat_curriculum": "log", "fat_source": "random"},
        train_set) for b in CANDIDATES["fat_ber"]}
    models["fat"] = fats[choose("fat_ber", fats)]

    nf_candidates, extra, inputs = {}, {}, {}
    for gname, width in CANDIDATES["generator"]:
        key = f"nf-{gname}x{width:g}"
        gen, info = train_nf(arch, key, models["base"][0], gname, width, train_set)
        gens[key] = (gen, info)
        nf_candidates[key] = (models["base"][0], info)
        extra[key] = info["weight_reads"] * GENERATOR_BITS / (base_reads * 8)
        inputs[key] = transformed(gen, val)
    chosen_g = choose("generator", nf_candidates, extra, inputs)
    gens["nf"] = gens[chosen_g]
    gname, width = gens["nf"][1]["generator"], gens["nf"][1]["width"]
    gens["nf-randbet"] = train_nf(arch, f"randbet-{chosen_g}", models["randbet"][0], gname,
                                  width, train_set)
    log(f"{arch}: training and selection done in {time.perf_counter() - t_model:.0f} s")

    # ---- test sweeps
    methods = {}
    base_clean = None
    for name, (role, protection, grole) in METHODS.items():
        path, meta = models[role]
        dataset, extra_nominal, parts = test, 0.0, [meta]
        if grole is not None:
            gen, info = gens[grole]
            dataset = transformed(gen, test)
            extra_nominal = info["weight_reads"] * GENERATOR_BITS / (base_reads * 8)
            parts = [meta, info]
        if protection.get("bit_placement") == "shuffle":
            extra_nominal += SHUFFLE_TABLE_BITS / 8
        with Clock() as c:
            r = with_costs(sweep(path, dataset, test_chips, VOLTAGES, root / "test" / name,
                                 protection), extra_nominal)
        if name == "none":
            base_clean = r["clean_accuracy"]
        knob = {"clip": "clip", "randbet": "randbet_p", "fat": "fat_ber"}.get(role)
        chosen_by = [k for k in (knob, "generator" if grole else None) if k]
        if role == "randbet":
            chosen_by.insert(0, "clip")
        methods[name] = {
            "model": {"scheme": meta["scheme"], "clip": meta["clip"],
                      "randbet_p": meta["bench_config"]["options"].get("randbet_p"),
                      "fat_ber": meta["bench_config"]["options"].get("fat_ber")},
            "protection": protection or None,
            "generator": None if grole is None else {k: gens[grole][1][k] for k in (
                "generator", "width", "weight_reads", "eopm_steps", "epoch_complete")},
            "extra_nominal_reads_per_read": round(extra_nominal, 6),
            "clean_accuracy": r["clean_accuracy"], "points": r["points"],
            "train_wall_s": round(sum(p["train_wall_s"] for p in parts), 1),
            "train_cpu_s": round(sum(p["train_cpu_s"] for p in parts), 1),
            "knob_search_wall_s": round(sum(search[k]["search_wall_s"] for k in chosen_by), 1),
            "knobs_chosen_by": chosen_by, "test_sweep_wall_s": round(c.wall, 1)}
        log(f"{arch} {name}: clean {r['clean_accuracy']:.4f}; " + ", ".join(
            f"{p['voltage']:g} {p['accuracy_mean']:.3f}" for p in r["points"]))
    for m in methods.values():
        m.update(operating_points(m, base_clean))
    return {"stored_weights": base_reads, "test_images": len(test), "val_images": len(val),
            "test_chips": chip_names(test_chips), "val_chips": chip_names(val_chips),
            "validation": {"unprotected_clean_accuracy": ref_val, "base_points": base_val["points"],
                           "search": search},
            "methods": methods, "wall_s": round(time.perf_counter() - t_model, 1)}


# ------------------------------------------------------------------------------ report

def nominal_net_saving(m: dict) -> float:
    """A method's net saving at nominal voltage (where it runs when no swept voltage
    qualifies): its ECC overhead and nominal-voltage extras, as a (negative) saving."""
    from sramsim.analysis.energy import saving
    return saving(1.0, ecc=(m["protection"] or {}).get("ecc")) - m["extra_nominal_reads_per_read"]


def plot(models: dict, path: Path) -> None:
    """Top: accuracy vs voltage per method (95% CI over chips); bottom: net saving vs accuracy
    at each method's equal-accuracy operating point, one marker per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    markers = "osD^vP*Xh<>"
    colors = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(2, len(models), figsize=(7 * len(models), 10), squeeze=False)
    for col, (arch, res) in enumerate(models.items()):
        ax, bx = axes[0][col], axes[1][col]
        for i, (name, m) in enumerate(res["methods"].items()):
            style = {"marker": markers[i % len(markers)], "color": colors[i % len(colors)]}
            pts = sorted(m["points"], key=lambda p: p["voltage"])
            ax.errorbar([p["voltage"] + 0.0012 * (i - 5) for p in pts],
                        [100 * p["accuracy_mean"] for p in pts],
                        yerr=[100 * p["ci95"] for p in pts], ms=4, capsize=2, lw=1, label=name,
                        **style)
            op = m["within_both"]
            acc, sav = ((op["accuracy_mean"], op["net_saving"]) if op else
                        (m["clean_accuracy"], nominal_net_saving(m)))
            bx.scatter([100 * acc], [100 * sav], s=60, label=name + ("" if op else " (nominal)"),
                       **style)
            if op and m["extra_nominal_reads_per_read"] > 0:     # hollow: before the extras
                free = 100 * op["saving_before_extra"]
                bx.plot([100 * acc] * 2, [100 * sav, free], color=style["color"], ls=":", lw=1)
                bx.scatter([100 * acc], [free], s=60, facecolors="none",
                           edgecolors=style["color"], marker=style["marker"])
            where = f" {op['voltage']:g} V" if op else " (no voltage qualifies: nominal)"
            bx.annotate(name + where, (100 * acc, 100 * sav), fontsize=7,
                        xytext=(4, 3 - 9 * (i % 3)), textcoords="offset points")
        ref = res["methods"]["none"]["clean_accuracy"]
        ax.axhline(100 * (ref - MARGIN), color="gray", ls=":", lw=1)
        ax.set_xlabel("supply voltage (V / V_nom, finfet14)")
        ax.set_ylabel(f"test accuracy % (mean ± 95% CI over {len(res['test_chips'])} chips)")
        ax.set_title(f"{arch}: accuracy vs voltage (dotted: unprotected clean - 1 point)")
        ax.set_ylim(max(0, 100 * ref - 30), 100 * ref + 3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        bx.axhline(0, color="black", lw=0.8)
        bx.set_xlabel("test accuracy % at the lowest voltage within 1 point of own and "
                      "unprotected clean")
        bx.set_ylabel("net weight-memory energy saving % (after the method's own costs)")
        bx.set_title(f"{arch}: equal-accuracy operating point per method\n(hollow: before "
                     "the generator's / remap table's reads at nominal voltage)", fontsize=10)
        bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(models: dict) -> str:
    """Per model and method: clean accuracy, lowest voltages within own / unprotected / both,
    BER, accuracy and net saving (before the nominal-voltage extras) at the last, training time."""
    lines = []
    for arch, res in models.items():
        lines.append(f"\n{arch} ({res['test_images']} test images, {len(res['test_chips'])} "
                     "chips): clean% | V own / unprot / both | BER% acc% net% (before extras) | "
                     "train wall/CPU s | knob search s")
        for name, m in res["methods"].items():
            v = [m[k]["voltage"] if m[k] else None for k in
                 ("within_own_clean", "within_unprotected_clean", "within_both")]
            op = m["within_both"]
            at = (f"{100 * op['ber']:5.2f} {100 * op['accuracy_mean']:6.2f} "
                  f"{100 * op['net_saving']:6.1f} ({100 * op['saving_before_extra']:5.1f})"
                  if op else f"{'-':>5} {'-':>6} {100 * nominal_net_saving(m):6.1f}"
                  " at nominal")
            lines.append(f"  {name:19} {100 * m['clean_accuracy']:6.2f} | " +
                         " / ".join("-" if x is None else f"{x:g}" for x in v) +
                         f" | {at} | {m['train_wall_s']:.0f}/{m['train_cpu_s']:.0f} | "
                         f"{m['knob_search_wall_s']:.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="compare_mitigations.py --mode random-ber runs the older "
                                        "comparison at fixed random bit error rates")
    ap.add_argument("--models", default="cnn,resnet20", help="comma list of cnn, resnet20")
    ap.add_argument("--out", default=str(RESULTS / "equal_energy.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        result = json.loads(out.read_text())
        plot(result["models"], out.with_suffix(".png"))
        print(table(result["models"]))
        return 0
    archs = [a for a in args.models.split(",") if a]
    bad = [a for a in archs if a not in SETUP]
    if bad or not archs:
        ap.error(f"--models: {','.join(bad) or 'none given'}; use a comma list of "
                 f"{', '.join(SETUP)}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = datasets()
    done = {}
    for arch in archs:
        done[arch] = run_model(arch, data)
        result = {
            "benchmark": "compare_mitigations --mode equal-energy",
            "question": "lowest voltage within 1 point of own and unprotected clean accuracy, "
                        "net weight-memory saving there after own costs, and training time, "
                        "of every mitigation",
            "settings": {
                "voltages": VOLTAGES, "val_voltages": VAL_VOLTAGES, "margin": MARGIN,
                "curve": "finfet14", "bits": 8, "energy": "E(V) = (V/Vnom)^2 per read",
                "train_images": TRAIN_POOL - VAL_SPLIT, "val_split": f"training images "
                f"{TRAIN_POOL - VAL_SPLIT}..{TRAIN_POOL - 1} (never trained on)",
                "epochs": EPOCHS, "recipe": "Adam 1e-3, cosine, batch 128, seed 0, QAT, same "
                "initial weights for every model of an architecture",
                "eopm": {"seconds": EOPM_SECONDS, "n_perturbed": EOPM_N, "lambda": EOPM_LAMBDA,
                         "train_voltage": NF_TRAIN_VOLTAGE, "fault_source": "validation chips",
                         "not_tuned": "lambda and training voltage (fixed)"},
                "candidates": CANDIDATES, "setup": SETUP, "val_chip_seed": VAL_CHIP_SEED,
                "test_chip_seed_resnet20": TEST_CHIP_SEED, "generator_bits": GENERATOR_BITS,
                "shuffle_table_bits_per_word": SHUFFLE_TABLE_BITS,
                "selection": "max net saving on validation at the lowest validation voltage "
                             "within 1 point of max(own, unprotected) validation clean accuracy; "
                             "ties by mean validation accuracy over the grid",
                "methods": {k: {"model": v[0], "protection": v[1], "generator": v[2]}
                            for k, v in METHODS.items()},
            },
            "models": done, "total_wall_s": round(time.perf_counter() - t0, 1)}
        write_result(out.name, result, results=out.parent)
        plot(done, out.with_suffix(".png"))
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
