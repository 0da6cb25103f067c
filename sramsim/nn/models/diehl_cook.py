"""The Diehl & Cook (2015) STDP network: Poisson inputs -> adaptive-threshold LIF neurons with
lateral inhibition, labelled after unsupervised learning by their strongest class response.

P. U. Diehl and M. Cook, "Unsupervised learning of digit recognition using spike-timing-dependent
plasticity", Front. Comput. Neurosci. 9:99 (2015). The numbers below follow BindsNET's documented
`bindsnet.models.DiehlAndCook2015` defaults and its `DiehlAndCookNodes` / `PostPre` semantics
(BindsNET/bindsnet, bindsnet/models/models.py, bindsnet/network/nodes.py, bindsnet/learning);
where the paper differs, both are given. No BindsNET code is used.

Network (units mV and ms, time step DT = 1 ms):
- input: each of the `n_inputs` pixels (intensity p in [0, 1]) is a Bernoulli-per-step (Poisson
  rate) spike train of rate p * intensity Hz, i.e. spike probability p * intensity * DT / 1000
  (the model's `intensity`, default INTENSITY = 128 Hz as BindsNET's examples; `set_recipe`),
  where p = (x + 1) / 2 for the data sets' inputs x in [-1, 1] (`input_coding = "intensity"`, as
  BindsNET encodes [0, 1] images); checkpoints from before issue 22 used p = clamp(x, 0, 1)
  (`input_coding = "clamp"`: every pixel darker than mid-grey silent).
- excitatory layer: N LIF neurons, membrane v, adaptive threshold theta (a buffer):
    v <- REST + (v - REST) * exp(-DT / TC_DECAY)
    v <- v + [not refractory] * (W s_in - INH * (spikes of the other neurons at t-1))
    spike where v >= THRESH + theta; a spiking neuron resets to RESET, is refractory for REFRAC
    steps and (while learning) raises its theta by THETA_PLUS; theta decays with TC_THETA_DECAY
    (over each presentation's steps, or also over the rest of a batch's online time:
    `set_recipe(theta_rest_ms=...)`).
  As BindsNET's `one_spike`, at most one neuron per sample spikes per step: every neuron that
  crossed its threshold is reset (and, learning, raises theta), only the one with the largest
  overshoot v - (THRESH + theta) emits the spike (BindsNET picks it at random; the largest
  overshoot keeps the forward free of random draws beyond the input encoding).
- inhibition, implicit: the paper's inhibitory population (one inhibitory neuron per excitatory
  one, exc -> inh weight EXC = 22.5, inh -> every other exc neuron weight -INH) is not simulated
  as neurons. An inhibitory neuron at its rest -60 mV with threshold -40 mV always fires when its
  partner's 22.5 mV arrives, and cannot fire otherwise (it decays back towards -60 < -40); the
  excitatory refractory period (5 ms) outlasts the inhibitory one (2 ms), so it is never
  refractory when its partner fires. Each excitatory spike therefore delivers -INH to all the
  other excitatory neurons, here one step later (BindsNET's layer-by-layer update delays it one
  step more).
- synapses: input -> excitatory weights in `self.fc` (nn.Linear(n_inputs, N, bias=False)) -- the
  only tensor in the faulty memory. theta, the label assignments and all constants are buffers or
  attributes; membrane state lives only inside one forward call.

Output (eval and train forward): (B, num_classes) class scores = the mean spike count, over the
`time_steps` steps, of the neurons assigned to each class (0 for a class with no neuron; neurons
that never responded are unassigned, label -1). The input spikes come from the counter-based
stream of `sramsim.nn.snn_engine.encoding` (SplitMix64 outputs indexed by (sample, step, pixel)):
in eval mode keyed by `self.seed`, so the output is deterministic and a sample's noise depends on
its index in the call, not on the chunking; in train mode keyed by one draw from torch's global RNG
(or the key passed to `run`). STDP learning itself is `run(..., learn=True)`, driven by
`sramsim.nn.stdp.train_stdp`.

Simulation (`simulate(spikes)`): the input current of every step comes from one exact product over
all (T*B) rows (`snn_engine.synapses`: a fixed summation order, so the same bits as step by step;
the weights are fixed during a presentation, also while learning), then the dynamics of all steps
run in one kernel (`snn_engine.wta`) and the STDP change of the presentation in another. The
reference, engine="step", runs the same semantics as a torch loop one step at a time (current of
step t, then its dynamics) and the STDP change from dense trace products; given the same input
spikes both give the same spikes and theta bit for bit, and STDP changes equal to float rounding.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, check_choice
from sramsim.nn.snn_engine import wta
from sramsim.nn.snn_engine.encoding import draw_key, key_from_seed, rate_spikes
from sramsim.nn.snn_engine.encoding import intensity as pixel_intensity
from sramsim.nn.snn_engine.synapses import linear_exact

# BindsNET DiehlAndCook2015 / DiehlAndCookNodes defaults (the paper's values where they agree).
DT = 1.0                  # ms; BindsNET dt=1.0 (the paper simulates at 0.5 ms)
REST = -65.0              # mV, excitatory rest (paper and BindsNET)
RESET = -60.0             # mV, excitatory reset (paper and BindsNET)
THRESH = -52.0            # mV, excitatory threshold before adaptation (paper -52 + theta)
REFRAC = 5                # steps of DT, excitatory refractory period (5 ms)
TC_DECAY = 100.0          # ms, excitatory membrane time constant
THETA_PLUS = 0.05         # mV per spike, adaptive-threshold increment (BindsNET theta_plus)
TC_THETA_DECAY = 1e7      # ms, adaptive-threshold decay (BindsNET tc_theta_decay)
EXC = 22.5                # exc -> inh weight (BindsNET exc); implicit, see the module docstring
# inh -> exc weight magnitude. BindsNET's DiehlAndCook2015 class defaults to 17.5; its batched
# MNIST example (examples/mnist/batch_eth_mnist.py) runs it with --inh 120. With the implicit
# inhibition here, 120 learned far better: N100 on 3000 Fashion-MNIST training images, batch 16,
# accuracy of the label assignment on those training images 0.578 with 120 vs 0.303 with 17.5.
INH = 120.0
TC_TRACE = 20.0           # ms, pre- and postsynaptic trace time constant (BindsNET tc_trace)
NU_PRE, NU_POST = 1e-4, 1e-2   # BindsNET nu=(1e-4, 1e-2): depression on pre, potentiation on post
WMIN, WMAX = 0.0, 1.0     # BindsNET wmin/wmax of the input -> excitatory connection
NORM = 78.4               # each neuron's input weights sum to this (paper and BindsNET norm)
INTENSITY = 128.0         # Hz at pixel 1.0 (BindsNET examples' intensity; the paper: 63.75 Hz)
# Inference re-presents a sample that made fewer than MIN_SPIKES spikes with the rate raised by
# INTENSITY_STEP Hz (the paper's rule: < 5 spikes -> +32 Hz), at most RETRIES times.
MIN_SPIKES = 5
INTENSITY_STEP = 32.0
RETRIES = 5
# Highest `intensity` a model takes: its last re-presentation (RETRIES steps of INTENSITY_STEP
# more) must stay a spike probability <= 1 per step of DT.
MAX_INTENSITY = 1000.0 / DT - RETRIES * INTENSITY_STEP
# The paper's rest between two images (ms), for the online theta time base (`set_recipe`).
PAPER_REST_MS = 150.0
INIT_MAX = 0.3            # initial weights U(0, 0.3) (paper), then normalised to NORM
# Time steps per presentation: the paper presents each image for 350 ms at 0.5 ms (700 steps)
# plus 150 ms of rest; BindsNET's batched example uses 100 steps of 1 ms. 100 steps keeps one
# epoch over 60,000 images affordable on a CPU.
DEFAULT_STEPS = 100
EVAL_SEED = 0
# Refused up front: more synapses than this (1 GiB of float32 weights).
MAX_SYNAPSES = 1 << 28
# Eval forwards run in chunks of this many samples (bounds the (steps, B, inputs) encoding).
CHUNK = 256
ENGINES = ("layer", "step")
# The layer engine computes the currents of at most this many (step, sample, neuron) values at
# once: a buffer above glibc's mmap threshold (32 MiB) is fresh memory on every call, and its
# page faults cost here about as much as the dynamics (measured: 30 ms to clone 44 MB vs 4 ms
# to copy into a reused buffer).
STEP_ELEMENTS = 1 << 21


def check_recipe(intensity: float | None, theta_rest_ms: float | None,
                 names: tuple[str, str] = ("intensity", "theta_rest_ms"),
                 ) -> tuple[float | None, float | None]:
    """(intensity, theta_rest_ms) as floats, None kept; InputError naming `names` for a rate
    outside (0, MAX_INTENSITY] Hz or a rest outside [0, 1e6] ms (see `DiehlCook.set_recipe`)."""
    rate = None if intensity is None else float(intensity)
    if rate is not None and not (math.isfinite(rate) and 0 < rate <= MAX_INTENSITY):
        raise InputError(f"{names[0]} must be a rate in (0, {MAX_INTENSITY:g}] Hz, got "
                         f"{intensity!r}")
    rest = None if theta_rest_ms is None else float(theta_rest_ms)
    if rest is not None and not (math.isfinite(rest) and 0 <= rest <= 1e6):
        raise InputError(f"{names[1]} must be a time in [0, 1e6] ms, got {theta_rest_ms!r}")
    return rate, rest


@dataclass
class Record:
    """What one presentation produced: `winners` (steps, B) int32, the neuron that spiked at each
    step in each sample or -1 (at most one spikes), and, when learning, the STDP weight change
    (N, n_inputs) summed over the batch and the steps, and theta after it."""

    winners: torch.Tensor
    n_neurons: int
    delta_w: torch.Tensor | None = None
    theta: torch.Tensor | None = None

    @property
    def spikes(self) -> torch.Tensor:
        """Binary spikes (steps, B, N) bool."""
        out = torch.zeros((*self.winners.shape, self.n_neurons + 1), dtype=torch.bool)
        out.scatter_(2, (self.winners.long() % (self.n_neurons + 1)).unsqueeze(2), True)
        return out[..., :self.n_neurons]

    def counts(self) -> torch.Tensor:
        """Spike count of every neuron for every sample, (B, N) float."""
        steps, batch = self.winners.shape
        out = torch.zeros((batch, self.n_neurons + 1), dtype=torch.float32)
        rows = torch.arange(batch).expand(steps, batch)
        idx = self.winners.long() % (self.n_neurons + 1)
        out.index_put_((rows.reshape(-1), idx.reshape(-1)), torch.ones(idx.numel()),
                       accumulate=True)
        return out[:, :self.n_neurons]

    def total(self) -> int:
        """Number of spikes of the presentation."""
        return int((self.winners >= 0).sum())


class DiehlCook(nn.Module):
    """Diehl & Cook (2015) network of `n_neurons` excitatory neurons (see the module docstring).
    `engine` picks the simulation ("layer", default, or the reference "step" loop); not saved."""

    theta: torch.Tensor             # buffers (register_buffer below)
    assignments: torch.Tensor

    def __init__(self, n_neurons: int, n_inputs: int = 784, num_classes: int = 10,
                 time_steps: int = DEFAULT_STEPS, inh: float = INH, seed: int = EVAL_SEED):
        super().__init__()
        n_neurons, n_inputs, num_classes = int(n_neurons), int(n_inputs), int(num_classes)
        if n_neurons < 1 or n_inputs < 1 or num_classes < 2:
            raise InputError(f"diehl-cook needs >= 1 neuron, >= 1 input and >= 2 classes, got "
                             f"{n_neurons}, {n_inputs}, {num_classes}")
        if n_neurons * n_inputs > MAX_SYNAPSES:
            raise InputError(f"diehl-cook{n_neurons} on {n_inputs} inputs has "
                             f"{n_neurons * n_inputs} synapses; at most {MAX_SYNAPSES} fit")
        if int(time_steps) < 1:
            raise InputError(f"time_steps must be >= 1, got {time_steps!r}")
        self.n_neurons, self.n_inputs, self.num_classes = n_neurons, n_inputs, num_classes
        self.time_steps, self.inh, self.seed = int(time_steps), float(inh), int(seed)
        self.engine = "layer"
        self.input_coding = "intensity"     # see the module docstring; saved in checkpoints
        # Input rate (Hz at pixel 1) and theta's time base while learning (`set_recipe`); both
        # saved in checkpoints (`checkpoint_meta`).
        self.intensity = INTENSITY
        self.theta_rest_ms: float | None = None
        self.fc = nn.Linear(n_inputs, n_neurons, bias=False)
        with torch.no_grad():
            self.fc.weight.uniform_(0.0, INIT_MAX)
            normalize_(self.fc.weight)
        self.register_buffer("theta", torch.zeros(n_neurons))
        self.register_buffer("assignments", torch.full((n_neurons,), -1, dtype=torch.int64))

    # ------------------------------------------------------------ recipe

    def set_recipe(self, intensity: float | None = None,
                   theta_rest_ms: float | None = None) -> None:
        """How inputs drive the network and how its thresholds relax while it learns.

        intensity: input rate in Hz at pixel intensity 1 (default INTENSITY = 128, BindsNET's
        examples; the paper 63.75), for learning and inference alike.
        theta_rest_ms: None, BindsNET's batched time base: theta decays only over the steps of
        each presentation, so a batch of B images raises it B times as often per simulated
        millisecond as one image does. A number r, the online time base: after each learning
        batch theta also decays over the time the other B - 1 presentations and every image's
        rest of r ms would have taken one after another (the paper: 150 ms of rest). With it
        theta no longer climbs with the batch size until the neurons barely fire.
        """
        rate, rest = check_recipe(intensity, theta_rest_ms)
        if rate is not None:
            self.intensity = rate
        if rest is not None:
            self.theta_rest_ms = rest

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records besides the weights and the input coding (see
        `load_checkpoint_meta`)."""
        return {"intensity": self.intensity, "theta_rest_ms": self.theta_rest_ms}

    def load_checkpoint_meta(self, meta: dict) -> None:
        """The recipe of a checkpoint's meta; one written before a field existed had its default."""
        self.intensity = INTENSITY
        self.theta_rest_ms = None
        self.set_recipe(meta.get("intensity"), meta.get("theta_rest_ms"))

    def rest_decay_(self, batch: int) -> None:
        """After a learning presentation of `batch` images: theta's decay over the rest of their
        online time (`set_recipe`); nothing on BindsNET's batched time base."""
        if self.theta_rest_ms is None:
            return
        steps_ms = self.time_steps * DT
        extra = int(batch) * (steps_ms + self.theta_rest_ms) - steps_ms
        if extra > 0:
            self.theta.mul_(math.exp(-extra / TC_THETA_DECAY))

    # ------------------------------------------------------------ encoding and dynamics

    def encode(self, x: torch.Tensor, steps: int, key: int, intensity: float | None = None,
               rows: torch.Tensor | None = None) -> torch.Tensor:
        """Poisson-rate input spikes (steps, B, n_inputs) as uint8 0/1, `intensity` Hz at pixel
        intensity 1 (default the model's): spike probability p * intensity * DT / 1000 per step
        (p: `input_coding`); rows: the samples' ids in the stream (default 0..B-1)."""
        if x[0].numel() != self.n_inputs:
            raise InputError(f"diehl-cook expects {self.n_inputs} input values per sample, got "
                             f"{x[0].numel()}")
        rate = self.intensity if intensity is None else intensity
        p = pixel_intensity(x.reshape(x.shape[0], -1), self.input_coding)
        s = rate_spikes(p, steps, key, rate * DT / 1000.0, rows)
        return s.to(x.device)

    def run(self, x: torch.Tensor, weight: torch.Tensor | None = None, learn: bool = False,
            key: int | None = None, steps: int | None = None, intensity: float | None = None,
            rows: torch.Tensor | None = None) -> Record:
        """Present the batch `x` for `steps` steps with input weights `weight` (default the model's,
        as swapped in by functional_call); the weights are fixed during the presentation. key: of
        the encoding stream (default: from self.seed in eval mode, a draw from torch's global
        RNG in train mode); rows: the samples' ids in that stream.

        learn=True: theta adapts (and is written back to the buffer) and the STDP change of
        BindsNET's PostPre rule is returned, summed over the batch and the steps:
            on a postsynaptic spike   dW[n, i] += NU_POST * x_pre[i]
            on a presynaptic spike    dW[n, i] -= NU_PRE  * x_post[n]
        where x_pre / x_post are traces set to 1 at a spike (that step included) and decaying with
        TC_TRACE. The caller applies it (`sramsim.nn.stdp.apply_update`).
        """
        steps = self.time_steps if steps is None else int(steps)
        if key is None:
            key = draw_key() if self.training else key_from_seed(self.seed)
        return self.simulate(self.encode(x, steps, key, intensity, rows), weight, learn)

    def simulate(self, s_in: torch.Tensor, weight: torch.Tensor | None = None,
                 learn: bool = False) -> Record:
        """One presentation of input spike trains `s_in` (T, B, n_inputs) of 0/1 values."""
        engine = check_choice(self.engine, ENGINES, "engine")
        w = (self.fc.weight if weight is None else weight).detach()
        steps, b = s_in.shape[:2]
        if engine == "step":
            current = torch.stack([linear_exact(s_in[t], w) for t in range(steps)]) if steps else \
                torch.zeros((0, b, self.n_neurons))
            winners = _winners(self._dynamics_steps(current.to(w.device), learn))
            if not learn:
                return Record(winners, self.n_neurons)
            delta = stdp_delta(s_in.float(), Record(winners, self.n_neurons).spikes.float())
            return Record(winners, self.n_neurons, delta, self.theta.clone())
        winners = self._layers(s_in, w, learn)
        if not learn:
            return Record(winners, self.n_neurons)
        pot, dep = wta.stdp_sums(_uint8(s_in), winners.numpy(), self.n_neurons,
                                 np.float32(math.exp(-DT / TC_TRACE)))
        delta = NU_POST * torch.from_numpy(pot) - NU_PRE * torch.from_numpy(dep)
        return Record(winners, self.n_neurons, delta.to(w.device), self.theta.clone())

    def dynamics(self, current: torch.Tensor, learn: bool) -> torch.Tensor:
        """Excitatory LIF dynamics over the steps of `current` (T, B, N) -> spikes (T, B, N) bool.

        Updates self.theta when `learn` (increments summed over the batch, as BindsNET does)."""
        if check_choice(self.engine, ENGINES, "engine") == "step":
            return self._dynamics_steps(current, learn)
        return Record(self._dynamics_kernel(current, learn), self.n_neurons).spikes

    def _layers(self, s_in: torch.Tensor, w: torch.Tensor, learn: bool) -> torch.Tensor:
        """The layer engine: the currents of a chunk of steps in one exact product, then their
        dynamics in one kernel, chunk after chunk (chunks keep the current below STEP_ELEMENTS
        floats; a large fresh buffer costs its page faults here): winners (T, B) int32. Runs on
        the CPU (numba) for a model on any device; the result is the same bits."""
        steps, b = s_in.shape[:2]
        s_in, w = s_in.cpu(), w.cpu()       # numba kernels: on the CPU whatever the device
        chunk = max(1, STEP_ELEMENTS // max(1, b * self.n_neurons))
        kernel, theta = self._kernel(learn)
        state = wta.new_state(b, self.n_neurons, REST)
        winners = np.empty((steps, b), dtype=np.int32)
        for t in range(0, steps, chunk):
            part = s_in[t:t + chunk]
            cur = linear_exact(part.reshape(part.shape[0] * b, -1), w)
            kernel(cur.reshape(part.shape[0], b, -1).numpy(), *state, winners[t:t + chunk])
        if learn:
            self.theta.copy_(torch.from_numpy(theta))
        return torch.from_numpy(winners)

    def _kernel(self, learn: bool) -> tuple[Callable[..., None], np.ndarray]:
        """(kernel(cur (T, B, N), v, refrac, prev, winners) running `snn_engine.wta`'s dynamics
        with this model's constants, the copy of theta it uses and, when learning, updates)."""
        params = (np.float32(REST), np.float32(RESET), np.float32(THRESH), np.float32(REFRAC),
                  np.float32(math.exp(-DT / TC_DECAY)), np.float32(self.inh))
        theta = self.theta.detach().cpu().float().numpy().copy()
        if learn:
            decay, plus = np.float32(math.exp(-DT / TC_THETA_DECAY)), np.float32(THETA_PLUS)

            def kernel(cur: np.ndarray, v: np.ndarray, refrac: np.ndarray, prev: np.ndarray,
                       winners: np.ndarray) -> None:
                if cur.size:
                    wta.wta_learn(cur, theta, params, decay, plus, v, refrac, prev, winners)
        else:
            def kernel(cur: np.ndarray, v: np.ndarray, refrac: np.ndarray, prev: np.ndarray,
                       winners: np.ndarray) -> None:
                if cur.size:
                    wta.wta_eval(cur, theta, params, v, refrac, prev, winners)
        return kernel, theta

    def _dynamics_kernel(self, current: torch.Tensor, learn: bool) -> torch.Tensor:
        """The dynamics of given currents (T, B, N) in one kernel: winners (T, B) int32."""
        cur = current.detach().float().cpu().contiguous().numpy()
        kernel, theta = self._kernel(learn)
        winners = np.empty(cur.shape[:2], dtype=np.int32)
        kernel(cur, *wta.new_state(cur.shape[1], cur.shape[2], REST), winners)
        if learn:
            self.theta.copy_(torch.from_numpy(theta))
        return torch.from_numpy(winners)

    def _dynamics_steps(self, current: torch.Tensor, learn: bool) -> torch.Tensor:
        """The reference: the dynamics as a torch loop, one step at a time."""
        with serial(current.device):
            return self._dynamics(current, learn)
    def _dynamics(self, current: torch.Tensor, learn: bool) -> torch.Tensor:
        steps, b, n = current.shape
        decay = math.exp(-DT / TC_DECAY)
        theta_decay = math.exp(-DT / TC_THETA_DECAY)
        theta = self.theta.clone()
        v = torch.full((b, n), REST, device=current.device)
        refrac = torch.zeros((b, n), device=current.device)
        prev = torch.zeros((b, n), device=current.device)
        spikes = torch.zeros((steps, b, n), dtype=torch.bool, device=current.device)
        rows = torch.arange(b, device=current.device)
        for t in range(steps):
            v = REST + (v - REST) * decay
            if learn:
                theta = theta * theta_decay
            inhibition = self.inh * (prev.sum(1, keepdim=True) - prev)
            v = v + (refrac <= 0) * (current[t] - inhibition)
            refrac = refrac - DT
            over = v - (THRESH + theta)
            crossed = over >= 0
            v = torch.where(crossed, torch.full_like(v, RESET), v)
            refrac = torch.where(crossed, torch.full_like(refrac, float(REFRAC)), refrac)
            if learn:
                theta = theta + THETA_PLUS * crossed.sum(0)
            winner = over.argmax(1)
            fired = crossed[rows, winner]
            s = torch.zeros((b, n), dtype=torch.bool, device=current.device)
            s[rows, winner] = fired
            spikes[t] = s
            prev = s.float()
        if learn:
            self.theta.copy_(theta)
        return spikes

    # ------------------------------------------------------------ inference

    def spike_counts(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) spike counts of `x` with `weight` (default the model's), no learning;
        deterministic in eval mode (the stream is keyed by `self.seed`, and sample i of `x` is
        row i of the stream whatever the chunking). A sample with fewer than MIN_SPIKES spikes is
        presented again at a rate raised by INTENSITY_STEP, up to RETRIES times (Diehl & Cook
        2015), presentation k from stream k of the key; its last presentation counts."""
        base = draw_key() if self.training else self.seed
        out = [self._counts(x[a:a + CHUNK], weight, base, a) for a in range(0, x.shape[0], CHUNK)]
        if not out:
            return torch.zeros((0, self.n_neurons), device=x.device)
        return torch.cat(out)

    def _counts(self, x: torch.Tensor, weight: torch.Tensor | None, base: int,
                first: int) -> torch.Tensor:
        rows = torch.arange(first, first + x.shape[0])
        counts = self.run(x, weight, key=key_from_seed(base), rows=rows).counts().to(x.device)
        for k in range(1, RETRIES + 1):
            low = (counts.sum(1) < MIN_SPIKES).nonzero().squeeze(1)
            if low.numel() == 0:
                break
            counts[low] = self.run(x[low], weight, key=key_from_seed(base, k), rows=rows[low.cpu()],
                                   intensity=self.intensity + k * INTENSITY_STEP
                                   ).counts().to(x.device)
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) class scores: mean spike count of the neurons assigned to each class."""
        return class_scores(self.spike_counts(x), self.assignments, self.num_classes)


def class_scores(counts: torch.Tensor, assignments: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean spike count (B, num_classes) of the neurons labelled with each class (BindsNET's
    'all activity' vote); 0 for a class without neurons; unassigned neurons (-1) are ignored."""
    onehot = torch.zeros((assignments.shape[0], num_classes), device=counts.device)
    labelled = assignments >= 0
    onehot[labelled.nonzero().squeeze(1), assignments[labelled]] = 1.0
    sizes = onehot.sum(0).clamp(min=1.0)
    return (counts.float() @ onehot) / sizes


def stdp_delta(s_in: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
    """PostPre STDP change (N, I) of one presentation, summed over batch and steps.

    s_in (T, B, I) and s_out (T, B, N): 0/1 float spikes. Traces are 1 at a spike and decay by
    exp(-DT / TC_TRACE) per step. Only the rows (step, sample) where a term can be nonzero enter
    the products: postsynaptic spikes are sparse, and the postsynaptic trace is 0 before a
    sample's first spike.
    """
    x_pre, x_post = trace(s_in), trace(s_out)
    i, n = s_in.shape[-1], s_out.shape[-1]
    s_out2, x_pre2 = s_out.reshape(-1, n), x_pre.reshape(-1, i)
    x_post2, s_in2 = x_post.reshape(-1, n), s_in.reshape(-1, i)
    post = s_out2.any(1).nonzero().squeeze(1)
    pre = x_post2.any(1).nonzero().squeeze(1)
    potentiation = s_out2[post].t() @ x_pre2[post]
    depression = x_post2[pre].t() @ s_in2[pre]
    return NU_POST * potentiation - NU_PRE * depression


def _winners(spikes: torch.Tensor) -> torch.Tensor:
    """(T, B) int32: the spiking neuron of every step and sample of bool spikes (T, B, N), or -1."""
    return torch.where(spikes.any(2), spikes.to(torch.uint8).argmax(2),
                       torch.full(spikes.shape[:2], -1)).to(torch.int32).cpu()


def _uint8(s: torch.Tensor) -> np.ndarray:
    """Spikes as a contiguous uint8 numpy array."""
    return (s.detach().cpu() != 0).to(torch.uint8).contiguous().numpy()


def trace(s: torch.Tensor) -> torch.Tensor:
    """Spike traces (T, ...) of 0/1 spikes `s`: set to 1 at a spike, else decayed from the step
    before (BindsNET's non-additive trace with trace_scale 1)."""
    decay = math.exp(-DT / TC_TRACE)
    out = torch.empty_like(s)
    x = torch.zeros_like(s[0])
    with serial(s.device):
        for t in range(s.shape[0]):
            x = torch.where(s[t] > 0, torch.ones_like(x), x * decay)
            out[t] = x
    return out


@contextlib.contextmanager
def serial(device: torch.device) -> Iterator[None]:
    """Run torch's CPU ops on one thread inside a time-step loop, then restore the thread count.

    The loops issue ~20 small element-wise ops per step; above 32768 elements torch hands each to
    its OpenMP pool, and on a loaded 2-core machine every such hand-off was measured at ~8 ms
    (B=128, N=400: 17 s for 100 steps instead of 0.06 s on one thread). Results do not depend on
    the thread count (element-wise ops and per-row reductions)."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def normalize_(weight: torch.Tensor, norm: float = NORM, wmax: float = WMAX) -> torch.Tensor:
    """In place: clamp to [WMIN, wmax], scale each neuron's input weights (a row) to sum `norm`
    (paper and BindsNET), clamp again (that only bites for a neuron whose weight would exceed
    wmax, i.e. whose input sum is concentrated on fewer than `norm` / wmax inputs). A neuron
    whose weights are all 0 stays 0."""
    weight.clamp_(WMIN, wmax)
    sums = weight.sum(1, keepdim=True)
    weight.mul_(torch.where(sums > 0, norm / sums, torch.zeros_like(sums)))
    weight.clamp_(WMIN, wmax)
    return weight
