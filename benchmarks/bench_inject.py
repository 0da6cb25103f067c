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
 (f) in place (issue 15.1): `sramsim.inject.inplace.faults_applied` on a copy of the model (its
     weights packed into one buffer by `inplace.load_clean`, as the Evaluator's) holding the clean
     dequantized weights: entering the block (faulty weights ready for a forward pass: only the
     codes a fault changed are decoded and written) and leaving it (those weights restored), with
     the persistent chip (its sorted faulty bytes cached per voltage; the first build reported
     apart) and with fresh RandomBitErrors (draw included, as MRFI draws anew every pass); also
     the same chip at the voltage of BER 0.1% beside `perturbed` there (work ~ faults).
 (g) the floor of (f): a bare numba scatter at the same positions (the weights the chip's faults
     change) into a float32 array as large as all quantized weights: save each value and write a
     new one (the least work of entering), then write the saved values back (of leaving). No
     path that keeps float weights for the forward pass can do less.
 (g2) the same scatter with each new value computed from the stored image byte there: the floor
     of a path that reads every faulty code off the image (as (f) did before it read an 8-bit
     code off the clean weight it saves anyway), a second cache line per fault.
 (h) what a sweep point on a NEW chip needs besides: its faulty bytes in address order
     (Chip.byte_faults on the chip (c) just drew, nothing cached), so that
     h + enter + exit is everything between a drawn chip and a restored model.
All timed steps (a, b, c, e, f) run in turn, one round after another, so that they see the same
machine load (`interleaved`); MRFI's extra cost is its faulty minus its clean forward pass. Each
in-place (f) and floor (g, g2) enter starts right after a flush (an untimed copy of twice the
last-level cache), so both begin with the weights out of the caches, as between two fault maps of
a sweep (whose forward pass streams the model's 45 MB of weights); before the flush was added,
the floor ran right after the in-place step on the same positions, its lines still in the L3.
Headline (ratios.headline_end_to_end_mrfi_over_inplace): MRFI's extra time per faulty forward over
ours end to end, both producing faulty DEQUANTIZED weights in use, ours including everything the
in-place path needs per map (enter + restore); `perturbed` (functional, every weight dequantized)
and image-only (faulty memory image, no dequantization) beside it. Wall times are medians; on a
shared machine the CPU time of this thread (`cpu_s`, time.thread_time) is reported too, since a
10 ms operation is preempted far more often than a 1 ms copy.
Run: `PYTHONPATH=.cache/mrfi-pkgs .venv/bin/python benchmarks/bench_inject.py [--threads T]
  [--out NAME]` -> benchmarks/results/inject.json (or NAME.json)
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write_result  # noqa: E402

from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors  # noqa: E402
from sramsim.inject import inplace  # noqa: E402
from sramsim.nn.models import build  # noqa: E402

BER = 0.01
BER_SPARSE = 0.001


def naive_dense(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    flips = rng.random(image.size * 8) < p
    return image ^ np.packbits(flips, bitorder="little")


@njit(cache=True)
def floor_swap(values, positions, new, saved):
    """The least work of entering: save the value at each position, write a new one there."""
    for i in range(positions.shape[0]):
        k = positions[i]
        saved[i] = values[k]
        values[k] = new[i]


@njit(cache=True)
def floor_restore(values, positions, saved):
    """The least work of leaving: write the saved values back."""
    for i in range(positions.shape[0]):
        values[positions[i]] = saved[i]


@njit(cache=True)
def floor_read_swap(values, positions, image, delta, saved):
    """The least work of entering when each new value depends on the stored byte (as a faulty
    code does): read the byte at each position, save the value there, write the flipped code."""
    for i in range(positions.shape[0]):
        k = positions[i]
        saved[i] = values[k]
        values[k] = np.float32(np.int8(image[k] ^ np.uint8(1))) * delta


class Floor:
    """(g): the scatter of the weights a fault map changes, as enter/exit steps; with `image`,
    each new value computed from the stored byte (g2)."""

    def __init__(self, values: np.ndarray, positions: np.ndarray, image=None):
        self.values, self.positions, self.image = values, positions, image
        self.new = np.random.default_rng(1).standard_normal(positions.shape[0]).astype(np.float32)
        self.saved = np.empty_like(self.new)

    def enter(self) -> None:
        if self.image is not None:
            floor_read_swap(self.values, self.positions, self.image, np.float32(0.01), self.saved)
            return
        floor_swap(self.values, self.positions, self.new, self.saved)

    def exit(self) -> None:
        floor_restore(self.values, self.positions, self.saved)


def changed_codes(qm: QuantizedModel, chip: Chip, voltage: float) -> np.ndarray:
    """Indices of the 8-bit codes the chip's faults change at `voltage` (flip-only chip placed at
    offset 0: every faulty byte holding a code changes it), int32 as the in-place path keeps them."""
    assert qm.bits == 8 and qm.word_bits == 8
    byte = chip.byte_faults(voltage).byte
    return byte[byte < qm.n_codes].astype(np.int32)


def interleaved(steps: dict, rounds: int) -> tuple[dict, dict]:
    """Median wall and CPU (this thread) time of each step; the steps run in turn, once per
    round (round 0 is a warm-up), so that all of them see the same machine load. Steps named
    with a leading underscore run untimed (cache flushes)."""
    wall = {k: [] for k in steps if not k.startswith("_")}
    cpu = {k: [] for k in steps if not k.startswith("_")}
    for r in range(rounds + 1):
        for name, fn in steps.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            w1, c1 = time.perf_counter(), time.thread_time()
            if r and name in wall:
                wall[name].append(w1 - w0)
                cpu[name].append(c1 - c0)
    return ({k: float(np.median(v)) for k, v in wall.items()},
            {k: float(np.median(v)) for k, v in cpu.items()})


def last_level_cache_bytes() -> int:
    """The last-level cache of CPU 0 as Linux reports it (32 MiB where it does not)."""
    folder = Path("/sys/devices/system/cpu/cpu0/cache")
    sizes = []
    for index in folder.glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes, default=32 << 20)


class Flush:
    """Evicts the caches: a copy of twice the last-level cache (untimed step)."""

    def __init__(self) -> None:
        self.src = np.ones(2 * last_level_cache_bytes(), dtype=np.uint8)
        self.dst = np.empty_like(self.src)

    def __call__(self) -> None:
        np.copyto(self.dst, self.src)


class InPlace:
    """Entering and leaving `faults_applied` as two steps (faulty weights ready; restored)."""

    def __init__(self, qm: QuantizedModel, model: torch.nn.Module, make_source, voltage):
        self.qm, self.model, self.make_source, self.voltage = qm, model, make_source, voltage
        self.block = None

    def enter(self) -> None:
        # for random errors the draw is part of the path: make_source() only seeds, enter draws
        self.block = inplace.faults_applied(self.qm, self.model, self.make_source(), self.voltage)
        self.block.__enter__()

    def exit(self) -> None:
        self.block.__exit__(None, None, None)


def mrfi_steps(model: torch.nn.Module, x: torch.Tensor, ber: float) -> dict:
    """MRFI's clean and faulty forward passes as steps for `interleaved` ({} without MRFI)."""
    try:
        from mrfi import MRFI, EasyConfig
    except ImportError:
        return {}
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

    def clean():
        with torch.no_grad(), fi_model.golden_run():
            fi_model(x)

    def faulty():
        with torch.no_grad():
            fi_model(x)
    return {"e_mrfi_clean_forward": clean, "e_mrfi_faulty_forward": faulty}


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and numba threads (default: theirs; 1 on a loaded machine)")
    ap.add_argument("--out", default="inject", help="results name (default inject)")
    args = ap.parse_args()
    if args.threads is not None and not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
        ap.error(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, "
                 f"got {args.threads}")
    if not args.out or "/" in args.out or args.out.startswith("."):
        ap.error(f"--out must be a plain file name, got {args.out!r}")
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

    numba.set_num_threads(1)
    t_faulty_1thread = median_time(lambda: qm.faulty_image(chip, voltage, out=out), repeat=21)
    numba.set_num_threads(args.threads or numba.config.NUMBA_NUM_THREADS)
    rng = np.random.default_rng(0)
    t_naive = median_time(lambda: naive_dense(qm.image, BER, rng), repeat=3)
    # a small tiled chip (the shipped 8192x128 geometry) for comparison
    small = Chip.random(Geometry(8192, 128), curve, 0.75, seed=0)
    qm.faulty_image(small, voltage, out=out)
    t_tiled = median_time(lambda: qm.faulty_image(small, voltage, offset=77, out=out), repeat=21)

    # (f) in place, on a copy that holds the clean dequantized weights; one-time costs apart
    work = copy.deepcopy(model)
    t0 = time.perf_counter()
    inplace.load_clean(qm, work)            # packs its weights into one buffer, as the Evaluator's
    t_load_clean = time.perf_counter() - t0
    t0 = time.perf_counter()
    chip.byte_faults(voltage)
    t_byte_faults = time.perf_counter() - t0
    on_chip = InPlace(qm, work, lambda: chip, voltage)
    # the same chip at the voltage of BER 0.1% (its faults there are a prefix of those at 1%)
    v_sparse = float(curve.voltage(BER_SPARSE))
    chip.byte_faults(v_sparse)
    on_chip_sparse = InPlace(qm, work, lambda: chip, v_sparse)
    random_seeds = iter(range(1, 1000))
    on_random = InPlace(qm, work, lambda: RandomBitErrors(BER, seed=next(random_seeds)), None)
    seeds = iter(range(1, 1000))
    drawn = {}

    def draw_chip() -> None:
        drawn["chip"] = Chip.random(geometry, curve, voltage, seed=next(seeds))

    # (g) the floor: the same positions as the chip's faults, in one flat float32 array of weights
    values = np.concatenate([w.reshape(-1).numpy() for w in qm.clean_weights().values()])
    floor = Floor(values, changed_codes(qm, chip, voltage))
    floor_sparse = Floor(values, changed_codes(qm, chip, v_sparse))
    # (g2) the same, each new value read off the stored byte (a second cache line per fault)
    floor_read = Floor(values, floor.positions, qm.image)
    floor_read_sparse = Floor(values, floor_sparse.positions, qm.image)
    x = torch.randn(8, 3, 32, 32)
    flush = Flush()
    steps = {
        "a_copy": lambda: np.copyto(out, qm.image),
        "b_faulty_image": lambda: qm.faulty_image(chip, voltage, out=out),
        "b_faulty_image_offset": lambda: qm.faulty_image(chip, voltage, offset=12345, out=out),
        "b_perturbed_with_dequantize": lambda: qm.perturbed(chip, voltage),
        "c_draw_random_chip": draw_chip,
        "h_byte_faults_new_chip": lambda: drawn["chip"].byte_faults(voltage),
        "_flush_f": flush, "f_inplace_enter": on_chip.enter, "f_inplace_exit": on_chip.exit,
        "_flush_g": flush, "g_floor_enter": floor.enter, "g_floor_exit": floor.exit,
        "_flush_fr": flush, "f_inplace_random_enter": on_random.enter,
        "f_inplace_random_exit": on_random.exit,
        "b_perturbed_ber_0.1%": lambda: qm.perturbed(chip, v_sparse),
        "_flush_fs": flush, "f_inplace_enter_ber_0.1%": on_chip_sparse.enter,
        "f_inplace_exit_ber_0.1%": on_chip_sparse.exit,
        "_flush_gs": flush, "g_floor_enter_ber_0.1%": floor_sparse.enter,
        "g_floor_exit_ber_0.1%": floor_sparse.exit,
        "_flush_g2": flush, "g2_floor_enter": floor_read.enter, "g2_floor_exit": floor_read.exit,
        "_flush_g2s": flush, "g2_floor_enter_ber_0.1%": floor_read_sparse.enter,
        "g2_floor_exit_ber_0.1%": floor_read_sparse.exit,
        **mrfi_steps(model, x, BER),
    }
    wall, cpu = interleaved(steps, rounds=21)
    for t in (wall, cpu):
        t["f_inplace_enter_exit"] = t["f_inplace_enter"] + t["f_inplace_exit"]
        t["f_inplace_random_enter_exit"] = t["f_inplace_random_enter"] + t["f_inplace_random_exit"]
        t["f_inplace_enter_exit_ber_0.1%"] = (t["f_inplace_enter_ber_0.1%"]
                                             + t["f_inplace_exit_ber_0.1%"])
        t["g_floor_enter_exit"] = t["g_floor_enter"] + t["g_floor_exit"]
        t["g_floor_enter_exit_ber_0.1%"] = t["g_floor_enter_ber_0.1%"] + t["g_floor_exit_ber_0.1%"]
        t["g2_floor_enter_exit"] = t["g2_floor_enter"] + t["g2_floor_exit"]
        t["g2_floor_enter_exit_ber_0.1%"] = (t["g2_floor_enter_ber_0.1%"]
                                            + t["g2_floor_exit_ber_0.1%"])
        t["h_new_chip_point"] = t["h_byte_faults_new_chip"] + t["f_inplace_enter_exit"]
        if "e_mrfi_faulty_forward" in t:
            t["e_mrfi_extra_per_faulty_forward"] = (t["e_mrfi_faulty_forward"]
                                                    - t["e_mrfi_clean_forward"])

    def ratio(t: dict, a: str, b: str):
        return t[a] / t[b] if a in t and b in t else None

    mrfi = "e_mrfi_extra_per_faulty_forward"
    result = {
        "model": "resnet18 (CIFAR-style), 8-bit symmetric", "weights": qm.n_codes,
        "image_bytes": int(qm.image.size), "voltage": voltage, "target_ber": BER,
        "chip_faults": len(chip), "empirical_ber": empirical_ber,
        "voltage_ber_0.1%": v_sparse, "chip_faults_ber_0.1%": chip.count(v_sparse),
        "mrfi": "measured" if mrfi in wall else "not installed (see the docstring)",
        "changed_weights": int(floor.positions.shape[0]),
        "changed_weights_ber_0.1%": int(floor_sparse.positions.shape[0]),
        "median_s": {**wall, "b_faulty_image_1_thread": t_faulty_1thread,
                     "b_first_call_mask_build": first_build, "b_tiled_8192x128_chip": t_tiled,
                     "c_first_draw_incl_jit": draw_first, "d_naive_dense": t_naive,
                     "f_once_load_clean": t_load_clean, "f_once_chip_byte_faults": t_byte_faults},
        "cpu_s": cpu,
        "ratios": {
            "headline_end_to_end_mrfi_over_inplace": ratio(wall, mrfi, "f_inplace_enter_exit"),
            "headline_end_to_end_mrfi_over_inplace_cpu": ratio(cpu, mrfi, "f_inplace_enter_exit"),
            "new_chip_point_mrfi_over_inplace": ratio(wall, mrfi, "h_new_chip_point"),
            "new_chip_point_mrfi_over_inplace_cpu": ratio(cpu, mrfi, "h_new_chip_point"),
            "floor_mrfi_over_scatter_enter_exit": ratio(wall, mrfi, "g_floor_enter_exit"),
            "floor_mrfi_over_scatter_enter_exit_cpu": ratio(cpu, mrfi, "g_floor_enter_exit"),
            "floor_enter_over_a": ratio(wall, "g_floor_enter", "a_copy"),
            "floor_enter_over_a_cpu": ratio(cpu, "g_floor_enter", "a_copy"),
            "f_enter_over_floor": ratio(wall, "f_inplace_enter", "g_floor_enter"),
            "f_enter_exit_over_floor": ratio(wall, "f_inplace_enter_exit", "g_floor_enter_exit"),
            "f_enter_exit_over_floor_cpu": ratio(cpu, "f_inplace_enter_exit",
                                                 "g_floor_enter_exit"),
            "f_enter_exit_over_floor_ber_0.1%": ratio(wall, "f_inplace_enter_exit_ber_0.1%",
                                                      "g_floor_enter_exit_ber_0.1%"),
            "f_enter_exit_over_floor_ber_0.1%_cpu": ratio(cpu, "f_inplace_enter_exit_ber_0.1%",
                                                          "g_floor_enter_exit_ber_0.1%"),
            "f_enter_exit_over_read_floor": ratio(wall, "f_inplace_enter_exit",
                                                  "g2_floor_enter_exit"),
            "f_enter_exit_over_read_floor_ber_0.1%": ratio(
                wall, "f_inplace_enter_exit_ber_0.1%", "g2_floor_enter_exit_ber_0.1%"),
            "read_floor_over_floor_ber_0.1%": ratio(wall, "g2_floor_enter_exit_ber_0.1%",
                                                    "g_floor_enter_exit_ber_0.1%"),
            "mrfi_over_inplace_random_errors": ratio(wall, mrfi, "f_inplace_random_enter_exit"),
            "mrfi_over_inplace_random_errors_cpu": ratio(cpu, mrfi, "f_inplace_random_enter_exit"),
            "end_to_end_mrfi_over_perturbed": ratio(wall, mrfi, "b_perturbed_with_dequantize"),
            "image_only_mrfi_over_faulty_image": ratio(wall, mrfi, "b_faulty_image"),
            "f_enter_over_a": ratio(wall, "f_inplace_enter", "a_copy"),
            "f_enter_over_a_cpu": ratio(cpu, "f_inplace_enter", "a_copy"),
            "f_enter_exit_over_a_cpu": ratio(cpu, "f_inplace_enter_exit", "a_copy"),
            "perturbed_over_f_enter_exit": ratio(wall, "b_perturbed_with_dequantize",
                                                 "f_inplace_enter_exit"),
            "perturbed_over_f_enter_exit_cpu": ratio(cpu, "b_perturbed_with_dequantize",
                                                     "f_inplace_enter_exit"),
            "perturbed_over_f_enter_exit_ber_0.1%": ratio(wall, "b_perturbed_ber_0.1%",
                                                          "f_inplace_enter_exit_ber_0.1%"),
            "perturbed_over_f_enter_exit_ber_0.1%_cpu": ratio(cpu, "b_perturbed_ber_0.1%",
                                                              "f_inplace_enter_exit_ber_0.1%"),
            "f_enter_over_a_ber_0.1%": ratio(wall, "f_inplace_enter_ber_0.1%", "a_copy"),
            "f_enter_over_a_ber_0.1%_cpu": ratio(cpu, "f_inplace_enter_ber_0.1%", "a_copy"),
            "b_over_a": ratio(wall, "b_faulty_image", "a_copy"),
            "b_1_thread_over_a": t_faulty_1thread / wall["a_copy"],
            "d_over_b": t_naive / wall["b_faulty_image"],
        },
    }
    r = result["ratios"]
    result["targets"] = {
        "b_over_a<=2": r["b_over_a"] <= 2, "c<=0.050s": wall["c_draw_random_chip"] <= 0.05,
        "c_cpu<=0.050s": cpu["c_draw_random_chip"] <= 0.05,
        "f_enter_over_a<=3": r["f_enter_over_a"] <= 3,
        "f_enter_over_a_cpu<=3": r["f_enter_over_a_cpu"] <= 3,
        "floor_enter_over_a<=3": r["floor_enter_over_a"] <= 3,
        "mrfi_over_inplace>=20": None if r["headline_end_to_end_mrfi_over_inplace"] is None
        else r["headline_end_to_end_mrfi_over_inplace"] >= 20,
        "floor_mrfi_over_scatter>=20": None if r["floor_mrfi_over_scatter_enter_exit"] is None
        else r["floor_mrfi_over_scatter_enter_exit"] >= 20,
        "d_over_b>=100": r["d_over_b"] >= 100,
        "f_enter_exit_over_floor<=1.5": r["f_enter_exit_over_floor"] <= 1.5,
        "f_enter_exit_over_floor_ber_0.1%<=1.5": r["f_enter_exit_over_floor_ber_0.1%"] <= 1.5,
        "image_only_mrfi_over_b>=20": None if r["image_only_mrfi_over_faulty_image"] is None
        else r["image_only_mrfi_over_faulty_image"] >= 20}
    result["threads"] = {"numba": numba.get_num_threads(), "torch": torch.get_num_threads()}
    write_result(f"{args.out}.json", result)
    for k, v in result["median_s"].items():
        c = result["cpu_s"].get(k)
        print(f"{k:34s} {v * 1e3:10.2f} ms" + (f"   cpu {c * 1e3:10.2f} ms" if c else ""))
    print({k: round(v, 2) if v is not None else None for k, v in result["ratios"].items()})


if __name__ == "__main__":
    main()
