"""Numba kernels that write a faulty copy of the uint8 memory image: the chip's dense byte masks
tiled over it, or sparse bit faults applied to a copy.

Every byte they write goes through `sramsim.memory.kernels.read_byte` (the one byte rule); every
kernel writes each output byte from exactly one thread, so results do not depend on the number of
threads. Arrays and scalars only; callers check arguments. Compiled with cache=True so CLI starts
do not pay the JIT each time.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
from numba import njit, prange

from sramsim.memory.kernels import fault_masks, read_byte

_K = TypeVar("_K")

BLOCK = 1 << 16          # bytes per parallel work item in the streaming kernels
SPARSE_CHUNKS = 64       # fixed (thread-count independent) split of sorted fault lists


@njit(cache=True, inline="always")
def _xor_into(src: np.ndarray, x: np.ndarray, dst: np.ndarray) -> None:
    """dst = src read through flip masks x, over equal-length contiguous slices."""
    zero = np.uint8(0)
    for k in range(src.shape[0]):
        dst[k] = read_byte(src[k], x[k], zero, zero)


@njit(cache=True, inline="always")
def _masks_into(src: np.ndarray, x: np.ndarray, clear: np.ndarray, set_: np.ndarray,
                dst: np.ndarray) -> None:
    """dst = src read through masks (x, clear, set_), over equal-length contiguous slices."""
    for k in range(src.shape[0]):
        dst[k] = read_byte(src[k], x[k], clear[k], set_[k])


# The loops work on contiguous slices so LLVM vectorises them (indexing with `i + k` into the
# full arrays measured ~20x slower here).
def _apply_xor_tiled(image: np.ndarray, out: np.ndarray, xor_mask: np.ndarray,
                     offset: int) -> None:
    """out[i] = image[i] read through the flip mask of chip byte (i + offset) % len(xor_mask)
    (the chip tiled over the image)."""
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


def _apply_masks_tiled(image: np.ndarray, out: np.ndarray, xor_mask: np.ndarray,
                       clear_mask: np.ndarray, set_mask: np.ndarray, offset: int) -> None:
    """out[i] = image[i] read through the masks of chip byte (i + offset) % len(mask)."""
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
def _byte_aligned_starts(address: np.ndarray, nchunks: int) -> np.ndarray:
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


def _apply_sparse_inplace(out: np.ndarray, address: np.ndarray, kind: np.ndarray) -> None:
    """Apply bit faults with ascending bit addresses to `out` in place (it already holds a copy).

    Sorted addresses make this a stream through memory instead of a random scatter.
    """
    starts = _byte_aligned_starts(address, SPARSE_CHUNKS)
    for c in prange(SPARSE_CHUNKS):
        for i in range(starts[c], starts[c + 1]):
            a = address[i]
            b = a >> 3
            x, cl, s = fault_masks(kind[i], np.uint8(1) << np.uint8(a & 7))
            out[b] = read_byte(out[b], x, cl, s)


def _apply_sparse_flips_inplace(out: np.ndarray, address: np.ndarray) -> None:
    """Flip-only variant of `apply_sparse_inplace` (no kind array to read)."""
    starts = _byte_aligned_starts(address, SPARSE_CHUNKS)
    zero = np.uint8(0)
    for c in prange(SPARSE_CHUNKS):
        for i in range(starts[c], starts[c + 1]):
            a = address[i]
            b = a >> 3
            out[b] = read_byte(out[b], np.uint8(1) << np.uint8(a & 7), zero, zero)


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


def pick(parallel_kernel: _K, serial_kernel: _K, nbytes: int) -> _K:
    """The parallel kernel for images of at least PARALLEL_MIN_BYTES, else the serial one."""
    return parallel_kernel if nbytes >= PARALLEL_MIN_BYTES else serial_kernel
