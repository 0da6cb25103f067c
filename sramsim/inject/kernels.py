"""Numba kernels on the uint8 memory image. Arrays and scalars only; callers check arguments.

Fault semantics per stored bit: flip -> XOR, stuck0 -> AND-NOT, stuck1 -> OR.
Every kernel writes each output byte from exactly one thread, so results do not depend on
the number of threads. Compiled with cache=True so CLI starts do not pay the JIT each time.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 1 << 16          # bytes per parallel work item in the streaming kernels
SPARSE_CHUNKS = 64       # fixed (thread-count independent) split of sorted fault lists


@njit(cache=True, inline="always")
def _xor_into(src, x, dst):
    """dst = src ^ x over equal-length contiguous slices."""
    for k in range(src.shape[0]):
        dst[k] = src[k] ^ x[k]


@njit(cache=True, inline="always")
def _masks_into(src, x, clear, set_, dst):
    """dst = ((src ^ x) & ~clear) | set_ over equal-length contiguous slices."""
    for k in range(src.shape[0]):
        dst[k] = ((src[k] ^ x[k]) & ~clear[k]) | set_[k]


# The loops work on contiguous slices so LLVM vectorises them (indexing with `i + k` into the
# full arrays measured ~20x slower here).
def _apply_xor_tiled(image, out, xor_mask, offset):
    """out[i] = image[i] ^ xor_mask[(i + offset) % len(xor_mask)] (the chip tiled over the image)."""
    n = image.shape[0]
    c = xor_mask.shape[0]
    nblocks = (n + BLOCK - 1) // BLOCK
    for blk in prange(nblocks):
        i = blk * BLOCK
        end = min(n, i + BLOCK)
        j = (i + offset) % c
        while i < end:
            seg = min(end - i, c - j)
            _xor_into(image[i:i + seg], xor_mask[j:j + seg], out[i:i + seg])
            i += seg
            j = 0


def _apply_masks_tiled(image, out, xor_mask, clear_mask, set_mask, offset):
    """out[i] = ((image[i] ^ x) & ~c) | s with the masks of chip byte (i + offset) % len(mask)."""
    n = image.shape[0]
    c = xor_mask.shape[0]
    nblocks = (n + BLOCK - 1) // BLOCK
    for blk in prange(nblocks):
        i = blk * BLOCK
        end = min(n, i + BLOCK)
        j = (i + offset) % c
        while i < end:
            seg = min(end - i, c - j)
            _masks_into(image[i:i + seg], xor_mask[j:j + seg], clear_mask[j:j + seg],
                        set_mask[j:j + seg], out[i:i + seg])
            i += seg
            j = 0


@njit(cache=True)
def _byte_aligned_starts(address, nchunks):
    """Chunk starts over a sorted bit-address list such that no byte spans two chunks."""
    n = address.shape[0]
    starts = np.empty(nchunks + 1, dtype=np.int64)
    starts[0] = 0
    for c in range(1, nchunks):
        s = max(starts[c - 1], (n * c) // nchunks)
        while 0 < s < n and (address[s] >> 3) == (address[s - 1] >> 3):
            s += 1
        starts[c] = s
    starts[nchunks] = n
    return starts


def _apply_sparse_inplace(out, address, kind):
    """Apply bit faults with ascending bit addresses to `out` in place (it already holds a copy).

    Sorted addresses make this a stream through memory instead of a random scatter.
    """
    starts = _byte_aligned_starts(address, SPARSE_CHUNKS)
    for c in prange(SPARSE_CHUNKS):
        for i in range(starts[c], starts[c + 1]):
            a = address[i]
            b = a >> 3
            bit = np.uint8(1) << np.uint8(a & 7)
            k = kind[i]
            if k == 0:
                out[b] ^= bit
            elif k == 1:
                out[b] &= ~bit
            else:
                out[b] |= bit


def _apply_sparse_flips_inplace(out, address):
    """Flip-only variant of `apply_sparse_inplace` (no kind array to read)."""
    starts = _byte_aligned_starts(address, SPARSE_CHUNKS)
    for c in prange(SPARSE_CHUNKS):
        for i in range(starts[c], starts[c + 1]):
            a = address[i]
            out[a >> 3] ^= np.uint8(1) << np.uint8(a & 7)


# Each streaming kernel exists twice: parallel for large images, serial for small ones, where
# waking the thread pool costs more than the work (measured: 87 KB image, 12 ms with 2 busy
# threads vs 0.01 ms serial). Both give identical bytes.
PARALLEL_MIN_BYTES = 1 << 20

apply_xor_tiled = njit(cache=True, parallel=True)(_apply_xor_tiled)
apply_xor_tiled_serial = njit(cache=True)(_apply_xor_tiled)
apply_masks_tiled = njit(cache=True, parallel=True)(_apply_masks_tiled)
apply_masks_tiled_serial = njit(cache=True)(_apply_masks_tiled)
apply_sparse_inplace = njit(cache=True, parallel=True)(_apply_sparse_inplace)
apply_sparse_inplace_serial = njit(cache=True)(_apply_sparse_inplace)
apply_sparse_flips_inplace = njit(cache=True, parallel=True)(_apply_sparse_flips_inplace)
apply_sparse_flips_inplace_serial = njit(cache=True)(_apply_sparse_flips_inplace)


def pick(parallel_kernel, serial_kernel, nbytes: int):
    """The parallel kernel for images of at least PARALLEL_MIN_BYTES, else the serial one."""
    return parallel_kernel if nbytes >= PARALLEL_MIN_BYTES else serial_kernel



# ------------------------------------------------------------------ in-place faulty weights
# Quantization schemes as kernel codes (the order of `quantization.SCHEMES`).
SYMMETRIC, ASYMMETRIC, RQUANT = 0, 1, 2


@njit(cache=True, inline="always")
def _decode(code, scheme, bits, delta, lo, hi):
    """One m-bit code -> float32, the arithmetic of `quantization.dequantize` step by step in
    float32 (delta, lo, hi are float32), so the value is bit-identical to the torch path."""
    if scheme == SYMMETRIC:
        s = np.int32(code)
        if s >= (1 << (bits - 1)):
            s -= 1 << bits
        return np.float32(s) * delta
    v = np.float32(code) * delta + lo
    if scheme == RQUANT:
        v = min(max(v, lo), hi)
    return v


@njit(cache=True)
def _write_range(image, byte, xor, clear, set_, lo, hi, base, bits, seg_end, seg_scheme,
                 seg_delta, seg_lo, seg_hi, params, pos, old, counters):
    """`write_faulty_codes` for faulty bytes lo..hi-1, each on image byte byte[i] + base
    (ascending). counters = [written, changed, segment]: carried from range to range. Returns
    True when the end of the image is reached."""
    nbytes = image.shape[0]
    stuck = clear.shape[0] > 0
    per = 8 // bits
    cmask = (1 << bits) - 1
    n_codes = seg_end[seg_end.shape[0] - 1]
    written, changed, sp = counters[0], counters[1], counters[2]
    start = seg_end[sp - 1] if sp > 0 else 0
    arr = params[sp]            # fetched again only when the segment changes (a List lookup is slow)
    done = False
    for i in range(lo, hi):
        b = byte[i] + base
        if b >= nbytes:
            done = True
            break
        before = np.int64(image[b])
        after = before ^ np.int64(xor[i])
        if stuck:
            after = (after & ~np.int64(clear[i])) | np.int64(set_[i])
        if after == before:
            continue
        changed += 1
        if per == 1:            # 8-bit codes: one code per byte, no inner loop
            if b >= n_codes:
                continue
            if b >= seg_end[sp]:
                while b >= seg_end[sp]:
                    sp += 1
                start = seg_end[sp - 1]
                arr = params[sp]
            local = b - start
            pos[written] = b
            old[written] = arr[local]
            arr[local] = _decode(after, seg_scheme[sp], 8, seg_delta[sp], seg_lo[sp], seg_hi[sp])
            written += 1
            continue
        for j in range(per):
            code_index = b * per + j
            if code_index >= n_codes:
                break
            shift = j * bits
            new_code = (after >> shift) & cmask
            if new_code == (before >> shift) & cmask:
                continue
            if code_index >= seg_end[sp]:
                while code_index >= seg_end[sp]:
                    sp += 1
                start = seg_end[sp - 1]
                arr = params[sp]
            local = code_index - start
            pos[written] = code_index
            old[written] = arr[local]
            arr[local] = _decode(new_code, seg_scheme[sp], bits, seg_delta[sp], seg_lo[sp],
                                 seg_hi[sp])
            written += 1
    counters[0], counters[1], counters[2] = written, changed, sp
    return done


@njit(cache=True)
def write_faulty_codes(image, byte, xor, clear, set_, first, offset_bytes, cap_bytes, bits,
                       seg_end, seg_scheme, seg_delta, seg_lo, seg_hi, params, pos, old):
    """Write the dequantized faulty codes into the parameters; save what they held.

    byte/xor/clear/set_: faulty bytes, ascending, with their masks (clear/set_ empty when there
    is no stuck-at fault). Faulty byte i sits on image byte (byte[i] - offset_bytes) mod
    cap_bytes, repeated every cap_bytes (a chip tiled over the image): the bytes from index
    `first` (the first at or after the offset) to the end, then those before it, then the next
    tile, yield image bytes in ascending order. Only codes whose value changes are decoded;
    code k of segment s (codes up to seg_end[s]) is element k - seg_end[s - 1] of params[s].
    Returns (codes written, image bytes changed); pos[:w] holds the codes' global indices,
    old[:w] the values they replaced.
    """
    n = byte.shape[0]
    counters = np.zeros(3, dtype=np.int64)
    if n == 0:
        return 0, 0
    base = -offset_bytes
    while True:
        if _write_range(image, byte, xor, clear, set_, first, n, base, bits, seg_end,
                        seg_scheme, seg_delta, seg_lo, seg_hi, params, pos, old, counters):
            break
        if _write_range(image, byte, xor, clear, set_, 0, first, base + cap_bytes, bits,
                        seg_end, seg_scheme, seg_delta, seg_lo, seg_hi, params, pos, old,
                        counters):
            break
        base += cap_bytes
    return counters[0], counters[1]


@njit(cache=True)
def restore_codes(seg_end, params, pos, old):
    """Undo `write_faulty_codes`: parameter element of code pos[i] gets old[i] back
    (pos ascending, as written)."""
    sp = 0
    start = 0
    arr = params[0]
    for i in range(pos.shape[0]):
        k = pos[i]
        if k >= seg_end[sp]:
            while k >= seg_end[sp]:
                sp += 1
            start = seg_end[sp - 1]
            arr = params[sp]
        arr[k - start] = old[i]


@njit(cache=True)
def diff_bytes(clean, image):
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
