"""The Diehl & Cook (2015) STDP network: Poisson inputs -> adaptive-threshold LIF neurons with
lateral inhibition, labelled after unsupervised learning by their strongest class response.

P. U. Diehl and M. Cook, "Unsupervised learning of digit recognition using spike-timing-dependent
plasticity", Front. Comput. Neurosci. 9:99 (2015). The numbers below follow BindsNET's documented
`bindsnet.models.DiehlAndCook2015` defaults and its `DiehlAndCookNodes` / `PostPre` semantics
(BindsNET/bindsnet, bindsnet/models/models.py, bindsnet/network/nodes.py, bindsnet/learning);
where the paper differs, both are given. No BindsNET code is used.

Network (units mV and ms, time step DT = 1 ms):
- input: each of the `n_inputs` pixels (intensity x in [0, 1]) is a Bernoulli-per-step (Poisson
  rate) spike train of rate x * INTENSITY Hz, i.e. spike probability x * INTENSITY * DT / 1000.
- excitatory layer: N LIF neurons, membrane v, adaptive threshold theta (a buffer):
    v <- REST + (v - REST) * exp(-DT / TC_DECAY)
    v <- v + [not refractory] * (W s_in - INH * (spikes of the other neurons at t-1))
    spike where v >= THRESH + theta; a spiking neuron resets to RESET, is refractory for REFRAC
    steps and (while learning) raises its theta by THETA_PLUS; theta decays with TC_THETA_DECAY.
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
that never responded are unassigned, label -1). In eval mode the input encoding draws from a
`torch.Generator` re-seeded with `self.seed` on every call, so the output is deterministic; in train
mode it draws from torch's global RNG (or the generator passed to `run`). STDP learning itself is
`run(..., learn=True)`, driven by `sramsim.nn.stdp.train_stdp`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from sramsim.errors import InputError

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


@dataclass
class Record:
    """What one presentation produced: binary spikes (steps, B, N) and, when learning, the STDP
    weight change (N, n_inputs) summed over the batch and the steps, and theta after it."""

    spikes: torch.Tensor
    delta_w: torch.Tensor | None = None
    theta: torch.Tensor | None = None

    def counts(self) -> torch.Tensor:
        """Spike count of every neuron for every sample, (B, N) float."""
        return self.spikes.sum(0, dtype=torch.float32)


class DiehlCook(nn.Module):
    """Diehl & Cook (2015) network of `n_neurons` excitatory neurons (see the module docstring)."""

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
        self.fc = nn.Linear(n_inputs, n_neurons, bias=False)
        with torch.no_grad():
            self.fc.weight.uniform_(0.0, INIT_MAX)
            normalize_(self.fc.weight)
        self.register_buffer("theta", torch.zeros(n_neurons))
        self.register_buffer("assignments", torch.full((n_neurons,), -1, dtype=torch.int64))

    # ------------------------------------------------------------ encoding and dynamics

    def encode(self, x: torch.Tensor, steps: int, generator: torch.Generator | None,
               intensity: float = INTENSITY) -> torch.Tensor:
        """Poisson-rate input spikes (steps, B, n_inputs) as 0/1 floats, `intensity` Hz at 1.0."""
        p = (x.reshape(x.shape[0], -1).float().clamp(0, 1) * (intensity * DT / 1000.0))
        if p.shape[1] != self.n_inputs:
            raise InputError(f"diehl-cook expects {self.n_inputs} input values per sample, got "
                             f"{p.shape[1]}")
        u = torch.rand((steps, *p.shape), generator=generator, device=p.device)
        return (u < p).float()

    def run(self, x: torch.Tensor, weight: torch.Tensor | None = None, learn: bool = False,
            generator: torch.Generator | None = None, steps: int | None = None,
            intensity: float = INTENSITY) -> Record:
        """Present the batch `x` for `steps` steps with input weights `weight` (default the model's,
        as swapped in by functional_call); the weights are fixed during the presentation.

        learn=True: theta adapts (and is written back to the buffer) and the STDP change of
        BindsNET's PostPre rule is returned, summed over the batch and the steps:
            on a postsynaptic spike   dW[n, i] += NU_POST * x_pre[i]
            on a presynaptic spike    dW[n, i] -= NU_PRE  * x_post[n]
        where x_pre / x_post are traces set to 1 at a spike (that step included) and decaying with
        TC_TRACE. The caller applies it (`sramsim.nn.stdp.apply_update`).
        """
        steps = self.time_steps if steps is None else int(steps)
        w = self.fc.weight if weight is None else weight
        s_in = self.encode(x, steps, generator, intensity)            # (T, B, I)
        b = s_in.shape[1]
        current = (s_in.reshape(steps * b, -1) @ w.detach().t()).reshape(steps, b, -1)
        spikes = self.dynamics(current, learn)
        if not learn:
            return Record(spikes)
        return Record(spikes, stdp_delta(s_in, spikes.float()), self.theta.clone())

    def dynamics(self, current: torch.Tensor, learn: bool) -> torch.Tensor:
        """Excitatory LIF dynamics over the steps of `current` (T, B, N) -> spikes (T, B, N) bool.

        Updates self.theta when `learn` (increments summed over the batch, as BindsNET does)."""
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
        deterministic in eval mode (the encoding generator is re-seeded with `self.seed` on every
        call, so a sample's noise depends on its position in the batch, not on other samples).
        A sample with fewer than MIN_SPIKES spikes is presented again at a rate raised by
        INTENSITY_STEP, up to RETRIES times (Diehl & Cook 2015); its last presentation counts."""
        gen = None
        if not self.training:
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
        out = [self._counts(x[a:a + CHUNK], weight, gen) for a in range(0, x.shape[0], CHUNK)]
        if not out:
            return torch.zeros((0, self.n_neurons), device=x.device)
        return torch.cat(out)

    def _counts(self, x, weight, gen) -> torch.Tensor:
        counts = self.run(x, weight, generator=gen).counts()
        for k in range(1, RETRIES + 1):
            low = (counts.sum(1) < MIN_SPIKES).nonzero().squeeze(1)
            if low.numel() == 0:
                break
            counts[low] = self.run(x[low], weight, generator=gen,
                                   intensity=INTENSITY + k * INTENSITY_STEP).counts()
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
def serial(device: torch.device):
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


def normalize_(weight: torch.Tensor, norm: float = NORM) -> torch.Tensor:
    """In place: clamp to [WMIN, WMAX], scale each neuron's input weights (a row) to sum `norm`
    (paper and BindsNET), clamp again (that only bites for a neuron whose weight would exceed
    WMAX, i.e. whose input sum is concentrated on fewer than `norm` inputs). A neuron whose
    weights are all 0 stays 0."""
    weight.clamp_(WMIN, WMAX)
    sums = weight.sum(1, keepdim=True)
    weight.mul_(torch.where(sums > 0, norm / sums, torch.zeros_like(sums)))
    weight.clamp_(WMIN, WMAX)
    return weight
