"""Numba kernels that write the faulty weights of a fault map into a model's parameters in place
and restore them: only the codes in faulty bytes are decoded (the float32 arithmetic of
`sramsim.inject.quantization.dequantize`, so values are bit-identical to the functional path).

A faulty byte reads back through `sramsim.memory.kernels.read_byte` (the one byte rule). Work is
split into fixed items (never by thread count), so every code is written by the same item into
the same slots with any number of threads. Arrays and scalars only; callers check arguments.
"""
from __future__ import annotations

import numpy as np
from numba import literally, njit, prange

from sramsim.memory.kernels import read_byte

# Quantization schemes as kernel codes (the order of `quantization.SCHEMES`).
SYMMETRIC, ASYMMETRIC, RQUANT, STUTZ_SYMMETRIC, STUTZ_RQUANT = 0, 1, 2, 3, 4


@njit(cache=True, inline="always")
def _decode(code: int | np.integer, scheme: int, bits: int, delta: np.float32, lo: np.float32,
            hi: np.float32) -> np.float32:
    """One m-bit code -> float32, the arithmetic of `quantization.dequantize` step by step in
    float32 (delta, lo, hi are float32), so the value is bit-identical to the torch path."""
    if scheme == SYMMETRIC or scheme == STUTZ_SYMMETRIC:
        s = np.int32(code)
        if s >= (1 << (bits - 1)):
            s -= 1 << bits
        if scheme == STUTZ_SYMMETRIC:
            return min(max(np.float32(s) * delta, lo), hi)
        return np.float32(s) * delta
    if scheme == STUTZ_RQUANT:     # the range hi - lo in float64 first, as Python computes it
        half = 1 << (bits - 1)
        unit = np.float32((1.0 + 0.001) / (half - 1))
        x = min(max((np.float32(code) - np.float32(half)) * unit, np.float32(-1.0)),
                np.float32(1.0))
        v = ((x + np.float32(1.0)) / np.float32(2.0)
             * np.float32(np.float64(hi) - np.float64(lo)) + lo)
        return min(max(v, lo), hi)
    v = np.float32(code) * delta + lo
    if scheme == RQUANT:
        v = min(max(v, lo), hi)
    return v


# Faulty bytes per work item of the in-place kernels: a fixed split (never the thread count), so
# every code is written by the same item, into the same slots, with any number of threads.
PIECE = 1 << 14


@njit(cache=True, inline="always")
def _plan_pass(byte: np.ndarray, first: int, offset_bytes: int, cap_bytes: int, nbytes: int,
               per: int, piece: int, lo: np.ndarray, hi: np.ndarray, base: np.ndarray,
               out: np.ndarray) -> tuple[int, int]:
    """Count the work items (outputs empty), or fill them; returns (items, code slots)."""
    n = byte.shape[0]
    fill = lo.shape[0] > 0
    items = 0
    slots = 0
    tile = -offset_bytes
    done = n == 0
    while not done:
        for half in range(2):
            # faulty bytes first..n-1 on this tile, then 0..first-1 one chip further on
            r_lo, r_hi, b = (first, n, tile) if half == 0 else (0, first, tile + cap_bytes)
            if b >= nbytes:
                done = True
                break
            if r_lo == r_hi:
                continue
            stop = r_lo + np.searchsorted(byte[r_lo:r_hi], nbytes - b)   # those inside the image
            i = r_lo
            while i < stop:
                j = min(stop, i + piece)
                if fill:
                    lo[items], hi[items], base[items], out[items] = i, j, b, slots
                items += 1
                slots += (j - i) * per
                i = j
            if stop < r_hi:
                done = True
                break
        tile += cap_bytes
    return items, slots


@njit(cache=True)
def _plan(byte: np.ndarray, first: int, offset_bytes: int, cap_bytes: int, nbytes: int, per: int,
          piece: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The work items in one call (a Python call per fault map costs more than the counting)."""
    empty = np.empty(0, dtype=np.int64)
    items, slots = _plan_pass(byte, first, offset_bytes, cap_bytes, nbytes, per, piece, empty,
                              empty, empty, empty)
    lo, hi, base, out = (np.empty(items, dtype=np.int64), np.empty(items, dtype=np.int64),
                         np.empty(items, dtype=np.int64), np.empty(items, dtype=np.int64))
    _plan_pass(byte, first, offset_bytes, cap_bytes, nbytes, per, piece, lo, hi, base, out)
    return lo, hi, base, out, slots


def plan_pieces(byte: np.ndarray, first: int, offset_bytes: int, cap_bytes: int, nbytes: int,
                bits: int, piece: int | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Work items of `write_faulty_codes`: faulty bytes lo[t]..hi[t]-1 sit on image bytes
    byte[i] + base[t] (ascending over t and i), and their codes go to slots from out[t].

    Faulty byte i sits on image byte (byte[i] - offset_bytes) mod cap_bytes, repeated every
    cap_bytes (a chip tiled over the image): the bytes from `first` (the first at or after the
    offset) to the end, then those before it one chip further, then the next tile, give image
    bytes in ascending order; those past the image are dropped. Returns (lo, hi, base, out,
    slots needed). `piece`: faulty bytes per item (default PIECE).
    """
    return _plan(byte, first, offset_bytes, cap_bytes, nbytes, 8 // bits,
                 PIECE if piece is None else piece)


# Faulty bytes per block of the 8-bit write: the clean weights a block gathers (one cache line
# each where faults are sparse: 256 KB) stay in the L2 cache until its new values are scattered
# back (ResNet-18 at BER 0.1%, caches flushed before each call, a block loop alone: 1024 per
# block 1.50 ms, 4096 1.40, 8192 1.37, 65536 1.58; the bare scatter 1.50 in the same run).
BLOCK = 4096


@njit(cache=True, inline="always")
def _code_guess(weight: np.float32, ga: float, gb: float) -> int:
    """The 8-bit code whose value `weight` is, in its segment's order of values (signed for the
    symmetric schemes): the affine inverse ga * weight + gb, rounded (0 for NaN or far off; a
    guess the caller checks)."""
    u = np.float64(weight) * ga + gb
    if not abs(u) < 1024.0:
        u = 0.0
    return np.int32(np.rint(u))


@njit(cache=True, inline="always")
def _decodes_back(u: int, weight: np.float32, umin: int, umax: int, scheme: int,
                  delta: np.float32, s_lo: np.float32, s_hi: np.float32) -> bool:
    """Whether the guess u (`_code_guess`) is a code of the segment's span umin..umax (where
    decoding is one-to-one) that decodes back to exactly `weight`: then it is the stored code."""
    return ((u >= umin) & (u <= umax)
            & (_decode(np.uint8(u & 255), scheme, 8, delta, s_lo, s_hi) == weight))


# Its own function (not inlined): the hot loops compile best alone. The scheme is compiled in as a
# constant. Each block of faults runs in four loops: (1) gather the clean weights (independent
# loads: their misses overlap, as in a bare scatter), (2) the stored codes read off those weights
# and the faulty values, in the L1 cache, with no load that waits on a miss, (3) codes whose
# weight does not map back read off the image (none while the weights are clean), (4) the scatter
# into the lines gathered in (1). ResNet-18 at BER 0.1% (88 k faulty bytes), caches flushed before
# each call, write + restore: 1.9 ms as one loop per fault (the code and the new value computed
# between the miss and the store, the weight 24 faults ahead prefetched), 1.47 ms in blocks; the
# bare scatter 1.41 ms in the same run.
@njit(cache=True)
def _write_run8(image: np.ndarray, byte: np.ndarray, xor: np.ndarray, clear: np.ndarray,
                set_: np.ndarray, stuck: bool, i0: int, i1: int, b_add: int,
                weights: np.ndarray, scheme: int, delta: np.float32, s_lo: np.float32,
                s_hi: np.float32, ga: float, gb: float, umin: int, umax: int, pos: np.ndarray,
                old: np.ndarray, new: np.ndarray, w: int) -> tuple[int, int]:
    """8-bit codes of one segment (one decoding): faulty bytes i0..i1-1, code b of image byte b
    is weights[b]. Every faulty byte's code is written and saved (one that reads back unchanged
    gets its own value: no branch in the loops); returns (next slot, image bytes changed). The
    stored code is the clean weight's guess (`_code_guess`) where it decodes back to exactly
    that weight from the segment's one-to-one span umin..umax (`_decodes_back`), else the image
    byte (and wherever faults are dense: >= 1 per 64 image bytes on average, the image
    read is then the cheaper). `new`: scratch of BLOCK values. `scheme` is compiled in as a constant
    (`_write_run8_as`)."""
    literally(scheme)
    zero = np.uint8(0)
    c = 0
    n = i1 - i0
    if n > 0 and n * 64 >= byte[i1 - 1] - byte[i0] + 1:
        # dense faults (>= 1 per image cache line) share image lines: one loop reading the image
        # is the cheaper path (ResNet-18 at BER 1%: 1.19x the bare scatter against 1.35x blocked)
        bytes_, xors, at, was = byte[i0:i1], xor[i0:i1], pos[w:w + n], old[w:w + n]
        clears = clear[i0:i1] if stuck else clear
        sets = set_[i0:i1] if stuck else set_
        for j in range(n):
            b = bytes_[j] + b_add
            before = image[b]
            after = read_byte(before, xors[j], clears[j] if stuck else zero,
                              sets[j] if stuck else zero)
            c += after != before
            at[j] = b
            was[j] = weights[b]
            weights[b] = _decode(after, scheme, 8, delta, s_lo, s_hi)
        return w + n, c
    for k in range(i0, i1, BLOCK):
        m = min(BLOCK, i1 - k)
        bytes_, xors, at, was = byte[k:k + m], xor[k:k + m], pos[w:w + m], old[w:w + m]
        clears = clear[k:k + m] if stuck else clear
        sets = set_[k:k + m] if stuck else set_
        for j in range(m):
            was[j] = weights[bytes_[j] + b_add]
        misses = 0
        for j in range(m):
            v = was[j]
            u = _code_guess(v, ga, gb)
            before = np.uint8(u & 255)
            hit = _decodes_back(u, v, umin, umax, scheme, delta, s_lo, s_hi)
            misses += not hit
            if stuck:                   # unswitched by hand: the loop has no masks to load
                after = read_byte(before, xors[j], clears[j], sets[j])
            else:
                after = read_byte(before, xors[j], zero, zero)
            c += hit & (after != before)
            new[j] = _decode(after, scheme, 8, delta, s_lo, s_hi)
        if misses:
            for j in range(m):      # the same check again: rare, and no flag array to write
                v = was[j]
                if not _decodes_back(_code_guess(v, ga, gb), v, umin, umax, scheme, delta, s_lo,
                                     s_hi):
                    before = image[bytes_[j] + b_add]
                    after = read_byte(before, xors[j], clears[j] if stuck else zero,
                                      sets[j] if stuck else zero)
                    c += after != before
                    new[j] = _decode(after, scheme, 8, delta, s_lo, s_hi)
        for j in range(m):
            b = bytes_[j] + b_add
            at[j] = b
            weights[b] = new[j]
        w += m
    return w, c


@njit(cache=True, inline="always")
def _write_run8_as(scheme: int, image: np.ndarray, byte: np.ndarray, xor: np.ndarray,
                   clear: np.ndarray, set_: np.ndarray, stuck: bool, i0: int, i1: int,
                   b_add: int, weights: np.ndarray, delta: np.float32, s_lo: np.float32,
                   s_hi: np.float32, ga: float, gb: float, umin: int, umax: int,
                   pos: np.ndarray, old: np.ndarray, new: np.ndarray,
                   w: int) -> tuple[int, int]:
    """`_write_run8` compiled for `scheme` as a constant (cold caches: 2.4 ms against 3.0 with
    a run-time scheme). Spelled out: numba binds a literal only at a call with a constant."""
    if scheme == SYMMETRIC:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           SYMMETRIC, delta, s_lo, s_hi, ga, gb, umin, umax, pos, old, new,
                           w)
    if scheme == ASYMMETRIC:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           ASYMMETRIC, delta, s_lo, s_hi, ga, gb, umin, umax, pos, old, new,
                           w)
    if scheme == RQUANT:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           RQUANT, delta, s_lo, s_hi, ga, gb, umin, umax, pos, old, new, w)
    if scheme == STUTZ_SYMMETRIC:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           STUTZ_SYMMETRIC, delta, s_lo, s_hi, ga, gb, umin, umax, pos, old,
                           new, w)
    return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                       STUTZ_RQUANT, delta, s_lo, s_hi, ga, gb, umin, umax, pos, old, new,
                       w)


@njit(cache=True, inline="always")
def _write_piece8(image: np.ndarray, byte: np.ndarray, xor: np.ndarray, clear: np.ndarray,
                  set_: np.ndarray, stuck: bool, i: int, h: int, b_add: int,
                  seg_end: np.ndarray, seg_scheme: np.ndarray, seg_delta: np.ndarray,
                  seg_lo: np.ndarray, seg_hi: np.ndarray, seg_ga: np.ndarray,
                  seg_gb: np.ndarray, seg_umin: np.ndarray, seg_umax: np.ndarray,
                  weights: np.ndarray, pos: np.ndarray, old: np.ndarray,
                  w: int) -> tuple[int, int, int]:
    """One work item of 8-bit codes (one code per byte), segment by segment. Returns (next
    slot, image bytes changed, codes changed)."""
    n_codes = seg_end[seg_end.shape[0] - 1]
    zero = np.uint8(0)
    new = np.empty(BLOCK, dtype=np.float32)
    c = 0
    codes = 0
    sp = 0
    while i < h:
        b = byte[i] + b_add
        if b >= n_codes:                # padding past the last code: changes no weight
            for q in range(i, h):
                before = image[byte[q] + b_add]
                after = read_byte(before, xor[q], clear[q] if stuck else zero,
                                  set_[q] if stuck else zero)
                if after != before:
                    c += 1
            break
        while b >= seg_end[sp]:
            sp += 1
        j = i + np.searchsorted(byte[i:h], seg_end[sp] - b_add)     # first byte past it
        w, cs = _write_run8_as(seg_scheme[sp], image, byte, xor, clear, set_, stuck, i, j,
                               b_add, weights, seg_delta[sp], seg_lo[sp], seg_hi[sp],
                               seg_ga[sp], seg_gb[sp], seg_umin[sp], seg_umax[sp], pos, old,
                               new, w)
        c += cs
        codes += cs
        i = j
    return w, c, codes


@njit(cache=True, inline="always")
def _write_piece(image: np.ndarray, byte: np.ndarray, xor: np.ndarray, clear: np.ndarray,
                 set_: np.ndarray, stuck: bool, i0: int, i1: int, b_add: int, bits: int,
                 seg_end: np.ndarray, seg_scheme: np.ndarray, seg_delta: np.ndarray,
                 seg_lo: np.ndarray, seg_hi: np.ndarray, weights: np.ndarray, pos: np.ndarray,
                 old: np.ndarray, w: int) -> tuple[int, int]:
    """One work item of m-bit codes, several per byte (a segment may start inside a byte)."""
    per = 8 // bits
    cmask = (1 << bits) - 1
    n_codes = seg_end[seg_end.shape[0] - 1]
    zero = np.uint8(0)
    c = 0
    sp = 0
    for i in range(i0, i1):
        b = byte[i] + b_add
        before = np.int64(image[b])
        after = np.int64(read_byte(image[b], xor[i], clear[i] if stuck else zero,
                                   set_[i] if stuck else zero))
        if after == before:
            continue
        c += 1
        for j in range(per):
            code_index = b * per + j
            if code_index >= n_codes:
                break
            shift = j * bits
            new_code = (after >> shift) & cmask
            if new_code == (before >> shift) & cmask:
                continue
            while code_index >= seg_end[sp]:
                sp += 1
            pos[w] = code_index
            old[w] = weights[code_index]
            weights[code_index] = _decode(new_code, seg_scheme[sp], bits, seg_delta[sp],
                                          seg_lo[sp], seg_hi[sp])
            w += 1
    return w, c


def _write_faulty_codes(image: np.ndarray, byte: np.ndarray, xor: np.ndarray,
                        clear: np.ndarray, set_: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                        base: np.ndarray, out: np.ndarray, bits: int, seg_end: np.ndarray,
                        seg_scheme: np.ndarray, seg_delta: np.ndarray, seg_lo: np.ndarray,
                        seg_hi: np.ndarray, seg_ga: np.ndarray, seg_gb: np.ndarray,
                        seg_umin: np.ndarray, seg_umax: np.ndarray, weights: np.ndarray,
                        pos: np.ndarray, old: np.ndarray,
                        written: np.ndarray) -> tuple[int, int]:
    """Write the dequantized faulty codes into the weights; save what they held. Returns (image
    bytes that changed, codes whose value changed).

    byte/xor/clear/set_: faulty bytes, ascending, with their masks (clear/set_ empty when there
    is no stuck-at fault); work item t covers faulty bytes lo[t]..hi[t]-1 on image bytes
    byte[i] + base[t] (`plan_pieces`). weights: every quantized weight in image order, one
    float32 array (code k is weights[k]; segment s holds codes up to seg_end[s] and decodes them
    with its scheme and range). 8-bit codes: every faulty byte's code is decoded and written
    (an unchanged one gets its own value back; no branch in the hot loops), the stored code
    taken from the clean weight where seg_ga[s] * weight + seg_gb[s], rounded, lies in
    seg_umin[s]..seg_umax[s] (codes in the order of their values, over which the segment's
    decoding is one-to-one; empty where it is not) and decodes back to exactly that weight, else
    from the image; m-bit codes: only those whose value changes, read off the image. Item t records
    the indices of the codes it wrote in pos[out[t]:out[t] + written[t]] and the values they
    replaced in old[...].
    """
    stuck = clear.shape[0] > 0
    changed = 0
    codes = 0
    for t in prange(lo.shape[0]):
        if bits == 8:
            w, c, k = _write_piece8(image, byte, xor, clear, set_, stuck, lo[t], hi[t], base[t],
                                    seg_end, seg_scheme, seg_delta, seg_lo, seg_hi, seg_ga,
                                    seg_gb, seg_umin, seg_umax, weights, pos, old, out[t])
        else:
            w, c = _write_piece(image, byte, xor, clear, set_, stuck, lo[t], hi[t], base[t],
                                bits, seg_end, seg_scheme, seg_delta, seg_lo, seg_hi, weights,
                                pos, old, out[t])
            k = w - out[t]
        written[t] = w - out[t]
        changed += c
        codes += k
    return changed, codes


def _restore_codes(weights: np.ndarray, pos: np.ndarray, old: np.ndarray, out: np.ndarray,
                   written: np.ndarray) -> None:
    """Undo `write_faulty_codes`: item t gives weight pos[i] its old[i] back, for i in
    out[t]..out[t] + written[t] - 1."""
    for t in prange(out.shape[0]):
        at, was = pos[out[t]:out[t] + written[t]], old[out[t]:out[t] + written[t]]
        for j in range(at.shape[0]):        # from index 0: no sign checks in the loop
            weights[at[j]] = was[j]


# Parallel from about this many faulty image bytes (16 work items) on: below it a parallel launch
# costs more than it saves, and on an oversubscribed machine far more (ResNet-18 at BER 0.1%, 88 k
# faulty bytes, 2 threads at load 3.4 on 2 cores: enter 7.7 ms against 1.15 ms on one thread).
PARALLEL_MIN_FAULTS = 1 << 18
write_faulty_codes = njit(cache=True, parallel=True)(_write_faulty_codes)
write_faulty_codes_serial = njit(cache=True)(_write_faulty_codes)
restore_codes = njit(cache=True, parallel=True)(_restore_codes)
restore_codes_serial = njit(cache=True)(_restore_codes)


@njit(cache=True)
def write_planned_serial(image: np.ndarray, byte: np.ndarray, xor: np.ndarray,
                         clear: np.ndarray, set_: np.ndarray, first: int, offset_bytes: int,
                         cap_bytes: int, bits: int, seg_end: np.ndarray, seg_scheme: np.ndarray,
                         seg_delta: np.ndarray, seg_lo: np.ndarray, seg_hi: np.ndarray,
                         seg_ga: np.ndarray, seg_gb: np.ndarray, seg_umin: np.ndarray,
                         seg_umax: np.ndarray, weights: np.ndarray, pos: np.ndarray,
                         old: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray, int]:
    """`plan_pieces` and `write_faulty_codes_serial` in one call, as a fault map with few faults
    needs them: a call from Python with cold caches costs ~30 us, as much as ~2,500 faults.
    Returns (image bytes changed, codes changed, out, written, code slots needed); nothing is
    written when pos/old hold fewer slots than needed (the caller grows them and calls again).
    """
    lo, hi, base, out, slots = _plan(byte, first, offset_bytes, cap_bytes, image.shape[0],
                                     8 // bits, PIECE)
    written = np.zeros(lo.shape[0], dtype=np.int64)
    if slots > pos.shape[0]:
        return 0, 0, out, written, slots
    changed, codes = write_faulty_codes_serial(
        image, byte, xor, clear, set_, lo, hi, base, out, bits, seg_end, seg_scheme, seg_delta,
        seg_lo, seg_hi, seg_ga, seg_gb, seg_umin, seg_umax, weights, pos, old, written)
    return changed, codes, out, written, slots


@njit(cache=True)
def diff_bytes(clean: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ascending indices, xor) of the bytes where `image` differs from `clean` (equal lengths)."""
    n = 0
    for b in range(clean.shape[0]):
        if clean[b] != image[b]:
            n += 1
    index = np.empty(n, dtype=np.int64)
    xor = np.empty(n, dtype=np.uint8)
    n = 0
    for b in range(clean.shape[0]):
        if clean[b] != image[b]:
            index[n] = b
            xor[n] = clean[b] ^ image[b]
            n += 1
    return index, xor
