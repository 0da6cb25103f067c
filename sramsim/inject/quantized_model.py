"""A model's quantized weights as one memory image, and the faulty weights read back from it."""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, InputTypeError, check_device
from sramsim.inject import ecc as ECC
from sramsim.inject import quantization as Q
from sramsim.inject.layout import PLAIN, MemoryLayout
from sramsim.inject.mapping import FaultSource

QUANTIZED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                    nn.ConvTranspose3d, nn.Linear)


@dataclass(frozen=True)
class Segment:
    """Where one tensor's codes sit among all codes of the image."""

    name: str
    start: int
    count: int
    shape: tuple
    quant: Q.LayerQuant


def quantized_parameter_names(model: nn.Module, include_bias: bool = False) -> list[str]:
    """conv/linear weights (and biases, optionally), in the model's parameter order."""
    wanted = set()
    for mname, module in model.named_modules():
        if isinstance(module, QUANTIZED_LAYERS):
            prefix = f"{mname}." if mname else ""
            wanted.add(prefix + "weight")
            if include_bias and module.bias is not None:
                wanted.add(prefix + "bias")
    return [name for name, _ in model.named_parameters() if name in wanted]


class QuantizedModel:
    """Quantized weights of `model` laid out as a uint8 memory image of packed m-bit words.

    image: all codes concatenated in parameter order, packed 8/m per byte (LSB first), padded
    to a whole number of `word_bits` words. `faulty_image` / `perturbed` read it back through a
    fault source; the clean image is never modified.

    Threads: the object holds no mutable scratch state, so several threads may call
    `faulty_image` / `perturbed` / `dequantize` on one QuantizedModel (and one Chip) at once;
    each call writes only into its own new array or the `out` its caller passes.
    """

    def __init__(self, model: nn.Module, bits: int = 8, scheme: str = "symmetric",
                 clip: float | None = None, include_bias: bool = False,
                 word_bits: int = 8) -> None:
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        Q.check_scheme(scheme, bits)
        bits = int(bits)
        if isinstance(word_bits, bool) or not isinstance(word_bits,
                                                         numbers.Integral) or word_bits % 8 \
                or word_bits <= 0:
            raise InputError(f"word_bits must be a positive multiple of 8, got {word_bits!r}")
        word_bits = int(word_bits)
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, numbers.Real) \
                    or not math.isfinite(clip) or clip <= 0:
                raise InputError(f"clip must be a positive finite number, got {clip!r}")
            clip = float(clip)
        self.model: nn.Module = model
        self.bits: int = bits
        self.scheme: str = scheme
        self.clip: float | None = clip
        self.word_bits: int = word_bits
        self.names: list[str] = quantized_parameter_names(model, include_bias)
        if not self.names:
            raise InputError("model has no conv/linear weights to quantize")
        # Layer by layer, piece by piece, into an image allocated once at its final size: no
        # float copy of the model and no all-codes temporary beside it, so a 10^9-weight model
        # quantizes beside its own weights (benchmarks/bench_scale.py measures the peak).
        params = dict(model.named_parameters())
        segments: list[Segment] = []
        start = 0
        with torch.no_grad():
            for name in self.names:
                w = params[name]
                span = Q.layer_range(w, clip, Q.CHUNK)
                if span is None:
                    raise InputError(f"weight {name!r} holds NaN or infinite values; cannot "
                                     "quantize it")
                q = Q.range_params(*span, bits, scheme, clip)
                segments.append(Segment(name, start, w.numel(), tuple(w.shape), q))
                start += w.numel()
            self.segments: list[Segment] = segments
            self.n_codes: int = start
            self.image: np.ndarray = np.zeros(Q.image_bytes(start, bits, word_bits),
                                              dtype=np.uint8)
            image = torch.from_numpy(self.image)
            for s in segments:
                Q.quantize_into(image, s.start, params[s.name], s.quant, clip, Q.CHUNK)
        self.image.setflags(write=False)

    @property
    def n_bits(self) -> int:
        """Bits in the memory image (what a random fault source draws over)."""
        return self.image.size * 8

    @property
    def n_words(self) -> int:
        """Memory words of `word_bits` bits in the image."""
        return self.image.size * 8 // self.word_bits

    def faulty_image(self, source: FaultSource, voltage: float | None = None, offset: int = 0,
                     out: np.ndarray | None = None, layout: MemoryLayout | None = None
                     ) -> np.ndarray:
        """The image read back through `source` (a Chip at `voltage` placed at memory word
        `offset`, RandomBitErrors, or Faults) under `layout` (default: linear, unprotected;
        `sramsim.inject.layout.MemoryLayout` for DRAM mappings, bit placement and ECC); a new
        array unless `out` is given. `layout.read` also returns what the protection did."""
        return (layout or PLAIN).read(self, source, voltage, offset, out)[0]

    def dequantize(self, image: np.ndarray | torch.Tensor,
                   device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """Weights decoded from an image (clean or faulty), as {parameter name: tensor}.

        image: [nbytes] -> tensors shaped like the parameters; a stack [K, nbytes] (any leading
        axes) -> [K, *shape] per parameter (the batched EOPM path), through the same decoding.
        """
        if isinstance(image, np.ndarray):
            # torch cannot wrap a read-only array (the clean image) without a copy
            img = torch.from_numpy(image if image.flags.writeable else image.copy())
        elif isinstance(image, torch.Tensor):
            img = image
        else:
            raise InputTypeError("image must be a numpy array or torch tensor, "
                                 f"got {type(image).__name__}")
        if img.dtype != torch.uint8 or img.dim() < 1 or img.shape[-1] != self.image.size:
            raise InputError(f"image must be uint8 [..., {self.image.size}], got {img.dtype} "
                             f"{list(img.shape)}")
        if device is not None:
            img = img.to(check_device(device))
        codes = Q.unpack(img, self.bits, self.n_codes)
        lead = tuple(img.shape[:-1])
        return {s.name: Q.dequantize(codes[..., s.start:s.start + s.count], s.quant)
                .reshape(*lead, *s.shape) for s in self.segments}

    def clean_weights(self, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """Quantized weights without faults (what the accelerator holds at nominal voltage)."""
        return self.dequantize(self.image, device)

    def perturbed(self, source: FaultSource, voltage: float | None = None, offset: int = 0,
                  device: str | torch.device | None = None, out: np.ndarray | None = None,
                  layout: MemoryLayout | None = None) -> dict[str, torch.Tensor]:
        """Faulty dequantized weights, for `torch.func.functional_call(model, weights, x)`.

        The faulty image goes into `out` when given (a buffer the caller reuses; one per thread),
        else into a new array: the weights returned never share memory with it. source,
        voltage, offset, layout: as `faulty_image`. (To run a model under one fault map after
        another without decoding every weight each time: `sramsim.nn.evaluation.Evaluator`.)
        """
        return self.dequantize(self.faulty_image(source, voltage, offset, out, layout), device)

    # stored images under each ECC code, built on first use (a cache: same content whoever
    # builds it, so concurrent first uses are harmless)
    @functools.cached_property
    def _ecc_memories(self) -> dict[str, ECC.EccMemory]:
        return {}

    def ecc_memory(self, ecc: str) -> ECC.EccMemory:
        """The image stored under SECDED code `ecc` ("secded72" / "secded13"), built once:
        `.stored` is what sits on the chip, `.read(...)` also returns the decoder's counts."""
        memories = self._ecc_memories
        if ecc not in memories:
            memories[ecc] = ECC.protect(self, ECC.get_code(ecc))
        return memories[ecc]

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model with `weights` swapped in; the model's own parameters stay untouched."""
        return torch.func.functional_call(self.model, weights, (x,))

    def __repr__(self) -> str:
        return (f"QuantizedModel({len(self.segments)} tensors, {self.n_codes} weights, "
                f"{self.bits}-bit {self.scheme}, {self.image.size} bytes)")
