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
from sramsim.inject import bit_placement as BP
from sramsim.inject import ecc as ECC
from sramsim.inject import inplace
from sramsim.inject import quantization as Q
from sramsim.inject.mapping import check_offset
from sramsim.inject.placement import read_image
from sramsim.memory.chip import Chip

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
                 clip: float | None = None, include_bias: bool = False, word_bits: int = 8):
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        Q.check_scheme(scheme, bits)
        bits = int(bits)
        if isinstance(word_bits, bool) or not isinstance(word_bits, numbers.Integral) or word_bits % 8 \
                or word_bits <= 0:
            raise InputError(f"word_bits must be a positive multiple of 8, got {word_bits!r}")
        word_bits = int(word_bits)
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, numbers.Real) \
                    or not math.isfinite(clip) or clip <= 0:
                raise InputError(f"clip must be a positive finite number, got {clip!r}")
            clip = float(clip)
        self.model = model
        self.bits, self.scheme, self.clip = bits, scheme, clip
        self.word_bits = word_bits
        self.names = quantized_parameter_names(model, include_bias)
        if not self.names:
            raise InputError("model has no conv/linear weights to quantize")
        # Layer by layer, piece by piece, into an image allocated once at its final size: no
        # float copy of the model and no all-codes temporary beside it, so a 10^9-weight model
        # quantizes beside its own weights (benchmarks/bench_scale.py measures the peak).
        params = dict(model.named_parameters())
        segments, start = [], 0
        with torch.no_grad():
            for name in self.names:
                w = params[name]
                span = Q.layer_range(w, clip, Q.CHUNK)
                if span is None:
                    raise InputError(f"weight {name!r} holds NaN or infinite values; cannot quantize it")
                q = Q.range_params(*span, bits, scheme)
                segments.append(Segment(name, start, w.numel(), tuple(w.shape), q))
                start += w.numel()
            self.segments = segments
            self.n_codes = start
            self.image = np.zeros(Q.image_bytes(start, bits, word_bits), dtype=np.uint8)
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

    def faulty_image(self, source, voltage: float | None = None, offset: int = 0,
                     out: np.ndarray | None = None, placement=None, ecc: str | None = None,
                     ecc_policy: str = "keep", bit_placement=None) -> np.ndarray:
        """The image read back through `source` (Chip at `voltage` placed at `offset`, or laid
        out by a DRAM `placement`; or RandomBitErrors); a new array unless `out` is given.

        ecc: "secded72" / "secded13" stores the image with its check bits (`ecc_memory`): the
        faults land on that stored image and each codeword is decoded; ecc_policy ("keep" /
        "zero") is what a detected uncorrectable word reads as (`sramsim.inject.ecc`).
        bit_placement: "linear" (the default mapping), "shuffle" or "skip-faulty-words", planned
        from the Chip's map at `voltage` (`plan_bits`), or a `BitPlacement` planned beforehand
        (at its own planning voltage and offset): `sramsim.inject.bit_placement`.
        """
        if bit_placement is not None and bit_placement != "linear":
            if ecc is not None or placement is not None:
                raise InputError("a bit placement with "
                                 + ("ecc" if ecc is not None else "a DRAM placement")
                                 + " is not modelled (use one of the two)")
            if ecc_policy != "keep":
                raise ValueError(f"ecc_policy needs ecc (got ecc_policy={ecc_policy!r}, ecc=None)")
            if not isinstance(source, Chip):
                raise InputError("a bit placement needs a known chip map (a Chip source)")
            if voltage is None:
                raise InputError("a Chip needs a voltage")
            if isinstance(bit_placement, str):
                bit_placement = self.plan_bits(source, voltage, bit_placement, offset)
            elif not isinstance(bit_placement, BP.BitPlacement):
                raise TypeError(f"bit_placement must be a policy name or a BitPlacement, got "
                                f"{type(bit_placement).__name__}")
            elif check_offset(offset) % bit_placement.capacity_words != bit_placement.offset:
                raise ValueError(f"offset {offset} differs from the bit placement's "
                                 f"{bit_placement.offset} (plan it for this offset)")
            return BP.apply_placed_bits(self.image, source, voltage, bit_placement, out)
        if ecc is not None:
            if placement is not None:
                raise ValueError("ecc with a DRAM placement is not modelled (place the image "
                                 "without ecc, or use a chip offset)")
            return self.ecc_memory(ecc).read(source, voltage, offset, ecc_policy, out)[0]
        if ecc_policy != "keep":
            raise ValueError(f"ecc_policy needs ecc (got ecc_policy={ecc_policy!r}, ecc=None)")
        return read_image(self.image, source, voltage, offset, out, placement)

    def plan_bits(self, chip, voltage: float, policy: str, offset: int = 0) -> "BP.BitPlacement":
        """The bit placement `policy` of this image at `offset` on `chip`, planned from its map
        at `voltage` (`sramsim.inject.bit_placement.plan`)."""
        wb = chip.geometry.word_bits if isinstance(chip, Chip) else self.word_bits
        return BP.plan(chip, voltage, policy, self.bits, -(-self.n_bits // wb), offset)

    def dequantize(self, image: np.ndarray | torch.Tensor, device=None) -> dict[str, torch.Tensor]:
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
            raise InputTypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
        if img.dtype != torch.uint8 or img.dim() < 1 or img.shape[-1] != self.image.size:
            raise InputError(f"image must be uint8 [..., {self.image.size}], got {img.dtype} "
                             f"{list(img.shape)}")
        if device is not None:
            img = img.to(check_device(device))
        codes = Q.unpack(img, self.bits, self.n_codes)
        lead = tuple(img.shape[:-1])
        return {s.name: Q.dequantize(codes[..., s.start:s.start + s.count], s.quant)
                .reshape(*lead, *s.shape) for s in self.segments}

    def clean_weights(self, device=None) -> dict[str, torch.Tensor]:
        """Quantized weights without faults (what the accelerator holds at nominal voltage)."""
        return self.dequantize(self.image, device)

    def perturbed(self, source, voltage: float | None = None, offset: int = 0,
                  device=None, out: np.ndarray | None = None,
                  placement=None, ecc: str | None = None,
                  ecc_policy: str = "keep", bit_placement=None) -> dict[str, torch.Tensor]:
        """Faulty dequantized weights, for `torch.func.functional_call(model, weights, x)`.

        The faulty image goes into `out` when given (a buffer the caller reuses; one per thread),
        else into a new array: the weights returned never share memory with it. `placement`: a
        DRAM `sramsim.inject.placement.Placement` of the image; `ecc`, `ecc_policy`: the image
        stored under a SECDED code, `bit_placement`: fault-aware bit placement (see `faulty_image`).
        """
        return self.dequantize(self.faulty_image(source, voltage, offset, out=out,
                                                 placement=placement, ecc=ecc,
                                                 ecc_policy=ecc_policy,
                                                 bit_placement=bit_placement), device)

    # stored images under each ECC code, built on first use (a cache: same content whoever
    # builds it, so concurrent first uses are harmless)
    _ecc_memories = functools.cached_property(lambda self: {})

    def ecc_memory(self, ecc: str) -> "ECC.EccMemory":
        """The image stored under SECDED code `ecc` ("secded72" / "secded13"), built once:
        `.stored` is what sits on the chip, `.read(...)` also returns the decoder's counts."""
        memories = self._ecc_memories
        if ecc not in memories:
            memories[ecc] = ECC.protect(self, ECC.get_code(ecc))
        return memories[ecc]

    def faults_applied(self, model: nn.Module, source, voltage: float | None = None,
                       offset: int = 0, placement=None, ecc: str | None = None,
                       ecc_policy: str = "keep"):
        """Context manager: inside the block `model`'s own parameters hold the faulty weights
        (bit-identical to `perturbed(...)` with the same arguments); on leaving it, also when the
        block raises, exactly the rewritten elements get their clean values back.

            with qm.faults_applied(model, chip, voltage=0.84) as applied:
                logits = model(x)          # applied.unchanged: no byte of the image changed

        Work is O(faults): only the codes a fault changes are decoded and written. The price:
        `model`'s quantized parameters hold the *clean dequantized* weights outside the block,
        not its float weights. They are loaded on first use (`load_clean`, O(weights)) and again
        whenever torch changed a parameter since (its version counter or storage moved). Use a
        copy of the model (e.g. `copy.deepcopy`) where the float weights are still needed.
        Parameters must be contiguous float32 on the CPU (`inplace_fits`); elsewhere use
        `perturbed`. One block at a time per model (nested or concurrent use is refused).
        source/voltage/offset/placement/ecc/ecc_policy: as `faulty_image`; source may also be a
        faulty image (uint8, image-sized), whose differences from the clean image are applied.
        With `ecc` the decoded image is built first (O(image): every codeword is decoded).
        Yields `inplace.Applied` (changed_bytes, changed_weights, unchanged).
        """
        return inplace.faults_applied(self, model, source, voltage, offset, placement, ecc,
                                      ecc_policy)

    def load_clean(self, model: nn.Module) -> None:
        """Write the clean dequantized weights into `model`'s quantized parameters, in place
        (what `faults_applied` needs there outside its block)."""
        inplace.load_clean(self, model)

    def inplace_fits(self, model: nn.Module) -> bool:
        """Whether `faults_applied` can write into `model` (contiguous float32 CPU parameters of
        the quantized shapes); otherwise use `perturbed`."""
        return inplace.inplace_fits(self, model)

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model with `weights` swapped in; the model's own parameters stay untouched."""
        return torch.func.functional_call(self.model, weights, (x,))

    def __repr__(self) -> str:
        return (f"QuantizedModel({len(self.segments)} tensors, {self.n_codes} weights, "
                f"{self.bits}-bit {self.scheme}, {self.image.size} bytes)")
