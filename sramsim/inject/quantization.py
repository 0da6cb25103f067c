"""Per-layer fixed-point quantization schemes: float weights <-> m-bit unsigned codes.

Codes are what the memory stores (m-bit words, 0 <= code < 2**m); every scheme keeps its own
layout so that a bit error in a code has the effect it has on real hardware.

- symmetric:  signed two's complement, delta = max|w| / (2**(m-1) - 1), rounding.
- asymmetric: unsigned offset from the layer minimum, delta = (max - min) / (2**m - 1), rounding.
- rquant:     robust quantization of Stutz et al. (MLSys 2021): [min, max] mapped to [-1, 1],
              symmetric grid of 2**(m-1) - 1 steps per side stored as an unsigned offset code,
              rounding, dequantized values clamped back into [min, max] (a flipped bit can never
              push a weight outside the layer's range).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from sramsim.errors import InputError

SCHEMES = ("symmetric", "asymmetric", "rquant")
BITS = (8, 4, 2)


@dataclass(frozen=True)
class LayerQuant:
    """What is needed to turn one layer's codes back into weights."""

    scheme: str
    bits: int
    delta: float
    lo: float = 0.0     # layer minimum (asymmetric, rquant)
    hi: float = 0.0     # layer maximum (rquant clamp)


def check_scheme(scheme: str, bits: int) -> None:
    """Refuse an unknown scheme or a bit width other than 8, 4, 2 (ValueError naming it)."""
    if scheme not in SCHEMES:
        raise InputError(f"unknown quantization scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits not in BITS:
        raise InputError(f"bits must be one of {BITS}, got {bits!r}")


_TINY = float(torch.finfo(torch.float32).tiny)


def layer_params(w: torch.Tensor, bits: int, scheme: str) -> LayerQuant:
    """Per-layer scale (and range) from the (already clipped) float weights."""
    check_scheme(scheme, bits)
    w = w.detach()
    if scheme == "symmetric":
        amax = float(w.abs().max()) if w.numel() else 0.0
        return range_params(-amax, amax, bits, scheme)
    lo = float(w.min()) if w.numel() else 0.0
    hi = float(w.max()) if w.numel() else 0.0
    return range_params(lo, hi, bits, scheme)


def range_params(lo: float, hi: float, bits: int, scheme: str) -> LayerQuant:
    """Per-layer scale (and range) from the layer's minimum and maximum weight.

    Symmetric scales by max(|lo|, |hi|) = max|w|: exact, so a range gathered piece by piece
    (`layer_range`) gives the same LayerQuant as the whole tensor.

    A step below float32's smallest normal number cannot be divided by in float32 (w / delta
    overflows or loses its sign), so a layer whose weights all lie that close together is stored
    as the one point `lo` (symmetric: as zeros) with a unit step.
    """
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
    if q.scheme == "symmetric":
        qmax = 2 ** (m - 1) - 1
        ints = torch.div(w, q.delta).round_().clamp_(-qmax, qmax).to(torch.int8)
        codes = ints.view(torch.uint8)                      # two's complement in 8 bits
        return codes if m == 8 else codes & (2 ** m - 1)    # ... in m bits
    steps = 2 ** m - 1 if q.scheme == "asymmetric" else 2 * (2 ** (m - 1) - 1)
    return torch.sub(w, q.lo).div_(q.delta).round_().clamp_(0, steps).to(torch.uint8)


def dequantize(codes: torch.Tensor, q: LayerQuant, dtype=torch.float32) -> torch.Tensor:
    """uint8 m-bit codes -> float weights (any code, faulty or not, decodes to a value)."""
    m = q.bits
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
    q = layer_params(w, bits, scheme)
    wq = dequantize(quantize(w.detach(), q), q, w.dtype)
    return w + (wq - w).detach()


# Weights quantized at once when a layer is quantized piece by piece: float32 temporaries stay at
# tens of MB however large the layer (an LLM's MLP or output layer has 10^7..10^8 weights).
CHUNK = 1 << 22


def pieces(w: torch.Tensor, chunk: int = CHUNK):
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
    """m-bit codes -> bytes; code k sits at byte k // (8/m), bits (k % (8/m)) * m upwards (LSB first)."""
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
        raise InputError(f"{n} {bits}-bit codes need {nbytes} bytes, the image has {image.shape[-1]}")
    if bits == 8:
        return image[..., :n]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=image.device)
    codes = (image[..., :nbytes, None] >> shifts) & (2 ** bits - 1)
    return codes.reshape(*image.shape[:-1], nbytes * per)[..., :n]
