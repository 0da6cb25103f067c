"""Surrogate-gradient spiking networks (snntorch LIF neurons) for the fault simulator.

Two families, built by `build_snn(family, n, in_channels, num_classes, image_size)`:
- `snn-fc<N>`: Linear(C*H*W, N) -> LIF -> Linear(N, classes) -> LIF, as in snntorch tutorial 5
  ("Training Spiking Neural Networks with snntorch", Eshraghian et al., Proc. IEEE 2023).
- `snn-conv<N>`: Conv5x5(C, N) -> MaxPool2 -> LIF -> Conv5x5(N, 2N) -> MaxPool2 -> LIF ->
  Linear(2N*h*w, classes) -> LIF, the layout of snntorch tutorial 6 (there 12 and 64 channels);
  N names the width of the first convolution.

Input: rate (Poisson/Bernoulli) coding with the semantics of `snntorch.spikegen.rate`: at every
one of `steps` time steps each pixel spikes with probability = its intensity in [0, 1], i.e.
(x + 1) / 2 for the data sets' inputs x in [-1, 1] (`input_coding = "intensity"`; checkpoints from
before issue 22 used clamp(x, 0, 1), `input_coding = "clamp"`, which silences every pixel darker
than mid-grey: snn-fc400 on Fashion-MNIST reached 81.7% instead of 77.8% test accuracy after one
epoch with the intensity), drawn from the counter-based stream of
`sramsim.nn.snn_engine.encoding` (SplitMix64 outputs indexed by (sample position, step, pixel)).
In train mode the stream's key is one draw from torch's global RNG (the trainer seeds it); in eval
mode it is derived from `self.seed`, so the same batch gives the same output every time and two
fault maps compare maps, not encoding noise. The noise of a sample depends on its position in the
batch (not on the other samples' values or the batch size), so results computed with different
batch sizes differ by encoding noise only.

Simulation (`simulate(spikes)`): encoding is separate, the networks take spike trains. The default
engine ("layer") runs one stage at a time over all T steps: the synaptic current of every step in
one product over the (T*B, ...) batch, then the LIF recurrence over T in one kernel
(`sramsim.nn.snn_engine`). engine="step" is the reference step loop (all stages at step t, then
t+1, through `snntorch.Leaky`). The synaptic products of both are the exact ones of
`snn_engine.synapses` (a fixed summation order, independent of the batch), so given the same
spikes both engines give the same spikes, counts and scores bit for bit, in eval and train mode;
surrogate gradients agree to float rounding.

Output: the spike count of each output neuron over the `steps` time steps, times a fixed
`score_scale` (default 0.2). Cross-entropy on the plain counts is snntorch's
`functional.ce_count_loss` ("the spikes at each time step are accumulated and then passed through
the Cross Entropy Loss function"); the scale is a softmax temperature that only changes training
(argmax = the class whose neuron fired most; ties go to the lower class index). Measured here
(snn-fc400, T=25, 12,000 Fashion-MNIST training images, one epoch of Adam, 2,000 test images):
scale 1.0 reached 32% at lr 1e-3 and 18% at 5e-3 (counts saturate, the net stalls), scale 0.5 55%
at 2e-3, scale 0.2 72% at 1e-3 and 75% at 2e-3, about what the mean output membrane potential as
score gave (74% at 1e-3, 78% at 5e-3).

Memory: only the synapses (`nn.Linear` / `nn.Conv2d` weights, no bias) are parameters, so
`quantized_parameter_names` picks exactly them. Neuron constants (beta, threshold) are snntorch's
buffers; the membrane state is passed explicitly through the time loop (init_hidden=False), and
is dropped after every forward, so no state leaks from one call into the next and
`torch.func.functional_call(model, weights, (x,))` with only the weight names works.
"""
from __future__ import annotations

from typing import Any

import snntorch
import torch
from snntorch import surrogate
from torch import nn

from sramsim.errors import InputError, check_choice
from sramsim.nn.snn_engine.encoding import draw_key, intensity, key_from_seed, rate_spikes
from sramsim.nn.snn_engine.lif import lif
from sramsim.nn.snn_engine.synapses import stage_current

# snntorch tutorials 5 and 6 use num_steps=25 and the fast sigmoid surrogate with slope 25
# (snntorch.surrogate.fast_sigmoid's default; SuperSpike, Zenke & Ganguli 2018). Tutorial 5 uses
# beta=0.95; threshold 1.0 and reset by subtraction are snntorch.Leaky's defaults.
DEFAULT_STEPS = 25
DEFAULT_BETA = 0.95
DEFAULT_SCORE_SCALE = 0.2
SURROGATE_SLOPE = 25
# Refused up front: a network whose synapses alone exceed this many weights (1 GiB of float32).
MAX_SYNAPSES = 1 << 28


def _leaky(beta: float) -> snntorch.Leaky:
    """An snntorch LIF layer with explicit state.

    snntorch appends every neuron it builds to the class list `SpikingNeuron.instances` (used only
    for init_hidden=True); that list would keep every model ever built alive, so ours leave it.
    """
    lif = snntorch.Leaky(beta=beta, spike_grad=surrogate.fast_sigmoid(slope=SURROGATE_SLOPE),
                         init_hidden=False)
    instances = snntorch.SpikingNeuron.instances
    if instances and instances[-1] is lif:
        instances.pop()
    return lif


ENGINES = ("layer", "step")
# Without gradients the layer engine simulates at most this many floats of one stage at once;
# larger batches run in sample chunks (every sample is independent, so chunking changes no bit).
# 16 MiB stays below glibc's mmap threshold (32 MiB), so the buffers are reused, not faulted in
# afresh on every call (measured: 30 ms to clone 44 MB vs 4 ms to copy into a reused buffer).
CHUNK_ELEMENTS = 1 << 22


class RateSNN(nn.Module):
    """A feed-forward spiking network: rate-coded input, then (synapse, LIF) stages in order.

    `stages[i]` maps the spikes of stage i-1 (the input spikes for i = 0) to an input current;
    `neurons[i]` is its LIF layer. Subclasses only build the stages. `engine` picks the
    simulation ("layer", default, or the reference "step" loop); it is not saved with the model.
    """

    def __init__(self, stages: list[nn.Module], beta: float, steps: int, seed: int,
                 score_scale: float = DEFAULT_SCORE_SCALE):
        super().__init__()
        if int(steps) != steps or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        if not 0.0 <= float(beta) <= 1.0:
            raise InputError(f"beta must lie in [0, 1], got {beta!r}")
        self.stages = nn.ModuleList(stages)
        self.neurons = nn.ModuleList(_leaky(beta) for _ in stages)
        self.steps = int(steps)     # time steps T of the rate code
        self.seed = int(seed)       # seed of the eval-mode encoding stream
        self.score_scale = float(score_scale)   # class score = score_scale * output spike count
        self.surrogate_slope = SURROGATE_SLOPE  # of the neurons' fast-sigmoid surrogate gradient
        self.input_coding = "intensity"         # see the module docstring; saved in checkpoints
        self.engine = "layer"

    def encode(self, x: torch.Tensor, key: int | None = None) -> torch.Tensor:
        """Input spikes (steps, B, ...) as uint8 0/1: pixel i of sample b spikes at step t with
        probability intensity(x[b, i]) (`input_coding`). key: the stream's key (default: derived
        from self.seed in eval mode, one draw from torch's global RNG in train mode)."""
        if key is None:
            key = draw_key() if self.training else key_from_seed(self.seed)
        return rate_spikes(intensity(x, self.input_coding), self.steps, key)

    def simulate(self, spikes: torch.Tensor,
                 record: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(output spike counts (B, classes), per-stage spike records or None) for input spike
        trains (T, B, ...) of 0/1 values (any dtype); T is spikes.shape[0].

        record=True also returns, for every stage, its spikes at every step stacked as
        (T, B, ...), float 0/1."""
        engine = check_choice(self.engine, ENGINES, "engine")
        try:
            if engine == "step":
                return self._simulate_steps(spikes, record)
            return self._simulate_layers(spikes, record)
        finally:
            self._drop_state()

    def _simulate_layers(self, spikes: torch.Tensor,
                         record: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        steps, batch = spikes.shape[:2]
        chunk = batch
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            chunk = max(1, CHUNK_ELEMENTS // max(1, steps * self._widest(spikes.shape[2:])))
        if chunk >= batch:
            return self._layers(spikes, record)
        parts = [self._layers(spikes[:, a:a + chunk], record) for a in range(0, batch, chunk)]
        counts = torch.cat([c for c, _ in parts])
        if not record:
            return counts, None
        return counts, [torch.cat(r, 1)
                        for r in zip(*(rec or [] for _, rec in parts), strict=True)]

    def _layers(self, spikes: torch.Tensor,
                record: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        steps, batch = spikes.shape[:2]
        s = spikes.reshape(steps * batch, *spikes.shape[2:])
        records: list[torch.Tensor] | None = [] if record else None
        lif_layer: Any                              # an snntorch.Leaky (untyped)
        for stage, lif_layer in zip(self.stages, self.neurons, strict=True):
            cur = stage_current(stage, s)
            spk = lif(cur.reshape(steps, batch, *cur.shape[1:]), lif_layer.beta,
                      lif_layer.threshold, self.surrogate_slope)
            if records is not None:
                records.append(spk)
            s = spk.reshape(steps * batch, *spk.shape[2:])
        return spk.sum(0).flatten(1), records

    def _widest(self, sample_shape: tuple[int, ...]) -> int:
        """The most values one sample of one step holds anywhere in the stages."""
        widest = 1
        weight = getattr(self.stages[0], "weight", None)
        with torch.no_grad():
            x = torch.zeros((1, *sample_shape), device=None if weight is None else weight.device)
            for stage in self.stages:
                for mod in (stage if isinstance(stage, nn.Sequential) else [stage]):
                    x = mod(x.to(device=x.device))
                    widest = max(widest, x.numel())
        return widest

    def _simulate_steps(self, spikes: torch.Tensor,
                        record: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The reference: every stage at step t, then step t + 1, through snntorch.Leaky."""
        mems: list[torch.Tensor | None] = [None] * len(self.stages)
        records: list[list[torch.Tensor]] | None = [[] for _ in self.stages] if record else None
        count = None
        lif_layer: Any                              # an snntorch.Leaky (untyped)
        for t in range(spikes.shape[0]):
            spk = spikes[t].float()
            for i, (stage, lif_layer) in enumerate(zip(self.stages, self.neurons, strict=True)):
                cur = stage_current(stage, spk, fused=False)
                if mems[i] is None:
                    mems[i] = torch.zeros_like(cur)
                spk, mems[i] = lif_layer(cur, mems[i])
                if records is not None:
                    records[i].append(spk)
            count = spk if count is None else count + spk
        assert count is not None                    # steps >= 1
        if records is not None:
            return count.flatten(1), [torch.stack(r) for r in records]
        return count.flatten(1), None

    def run(self, x: torch.Tensor,
            record: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """`simulate` on the encoding of `x` (B, ...)."""
        return self.simulate(self.encode(x).to(x.device), record)

    def _drop_state(self) -> None:
        """Forget the membrane potential snntorch keeps on the layer after a call."""
        lif_layer: Any                              # an snntorch.Leaky (untyped)
        for lif_layer in self.neurons:
            lif_layer.mem = torch.zeros(0, device=lif_layer.mem.device)
            lif_layer.__dict__.pop("reset", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores: score_scale * output spike counts over the time steps, (B, classes)."""
        return self.run(x)[0] * self.score_scale

    def forward_spikes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The spikes of every LIF layer at every step, each (T, B, ...) of 0/1 values."""
        records = self.run(x, record=True)[1]
        assert records is not None                  # asked for
        return records


class SpikingFC(RateSNN):
    """snn-fc<N>: Linear(C*H*W, N) -> LIF -> Linear(N, classes) -> LIF, no biases."""

    def __init__(self, n: int, n_inputs: int, num_classes: int, steps: int = DEFAULT_STEPS,
                 beta: float = DEFAULT_BETA, seed: int = 0):
        stages = [nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, n, bias=False)),
                  nn.Linear(n, num_classes, bias=False)]
        super().__init__(stages, beta, steps, seed)


class SpikingConv(RateSNN):
    """snn-conv<N>: conv5x5 N -> pool2 -> LIF -> conv5x5 2N -> pool2 -> LIF -> Linear -> LIF."""

    def __init__(self, n: int, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 steps: int = DEFAULT_STEPS, beta: float = DEFAULT_BETA, seed: int = 0):
        h, w = conv_feature_size(image_size)
        stages: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, n, 5, bias=False), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(n, 2 * n, 5, bias=False), nn.MaxPool2d(2)),
            nn.Sequential(nn.Flatten(), nn.Linear(2 * n * h * w, num_classes, bias=False))]
        super().__init__(stages, beta, steps, seed)


def conv_feature_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) after the two conv5x5 + pool2 blocks of snn-conv; refuses images that vanish."""
    h, w = (int(v) for v in image_size)
    fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if fh < 1 or fw < 1:
        raise InputError(f"snn-conv needs images of at least 16x16 pixels, got {h}x{w}")
    return fh, fw


def synapse_count(family: str, n: int, in_channels: int, num_classes: int,
                  image_size: tuple[int, int]) -> int:
    """Weights a network would hold (checked before anything is allocated)."""
    h, w = (int(v) for v in image_size)
    if family == "snn-fc":
        return n * in_channels * h * w + n * num_classes
    fh, fw = conv_feature_size(image_size)
    return n * in_channels * 25 + 2 * n * n * 25 + 2 * n * fh * fw * num_classes


def build_snn(family: str, n: int, in_channels: int, num_classes: int,
              image_size: tuple[int, int], steps: int = DEFAULT_STEPS, beta: float = DEFAULT_BETA,
              seed: int = 0) -> RateSNN:
    """A freshly initialised `snn-fc<n>` or `snn-conv<n>` network (torch's RNG draws the
    weights)."""
    if family not in ("snn-fc", "snn-conv"):
        raise InputError(f"unknown spiking family {family!r}; use snn-fc or snn-conv")
    if int(n) != n or n < 1:
        raise InputError(f"{family}: the neuron count must be a positive integer, got {n!r}")
    count = synapse_count(family, int(n), in_channels, num_classes, image_size)
    if count > MAX_SYNAPSES:
        raise InputError(f"{family}{n}: {count:,} synapse weights ({count * 4 / 2**30:.1f} GiB "
                         f"as float32) exceed the limit of {MAX_SYNAPSES:,}")
    if family == "snn-fc":
        h, w = (int(v) for v in image_size)
        return SpikingFC(int(n), in_channels * h * w, num_classes, steps, beta, seed)
    return SpikingConv(int(n), in_channels, num_classes, image_size, steps, beta, seed)
