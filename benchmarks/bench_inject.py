"""Fault injection speed on an 11.2M-weight 8-bit model at the finfet14 voltage where BER ~ 1%.

All in one process, medians over repeats:
 (a) np.copyto of the memory image (the physical floor of producing a faulty copy)
 (b) QuantizedModel.faulty_image with a persistent chip (masks cached per voltage; the first
     call's build is reported separately), and `perturbed` (faulty image + dequantization)
 (c) drawing a new random chip of the same size (Chip.random)
 (d) a naive dense baseline: one uniform per stored bit, packbits, XOR (as published code does)
 (e) the peer tool MRFI 2.1.0 (weight injection, 8-bit symmetric quantization,
     RandomPositionByRate + IntRandomBitFlip, value rate 8 x BER): extra cost of one faulty forward
     pass over a clean one, i.e. MRFI's path from clean weights to faulty dequantized weights in
     use. Install it beside the project, not into it:
     `.venv/bin/python -m pip install --target .cache/mrfi-pkgs --no-deps mrfi==2.1.0` (pyyaml is
     needed too; its torchvision requirement is not used at import).
 (f) in place (issue 15.1): `QuantizedModel.faults_applied` on a copy of the model holding the clean
     dequantized weights: entering the block (faulty weights ready for a forward pass: only the
     codes a fault changed are decoded and written) and leaving it (those weights restored), with
     the persistent chip (its sorted faulty bytes cached per voltage; the first build reported
     apart) and with fresh RandomBitErrors (draw included, as MRFI draws anew every pass).
Headline (ratios.headline_end_to_end_mrfi_over_inplace): MRFI's extra time per faulty forward over
ours end to end, both producing faulty DEQUANTIZED weights in use, ours including everything the
in-place path needs per map (enter + restore); `perturbed` (functional, every weight dequantized)
and image-only (faulty memory image, no dequantization) beside it. Wall times are medians; on a
shared machine the CPU time of this thread (`cpu_s`, time.thread_time) is reported too, since a
10 ms operation is preempted far more often than a 1 ms copy.
Run: `PYTHONPATH=.cache/mrfi-pkgs .venv/bin/python benchmarks/bench_inject.py [--threads T]`
  -> benchmarks/results/inject.json
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write_result  # noqa: E402

from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors  # noqa: E402
from sramsim.nn.models import build  # noqa: E402

BER = 0.01


def naive_dense(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    flips = rng.random(image.size * 8) < p
    return image ^ np.packbits(flips, bitorder="little")


def cpu_median(fn, repeat: int = 21) -> float:
    """Median CPU time of this thread for fn() (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return float(np.median(times))


def inplace_times(qm: QuantizedModel, model: torch.nn.Module, make_source, voltage,
                  repeat: int = 11) -> dict:
    """Median wall and CPU times of entering `faults_applied` (faulty weights ready) and of
    leaving it (restored); make_source() gives the fault source of each repeat (drawn inside
    the timed enter for random errors: the draw is part of the path)."""
    rows = []
    for i in range(repeat + 1):
        w0, c0 = time.perf_counter(), time.thread_time()
        block = qm.faults_applied(model, make_source(), voltage)
        block.__enter__()
        w1, c1 = time.perf_counter(), time.thread_time()
        block.__exit__(None, None, None)
        w2, c2 = time.perf_counter(), time.thread_time()
        if i:                                      # the first call is the warm-up
            rows.append((w1 - w0, w2 - w1, w2 - w0, c1 - c0, c2 - c1, c2 - c0))
    med = np.median(np.array(rows), axis=0)
    return dict(zip(("enter_s", "exit_s", "enter_exit_s", "enter_cpu_s", "exit_cpu_s",
                     "enter_exit_cpu_s"), (float(x) for x in med)))


def mrfi_extra_cost(model: torch.nn.Module, x: torch.Tensor, ber: float) -> dict:
    try:
        from mrfi import MRFI, EasyConfig
    except ImportError:
        return {"skipped": "mrfi not installed (see the docstring)"}
    config = f"""
faultinject:
  - type: weight
    name: [weight]
    quantization:
      method: SymmericQuantization
      dynamic_range: auto
      bit_width: 8
    enabled: True
    selector:
      method: RandomPositionByRate
      poisson: True
      rate: {8 * ber}
    error_mode:
      method: IntRandomBitFlip
      bit_width: 8
    module_type: [Conv2d, Linear]
"""
    fi_model = MRFI(model, EasyConfig.load_string(config))
    with torch.no_grad():
        def clean():
            with fi_model.golden_run():
                fi_model(x)
        t_clean = median_time(clean, repeat=5)
        t_faulty = median_time(lambda: fi_model(x), repeat=5)
    return {"clean_forward_s": t_clean, "faulty_forward_s": t_faulty,
            "extra_s": t_faulty - t_clean, "value_rate": 8 * ber}


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and numba threads (default: theirs; 1 on a loaded machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build("resnet18", in_channels=3, num_classes=10).eval()
    qm = QuantizedModel(model, bits=8, scheme="symmetric")
    curve = BerCurve.builtin("finfet14")
    voltage = float(curve.voltage(BER))
    # A chip exactly as large as the image: every fault lands once (no tiling shortcut).
    geometry = Geometry(rows=qm.image.size * 8 // 1024, cols=1024)
    t0 = time.perf_counter()
    chip = Chip.random(geometry, curve, voltage, seed=0)
    out = np.empty_like(qm.image)
    t1 = time.perf_counter()
    qm.faulty_image(chip, voltage, out=out)
    first_build = time.perf_counter() - t1
    draw_first = t1 - t0
    empirical_ber = int(np.unpackbits(out ^ qm.image).sum()) / qm.n_bits

    t_copy = median_time(lambda: np.copyto(out, qm.image), repeat=21)
    t_faulty = median_time(lambda: qm.faulty_image(chip, voltage, out=out), repeat=21)
    numba.set_num_threads(1)
    t_faulty_1thread = median_time(lambda: qm.faulty_image(chip, voltage, out=out), repeat=21)
    numba.set_num_threads(args.threads or numba.config.NUMBA_NUM_THREADS)
    t_faulty_offset = median_time(lambda: qm.faulty_image(chip, voltage, offset=12345, out=out), repeat=21)
    t_perturbed = median_time(lambda: qm.perturbed(chip, voltage), repeat=7)
    seeds = iter(range(1, 1000))
    t_draw = median_time(lambda: Chip.random(geometry, curve, voltage, seed=next(seeds)), repeat=7)
    rng = np.random.default_rng(0)
    t_naive = median_time(lambda: naive_dense(qm.image, BER, rng), repeat=3)

    # (f) in place, on a copy that holds the clean dequantized weights
    work = copy.deepcopy(model)
    t0 = time.perf_counter()
    qm.load_clean(work)
    t_load_clean = time.perf_counter() - t0
    t0 = time.perf_counter()
    chip.byte_faults(voltage)
    t_byte_faults = time.perf_counter() - t0
    inplace_chip = inplace_times(qm, work, lambda: chip, voltage)
    random_seeds = iter(range(1, 1000))
    inplace_random = inplace_times(qm, work, lambda: RandomBitErrors(BER, seed=next(random_seeds)),
                                   None)
    cpu = {"a_copy": cpu_median(lambda: np.copyto(out, qm.image)),
           "b_perturbed_with_dequantize": cpu_median(lambda: qm.perturbed(chip, voltage), 7),
           "c_draw_random_chip": cpu_median(
               lambda: Chip.random(geometry, curve, voltage, seed=next(seeds)), 7),
           "f_inplace_enter": inplace_chip["enter_cpu_s"],
           "f_inplace_exit": inplace_chip["exit_cpu_s"],
           "f_inplace_enter_exit": inplace_chip["enter_exit_cpu_s"],
           "f_inplace_random_enter_exit": inplace_random["enter_exit_cpu_s"]}
    # a small tiled chip (the shipped 8192x128 geometry) for comparison
    small = Chip.random(Geometry(8192, 128), curve, 0.75, seed=0)
    qm.faulty_image(small, voltage, out=out)
    t_tiled = median_time(lambda: qm.faulty_image(small, voltage, offset=77, out=out), repeat=21)

    x = torch.randn(8, 3, 32, 32)
    mrfi = mrfi_extra_cost(model, x, BER)
    has_mrfi = "extra_s" in mrfi
    end_to_end = mrfi["extra_s"] / t_perturbed if has_mrfi else None
    image_only = mrfi["extra_s"] / t_faulty if has_mrfi else None
    t_inplace = inplace_chip["enter_exit_s"]
    inplace_e2e = mrfi["extra_s"] / t_inplace if has_mrfi else None
    inplace_random_e2e = mrfi["extra_s"] / inplace_random["enter_exit_s"] if has_mrfi else None

    result = {
        "model": "resnet18 (CIFAR-style), 8-bit symmetric", "weights": qm.n_codes,
        "image_bytes": int(qm.image.size), "voltage": voltage, "target_ber": BER,
        "chip_faults": len(chip), "empirical_ber": empirical_ber,
        "median_s": {
            "a_copy": t_copy, "b_faulty_image": t_faulty, "b_faulty_image_1_thread": t_faulty_1thread,
            "b_faulty_image_offset": t_faulty_offset,
            "b_first_call_mask_build": first_build, "b_perturbed_with_dequantize": t_perturbed,
            "b_tiled_8192x128_chip": t_tiled,
            "c_draw_random_chip": t_draw, "c_first_draw_incl_jit": draw_first,
            "d_naive_dense": t_naive, "e_mrfi_extra_per_faulty_forward": mrfi.get("extra_s"),
            "f_inplace_enter": inplace_chip["enter_s"], "f_inplace_exit": inplace_chip["exit_s"],
            "f_inplace_enter_exit": t_inplace,
            "f_inplace_random_enter_exit": inplace_random["enter_exit_s"],
            "f_inplace_random_enter": inplace_random["enter_s"],
            "f_once_load_clean": t_load_clean, "f_once_chip_byte_faults": t_byte_faults,
        },
        "cpu_s": cpu,
        "mrfi": mrfi,
        "ratios": {
            "headline_end_to_end_mrfi_over_inplace": inplace_e2e,
            "mrfi_over_inplace_random_errors": inplace_random_e2e,
            "end_to_end_mrfi_over_perturbed": end_to_end,
            "f_enter_over_a": inplace_chip["enter_s"] / t_copy,
            "f_enter_over_a_cpu": cpu["f_inplace_enter"] / cpu["a_copy"],
            "f_enter_exit_over_a_cpu": cpu["f_inplace_enter_exit"] / cpu["a_copy"],
            "b_perturbed_over_f_enter_exit": t_perturbed / t_inplace,
            "image_only_mrfi_over_faulty_image": image_only,
            "b_over_a": t_faulty / t_copy,
            "b_1_thread_over_a": t_faulty_1thread / t_copy,
            "d_over_b": t_naive / t_faulty,
        },
        "targets": {"b_over_a<=2": t_faulty / t_copy <= 2, "c<=0.050s": t_draw <= 0.05,
                    "c_cpu<=0.050s": cpu["c_draw_random_chip"] <= 0.05,
                    "f_enter_over_a<=3": inplace_chip["enter_s"] / t_copy <= 3,
                    "f_enter_over_a_cpu<=3": cpu["f_inplace_enter"] / cpu["a_copy"] <= 3,
                    "mrfi_over_inplace>=20": None if inplace_e2e is None else inplace_e2e >= 20,
                    "d_over_b>=100": t_naive / t_faulty >= 100,
                    "image_only_mrfi_over_b>=20": None if image_only is None else image_only >= 20},
    }
    write_result("inject.json", result)
    for k, v in result["median_s"].items():
        print(f"{k:34s} {v * 1e3 if v is not None else float('nan'):10.2f} ms")
    for k, v in result["cpu_s"].items():
        print(f"cpu {k:30s} {v * 1e3:10.2f} ms")
    print({k: round(v, 2) if v is not None else None for k, v in result["ratios"].items()})


if __name__ == "__main__":
    main()
