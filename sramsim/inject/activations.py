"""Activations in faulty memory: layer outputs quantized to 8 bits and stored in an activation
buffer (a `Chip` with its own geometry and voltage) on the way to the next layer.

What is stored: the output of every conv/linear layer (the layers whose weights form the memory
image), in the order they run, one signed 8-bit code per value: q = clamp(round(x / s), -127,
127) in two's complement, with one scale per tensor s = max|x| / 127 over calibration images
(`calibrate`, on the fault-free quantized model). The next layer reads q * s back.

Where (the allocation): per inference, layer l's output, flattened per sample, occupies buffer
bytes base_l, base_l + 1, ... with base_l the sum of the earlier outputs' sizes; buffer byte b
sits at chip byte (b + offset * word_bytes) mod capacity_bytes (the weight mapping's rule, so a
buffer smaller than one inference's activations wraps). Every inference uses the same addresses,
so the same faulty cells hit every inference's activations: the map is persistent, and all
samples of a batch see the same masks.

Faults: `QuantizedActivations.masks(chip, voltage, offset)` gathers the chip's byte masks at
those addresses once per map; forward hooks (`attached`) quantize each output, read its bytes
back through the masks with the byte rule -- `sramsim.memory.kernels.read_byte` in numba for CPU
tensors, `sramsim.inject.torch_backend.combine` for tensors on any device (bit-identical by
test) -- and hand the dequantized values on.

Accesses per inference (`accesses`): each stored activation is written once and read once by
default (writes=1, reads=1); a dataflow that re-reads its inputs passes reads > 1.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError
from sramsim.inject import activation_kernels as K
from sramsim.inject.mapping import check_offset
from sramsim.inject.quantized_model import QUANTIZED_LAYERS
from sramsim.inject.torch_backend import combine
from sramsim.memory.chip import Chip

QMAX = 127              # signed 8-bit codes in [-127, 127]; a fault may read back -128
BACKENDS = ("auto", "numba", "torch")


@dataclass(frozen=True)
class QuantizedActivations:
    """Which layer outputs are stored, their scales and their buffer addresses (module docstring).

    names: module names (`model.named_modules()`), in the order they run; scales: one per tensor;
    sizes: values per sample (bytes per inference) of each output.
    """

    names: tuple
    scales: tuple
    sizes: tuple

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.scales) == len(self.sizes)) or not self.names:
            raise InputError("activations need one scale and one size per stored layer output")
        for name, s, n in zip(self.names, self.scales, self.sizes, strict=True):
            if not (np.isfinite(s) and s > 0):
                raise InputError(f"activation scale of {name!r} must be positive, got {s!r}")
            if int(n) != n or n < 1:
                raise InputError(f"activation size of {name!r} must be a positive integer")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))

    @property
    def bases(self) -> tuple:
        """First buffer byte of each output (the allocation: outputs in order)."""
        return tuple(int(b) for b in np.cumsum((0,) + self.sizes[:-1]))

    @property
    def n_bytes(self) -> int:
        """Activation bytes stored per inference."""
        return int(sum(self.sizes))

    def accesses(self, writes: int = 1, reads: int = 1) -> int:
        """Buffer byte accesses per inference: every stored value written `writes` and read
        `reads` times (default one write and one read)."""
        for what, n in (("writes", writes), ("reads", reads)):
            if isinstance(n, bool) or int(n) != n or n < 0:
                raise InputError(f"activation {what} per value must be a whole number >= 0")
        return self.n_bytes * (int(writes) + int(reads))

    def masks(self, chip: Chip | None, voltage: float | None = None,
              offset: int = 0) -> ActivationFaults:
        """The buffer's fault masks at every stored activation byte: `chip` at `voltage`, the
        buffer placed at chip word `offset`; None gives no faults (the quantized model)."""
        if chip is None:
            return ActivationFaults((None,) * len(self.names))
        if not isinstance(chip, Chip):
            raise InputError(f"an activation buffer is a Chip, got {type(chip).__name__}")
        if voltage is None:
            raise InputError(f"activation buffer {chip.name!r} needs a voltage")
        m = chip.byte_masks(chip.check_voltage(voltage))
        g = chip.geometry
        shift = (check_offset(offset) % g.capacity_words) * (g.word_bits // 8)
        layers: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
        for base, n in zip(self.bases, self.sizes, strict=True):
            if m.count == 0:
                layers.append(None)
                continue
            idx = (np.arange(base, base + n, dtype=np.int64) + shift) % g.capacity_bytes
            xor = m.xor[idx]
            clear = np.zeros(n, np.uint8) if m.clear is None else m.clear[idx]
            set_ = np.zeros(n, np.uint8) if m.set is None else m.set[idx]
            layers.append((xor, clear, set_) if xor.any() or clear.any() or set_.any() else None)
        return ActivationFaults(tuple(layers))

    def describe(self) -> dict:
        """JSON: the stored outputs with their scales, sizes and first buffer byte."""
        return {"bits": 8, "layers": [{"name": n, "scale": s, "bytes": b, "base": a}
                                      for n, s, b, a in zip(self.names, self.scales, self.sizes,
                                                            self.bases, strict=True)],
                "bytes_per_inference": self.n_bytes}


@dataclass(frozen=True)
class ActivationFaults:
    """Per stored output: (xor, clear, set) uint8 masks over its bytes, or None when no faulty
    cell lies under it. Masks moved to a device are kept (one map is used for many batches)."""

    layers: tuple
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def any(self) -> bool:
        """Whether any stored activation byte sits on a faulty cell."""
        return any(m is not None for m in self.layers)

    def on(self, i: int, device: torch.device) -> tuple:
        """Layer i's masks as uint8 tensors on `device`."""
        key = (i, str(device))
        if key not in self._on_device:
            self._on_device[key] = tuple(torch.from_numpy(a).to(device) for a in self.layers[i])
        return self._on_device[key]


def calibrate(model: nn.Module, x: torch.Tensor, weights: dict | None = None,
              batch_size: int = 256) -> QuantizedActivations:
    """Scales of every conv/linear output of `model` (max |value| / 127 over the images `x`),
    with `weights` swapped in (e.g. `QuantizedModel.clean_weights()`: calibrated on the model as
    deployed); the stored outputs in the order they run. The model is left as it was."""
    if x.shape[0] == 0:
        raise InputError("activation calibration needs at least one image")
    modules: dict[nn.Module, str] = {m: n for n, m in model.named_modules()
                                     if isinstance(m, QUANTIZED_LAYERS)}
    if not modules:
        raise InputError("model has no conv/linear layers whose outputs could be stored")
    order: list = []
    peak: dict = {}
    size: dict = {}
    runs: dict = {}                      # this forward pass's calls per layer

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = modules[module]
        runs[name] = runs.get(name, 0) + 1
        if runs[name] > 1:
            raise InputError(f"layer {name!r} runs twice in one forward pass; its outputs "
                             "cannot share one buffer slot")
        if name not in peak:
            order.append(name)
            peak[name] = 0.0
            size[name] = int(output[0].numel())
        peak[name] = max(peak[name], float(output.detach().abs().max()))

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                runs.clear()
                xb = x[start:start + batch_size].to(device)
                model(xb) if weights is None else torch.func.functional_call(model, weights, (xb,))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return QuantizedActivations(tuple(order), tuple((peak[n] / QMAX) or 1.0 for n in order),
                                tuple(size[n] for n in order))


def quantize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Signed 8-bit codes of `x` (int8, two's complement as stored; NaN stored as 0)."""
    return torch.clamp(torch.round(torch.nan_to_num(x / scale, nan=0.0)), -QMAX,
                       QMAX).to(torch.int8)


def stored_and_read(x: torch.Tensor, scale: float, masks: tuple | None) -> torch.Tensor:
    """`x` (float32 on the CPU, [B, ...]) quantized, stored, read back through `masks` (None: no
    faults) and dequantized in one numba pass (`activation_kernels.store_read`); the same values
    as `quantize` -> `read_back` -> `* scale` (by test), without their temporaries."""
    flat = x.detach().reshape(x.shape[0], -1).contiguous().numpy()
    out = np.empty_like(flat)
    xor, clear, set_ = (_NO_MASK,) * 3 if masks is None else masks
    K.store_read(flat, np.float32(scale), xor, clear, set_, out)
    return torch.from_numpy(out).reshape(x.shape)


def read_back(codes: torch.Tensor, masks: tuple | None, backend: str = "auto",
              masks_on_device: tuple | None = None) -> torch.Tensor:
    """Codes [B, ...] (int8) as read back from buffer cells with `masks` (xor, clear, set over
    the per-sample bytes): numba on the CPU, torch ops elsewhere (`backend` forces one)."""
    if masks is None:
        return codes
    if backend not in BACKENDS:
        raise InputError(f"activation backend must be one of {', '.join(BACKENDS)}, "
                         f"got {backend!r}")
    stored = codes.reshape(codes.shape[0], -1).view(torch.uint8)
    use_torch = backend == "torch" or (backend == "auto" and codes.device.type != "cpu")
    if use_torch:
        xor, clear, set_ = masks_on_device or tuple(torch.from_numpy(a).to(codes.device)
                                                    for a in masks)
        out = combine(stored, xor, clear, set_)
    else:
        if codes.device.type != "cpu":
            raise InputError("the numba activation backend runs on CPU tensors only")
        arr = stored.contiguous().numpy()
        res = np.empty_like(arr)
        K.read_rows(arr, masks[0], masks[1], masks[2], res)
        out = torch.from_numpy(res)
    return out.view(torch.int8).reshape(codes.shape)


@contextmanager
def attached(model: nn.Module, acts: QuantizedActivations, faults: ActivationFaults | None = None,
             backend: str = "auto") -> Iterator[None]:
    """Inside the block, every stored output of `model` is quantized, read back through `faults`
    (None: no faults) and dequantized (forward hooks, removed on leaving)."""
    faults = faults or acts.masks(None)
    if len(faults.layers) != len(acts.names):
        raise InputError("activation faults do not match the stored layer outputs")
    modules = dict(model.named_modules())
    missing = [n for n in acts.names if n not in modules]
    if missing:
        raise InputError(f"model has no layer {missing[0]!r} (activations calibrated on another "
                         "model)")
    handles = []
    for i, (name, scale, size) in enumerate(zip(acts.names, acts.scales, acts.sizes,
                                                strict=True)):
        handles.append(modules[name].register_forward_hook(
            _hook(i, name, scale, size, faults, backend)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


_NO_MASK = np.zeros(0, np.uint8)


def _hook(i: int, name: str, scale: float, size: int, faults: ActivationFaults,
          backend: str) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]:
    masks = faults.layers[i]

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if output[0].numel() != size:
            raise InputError(f"layer {name!r} outputs {output[0].numel()} values per sample; its "
                             f"buffer slot holds {size} (calibrated on inputs of another size)")
        if backend != "torch" and output.device.type == "cpu" \
                and output.dtype == torch.float32 and not output.requires_grad:
            return stored_and_read(output, scale, masks)
        codes = quantize(output, scale)
        on_device = None if masks is None or codes.device.type == "cpu" and backend != "torch" \
            else faults.on(i, codes.device)
        codes = read_back(codes, masks, backend, on_device)
        return codes.to(output.dtype) * scale
    return hook
