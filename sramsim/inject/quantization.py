"""Per-layer fixed-point quantization schemes: float weights <-> m-bit unsigned codes.

Codes are what the memory stores (m-bit words, 0 <= code < 2**m); every scheme keeps its own
layout so that a bit error in a code has the effect it has on real hardware.

sramsim's own conventions (the defaults; existing checkpoints and results use them):

- symmetric:  signed two's complement, delta = max|w| / (2**(m-1) - 1), rounding.
- asymmetric: unsigned offset from the layer minimum, delta = (max - min) / (2**m - 1), rounding.
- rquant:     robust quantization after the recipe of Stutz et al. (MLSys 2021) -- per-layer
              [min, max], unsigned, rounding, dequantized values clamped back into [min, max] (a
              flipped bit can never push a weight outside the layer's range) -- but not their
              codes: ours are round(2 * (2**(m-1) - 1) * u), u = (w - min) / (max - min), so
              0..254 centred on 127 at 8 bits, with no margin.

The conventions of Stutz et al.'s published code (github.com/davidstutz/random-bit-error-
robustness, file common/quantization.py), matched operation by operation in float32:

- stutz-symmetric: class AdaptiveAlternativeFixedPointQuantization (with `clip`:
              ClippedAdaptiveAlternativeFixedPointQuantization). Range r = max|w| + 0.001
              (EPSILON; with clip, min(r, clip)), delta = r / (2**(m-1) - 1), codes truncated
              toward zero (no rounding: the float -> int8 cast), signed two's complement,
              dequantized values clamped to [-r, r]. Their signed types are int8/16/32, so 8
              bits only. Truncation is not idempotent: re-quantizing a dequantized weight can
              move its code one step toward zero.
- stutz-rquant: class AdaptiveAlternativeUnsymmetricUnsignedRoundedFixedPointQuantization
              (with `clip`: ClippedAdaptive...UnsymmetricUnsignedRounded...), their "RQuant":
              u = (w - min) / (max - min), x = 2u - 1 in [-1, 1], inner step
              d = (1 + 0.001) / (2**(m-1) - 1) (AlternativeUnsignedFixedPointQuantization with
              max_abs_range 1), code = round(x / d + 2**(m-1)) clamped to 2**m - 1: at 8 bits
              round(127 (2u - 1) / 1.001 + 128), 1..255 centred on 128. Decoding: code - 2**(m-1),
              times d, clamped to [-1, 1], mapped back to [min, max] and clamped there. Bits 2..8.
              A layer with max == min (their 0/0) is stored as the centre code 2**(m-1), which
              reads back as min.

`delta` in LayerQuant is the step between neighbouring values in weight units for every scheme.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sramsim.errors import InputError

SCHEMES = ("symmetric", "asymmetric", "rquant", "stutz-symmetric", "stutz-rquant")
BITS = (8, 4, 2)
SIGNED = ("symmetric", "stutz-symmetric")           # two's complement codes: the top bit is a sign
STUTZ_EPSILON = 0.001           # EPSILON of Stutz et al.'s common/quantization.py
_SCHEME_BITS = {"stutz-symmetric": (8,)}            # their signed quantizer casts to int8


@dataclass(frozen=True)
class LayerQuant:
    """What is needed to turn one layer's codes back into weights."""

    scheme: str
    bits: int
    delta: float
    lo: float = 0.0     # layer minimum (asymmetric, rquant, stutz-rquant); -r (stutz-symmetric)
    hi: float = 0.0     # layer maximum (rquant and stutz clamps); r (stutz-symmetric)


def check_scheme(scheme: str, bits: int) -> None:
    """Refuse an unknown scheme, a bit width other than 8, 4, 2, or one the scheme does not
    define (InputError naming it)."""
    if scheme not in SCHEMES:
        raise InputError(f"unknown quantization scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits not in BITS:
        raise InputError(f"bits must be one of {BITS}, got {bits!r}")
    if bits not in _SCHEME_BITS.get(scheme, BITS):
        raise InputError(f"scheme {scheme!r} is defined for "
                         f"{', '.join(map(str, _SCHEME_BITS[scheme]))} bits only, got {bits}")


def schemes_for(bits: int) -> tuple[str, ...]:
    """The schemes defined at `bits` bits."""
    return tuple(s for s in SCHEMES if bits in _SCHEME_BITS.get(s, BITS))


_TINY = float(torch.finfo(torch.float32).tiny)


def layer_params(w: torch.Tensor, bits: int, scheme: str, clip: float | None = None) -> LayerQuant:
    """Per-layer scale (and range) from the float weights, already clipped to [-clip, clip]."""
    check_scheme(scheme, bits)
    w = w.detach()
    if scheme in SIGNED:
        amax = float(w.abs().max()) if w.numel() else 0.0
        return range_params(-amax, amax, bits, scheme, clip)
    lo = float(w.min()) if w.numel() else 0.0
    hi = float(w.max()) if w.numel() else 0.0
    return range_params(lo, hi, bits, scheme, clip)


def _stutz_unit(bits: int) -> float:
    """stutz-rquant's step on [-1, 1]: (1 + EPSILON) / (2**(m-1) - 1), in their order of
    operations."""
    return (1 + STUTZ_EPSILON) / (2 ** (bits - 1) - 1)


def range_params(lo: float, hi: float, bits: int, scheme: str,
                 clip: float | None = None) -> LayerQuant:
    """Per-layer scale (and range) from the layer's minimum and maximum weight (already clipped
    to [-clip, clip]; `clip` itself matters only to stutz-symmetric, whose range is
    min(max|w| + 0.001, clip)).

    Symmetric scales by max(|lo|, |hi|) = max|w|: exact, so a range gathered piece by piece
    (`layer_range`) gives the same LayerQuant as the whole tensor.

    A step below float32's smallest normal number cannot be divided by in float32 (w / delta
    overflows or loses its sign), so a layer whose weights all lie that close together is stored
    as the one point `lo` (symmetric: as zeros) with a unit step. The Stutz schemes never divide
    by a step that small (stutz-symmetric's range is at least 0.001; stutz-rquant divides by the
    range and then by a fixed step), so only stutz-rquant's max == min is a special case.
    """
    if scheme == "stutz-symmetric":
        r = max(-lo, hi) + STUTZ_EPSILON
        if clip is not None:
            r = min(r, clip)
        return LayerQuant(scheme, bits, r / (2 ** (bits - 1) - 1), -r, r)
    if scheme == "stutz-rquant":
        return LayerQuant(scheme, bits, (hi - lo) / 2 * _stutz_unit(bits), lo, hi)
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        amax = max(-lo, hi)
        return LayerQuant(scheme, bits, amax / qmax if amax / qmax >= _TINY else 1.0)
    steps = 2 ** bits - 1 if scheme == "asymmetric" else 2 * (2 ** (bits - 1) - 1)
    if (hi - lo) / steps < _TINY:
        return LayerQuant(scheme, bits, 1.0, lo, lo)
    return LayerQuant(scheme, bits, (hi - lo) / steps, lo, hi)


def quantize(w: torch.Tensor, q: LayerQuant) -> torch.Tensor:
    """Float weights -> uint8 tensor of m-bit codes (one temporary the size of `w`, worked on in
    place: what a billion-weight model quantized piece by piece can afford)."""
    m = q.bits
    if q.scheme == "stutz-symmetric":      # clamp, divide, truncate toward zero: int8 codes
        return torch.clamp(w, q.lo, q.hi).div_(q.delta).trunc_().to(torch.int8).view(torch.uint8)
    if q.scheme == "stutz-rquant":
        half = 2 ** (m - 1)
        if q.hi == q.lo:
            return torch.full(w.shape, half, dtype=torch.uint8, device=w.device)
        x = torch.clamp(w, q.lo, q.hi).sub_(q.lo).div_(q.hi - q.lo).mul_(2).sub_(1)
        x.clamp_(-1, 1).div_(_stutz_unit(m)).add_(half).clamp_(max=2 ** m - 1).round_()
        return x.to(torch.uint8)
    if q.scheme == "symmetric":
        qmax = 2 ** (m - 1) - 1
        ints = torch.div(w, q.delta).round_().clamp_(-qmax, qmax).to(torch.int8)
        codes = ints.view(torch.uint8)                      # two's complement in 8 bits
        return codes if m == 8 else codes & (2 ** m - 1)    # ... in m bits
    steps = 2 ** m - 1 if q.scheme == "asymmetric" else 2 * (2 ** (m - 1) - 1)
    return torch.sub(w, q.lo).div_(q.delta).round_().clamp_(0, steps).to(torch.uint8)


def dequantize(codes: torch.Tensor, q: LayerQuant,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 m-bit codes -> float weights (any code, faulty or not, decodes to a value)."""
    m = q.bits
    if q.scheme == "stutz-symmetric":
        return codes.view(torch.int8).to(dtype).mul_(q.delta).clamp_(q.lo, q.hi)
    if q.scheme == "stutz-rquant":
        half = 2 ** (m - 1)
        x = codes.to(dtype).clamp_(0, 2 ** m - 1).sub_(half).mul_(_stutz_unit(m)).clamp_(-1, 1)
        return x.add_(1).div_(2).mul_(q.hi - q.lo).add_(q.lo).clamp_(q.lo, q.hi)
    if q.scheme == "symmetric":
        if m == 8:
            signed = codes.view(torch.int8)
        else:  # sign-extend an m-bit two's complement code
            sign = 1 << (m - 1)
            signed = (codes.to(torch.int8) ^ sign) - sign
        return signed.to(dtype).mul_(q.delta)
    values = codes.to(dtype).mul_(q.delta).add_(q.lo)
    if q.scheme == "rquant":
        values = values.clamp_(q.lo, q.hi)
    return values


def fake_quantize(w: torch.Tensor, bits: int = 8, scheme: str = "symmetric",
                  clip: float | None = None) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient (for quantization-aware training)."""
    if clip is not None:
        w = torch.clamp(w, -clip, clip)
    q = layer_params(w, bits, scheme, clip)
    wq = dequantize(quantize(w.detach(), q), q, w.dtype)
    return w + (wq - w).detach()


# Weights quantized at once when a layer is quantized piece by piece: float32 temporaries stay at
# tens of MB however large the layer (an LLM's MLP or output layer has 10^7..10^8 weights).
CHUNK = 1 << 22


def pieces(w: torch.Tensor, chunk: int = CHUNK) -> Iterator[torch.Tensor]:
    """The weights of `w` in order, `chunk` at a time, as flat float32 CPU tensors.

    A piece is a view of `w` where `w` is contiguous float32 on the CPU, else a small converted
    copy: a bf16 or GPU model is never converted whole (a non-contiguous `w` is, by reshape,
    copied once in its own dtype). Callers must not write into a piece.
    """
    flat = w.detach().reshape(-1)
    for i in range(0, flat.numel(), chunk):
        yield flat[i:i + chunk].to("cpu", torch.float32)


def layer_range(w: torch.Tensor, clip: float | None = None,
                chunk: int = CHUNK) -> tuple[float, float] | None:
    """(min, max) of the weights clipped to [-clip, clip], one piece at a time; None when `w`
    holds a NaN or an infinity (the caller names the tensor). (0, 0) for an empty tensor.

    One pass: min and max propagate NaN and show an infinity, and clipping is monotone, so the
    clipped range is the range clipped (at float32(clip), the bound torch.clamp applies).
    """
    lo, hi = math.inf, -math.inf
    for piece in pieces(w, chunk):
        p_lo, p_hi = (float(x) for x in torch.aminmax(piece))
        if not (math.isfinite(p_lo) and math.isfinite(p_hi)):
            return None
        lo, hi = min(lo, p_lo), max(hi, p_hi)
    if lo > hi:
        return 0.0, 0.0
    if clip is not None:
        c = float(torch.tensor(clip, dtype=torch.float32))
        lo, hi = min(max(lo, -c), c), min(max(hi, -c), c)
    return lo, hi


def image_bytes(n_codes: int, bits: int, word_bits: int) -> int:
    """Bytes of the memory image holding `n_codes` m-bit codes: packed, then padded to whole
    `word_bits` words."""
    packed = -(-n_codes // (8 // bits))
    word_bytes = word_bits // 8
    return -(-packed // word_bytes) * word_bytes


def quantize_into(image: torch.Tensor, start: int, w: torch.Tensor, q: LayerQuant,
                  clip: float | None = None, chunk: int = CHUNK) -> None:
    """Quantize `w` (clipped to [-clip, clip]) and pack its codes into `image` (a zeroed uint8
    image) as codes start, start+1, ...: the same bytes as packing all codes at once."""
    for piece in pieces(w, chunk):
        if clip is not None:
            piece = torch.clamp(piece, -clip, clip)
        codes = quantize(piece, q)
        pack_into(image, start, codes, q.bits)
        start += codes.numel()


def pack_into(image: torch.Tensor, start: int, codes: torch.Tensor, bits: int) -> None:
    """OR m-bit `codes` into `image` as codes start, start+1, ... (layout of `pack`).

    The bits they land on must be zero: a byte shared with the codes before or after (4- and
    2-bit codes of neighbouring layers) is completed by OR, never overwritten.
    """
    if bits == 8:                               # one code per byte: a plain copy
        image[start:start + codes.numel()] = codes
        return
    per = 8 // bits
    head = min((-start) % per, codes.numel())
    for i in range(head):                       # < per codes finishing a byte already begun
        k = start + i
        image[k // per] |= codes[i] << ((k % per) * bits)
    body = codes[head:]
    if body.numel():
        first = (start + head) // per
        packed = pack(body, bits)
        image[first:first + packed.numel()] |= packed


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """m-bit codes -> bytes; code k sits at byte k // (8/m), bits (k % (8/m)) * m upwards (LSB
    first)."""
    per = 8 // bits
    n = codes.numel()
    pad = (-n) % per
    c = torch.nn.functional.pad(codes.reshape(-1), (0, pad)).reshape(-1, per).to(torch.uint8)
    out = torch.zeros(c.shape[0], dtype=torch.uint8, device=codes.device)
    for j in range(per):
        out |= c[:, j] << (j * bits)
    return out


def unpack(image: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Bytes -> the first n m-bit codes along the last axis (inverse of `pack`).

    `image` is [..., nbytes]: one image or a stack of them (leading axes are kept), so a single
    model and a batch of K faulty models decode through the same code.
    """
    per = 8 // bits
    nbytes = -(-n // per)
    if image.shape[-1] < nbytes:
        raise InputError(f"{n} {bits}-bit codes need {nbytes} bytes, the "
                         f"image has {image.shape[-1]}")
    if bits == 8:
        return image[..., :n]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=image.device)
    codes = (image[..., :nbytes, None] >> shifts) & (2 ** bits - 1)
    return codes.reshape(*image.shape[:-1], nbytes * per)[..., :n]
