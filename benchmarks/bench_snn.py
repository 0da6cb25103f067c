"""Speed of the multi-step SNN engine (issue 22.1) against the step loop, the floor and BindsNET.

On one batch of Fashion-MNIST test images (training images for STDP), per image, medians of
rounds in which every variant of a workload runs once in turn (so all see the same machine load;
BindsNET in rounds of its own after ours, as its large allocations slow whatever runs next):
- snn-fc400 (T=25, batch 256) and snn-conv12 (T=25, batch 64): inference (forward, no grad) and
  a training step (forward, cross-entropy, backward; batch 128 and 64), for
    ours           the layer engine (`engine="layer"`, the default), encoding included;
    step_before    the step loop as it was before the engine (sramsim at 5674fcc): per step a
                   torch.rand encoding, the stage modules (MKL / oneDNN), snntorch.Leaky;
    step_reference today's reference step loop (`engine="step"`): our encoding, the exact
                   synaptic products per step, snntorch.Leaky;
    floor          the least work of the layer-by-layer scheme, timed alone: our encoding, the
                   dense products (torch's Linear / Conv2d + max pooling) over all T*B rows and the
                   LIF kernel; for training also the LIF backward kernel and the dense gradient
                   products.
- diehl-cook400 (T=100, batch 256): one presentation without learning (no re-presentation), and
  STDP over a fixed number of training images (learning, then the weight update and
  normalisation per batch), for ours / step_before (torch.rand encoding, one dense MKL product,
  the torch dynamics loop, dense trace products) / step_reference / floor (encoding, one dense
  product, the dynamics kernel), and BindsNET 0.3.4's `DiehlAndCook2015` at the same N, T, batch,
  inh=120, with its own Poisson encoding (`bindsnet.encoding.poisson`, intensity 128 Hz) and
  `network.run` (learning off for inference). Optionally (--stdp-epoch) one full STDP epoch of
  ours over the 60,000 training images (no label assignment).
The layer engine's results are checked against the reference step loop on the same batch
(`equal_to_step_loop`: counts and winners bit for bit).

BindsNET is an optional peer, never a dependency: install it beside the project,
    .venv/bin/python -m pip install --target .cache/bindsnet-pkgs --no-deps bindsnet==0.3.4
and it is loaded from there without running its package `__init__` (which imports its data,
environment and analysis modules: torchvision, gymnasium, ale_py, cv2, sklearn, tensorboardX);
the network, learning, models and encoding subpackages need only torch, numpy and scipy.
Ratios (`ratios`, `floor_ratios`, `ratios_vs_step_reference`) are on wall time;
`cpu_time_ratios` holds the same on this process's CPU time, steadier on a shared machine.
Run: `.venv/bin/python benchmarks/bench_snn.py [--threads T] [--fc-model CKPT] [--stdp-epoch]`
  -> benchmarks/results/snn_speed.json
"""
from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
import types
from pathlib import Path

import numba
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402

from sramsim.nn.data import load_dataset  # noqa: E402
from sramsim.nn.models import build, load_checkpoint  # noqa: E402
from sramsim.nn.models import diehl_cook as D  # noqa: E402
from sramsim.nn.snn_engine import encoding as E  # noqa: E402
from sramsim.nn.snn_engine import lif as L  # noqa: E402
from sramsim.nn.snn_engine import wta  # noqa: E402
from sramsim.nn.stdp import apply_update  # noqa: E402

BINDSNET_DIR = ROOT / ".cache" / "bindsnet-pkgs"
BINDSNET_VERSION = "0.3.4"


# ---------------------------------------------------------------- timing

def interleaved(variants: dict, rounds: int, warmup: int = 1) -> dict:
    """{name: {"wall_s", "cpu_s"}}: medians over `rounds` rounds, each running every variant once
    in turn (after `warmup` rounds), so that all of them see the same machine load."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: {"wall_s": statistics.median(wall[k]), "cpu_s": statistics.median(cpu[k])}
            for k in variants}


def per_image(times: dict, images: int) -> dict:
    return {k: {"wall_ms": 1e3 * v["wall_s"] / images, "cpu_ms": 1e3 * v["cpu_s"] / images}
            for k, v in times.items()}


# ---------------------------------------------------------------- rate-coded SNNs

def step_before(model, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The step loop of sramsim.nn.models.snn before the engine (commit 5674fcc): output counts.
    Its encoding took clamp(x, 0, 1); it is given the pixel intensity, so that it sees the same
    spike rates as the engine (the model's input_coding)."""
    x = E.intensity(x, model.input_coding)
    gen = None if model.training else torch.Generator().manual_seed(seed)
    mems = [None] * len(model.stages)
    count = None
    for _ in range(model.steps):
        noise = torch.rand(x.shape, generator=gen, dtype=x.dtype)
        spk = (noise < x.clamp(0.0, 1.0)).to(x.dtype)
        for i, (stage, lif_layer) in enumerate(zip(model.stages, model.neurons)):
            cur = stage(spk)
            if mems[i] is None:
                mems[i] = torch.zeros_like(cur)
            spk, mems[i] = lif_layer(cur, mems[i])
        count = spk if count is None else count + spk
    model._drop_state()
    return count.flatten(1)


def _modules(stage):
    return list(stage) if isinstance(stage, torch.nn.Sequential) else [stage]


def _dense_stage(stage, s, tape=None):
    """The stage's own modules (torch's dense products) on spikes s; with `tape` (a list), what
    their backward needs is appended to it."""
    x = s.float()
    for mod in _modules(stage):
        if tape is not None:
            tape.append(x.shape)
        if isinstance(mod, torch.nn.MaxPool2d):
            x, idx = F.max_pool2d(x, mod.kernel_size, mod.stride, return_indices=True)
            if tape is not None:
                tape.append(idx)
        else:
            x = mod(x)
    return x


def _dense_backward(stage, s, tape, g, want_input: bool):
    """The dense gradient products of a stage, from the gradient g at its output: (weight
    gradients, gradient at its input or None)."""
    grads = []
    mods = _modules(stage)
    shapes = [t for t in tape if isinstance(t, torch.Size)]
    idxs = iter(t for t in tape if not isinstance(t, torch.Size))
    pools = {i: next(idxs) for i, m in enumerate(mods) if isinstance(m, torch.nn.MaxPool2d)}
    inputs, x = [], s.float()
    for i, mod in enumerate(mods):           # the inputs of the products (spikes, reshaped)
        inputs.append(x)
        if isinstance(mod, torch.nn.Flatten):
            x = x.flatten(1)
    for i in range(len(mods) - 1, -1, -1):
        mod, shape = mods[i], shapes[i]
        need = want_input or any(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                                 for m in mods[:i])
        if isinstance(mod, torch.nn.MaxPool2d):
            g = F.max_unpool2d(g, pools[i], mod.kernel_size, mod.stride, output_size=shape[2:])
        elif isinstance(mod, torch.nn.Flatten):
            g = g.reshape(shape) if need else None
        elif isinstance(mod, torch.nn.Linear):
            grads.append(g.t() @ inputs[i])
            g = g @ mod.weight.detach() if need else None
        elif isinstance(mod, torch.nn.Conv2d):
            grads.append(torch.nn.grad.conv2d_weight(inputs[i], mod.weight.shape, g))
            g = torch.nn.grad.conv2d_input(shape, mod.weight.detach(), g) if need else None
    return grads, g


def floor_forward(model, x, keep=False):
    """Encoding, dense products over all T*B rows, the LIF kernel: per stage (input spikes,
    spikes, membrane potentials if keep, what the dense backward needs if keep)."""
    s_in = model.encode(x, key=1)
    steps, batch = s_in.shape[:2]
    s = s_in.reshape(steps * batch, *s_in.shape[2:])
    layers = []
    for stage, neuron in zip(model.stages, model.neurons):
        tape = [] if keep else None
        cur = _dense_stage(stage, s, tape)
        spk, mem = L.lif_forward(cur.reshape(steps, batch, *cur.shape[1:]),
                                 neuron.beta.clamp(0, 1), neuron.threshold, keep)
        layers.append((s, spk, mem, tape))
        s = spk.reshape(steps * batch, *spk.shape[2:])
    return layers


def floor_train(model, x, y):
    """floor_forward, the loss gradient, then per stage the LIF backward kernel and the dense
    gradient products (weights, and the input except for the first stage)."""
    with torch.no_grad():
        layers = floor_forward(model, x, keep=True)
        last = layers[-1][1]
    counts = last.sum(0).flatten(1).requires_grad_()
    F.cross_entropy(counts * model.score_scale, y).backward()
    with torch.no_grad():
        g = counts.grad.reshape(1, *last.shape[1:]).expand(last.shape).contiguous()
        for i in range(len(layers) - 1, -1, -1):
            s, spk, mem, tape = layers[i]
            neuron = model.neurons[i]
            gcur = L.lif_backward(g, mem, neuron.beta.clamp(0, 1), neuron.threshold,
                                  model.surrogate_slope)
            _, g = _dense_backward(model.stages[i], s, tape,
                                   gcur.reshape(s.shape[0], *gcur.shape[2:]), i > 0)
            if g is not None:
                g = g.reshape(layers[i - 1][1].shape).contiguous()


def rate_snn(model, x, x_train, y_train, rounds: int) -> dict:
    """Inference and training per image of one rate-coded SNN, all variants (module docstring)."""
    model.eval()
    out = {}
    with torch.no_grad():
        s = model.encode(x)
        model.engine = "step"
        ref = model.simulate(s)[0]
        model.engine = "layer"
        ours = model.simulate(s)[0]
        variants = {"ours": lambda: model(x),
                    "step_before": lambda: step_before(model, x),
                    "step_reference": lambda: _engine(model, "step", lambda: model(x)),
                    "floor": lambda: floor_forward(model, x)}
        times = interleaved(variants, rounds)
    out["inference"] = {"batch": len(x), "steps": model.steps,
                        "ms_per_image": per_image(times, len(x)),
                        "equal_to_step_loop": bool(torch.equal(ref, ours)),
                        "output_spikes_per_image": float(ours.sum()) / len(x)}
    model.train()

    def step(fn):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(fn(), y_train).backward()

    variants = {"ours": lambda: step(lambda: model(x_train)),
                "step_before": lambda: step(lambda: step_before(model, x_train) * model.score_scale),
                "step_reference": lambda: _engine(model, "step", lambda: step(lambda: model(x_train))),
                "floor": lambda: floor_train(model, x_train, y_train)}
    times = interleaved(variants, rounds)
    model.eval()
    out["training"] = {"batch": len(x_train), "steps": model.steps,
                       "ms_per_image": per_image(times, len(x_train)),
                       "gradients_match_step_loop": _gradients_match(model, x_train, y_train)}
    return out


def _engine(model, engine, fn):
    model.engine = engine
    try:
        return fn()
    finally:
        model.engine = "layer"


def _gradients_match(model, x, y) -> bool:
    """Surrogate gradients of both engines on the same input spikes agree to float rounding."""
    model.train()
    s = model.encode(x, key=3)
    grads = {}
    for engine in ("layer", "step"):
        model.zero_grad(set_to_none=True)
        counts = _engine(model, engine, lambda: model.simulate(s)[0])
        F.cross_entropy(counts * model.score_scale, y).backward()
        grads[engine] = [p.grad.clone() for p in model.parameters()]
    model.eval()
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads["layer"], grads["step"]))


# ---------------------------------------------------------------- Diehl & Cook

def dc_before(model, x, learn: bool, seed: int = 0):
    """Diehl & Cook before the engine (5674fcc): torch.rand encoding, one dense MKL product, the
    torch dynamics loop, and for learning the dense trace products of `stdp_delta`."""
    gen = torch.Generator().manual_seed(seed)
    p = E.intensity(x.reshape(x.shape[0], -1), model.input_coding) * (D.INTENSITY * D.DT / 1000.0)
    s_in = (torch.rand((model.time_steps, *p.shape), generator=gen) < p).float()
    steps, b = s_in.shape[:2]
    current = (s_in.reshape(steps * b, -1) @ model.fc.weight.detach().t()).reshape(steps, b, -1)
    spikes = model._dynamics_steps(current, learn)
    if learn:
        apply_update(model, D.stdp_delta(s_in, spikes.float()))
    return spikes


def dc_floor(model, x):
    """Encoding, dense products, the dynamics kernel (one presentation, no learning), in the
    layer engine's chunks of steps."""
    s_in = model.encode(x, model.time_steps, 1)
    steps, b = s_in.shape[:2]
    w = model.fc.weight.detach()
    chunk = max(1, D.STEP_ELEMENTS // (b * model.n_neurons))
    kernel, _ = model._kernel(False)
    state = wta.new_state(b, model.n_neurons, D.REST)
    winners = torch.empty((steps, b), dtype=torch.int32).numpy()
    for t in range(0, steps, chunk):
        part = s_in[t:t + chunk]
        cur = F.linear(part.reshape(-1, part.shape[-1]).float(), w)
        kernel(cur.reshape(part.shape[0], b, -1).numpy(), *state, winners[t:t + chunk])
    return winners


def diehl_cook(n: int, x, train_x, steps: int, batch: int, rounds: int, bindsnet, stdp_images: int,
               epoch_x=None) -> dict:
    torch.manual_seed(0)
    model = D.DiehlCook(n, x[0].numel(), 10, time_steps=steps).eval()
    out = {}
    with torch.no_grad():
        s = model.encode(x, steps, 5)
        rec = model.simulate(s)
        ref = _engine(model, "step", lambda: model.simulate(s))
        variants = {"ours": lambda: model.run(x),
                    "step_before": lambda: dc_before(model, x, False),
                    "step_reference": lambda: _engine(model, "step", lambda: model.run(x)),
                    "floor": lambda: dc_floor(model, x)}
        times = interleaved(variants, rounds)
        if bindsnet is not None:     # apart: its allocations would slow whatever runs after it
            peer = BindsNetDC(bindsnet, n, steps, len(x), x[0].shape)
            encoded = peer.encoded(x)
            times.update(interleaved({
                "bindsnet": lambda: peer.present(x, learn=False),
                "bindsnet_without_encoding": lambda: peer.present(x, learn=False, encoded=encoded)},
                rounds))
    out["inference"] = {"neurons": n, "batch": len(x), "steps": steps,
                        "ms_per_image": per_image(times, len(x)),
                        "equal_to_step_loop": bool(torch.equal(rec.winners, ref.winners)),
                        "spikes_per_image": rec.total() / len(x)}
    if bindsnet is not None:
        out["inference"]["bindsnet_spikes_per_image"] = peer.last_spikes / len(x)
    out["stdp"] = stdp(model, train_x, batch, stdp_images, bindsnet, n, steps)
    if epoch_x is not None:
        out["stdp_epoch"] = stdp_epoch(n, epoch_x, steps, batch)
    return out


def stdp(model, train_x, batch, images, bindsnet, n, steps) -> dict:
    """STDP over `images` training images in batches (weights updated after every batch)."""
    batches = [train_x[a:a + batch] for a in range(0, images, batch)]
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def ours(engine):
        model.load_state_dict(start)
        model.train()
        for k, xb in enumerate(batches):
            rec = _engine(model, engine, lambda: model.run(xb, learn=True, key=E.key_from_seed(k)))
            apply_update(model, rec.delta_w)

    def before():
        model.load_state_dict(start)
        for k, xb in enumerate(batches):
            dc_before(model, xb, True, k)

    with torch.no_grad():
        variants = {"ours": lambda: ours("layer"), "step_before": before,
                    "step_reference": lambda: ours("step")}
        times = interleaved(variants, rounds=1)
        if bindsnet is not None:
            peer = BindsNetDC(bindsnet, n, steps, batch, train_x[0].shape)
            times.update(interleaved(
                {"bindsnet": lambda: [peer.present(xb, learn=True) for xb in batches]}, rounds=1))
        winners = {}
        for engine in ("layer", "step"):
            model.load_state_dict(start)
            model.train()
            winners[engine] = _engine(model, engine, lambda: model.run(
                batches[0], learn=True, key=E.key_from_seed(0))).winners
    model.eval()
    return {"images": images, "batch": batch, "steps": steps,
            "ms_per_image": per_image(times, images),
            "equal_to_step_loop": bool(torch.equal(winners["layer"], winners["step"]))}


def stdp_epoch(n, train_x, steps, batch) -> dict:
    """One STDP epoch of ours over all of train_x (learning and weight updates only)."""
    torch.manual_seed(0)
    model = D.DiehlCook(n, train_x[0].numel(), 10, time_steps=steps).train()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for k, a in enumerate(range(0, len(train_x), batch)):
            rec = model.run(train_x[a:a + batch], learn=True, key=E.key_from_seed(k))
            apply_update(model, rec.delta_w)
    return {"images": len(train_x), "batch": batch, "steps": steps,
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


# ---------------------------------------------------------------- BindsNET

def load_bindsnet(path: Path = BINDSNET_DIR):
    """(bindsnet module namespace, None) or (None, why not). Loads the network, learning, models
    and encoding subpackages without the package __init__ (module docstring)."""
    if not (path / "bindsnet").is_dir():
        return None, (f"not installed: .venv/bin/python -m pip install --target "
                      f".cache/bindsnet-pkgs --no-deps bindsnet=={BINDSNET_VERSION}")
    if "bindsnet" not in sys.modules:
        pkg = types.ModuleType("bindsnet")
        pkg.__path__ = [str(path / "bindsnet")]
        sys.modules["bindsnet"] = pkg
    try:
        importlib.import_module("bindsnet.network")   # first: its imports close a cycle
        models = importlib.import_module("bindsnet.models")
        encoding = importlib.import_module("bindsnet.encoding")
        monitors = importlib.import_module("bindsnet.network.monitors")
    except Exception as exc:           # a peer that cannot load is recorded, not fatal
        return None, f"import failed: {type(exc).__name__}: {exc}"
    return types.SimpleNamespace(models=models, encoding=encoding, monitors=monitors), None


class BindsNetDC:
    """BindsNET's DiehlAndCook2015 as its batched MNIST example runs it (inh=120, norm 78.4,
    theta_plus 0.05, dt 1 ms), with a spike monitor on the excitatory layer."""

    def __init__(self, bn, n: int, steps: int, batch: int, shape):
        torch.manual_seed(0)
        self.steps = steps
        self.net = bn.models.DiehlAndCook2015(
            n_inpt=int(math.prod(shape)), n_neurons=n, exc=22.5, inh=120.0, dt=1.0, norm=78.4,
            theta_plus=0.05, inpt_shape=tuple(shape), batch_size=batch)
        self.monitor = bn.monitors.Monitor(self.net.layers["Ae"], state_vars=["s"], time=steps)
        self.net.add_monitor(self.monitor, name="Ae_spikes")
        self.poisson = bn.encoding.poisson
        self.last_spikes = 0

    def encoded(self, x):
        """BindsNET's Poisson encoding of the pixel intensities at INTENSITY Hz."""
        return self.poisson(datum=E.intensity(x, "intensity") * D.INTENSITY, time=self.steps,
                            dt=1.0)

    def present(self, x, learn: bool, encoded=None):
        self.net.train(learn)
        inputs = self.encoded(x) if encoded is None else encoded
        self.net.run(inputs={"X": inputs}, time=self.steps)
        self.last_spikes = int(self.monitor.get("s").sum())
        self.net.reset_state_variables()


# ---------------------------------------------------------------- main

def _images(n: int, split: str, synthetic: bool, size=(28, 28)):
    if synthetic:
        g = torch.Generator().manual_seed(0 if split == "test" else 1)
        return (torch.rand(n, 1, *size, generator=g) * 2 - 1,
                torch.randint(0, 10, (n,), generator=g))
    data = load_dataset("fashion-mnist", split, limit=n)
    return data.x, data.y


def _model(arch: str, path: str | None, size):
    if path:
        model, _ = load_checkpoint(path)
        return model
    torch.manual_seed(0)
    return build(arch, 1, 10, image_size=size)


def run(args) -> dict:
    size = (args.size, args.size)
    x, _ = _images(max(args.batch, args.conv_batch, args.dc_batch), "test", args.synthetic, size)
    xt, yt = _images(max(args.train_batch, args.conv_batch), "train", args.synthetic, size)
    bindsnet, why = (None, "skipped (--no-bindsnet)") if args.no_bindsnet else load_bindsnet()
    result = {"config": {"threads": torch.get_num_threads(), "rounds": args.rounds,
                         "data": "synthetic" if args.synthetic else "fashion-mnist",
                         "models": {"snn-fc": args.fc_model or "random init (seed 0)",
                                    "snn-conv": args.conv_model or "random init (seed 0)",
                                    "diehl-cook": "random init (seed 0)"}},
              "bindsnet": {"version": BINDSNET_VERSION, "ran": bindsnet is not None,
                           "unavailable_because": why}}
    fc = _model(f"snn-fc{args.fc_n}", args.fc_model, size)
    fc.steps = args.steps
    result["snn_fc"] = {"arch": f"snn-fc{args.fc_n}", **rate_snn(
        fc, x[:args.batch], xt[:args.train_batch], yt[:args.train_batch], args.rounds)}
    conv = _model(f"snn-conv{args.conv_n}", args.conv_model, size)
    conv.steps = args.steps
    result["snn_conv"] = {"arch": f"snn-conv{args.conv_n}", **rate_snn(
        conv, x[:args.conv_batch], xt[:args.conv_batch], yt[:args.conv_batch], args.rounds)}
    train_x = _images(args.stdp_images, "train", args.synthetic, size)[0]
    epoch_x = load_dataset("fashion-mnist", "train").x if args.stdp_epoch else None
    result["diehl_cook"] = {"arch": f"diehl-cook{args.dc_n}", **diehl_cook(
        args.dc_n, x[:args.dc_batch], train_x, args.dc_steps, args.dc_batch, args.rounds,
        bindsnet, args.stdp_images, epoch_x)}
    result["ratios"], result["floor_ratios"], result["ratios_vs_step_reference"] = ratios(
        result, args)
    cpu = ratios(result, args, "cpu_ms")
    result["cpu_time_ratios"] = {"ratios": cpu[0], "floor_ratios": cpu[1],
                                 "ratios_vs_step_reference": cpu[2]}
    return result


def _ms(d, k, clock="wall_ms"):
    return d["ms_per_image"][k][clock]


def ratios(r: dict, args, clock: str = "wall_ms") -> tuple[dict, dict, dict]:
    """Step loop (before) over ours, ours over the floor, the reference step loop over ours, on
    `clock` ("wall_ms", or "cpu_ms": this process's CPU time, steadier on a shared machine)."""
    fc, conv, dc = f"snn_fc{args.fc_n}", "snn_conv", f"diehl_cook{args.dc_n}"
    rows = {f"{fc}_inference": r["snn_fc"]["inference"], f"{fc}_training": r["snn_fc"]["training"],
            f"{conv}_inference": r["snn_conv"]["inference"],
            f"{conv}_training": r["snn_conv"]["training"],
            f"{dc}_inference": r["diehl_cook"]["inference"], f"{dc}_stdp": r["diehl_cook"]["stdp"]}
    speed = {k: _ms(v, "step_before", clock) / _ms(v, "ours", clock) for k, v in rows.items()}
    floor = {k: _ms(v, "ours", clock) / _ms(v, "floor", clock) for k, v in rows.items()
             if "floor" in v["ms_per_image"]}
    ref = {k: _ms(v, "step_reference", clock) / _ms(v, "ours", clock) for k, v in rows.items()}
    if r["bindsnet"]["ran"]:
        for name, key in ((f"{dc}_vs_bindsnet", f"{dc}_inference"),
                          (f"{dc}_stdp_vs_bindsnet", f"{dc}_stdp")):
            speed[name] = _ms(rows[key], "bindsnet", clock) / _ms(rows[key], "ours", clock)
    return speed, floor, ref


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch and numba threads")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (medians)")
    ap.add_argument("--steps", type=int, default=25, help="T of snn-fc / snn-conv")
    ap.add_argument("--batch", type=int, default=256, help="snn-fc inference batch")
    ap.add_argument("--train-batch", type=int, default=128, help="snn-fc training batch")
    ap.add_argument("--conv-batch", type=int, default=64, help="snn-conv batch (both)")
    ap.add_argument("--fc-n", type=int, default=400)
    ap.add_argument("--conv-n", type=int, default=12)
    ap.add_argument("--fc-model", default=None, help="snn-fc checkpoint (default random init)")
    ap.add_argument("--conv-model", default=None, help="snn-conv checkpoint")
    ap.add_argument("--dc-n", type=int, default=400)
    ap.add_argument("--dc-steps", type=int, default=100)
    ap.add_argument("--dc-batch", type=int, default=256)
    ap.add_argument("--stdp-images", type=int, default=1024)
    ap.add_argument("--stdp-epoch", action="store_true", help="also one STDP epoch on 60k")
    ap.add_argument("--no-bindsnet", action="store_true")
    ap.add_argument("--synthetic", action="store_true", help="random images (smoke tests)")
    ap.add_argument("--size", type=int, default=28, help="image side")
    ap.add_argument("--out", default="snn_speed", help="results name")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    result = run(args)
    write_result(f"{args.out}.json", result)
    for k, v in result["ratios"].items():
        print(f"{k}: {v:.2f}x wall, {result['cpu_time_ratios']['ratios'][k]:.2f}x CPU")


if __name__ == "__main__":
    main()
