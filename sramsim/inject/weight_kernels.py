"""Numba kernels that write the faulty weights of a fault map into a model's parameters in place
and restore them: only the codes in faulty bytes are decoded (the float32 arithmetic of
`sramsim.inject.quantization.dequantize`, so values are bit-identical to the functional path).

A faulty byte reads back through `sramsim.memory.kernels.read_byte` (the one byte rule). Work is
split into fixed items (never by thread count), so every code is written by the same item into
the same slots with any number of threads. Arrays and scalars only; callers check arguments.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import literally, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

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


@njit(cache=True)
def _plan(byte: np.ndarray, first: int, offset_bytes: int, cap_bytes: int, nbytes: int, per: int,
          piece: int, lo: np.ndarray, hi: np.ndarray, base: np.ndarray,
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
    piece = PIECE if piece is None else piece
    per = 8 // bits
    empty = np.empty(0, dtype=np.int64)
    items, slots = _plan(byte, first, offset_bytes, cap_bytes, nbytes, per, piece,
                         empty, empty, empty, empty)
    lo, hi, base, out = (np.empty(items, dtype=np.int64) for _ in range(4))
    _plan(byte, first, offset_bytes, cap_bytes, nbytes, per, piece, lo, hi, base, out)
    return lo, hi, base, out, slots


@intrinsic
def _prefetch(typingctx: object, arr: types.Array, index: types.Integer) -> tuple:
    """Hint the CPU to fetch arr[index]'s cache line for writing (LLVM's llvm.prefetch: no
    effect on results, no fault on any address). A scatter at sorted but irregular positions
    defeats the hardware prefetcher; asked a few faults ahead, the misses overlap."""
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                       wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        # write, high locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


# Faults ahead of the current one whose weight is prefetched: enough to keep the misses of a
# scattered write in flight (ResNet-18 at BER 0.1%, caches flushed: this kernel's write took
# 4.1 ms without the prefetch, 1.37 ms with it (8 ahead: 1.8 ms, 48: 1.4 ms); the bare scatter
# 0.86-0.89 ms).
AHEAD = 24


@njit(cache=True, inline="always")
def _clean_code(weight: np.float32, table: np.ndarray, ga: float, gb: float, image: np.ndarray,
                b: int) -> np.uint8:
    """The 8-bit code stored at image byte b, recovered from its clean weight: the weight's
    affine inverse ga * weight + gb rounded, accepted only where the segment's decode table maps
    it back to exactly that weight (tables of segments whose decoding is not one-to-one are NaN,
    so they never match); else the image byte itself. So the image, a second cache line per
    fault, is read only where the weight is not a clean value."""
    u = np.float64(weight) * ga + gb
    if not abs(u) < 1024.0:                 # NaN or far off: no code
        u = 0.0
    code = np.uint8(np.int64(np.rint(u)) & 255)
    if table[code] != weight:
        code = image[b]
    return code


# Its own function (not inlined): the hot loop compiles best alone (inlined with a
# tuple-returning helper it measured 3x slower). Its loop runs over views from index 0 and has no
# branch but the (predicted) check of each recovered code. The scheme is compiled in as a
# constant. ResNet-18 at BER 0.1% (88 k faulty bytes, caches flushed before each call): 3.6 ms
# indexed from a run-time start with a skip of the unchanged bytes, 1.9 ms over views, 1.37 ms
# with each code recovered from its clean weight (one cache line per fault, not two) and
# prefetched (0.15 ms of it the table check).
@njit(cache=True)
def _write_run8(image: np.ndarray, byte: np.ndarray, xor: np.ndarray, clear: np.ndarray,
                set_: np.ndarray, stuck: bool, i0: int, i1: int, b_add: int,
                weights: np.ndarray, scheme: int, delta: np.float32, s_lo: np.float32,
                s_hi: np.float32, table: np.ndarray, ga: float, gb: float, pos: np.ndarray,
                old: np.ndarray, w: int) -> tuple[int, int]:
    """8-bit codes of one segment (one decoding): faulty bytes i0..i1-1, code b of image byte b
    is weights[b]. Every faulty byte's code is written and saved (one that reads back unchanged
    gets its own value: no branch in the loop); returns (next slot, image bytes changed). The
    stored code comes from the clean weight where it maps back (`_clean_code`). The hot path;
    `scheme` is compiled in as a constant (`_write_run8_as`)."""
    literally(scheme)
    zero = np.uint8(0)
    n = i1 - i0
    bytes_, xors, at, was = byte[i0:i1], xor[i0:i1], pos[w:w + n], old[w:w + n]
    clears = clear[i0:i1] if stuck else clear
    sets = set_[i0:i1] if stuck else set_
    c = 0
    # sparse faults (< 1 per image cache line): the code comes off the weight; dense ones share
    # image lines, which are then the cheaper read (a loop-invariant branch: LLVM unswitches it)
    sparse = n > 0 and n * 64 < bytes_[n - 1] - bytes_[0] + 1
    for j in range(n):
        b = bytes_[j] + b_add
        v = weights[b]
        if sparse:
            if j + AHEAD < n:
                _prefetch(weights, bytes_[j + AHEAD] + b_add)   # type: ignore[call-arg]
            before = _clean_code(v, table, ga, gb, image, b)
        else:
            before = image[b]
        after = read_byte(before, xors[j], clears[j] if stuck else zero,
                          sets[j] if stuck else zero)
        c += after != before
        at[j] = b
        was[j] = v
        weights[b] = _decode(after, scheme, 8, delta, s_lo, s_hi)
    return w + n, c


@njit(cache=True, inline="always")
def _write_run8_as(scheme: int, image: np.ndarray, byte: np.ndarray, xor: np.ndarray,
                   clear: np.ndarray, set_: np.ndarray, stuck: bool, i0: int, i1: int,
                   b_add: int, weights: np.ndarray, delta: np.float32, s_lo: np.float32,
                   s_hi: np.float32, table: np.ndarray, ga: float, gb: float, pos: np.ndarray,
                   old: np.ndarray, w: int) -> tuple[int, int]:
    """`_write_run8` compiled for `scheme` as a constant (cold caches: 2.4 ms against 3.0 with
    a run-time scheme). Spelled out: numba binds a literal only at a call with a constant."""
    if scheme == SYMMETRIC:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           SYMMETRIC, delta, s_lo, s_hi, table, ga, gb, pos, old, w)
    if scheme == ASYMMETRIC:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           ASYMMETRIC, delta, s_lo, s_hi, table, ga, gb, pos, old, w)
    if scheme == RQUANT:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           RQUANT, delta, s_lo, s_hi, table, ga, gb, pos, old, w)
    if scheme == STUTZ_SYMMETRIC:
        return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                           STUTZ_SYMMETRIC, delta, s_lo, s_hi, table, ga, gb, pos, old, w)
    return _write_run8(image, byte, xor, clear, set_, stuck, i0, i1, b_add, weights,
                       STUTZ_RQUANT, delta, s_lo, s_hi, table, ga, gb, pos, old, w)


@njit(cache=True, inline="always")
def _write_piece8(image: np.ndarray, byte: np.ndarray, xor: np.ndarray, clear: np.ndarray,
                  set_: np.ndarray, stuck: bool, i: int, h: int, b_add: int,
                  seg_end: np.ndarray, seg_scheme: np.ndarray, seg_delta: np.ndarray,
                  seg_lo: np.ndarray, seg_hi: np.ndarray, seg_table: np.ndarray,
                  seg_ga: np.ndarray, seg_gb: np.ndarray, weights: np.ndarray, pos: np.ndarray,
                  old: np.ndarray, w: int) -> tuple[int, int, int]:
    """One work item of 8-bit codes (one code per byte), segment by segment. Returns (next
    slot, image bytes changed, codes changed)."""
    n_codes = seg_end[seg_end.shape[0] - 1]
    zero = np.uint8(0)
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
                               seg_table[sp], seg_ga[sp], seg_gb[sp], pos, old, w)
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
                        seg_hi: np.ndarray, seg_table: np.ndarray, seg_ga: np.ndarray,
                        seg_gb: np.ndarray, weights: np.ndarray, pos: np.ndarray,
                        old: np.ndarray, written: np.ndarray, changed: np.ndarray,
                        codes: np.ndarray) -> None:
    """Write the dequantized faulty codes into the weights; save what they held.

    byte/xor/clear/set_: faulty bytes, ascending, with their masks (clear/set_ empty when there
    is no stuck-at fault); work item t covers faulty bytes lo[t]..hi[t]-1 on image bytes
    byte[i] + base[t] (`plan_pieces`). weights: every quantized weight in image order, one
    float32 array (code k is weights[k]; segment s holds codes up to seg_end[s] and decodes them
    with its scheme and range). 8-bit codes: every faulty byte's code is decoded and written
    (an unchanged one gets its own value back; no branch in the hot loop), the stored code taken
    from the clean weight where seg_table[s] (the segment's 256 decoded values, NaN where
    decoding is not one-to-one) maps seg_ga[s] * weight + seg_gb[s], rounded, back to it, else
    from the image (and from the image wherever faults are dense: < 64 image bytes apart on
    average); m-bit codes: only those whose value changes, read off the image. Item t records
    the indices of the codes it wrote in pos[out[t]:out[t] + written[t]] and the values they
    replaced in old[...], the image bytes that changed in changed[t] and the codes whose value
    changed in codes[t].
    """
    stuck = clear.shape[0] > 0
    for t in prange(lo.shape[0]):
        if bits == 8:
            w, c, k = _write_piece8(image, byte, xor, clear, set_, stuck, lo[t], hi[t], base[t],
                                    seg_end, seg_scheme, seg_delta, seg_lo, seg_hi, seg_table,
                                    seg_ga, seg_gb, weights, pos, old, out[t])
        else:
            w, c = _write_piece(image, byte, xor, clear, set_, stuck, lo[t], hi[t], base[t],
                                bits, seg_end, seg_scheme, seg_delta, seg_lo, seg_hi, weights,
                                pos, old, out[t])
            k = w - out[t]
        written[t] = w - out[t]
        changed[t] = c
        codes[t] = k


def _restore_codes(weights: np.ndarray, pos: np.ndarray, old: np.ndarray, out: np.ndarray,
                   written: np.ndarray) -> None:
    """Undo `write_faulty_codes`: item t gives weight pos[i] its old[i] back, for i in
    out[t]..out[t] + written[t] - 1."""
    for t in prange(out.shape[0]):
        at, was = pos[out[t]:out[t] + written[t]], old[out[t]:out[t] + written[t]]
        for j in range(at.shape[0]):        # from index 0: no sign checks in the loop
            weights[at[j]] = was[j]


# Parallel from this many work items (2^18 faulty bytes) on: below it a parallel launch costs more
# than it saves, and on an oversubscribed machine far more (ResNet-18 at BER 0.1%, 88 k faulty
# bytes, 2 threads at load 3.4 on 2 cores: enter 7.7 ms against 1.15 ms on one thread).
PARALLEL_MIN_ITEMS = 16
write_faulty_codes = njit(cache=True, parallel=True)(_write_faulty_codes)
write_faulty_codes_serial = njit(cache=True)(_write_faulty_codes)
restore_codes = njit(cache=True, parallel=True)(_restore_codes)
restore_codes_serial = njit(cache=True)(_restore_codes)


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
