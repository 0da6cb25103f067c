"""Surrogate-gradient spiking networks (snntorch LIF neurons) for the fault simulator.

Two families, built by `build_snn(family, n, in_channels, num_classes, image_size)`:
- `snn-fc<N>`: Linear(C*H*W, N) -> LIF -> Linear(N, classes) -> LIF, as in snntorch tutorial 5
  ("Training Spiking Neural Networks with snntorch", Eshraghian et al., Proc. IEEE 2023).
- `snn-conv<N>`: Conv5x5(C, N) -> MaxPool2 -> LIF -> Conv5x5(N, 2N) -> MaxPool2 -> LIF ->
  Linear(2N*h*w, classes) -> LIF, the layout of snntorch tutorial 6 (there 12 and 64 channels);
  N names the width of the first convolution.

Input: rate (Poisson/Bernoulli) coding with the semantics of `snntorch.spikegen.rate`: at every
one of `steps` time steps each pixel spikes with probability = its intensity clipped to [0, 1].
In train mode the draws come from torch's global RNG (the trainer seeds it); in eval mode from a
`torch.Generator` re-seeded with `self.seed` on every call, so the same batch gives the same
output every time and two fault maps compare maps, not encoding noise. The noise of a sample
depends on its position in the batch (not on the other samples' values), so results computed
with different batch sizes differ by encoding noise only.

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

import snntorch
import torch
from snntorch import surrogate
from torch import nn

from sramsim.errors import InputError

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


class RateSNN(nn.Module):
    """A feed-forward spiking network: rate-coded input, then (synapse, LIF) stages in order.

    `stages[i]` maps the spikes of stage i-1 (the input spikes for i = 0) to an input current;
    `neurons[i]` is its LIF layer. Subclasses only build the stages.
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
        self.seed = int(seed)       # seed of the eval-mode encoding generator
        self.score_scale = float(score_scale)   # class score = score_scale * output spike count

    def encode(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One time step of rate coding: 1 where uniform noise < clamp(x, 0, 1), else 0."""
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (noise < x.clamp(0.0, 1.0)).to(x.dtype)

    def _generator(self, x: torch.Tensor) -> torch.Generator | None:
        if self.training:
            return None
        return torch.Generator(device=x.device).manual_seed(self.seed)

    def run(self, x: torch.Tensor, record: bool = False):
        """(output spike counts (B, classes), per-stage spike records or None).

        record=True also returns, for every stage, its spikes at every step stacked as
        (T, B, ...), binary 0/1.
        """
        gen = self._generator(x)
        mems = [None] * len(self.stages)
        records = [[] for _ in self.stages] if record else None
        count = None
        try:
            for _ in range(self.steps):
                spk = self.encode(x, gen)
                for i, (stage, lif) in enumerate(zip(self.stages, self.neurons)):
                    cur = stage(spk)
                    if mems[i] is None:
                        mems[i] = torch.zeros_like(cur)
                    spk, mems[i] = lif(cur, mems[i])
                    if record:
                        records[i].append(spk)
                count = spk if count is None else count + spk
        finally:
            self._drop_state()
        if record:
            records = [torch.stack(r) for r in records]
        return count.flatten(1), records

    def _drop_state(self) -> None:
        """Forget the membrane potential snntorch keeps on the layer after a call."""
        for lif in self.neurons:
            lif.mem = torch.zeros(0, device=lif.mem.device)
            lif.__dict__.pop("reset", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores: score_scale * output spike counts over the time steps, (B, classes)."""
        return self.run(x)[0] * self.score_scale

    def forward_spikes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The spikes of every LIF layer at every step, each (T, B, ...) of 0/1 values."""
        return self.run(x, record=True)[1]


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
        stages = [nn.Sequential(nn.Conv2d(in_channels, n, 5, bias=False), nn.MaxPool2d(2)),
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
    """A freshly initialised `snn-fc<n>` or `snn-conv<n>` network (torch's RNG draws the weights)."""
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
