"""Mitigations compared: `--mode equal-energy` (default, see benchmarks/equal_energy.py) and
`--mode random-ber` (the older comparison below).

--mode equal-energy: every mitigation (none, ECC, bit placement, clipping, RandBET, NeuralFuse,
fault-aware training and combinations) at its lowest voltage on the test chips whose accuracy
stays within 1 point of its own clean accuracy and of the unprotected clean model, with its net
weight-memory saving after its own costs and the training time it needed; every knob chosen on
validation images and validation chips. -> benchmarks/results/equal_energy.json + .png

--mode random-ber:
Weight-side hardening (Stutz et al., MLSys 2021) vs NeuralFuse (Sun et al., NeurIPS 2024),
side by side at the same bit error rates and the same energy model.

Fashion-MNIST, the default small CNN (BatchNorm), 8-bit and 4-bit weights, random bit errors at
BER 0.1, 0.5, 1, 2, 5 %. Methods:
  Normal     symmetric per-layer quantization, quantization-aware training
  RQuant     robust quantization (asymmetric range, unsigned codes, clamped read-back)
  Clipping   RQuant + weight clipping to [-0.1, 0.1]
  RandBET    RQuant + clipping + random bit error training at p = 1 %
  NF-ConvS, NF-UNetS   a NeuralFuse generator trained with EOPM (random errors at 1 %) in front of
             the frozen Normal model, reused at every BER
Accuracy: mean and sample std over 10 random bit error maps per (bit width, BER), the same maps
(fixed seeds) for every method (a paired comparison); RErr = 1 - accuracy per map.
Energy: weight-memory reads at the voltage where finfet14 has that BER, E(V) = (V/Vnom)^2 per read
(`sramsim.analysis.energy`); weight-side methods have no add-on; NeuralFuse pays its generator's reads at
nominal voltage. Reads are weighted by bits per read (base: its m bits per weight; generator
stored at 8 bits per weight).

Paired differences: per map, accuracy(method) - accuracy(Normal) on the same map, mean and a 95 %
t-interval (the maps' luck cancels, so small differences are resolved that the std hides).

Budget (a shared 2-core machine, about 25 minutes): every model is trained from scratch from the
same initial weights with the same recipe (2 epochs on the first 6,000 training images, 8 models),
generators train for a fixed wall-time budget, evaluation uses the first 1,000 test images. Every
choice is recorded in the JSON. Intermediate models, generators and per-point results are kept in
benchmarks/.cache/mitigations/ (a re-run resumes and skips what is done).

Run: `.venv/bin/python benchmarks/compare_mitigations.py --mode random-ber`
  -> benchmarks/results/mitigations.json + mitigations.png
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
from common import RESULTS, write_result  # noqa: E402

RANDOM_BER_DOC = __doc__.split("--mode random-ber:\n", 1)[1]

from sramsim import BerCurve, QuantizedModel, RandomBitErrors  # noqa: E402
from sramsim.analysis import energy as E  # noqa: E402
from sramsim.nn.data import load_dataset  # noqa: E402
from sramsim.nn.evaluation import accuracy  # noqa: E402
from sramsim.nn.models import build, load_checkpoint, save_checkpoint  # noqa: E402
from sramsim.nn.training import TrainOptions, quantized_accuracy, train  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "mitigations"
BERS = [0.001, 0.005, 0.01, 0.02, 0.05]
CURVE = "finfet14"
CLIP = 0.1
RANDBET_P = 0.01
EOPM_BER = 0.01
GENERATOR_BITS = 8
MAP_SEED = 7000          # maps of BER index i: RandomBitErrors(ber, seed=MAP_SEED + i)
WEIGHT_METHODS = {       # name -> (scheme, clip, randbet_p)
    "Normal": ("symmetric", None, 0.0),
    "RQuant": ("rquant", None, 0.0),
    "Clipping": ("rquant", CLIP, 0.0),
    "RandBET": ("rquant", CLIP, RANDBET_P),
}
GENERATORS = ("ConvS", "UNetS")
METHOD_ORDER = [*WEIGHT_METHODS, *(f"NF-{g}" for g in GENERATORS)]
PUBLISHED = {
    "source": "Stutz et al., Bit Error Robustness for Energy-Efficient DNN Accelerators, MLSys 2021, "
              "CIFAR-10, 8-bit, random bit errors p = 1 %, RErr in %",
    "rerr_percent": {"Normal": 72.7, "RQuant": 32.1, "Clipping 0.1": 8.9, "RandBET": 7.4},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ models

def _meta(model_name: str, bits: int, scheme: str, clip, randbet_p, config: dict,
          history: list, test_set, model) -> dict:
    opts = TrainOptions(bits=bits, scheme=scheme, clip=clip)
    return {"arch": "cnn", "in_channels": 1, "num_classes": 10, "norm": "batch", "bits": bits,
            "scheme": scheme, "clip": clip, "randbet_p": randbet_p, "dataset": "fashion-mnist",
            "method": model_name, "bench_config": config, "history": history,
            "test_accuracy": quantized_accuracy(model, test_set, opts),
            "float_test_accuracy": accuracy(model, test_set)}


def trained(name: str, bits: int, args, train_set, test_set) -> tuple[Path, dict]:
    """A method's model, trained from scratch with the common recipe (then cached)."""
    scheme, clip, p = WEIGHT_METHODS[name]
    config = {"method": name, "bits": bits, "scheme": scheme, "clip": clip, "randbet_p": p,
              "train_samples": len(train_set), "epochs": args.epochs, "lr": 1e-3,
              "optimizer": "adam", "schedule": "cosine", "batch_size": 128, "seed": 0}
    path = args.cache / f"{name}-{bits}bit.pt"
    if path.exists():
        _, meta = load_checkpoint(path)
        if meta.get("bench_config") == config:
            return path, meta
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build("cnn")          # the same initial weights for every method
    opts = TrainOptions(epochs=args.epochs, lr=1e-3, bits=bits, scheme=scheme, clip=clip,
                        randbet_p=p, seed=0)
    state = args.cache / f"{name}-{bits}bit.partial"
    history = train(model, train_set, opts, state_path=state, tag=config, progress=False, log=None)
    meta = _meta(name, bits, scheme, clip, p, config, history, test_set, model)
    meta["train_seconds"] = time.perf_counter() - t0
    save_checkpoint(path, model, meta)
    state.unlink(missing_ok=True)
    log(f"trained {name} {bits}-bit in {meta['train_seconds']:.0f} s: clean quantized accuracy "
        f"{meta['test_accuracy']:.4f}")
    return path, meta


def generator_for(gname: str, bits: int, base_path: Path, args, train_set) -> tuple[object, dict]:
    """A NeuralFuse generator trained with EOPM on the Normal model (cached)."""
    from fusion.eopm import EopmConfig
    from fusion.evaluation import FaultSpec
    from fusion.pipeline import GENERATOR_FILE, train_generator
    from fusion.store import load_generator
    from fusion.commands.common import base_info, load_base
    out = args.cache / f"{gname}-{bits}bit-eopm"
    want = {"ber": EOPM_BER, "n_perturbed": args.eopm_n, "budget_s": args.eopm_seconds,
            "train_samples": len(train_set), "base": base_path.name}
    marker = out / "bench_config.json"
    if (out / GENERATOR_FILE).exists() and marker.exists() and json.loads(marker.read_text()) == want:
        return load_generator(out / GENERATOR_FILE)
    if out.exists():
        import shutil
        shutil.rmtree(out)
    qm, meta = load_base(str(base_path))
    config = EopmConfig(generator=gname, n_perturbed=args.eopm_n, lam=5.0, batch_size=128, seed=0)
    result = train_generator(qm, base_info(str(base_path), meta, qm), train_set,
                             FaultSpec(ber=EOPM_BER), config, epochs=1, out_dir=out, progress=False,
                             budget_seconds=args.eopm_seconds)
    marker.write_text(json.dumps(want))
    log(f"trained {gname} on Normal {bits}-bit: {result['steps']} steps in "
        f"{result['train_seconds']:.0f} s")
    return load_generator(out / GENERATOR_FILE)


# ------------------------------------------------------------------------------ evaluation

def maps_for(ber_index: int, ber: float, nbits: int, n: int) -> list:
    """The fixed fault maps of one BER, shared by every method of a bit width."""
    source = RandomBitErrors(ber, seed=MAP_SEED + ber_index)
    return [source.draw(nbits) for _ in range(n)]


def _stats(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"accuracy_mean": float(a.mean()), "accuracy_std": float(a.std(ddof=1)),
            "rerr_mean": float(1 - a.mean()), "rerr_std": float(a.std(ddof=1)),
            "accuracy": [float(v) for v in a]}


def evaluate_bits(bits: int, models: dict, generators: dict, test_set, args, done: dict,
                  record) -> None:
    """Every (method, BER) point of one bit width; finished points come from `done`."""
    from fusion.evaluation import transform
    curve = BerCurve.builtin(CURVE)
    qms = {name: QuantizedModel(load_checkpoint(p)[0], bits, WEIGHT_METHODS[name][0],
                                WEIGHT_METHODS[name][1]) for name, (p, _) in models.items()}
    normal = qms["Normal"]
    base_reads = E.weight_accesses(normal.model, (1, 28, 28))
    inputs = {g: transform(gen, test_set.x) for g, (gen, _) in generators.items()}
    from sramsim.nn.data import Dataset
    gsets = {g: Dataset(x, test_set.y, test_set.num_classes, test_set.name) for g, x in inputs.items()}
    sizes = {qm.image.size for qm in qms.values()}
    assert len(sizes) == 1, "all methods of a bit width share one image layout"
    nbits = sizes.pop() * 8
    for i, ber in enumerate(BERS):
        keys = [(bits, m, ber) for m in qms] + [(bits, f"NF-{g}", ber) for g in gsets]
        if all(k in done for k in keys):
            continue
        t0 = time.perf_counter()
        maps = maps_for(i, ber, nbits, args.maps)
        v = float(curve.voltage(ber))
        e = E.energy_per_read(v)
        for name, qm in qms.items():
            wanted = [(name, test_set)] + ([(f"NF-{g}", d) for g, d in gsets.items()]
                                           if name == "Normal" else [])
            if all((bits, n, ber) in done for n, _ in wanted):
                continue
            acc = {n: [] for n, _ in wanted}
            for faults in maps:
                weights = qm.perturbed(faults)
                for n, d in wanted:
                    acc[n].append(accuracy(qm.model, d, weights))
            for n, _ in wanted:
                point = {"bits": bits, "method": n, "ber": ber, "voltage": v,
                         "energy_per_read": e, **_stats(acc[n])}
                if n.startswith("NF-"):
                    g_reads = generators[n[3:]][1]["reads"]
                    point["energy_saving"] = E.addon_saving(base_reads * bits,
                                                            g_reads * GENERATOR_BITS, v)
                else:
                    point["energy_saving"] = 1.0 - e
                record(point)
        log(f"{bits}-bit BER {ber:g}: {len(keys)} methods x {args.maps} maps in "
            f"{time.perf_counter() - t0:.0f} s")


# ------------------------------------------------------------------------------ report

def summary_table(points: list[dict], bits_list) -> dict:
    """{bits: {method: {ber: point}}} with clean accuracy per method."""
    out = {}
    for bits in bits_list:
        rows = {}
        for p in points:
            if p["bits"] == bits:
                rows.setdefault(p["method"], {})[str(p["ber"])] = {
                    k: p[k] for k in ("accuracy_mean", "accuracy_std", "rerr_mean", "rerr_std",
                                      "voltage", "energy_saving", "accuracy")}
                if "vs_normal" in p:
                    rows[p["method"]][str(p["ber"])]["vs_normal"] = p["vs_normal"]
        out[str(bits)] = rows
    return out


def paired_vs_normal(points: list[dict]) -> None:
    """Add per-map differences to Normal (same maps) to each point: mean and 95 % t-interval."""
    from scipy import stats
    normal = {(p["bits"], p["ber"]): np.asarray(p["accuracy"]) for p in points
              if p["method"] == "Normal"}
    for p in points:
        ref = normal.get((p["bits"], p["ber"]))
        if ref is None or p["method"] == "Normal":
            continue
        d = np.asarray(p["accuracy"]) - ref
        half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
        p["vs_normal"] = {"accuracy_diff_mean": float(d.mean()), "ci95": half}


def ordering_at(points, bits: int, ber: float) -> list[list]:
    rows = [(p["method"], round(100 * p["rerr_mean"], 2), round(100 * p["rerr_std"], 2))
            for p in points if p["bits"] == bits and p["ber"] == ber]
    return [list(r) for r in sorted(rows, key=lambda r: -r[1])]


def plot(result: dict, path: Path) -> None:
    """Top: accuracy vs BER per method (x nudged per method so error bars do not hide each
    other); bottom: net energy saving vs BER."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles = {"Normal": ("tab:gray", "o"), "RQuant": ("tab:blue", "s"),
              "Clipping": ("tab:green", "^"), "RandBET": ("tab:red", "D"),
              "NF-ConvS": ("tab:purple", "v"), "NF-UNetS": ("tab:orange", "P")}
    bits_list = [int(b) for b in result["table"]]
    fig, axes = plt.subplots(2, len(bits_list), figsize=(6.5 * len(bits_list), 9), squeeze=False)
    for col, bits in enumerate(bits_list):
        rows = result["table"][str(bits)]
        ax, ax_e = axes[0][col], axes[1][col]
        methods = sorted(rows, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)
        for i, method in enumerate(methods):
            pts = rows[method]
            bers = sorted(pts, key=float)
            x = [100 * float(b) for b in bers]
            nudge = 1 + 0.035 * (i - (len(methods) - 1) / 2)
            color, marker = styles.get(method, ("black", "x"))
            ax.errorbar([v * nudge for v in x], [100 * pts[b]["accuracy_mean"] for b in bers],
                        yerr=[100 * pts[b]["accuracy_std"] for b in bers], color=color,
                        marker=marker, ms=5, capsize=2.5, lw=1.4, label=method)
            ax_e.plot(x, [100 * pts[b]["energy_saving"] for b in bers], color=color,
                      marker=marker, ms=5, label=method)
        clean = result["models"].get(f"Normal-{bits}bit", {}).get("clean_accuracy")
        if clean is not None:
            ax.axhline(100 * clean, color="tab:gray", ls=":", lw=1, label="Normal, no bit errors")
        ticks = [100 * b for b in result["settings"]["bers"]]
        for a in (ax, ax_e):
            a.set_xscale("log")
            a.set_xticks(ticks, [f"{t:g}" for t in ticks])
            a.minorticks_off()
            a.set_xlabel("bit error rate (%)")
            a.grid(alpha=0.3)
        ax.set_title(f"{bits}-bit weights: accuracy under random bit errors")
        ax.set_ylabel(f"accuracy (%): mean ± std over {result['settings']['maps']} maps")
        ax.legend(fontsize=8, loc="lower left")
        ax_e.axhline(0, color="black", lw=0.8)
        ax_e.set_title(f"{bits}-bit: net weight-memory energy saving")
        ax_e.set_ylabel("saving vs nominal voltage (%)")
        ax_e.text(0.02, 0.5, "weight-side methods: no add-on, all on the top line\n"
                  "NeuralFuse: generator read at nominal voltage", transform=ax_e.transAxes,
                  fontsize=8, va="center")
        ax_e.legend(fontsize=8, loc="lower right")
    fig.suptitle("Fashion-MNIST CNN: weight hardening (Stutz et al.) vs NeuralFuse, finfet14 "
                 "voltage at each BER", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ main

def random_ber_main(argv=None) -> int:
    """The older comparison at fixed random bit error rates (writes mitigations.json)."""
    ap = argparse.ArgumentParser(description=RANDOM_BER_DOC.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=6_000)
    ap.add_argument("--test-limit", type=int, default=1_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--maps", type=int, default=10)
    ap.add_argument("--eopm-n", type=int, default=4, help="perturbed models per EOPM step")
    ap.add_argument("--eopm-seconds", type=float, default=60.0, help="training time per generator")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=str(CACHE))
    ap.add_argument("--out", default=str(RESULTS / "mitigations.json"))
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw the PNG and table from the existing JSON (no training or evaluation)")
    args = ap.parse_args(argv)
    if args.plot_only:
        out = Path(args.out)
        result = json.loads(out.read_text())
        plot(result, out.with_suffix(".png"))
        print_table(result)
        return 0
    if args.maps < 2:
        ap.error("--maps must be >= 2 (a standard deviation needs two maps)")
    args.cache = Path(args.cache)
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    bits_list = [int(b) for b in args.bits.split(",")]
    t_start = time.perf_counter()
    stages = {}

    train_set = load_dataset("fashion-mnist", "train", args.train_limit)
    test_set = load_dataset("fashion-mnist", "test", args.test_limit)

    t0 = time.perf_counter()
    models = {(name, bits): trained(name, bits, args, train_set, test_set)
              for bits in bits_list for name in WEIGHT_METHODS}
    stages["train_models_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    gens = {}
    for bits in bits_list:
        for g in GENERATORS:
            gen, gmeta = generator_for(g, bits, models[("Normal", bits)][0], args, train_set)
            gens[(g, bits)] = (gen, {"reads": E.weight_accesses(gen, (1, 28, 28)),
                                     "steps": gmeta.get("steps"),
                                     "train_seconds": gmeta.get("train_seconds")})
    stages["train_generators_s"] = round(time.perf_counter() - t0, 1)

    points_path = args.cache / "points.jsonl"
    settings = {k: v for k, v in vars(args).items() if k not in ("cache", "out", "threads")}
    settings.update({"bers": BERS, "curve": CURVE, "clip": CLIP, "randbet_p": RANDBET_P,
                     "eopm_ber": EOPM_BER, "map_seeds": [MAP_SEED + i for i in range(len(BERS))]})
    done = {}
    config_path = args.cache / "points.config.json"
    if points_path.exists() and config_path.exists() and json.loads(config_path.read_text()) == settings:
        for line in points_path.read_text().splitlines():
            if line.strip():
                p = json.loads(line)
                done[(p["bits"], p["method"], p["ber"])] = p
    else:
        points_path.unlink(missing_ok=True)
        config_path.write_text(json.dumps(settings))

    def record(point: dict) -> None:
        done[(point["bits"], point["method"], point["ber"])] = point
        with open(points_path, "a") as f:
            f.write(json.dumps(point) + "\n")

    t0 = time.perf_counter()
    for bits in bits_list:
        evaluate_bits(bits, {n: models[(n, b)] for (n, b) in models if b == bits},
                      {g: gens[(g, b)] for (g, b) in gens if b == bits}, test_set, args, done, record)
    stages["evaluate_s"] = round(time.perf_counter() - t0, 1)
    stages["total_s"] = round(time.perf_counter() - t_start, 1)

    points = sorted(done.values(), key=lambda p: (-p["bits"], p["method"], p["ber"]))
    paired_vs_normal(points)
    model_info = {f"{n}-{b}bit": {"clean_accuracy": m["test_accuracy"],
                                  "clean_error": 1 - m["test_accuracy"],
                                  "float_accuracy": m["float_test_accuracy"],
                                  "scheme": m["scheme"], "clip": m["clip"],
                                  "randbet_p": m.get("randbet_p"),
                                  "training": m.get("bench_config"),
                                  "train_seconds": m.get("train_seconds")}
                  for (n, b), (_, m) in models.items()}
    for (g, b), (gen, info) in gens.items():
        model_info[f"NF-{g}-{b}bit"] = {"weight_reads": info["reads"], "eopm_steps": info["steps"],
                                        "train_seconds": info["train_seconds"]}
    result = {
        "benchmark": "compare_mitigations",
        "question": "accuracy and net energy saving of weight hardening (Stutz et al.) vs "
                    "NeuralFuse at the same bit error rates",
        "settings": settings,
        "choices": {
            "data": f"Fashion-MNIST: first {args.train_limit} training images (every model and "
                    f"generator), first {args.test_limit} test images",
            "models": f"default CNN (BatchNorm) for every method, each trained from scratch from the "
                      f"same initial weights with the same recipe: {args.epochs} epochs, Adam 1e-3, "
                      "cosine decay, batch 128, seed 0, quantization-aware (straight-through) with "
                      "the method's scheme / clipping / RandBET",
            "randbet": f"p = {RANDBET_P:g} for 8-bit and 4-bit, rquant + clipping {CLIP:g}",
            "neuralfuse": f"ConvS and UNetS (width 1), EOPM at BER {EOPM_BER:g} (N = {args.eopm_n} "
                          f"perturbed models per step, lambda 5, batch 128) on the Normal model of "
                          f"each bit width, {args.eopm_seconds:g} s of training each; the same "
                          "generator is used at every BER",
            "fault_maps": f"RandomBitErrors with fixed seeds ({args.maps} maps per BER, the same maps "
                          "for every method of a bit width), flips only",
            "energy": "E(V) = (V/Vnom)^2 per read at the finfet14 voltage of the BER; reads weighted "
                      f"by bits (base m bits per weight, generator {GENERATOR_BITS} bits per weight "
                      "at nominal voltage); one read per weight per inference",
        },
        "published": PUBLISHED,
        "models": model_info,
        "table": summary_table(points, bits_list),
        "rerr_ordering_at_1pct": {str(b): ordering_at(points, b, 0.01) for b in bits_list},
        "stages": stages,
    }
    out = Path(args.out)
    write_result(out.name, result, results=out.parent)
    plot(result, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')} in {stages['total_s']:.0f} s")
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    """Accuracy mean ± std (and the paired difference to Normal) per bit width, method and BER."""
    for bits, rows in result["table"].items():
        bers = sorted(next(iter(rows.values())), key=float)
        print(f"\n{bits}-bit: accuracy % mean ± std over maps [paired diff to Normal ± CI95]; "
              "net energy saving %")
        print(f"{'method':10}" + "".join(f"{'BER ' + format(100 * float(b), 'g') + '%':>24}"
                                         for b in bers) + f"{'saving':>26}")
        for method in sorted(rows, key=METHOD_ORDER.index):
            pts = rows[method]
            cells = []
            for b in bers:
                q = pts[b]
                diff = (f"[{100 * q['vs_normal']['accuracy_diff_mean']:+.1f}±"
                        f"{100 * q['vs_normal']['ci95']:.1f}]" if "vs_normal" in q else "")
                cells.append(f"{100 * q['accuracy_mean']:.1f}±{100 * q['accuracy_std']:.1f}{diff}")
            saving = "/".join(f"{100 * pts[b]['energy_saving']:.0f}" for b in bers)
            print(f"{method:10}" + "".join(f"{c:>24}" for c in cells) + f"{saving:>26}")


def main(argv=None) -> int:
    """--mode equal-energy (default) or random-ber; the other arguments go to the mode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    ap.add_argument("--mode", choices=("equal-energy", "random-ber"), default="equal-energy")
    args, rest = ap.parse_known_args(argv)
    if args.mode == "random-ber":
        return random_ber_main(rest)
    from equal_energy import main as equal_energy_main
    return equal_energy_main(rest)


if __name__ == "__main__":
    sys.exit(main())
