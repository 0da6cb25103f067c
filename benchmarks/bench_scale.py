"""Billion-weight models, layer by layer (issue 15): quantize, draw a chip, apply faults, at scale.

Decoder-only transformer stacks built from plain torch.nn layers with random weights (no
downloads), at ~10 M, ~100 M, ~300 M and ~1 B weights. Each size runs in a fresh subprocess (so
the peak resident memory of one size never contaminates the next) that measures:
 - building the float model (torch.nn's own initialisation, under torch.no_grad);
 - QuantizedModel (8-bit symmetric by default), built layer by layer into an image allocated
   once; beside it, up to --old-up-to weights, the construction it replaced (all codes
   concatenated, then packed) in the same process, as the baseline ratio;
 - Chip.random on a geometry just big enough for the image, v_floor at the highest BER;
 - applying the chip's faults in place in the model's weights and restoring them
   (sramsim.inject.inplace.faults_applied; its one-off load_clean timed apart, and beside it, up to
   --old-up-to weights, the whole-model load_clean it replaced), at each BER (finfet14
   voltages); a plain copy of the memory image in the same process as the baseline;
 - peak resident memory (VmHWM, reset before each stage) of each stage, as a multiple of the
   float model's own parameter memory, raw and less the process's memory before the model;
   beside it the floor no run can go below (float model + memory image + the process before
   the model) and the chip's own arrays (fault list and its address order).
The parent fits log-log slopes of each cost against weights (>= 3 sizes) and against faults,
and writes benchmarks/results/scale.json + scale.png.
Run: `.venv/bin/python benchmarks/bench_scale.py [--sizes 10M,100M,300M,1B] [--bits 8]
     [--apply in-place|functional] [--threads 1]`  (~2 min, ~6 GiB at 1B on 2 cores)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402

# d_model, layers; the vocabulary is VOCAB for every size (GPT-2-style blocks, 4x MLP, no biases
# in the linear layers as in LLaMA). Total parameters, from `parameter_counts`:
# 10M: 12.2 M, 100M: 98.0 M, 300M: 319.5 M, 1B: 1.042 B.
CONFIGS = {"10M": (256, 10), "100M": (768, 12), "300M": (1024, 24), "1B": (2048, 20)}
VOCAB = 8000
BERS = (1e-5, 1e-4, 1e-3)      # finfet14 BERs the faults are applied at; v_floor at the highest
CURVE = "finfet14"
ROW_BITS = 4096                # chip geometry: rows of 4096 bits, as many rows as the image needs


class Block(nn.Module):
    """One pre-norm decoder block: causal self-attention and a 4x MLP."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model, bias=False)
        self.fc2 = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class DecoderLM(nn.Module):
    """Token embedding, `n_layers` decoder blocks, final norm, untied output layer."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int | None = None):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(1024, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads or max(1, d_model // 64))
                                    for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def parameter_counts(vocab: int, d_model: int, n_layers: int) -> dict:
    """Weights the model holds: all parameters, and those QuantizedModel stores (linear weights)."""
    linear = n_layers * 12 * d_model ** 2 + vocab * d_model
    other = (vocab + 1024) * d_model + (4 * n_layers + 2) * d_model   # embeddings, LayerNorms
    return {"total": linear + other, "quantized": linear}


def build(size: str, dtype=torch.float32) -> DecoderLM:
    d_model, n_layers = CONFIGS[size]
    with torch.no_grad():
        return DecoderLM(VOCAB, d_model, n_layers).to(dtype)


# --- measuring one size, in its own process ---------------------------------------------------
def vm_kib(field: str) -> int:
    """VmRSS / VmHWM of this process in KiB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def timed(fn, repeat: int = 5) -> float:
    """Wall time of fn(): one call, and the median of `repeat` when one call is under a second."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first >= 1.0:
        return first
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def old_construction(model: nn.Module, bits: int) -> np.ndarray:
    """The image as QuantizedModel built it before issue 15 (baseline): every layer's codes in
    a list, torch.cat, pack once (8-bit symmetric, word_bits 8)."""
    from sramsim.inject import quantization as Q
    from sramsim.inject.quantized_model import quantized_parameter_names
    params = dict(model.named_parameters())
    codes = []
    with torch.no_grad():
        for name in quantized_parameter_names(model):
            w = params[name].detach().to("cpu", torch.float32)
            codes.append(Q.quantize(w.reshape(-1), Q.layer_params(w, bits, "symmetric")))
    return Q.pack(torch.cat(codes), bits).numpy()


def old_load_clean(qm, model: nn.Module) -> None:
    """`load_clean` as it was before the follow-up to issue 15 (baseline): every weight
    dequantized at once (`qm.clean_weights()`, which also copies the read-only image), then
    copied into the parameters."""
    clean = qm.clean_weights()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for s in qm.segments:
            params[s.name].copy_(clean[s.name])


# How faults reach the weights. SWITCH POINT: "in-place" is sramsim.inject.inplace.faults_applied
# (faults written into the model's own weights and restored, O(faults)); "functional" is the path
# that existed before it: QuantizedModel.perturbed, a faulty image and a full dequantized copy of
# the weights (nothing to restore: the model is never touched). --apply picks one.
APPLY_PATHS = ("in-place", "functional")


def apply_and_restore(qm, model: nn.Module, chip, voltage: float, path: str,
                      out: np.ndarray | None = None) -> tuple[float, float]:
    """Seconds to put the chip's faults at `voltage` into the weights, and to restore them."""
    if path == "in-place":
        ctx = inplace.faults_applied(qm, model, chip, voltage=voltage)
        t0 = time.perf_counter()
        ctx.__enter__()
        t1 = time.perf_counter()
        ctx.__exit__(None, None, None)
        return t1 - t0, time.perf_counter() - t1
    t0 = time.perf_counter()
    weights = qm.perturbed(chip, voltage, out=out)
    t1 = time.perf_counter()
    del weights
    return t1 - t0, 0.0


def weights_checksum(model: nn.Module) -> list[float]:
    """Per-parameter float64 sums (a layer at a time): equal before and after a restore."""
    with torch.no_grad():
        return [float(p.double().sum()) for p in model.parameters()]


def warm_up(bits: int, path: str) -> None:
    """Pay numba's JIT / cache load on a tiny model, so no size's times include it."""
    from sramsim import BerCurve, Chip, Geometry, QuantizedModel
    model = DecoderLM(64, 32, 1)
    qm = QuantizedModel(model, bits=bits)
    curve = BerCurve.builtin(CURVE)
    chip = Chip.random(Geometry(-(-qm.n_bits // 64), 64), curve, curve.voltage(max(BERS)), 0)
    apply_and_restore(qm, model, chip, float(curve.voltage(max(BERS))), path)


class Stages:
    """Wall time and peak resident memory of each stage of one size's run. The kernel's
    high-water mark (VmHWM) is reset before each stage, so a stage's peak is its own."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak_kib: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                 # 5: reset the peak RSS to the current RSS
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0
        self.peak_kib[name] = vm_kib("VmHWM")


def measure(size: str, bits: int, dtype: torch.dtype, old_up_to: float, seed: int,
            path: str) -> dict:
    """All figures of one size (run in a fresh process: nothing of another size stays)."""
    from sramsim import BerCurve, Chip, Geometry, QuantizedModel
    warm_up(bits, path)
    rss0 = vm_kib("VmRSS")
    stage = Stages()
    torch.manual_seed(seed)
    with stage("built"):
        model = build(size, dtype)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    counts = parameter_counts(VOCAB, *CONFIGS[size])
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    old = None
    if counts["total"] <= old_up_to:     # the baseline first, alone: only its digest is kept
        old_stage = Stages()
        with old_stage("old"):
            old_image = old_construction(model, bits)
        old_digest = hashlib.blake2b(old_image).hexdigest()
        del old_image
        old = {"quantize_s": old_stage.seconds["old"],
               "peak_rss_bytes": 1024 * old_stage.peak_kib["old"],
               "peak_over_param_bytes": 1024 * old_stage.peak_kib["old"] / param_bytes,
               "peak_less_process_over_param_bytes":
                   1024 * (old_stage.peak_kib["old"] - rss0) / param_bytes}
    with stage("quantized"):
        qm = QuantizedModel(model, bits=bits, scheme="symmetric")
    if old is not None:                  # times: the better of two runs each, alternating
        old["same_image"] = hashlib.blake2b(qm.image).hexdigest() == old_digest
        again = Stages()
        with again("old"):
            old_construction(model, bits)
        with again("new"):
            QuantizedModel(model, bits=bits, scheme="symmetric")
        old["quantize_s"] = min(old["quantize_s"], again.seconds["old"])
        old["new_quantize_s"] = min(stage.seconds["quantized"], again.seconds["new"])
        old["new_over_old_time"] = old["new_quantize_s"] / old["quantize_s"]

    curve = BerCurve.builtin(CURVE)
    voltages = [float(curve.voltage(b)) for b in BERS]
    geometry = Geometry(-(-qm.n_bits // ROW_BITS), ROW_BITS)
    with stage("chip_drawn"):
        chip = Chip.random(geometry, curve, min(voltages), seed)
    old_load = None
    if path == "in-place":          # the parameters hold the clean dequantized weights first
        with stage("clean_loaded"):
            inplace.load_clean(qm, model)
    before = weights_checksum(model)
    points = []
    with stage("faults_applied"):
        out = np.empty_like(qm.image) if path == "functional" else None
        for ber, v in zip(BERS, voltages):
            runs = [apply_and_restore(qm, model, chip, v, path, out) for _ in range(3)]
            apply_s, restore_s = (float(np.median(x)) for x in zip(*runs))
            points.append({"ber": ber, "voltage": v, "faults": chip.count(v), "apply_s": apply_s,
                           "restore_s": restore_s, "apply_restore_s": apply_s + restore_s})
        del out
    restored = weights_checksum(model) == before

    buf = qm.image.copy()         # pages touched first: the copy is timed warm (first touch of
    copy_s = timed(lambda: np.copyto(buf, qm.image))    # 1 GB took 9.5 s on the shared VM)
    del buf
    if path == "in-place" and counts["total"] <= old_up_to:
        # baseline, last: the whole-model load_clean it replaced (what it frees stays in the
        # heap, which would raise every later stage's resident memory)
        again = Stages()
        with again("old"):
            old_load_clean(qm, model)
        with again("new"):
            inplace.load_clean(qm, model)
        new_s = min(stage.seconds["clean_loaded"], again.seconds["new"])
        old_load = {"load_clean_s": again.seconds["old"], "new_load_clean_s": new_s,
                    "new_over_old_time": new_s / again.seconds["old"],
                    "peak_over_param_bytes": 1024 * again.peak_kib["old"] / param_bytes,
                    "peak_less_process_over_param_bytes":
                        1024 * (again.peak_kib["old"] - rss0) / param_bytes}
    peaks = {k: 1024 * v for k, v in stage.peak_kib.items()}    # /proc counts KiB
    peaks["overall"] = max(peaks.values())
    by_address = chip._by_address or ()
    chip_bytes = sum(a.nbytes for a in (chip.address, chip.vfail, chip.kind, *by_address))
    # what no run can go below: the float model, the memory image and the process before them
    floor = param_bytes + qm.image.nbytes + 1024 * rss0
    return {
        "size": size, "d_model": CONFIGS[size][0], "layers": CONFIGS[size][1], "vocab": VOCAB,
        "dtype": str(dtype).replace("torch.", ""), "weights": counts["total"],
        "quantized_weights": counts["quantized"], "param_bytes": param_bytes,
        "image_bytes": int(qm.image.size), "chip_bits": geometry.capacity_bits,
        "chip_faults": len(chip), "build_s": stage.seconds["built"],
        "quantize_s": stage.seconds["quantized"], "chip_draw_s": stage.seconds["chip_drawn"],
        "load_clean_s": stage.seconds.get("clean_loaded"), "apply": points,
        "image_copy_s": copy_s,
        "apply_restore_over_image_copy": points[-1]["apply_restore_s"] / copy_s,
        "weights_restored_exactly": restored,
        "chip_bytes": chip_bytes,
        "floor_bytes": floor,
        "floor_over_param_bytes": floor / param_bytes,
        "peak_over_floor": peaks["overall"] / floor,
        "rss_before_model_bytes": 1024 * rss0,
        "peak_rss_bytes": peaks,
        "peak_over_param_bytes": {k: v / param_bytes for k, v in peaks.items()},
        "peak_less_process_over_param_bytes": {k: (v - 1024 * rss0) / param_bytes
                                               for k, v in peaks.items()},
        "old_construction": old,
        "old_load_clean": old_load,
    }


# --- the parent: sizes in fresh processes, slopes, JSON and plot ------------------------------
def slope(x, y) -> float:
    """Least-squares slope of log10(y) against log10(x)."""
    return float(np.polyfit(np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float)), 1)[0])


def slopes(rows: list[dict]) -> dict:
    """How each cost grows with weights (across sizes) and with faults (within each size)."""
    w = [r["weights"] for r in rows]
    top = [r["apply"][-1] for r in rows]
    return {
        "vs_weights": {
            "quantize_s": slope(w, [r["quantize_s"] for r in rows]),
            "chip_draw_s": slope(w, [r["chip_draw_s"] for r in rows]),
            "apply_restore_s_at_max_ber": slope(w, [p["apply_restore_s"] for p in top]),
            "peak_rss_bytes": slope(w, [r["peak_rss_bytes"]["overall"] for r in rows]),
            "peak_rss_less_process_bytes": slope(
                w, [r["peak_rss_bytes"]["overall"] - r["rss_before_model_bytes"] for r in rows]),
        },
        "chip_draw_s_vs_faults": slope([r["chip_faults"] for r in rows],
                                       [r["chip_draw_s"] for r in rows]),
        "apply_restore_s_vs_faults": {r["size"]: slope([p["faults"] for p in r["apply"]],
                                                       [p["apply_restore_s"] for p in r["apply"]])
                                      for r in rows},
    }


def plot(rows: list[dict], path: Path) -> None:
    """Log-log: costs against weights, peak memory against weights, apply+restore vs faults."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    w = [r["weights"] for r in rows]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.3))
    for key, label in (("quantize_s", "quantize (layer by layer)"), ("chip_draw_s", "chip draw"),
                       ("build_s", "build float model")):
        a1.loglog(w, [r[key] for r in rows], "o-", label=label)
    if all(r.get("load_clean_s") for r in rows):
        a1.loglog(w, [r["load_clean_s"] for r in rows], "o-", label="load_clean (in place)")
    a1.loglog(w, [r["apply"][-1]["apply_restore_s"] for r in rows], "o-",
              label=f"apply + restore, BER {BERS[-1]:g}")
    a1.loglog(w, [r["image_copy_s"] for r in rows], "k:", label="copy of the image")
    a1.set_xlabel("weights")
    a1.set_ylabel("seconds")
    a1.legend(fontsize=8)
    a2.axhline(1.3, color="k", ls=":", label="target 1.3x")
    a2.loglog(w, [r["floor_over_param_bytes"] for r in rows], "k--", lw=1,
              label="floor: float model + image + process")
    for stage, style, label in (("quantized", "o-", "quantizing"), ("overall", "s-", "whole run")):
        a2.loglog(w, [r["peak_over_param_bytes"][stage] for r in rows], style,
                  label=label)
        a2.loglog(w, [r["peak_less_process_over_param_bytes"][stage] for r in rows], style,
                  mfc="none", label=f"{label}, less the process before the model")
    a2.loglog(w, [r["peak_less_process_over_param_bytes"]["faults_applied"] for r in rows], "^-",
              mfc="none", label="applying + restoring faults, less the process")
    old = [(r["weights"], r["old_construction"]["peak_less_process_over_param_bytes"])
           for r in rows if r["old_construction"]]
    if old:
        a2.loglog(*zip(*old), "x--", label="old construction, less the process")
    old = [(r["weights"], r["old_load_clean"]["peak_less_process_over_param_bytes"])
           for r in rows if r.get("old_load_clean")]
    if old:
        a2.loglog(*zip(*old), "+--", label="old load_clean (whole model), less the process")
    a2.set_xlabel("weights")
    a2.set_ylabel("peak resident memory / float parameter bytes")
    a2.legend(fontsize=7, loc="upper right")
    for r in rows:
        a3.loglog([p["faults"] for p in r["apply"]], [p["apply_restore_s"] for p in r["apply"]],
                  "o-", label=r["size"])
    a3.set_xlabel(f"faults (BER {', '.join(f'{b:g}' for b in BERS)})")
    a3.set_ylabel("apply + restore in place, seconds")
    a3.legend(fontsize=8)
    fig.suptitle(f"bench_scale: decoder-only stacks, {rows[0]['dtype']}, "
                 f"{rows[0]['bits']}-bit symmetric, {CURVE} chip")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_size(size: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", size, "--bits", str(args.bits),
           "--dtype", args.dtype, "--old-up-to", str(args.old_up_to), "--seed", str(args.seed),
           "--apply", args.apply, "--threads", str(args.threads)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"size {size} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["bits"] = args.bits
    print(f"{size}: {row['weights'] / 1e6:.1f} M weights, quantize {row['quantize_s']:.2f} s, "
          f"chip {row['chip_draw_s']:.2f} s ({row['chip_faults']} faults), apply+restore "
          f"{row['apply'][-1]['apply_restore_s']:.3f} s, peak "
          f"{row['peak_over_param_bytes']['quantized']:.3f}x params quantizing, "
          f"{row['peak_over_param_bytes']['overall']:.3f}x overall "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--bits", type=int, default=8, choices=(8, 4, 2))
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--old-up-to", type=float, default=4e8,
                    help="run the old construction and old load_clean as baselines up to this "
                         "many weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--apply", default="in-place", choices=APPLY_PATHS,
                    help="how faults reach the weights (default in-place; see APPLY_PATHS)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and numba threads (default 1: on a shared, loaded machine two "
                         "torch threads measured 50x slower quantization than one)")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw results/<out>.png from results/<out>.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="scale", help="results name (default scale)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    import numba
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if args.child:
        print(json.dumps(measure(args.child, args.bits, dtype, args.old_up_to, args.seed,
                                 args.apply)))
        return
    if args.replot:
        plot(json.loads((RESULTS / f"{args.out}.json").read_text())["sizes"],
             RESULTS / f"{args.out}.png")
        return
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in CONFIGS]
    if unknown:
        ap.error(f"--sizes: unknown size(s) {unknown}; use {', '.join(CONFIGS)}")
    rows = [run_size(s, args) for s in sizes]
    result = {"bits": args.bits, "scheme": "symmetric", "dtype": args.dtype, "curve": CURVE,
              "bers": list(BERS), "chip_row_bits": ROW_BITS, "vocab": VOCAB,
              "apply_path": args.apply, "threads": args.threads,
              "sizes": rows, "slopes": slopes(rows) if len(rows) >= 3 else None,
              "largest": max(rows, key=lambda r: r["weights"])["size"]}
    write_result(f"{args.out}.json", result)
    plot(rows, RESULTS / f"{args.out}.png")
    print(f"wrote {RESULTS / (args.out + '.png')}")


if __name__ == "__main__":
    main()
