"""ECC: SECDED Hamming codes whose check bits sit in the same faulty memory as the weights.

A SECDED code is an extended Hamming code: Hamming(2^m - 1 shortened to k + r - 1 bits) plus one
overall parity bit. Per codeword a real decoder corrects one error, detects two, and may
miscorrect (or miss) three or more; this module decodes exactly that way, bit for bit.

Codes (`CODES`):
- ``secded72``: (72, 64), the code of ECC DIMMs and SRAM arrays: 64 data bits + 7 Hamming + 1
  overall parity bit (Hsiao-style column ordering aside, any (72,64) SECDED corrects and detects
  the same error counts; this is the textbook Hamming ordering).
- ``secded13``: (13, 8), one byte per codeword: 8 data bits + 4 Hamming + 1 overall parity bit.

Hamming positions: data bit i (bit i % 8 of data byte i // 8 of the word) sits at the i-th
position, counting 3, 5, 6, 7, 9, ... (the positions that are not powers of two); Hamming parity
bit t covers the positions whose bit t is set. Syndrome s = XOR of the positions of all set bits
(data and Hamming parity): 0 when the Hamming part is consistent, else the position of a single
error.

Stored layout (what sits on the chip; the memory *mapping* rules of `sramsim.inject.mapping` --
offset, tiling over a smaller chip -- apply to this stored image, byte for byte):
- the stored image is a little-endian bit stream (stored bit 8*b + j is bit j of byte b);
  codeword w occupies stored bits [n*w, n*w + n): its k data bits first (data bit i at n*w + i),
  then the r check bits: Hamming parity bit t at n*w + k + t, the overall parity bit last.
- secded72: so codeword w is stored bytes [9w, 9w + 9): 8 data bytes as they are, then one check
  byte (bits 0-6 = Hamming parity p1, p2, p4, ..., p64; bit 7 = overall parity).
- secded13: eight 13-bit codewords fill 13 bytes exactly; data byte w is stored bits
  [13w, 13w + 8), its check bits [13w + 8, 13w + 13) (p1, p2, p4, p8, overall).
The data image is padded with zero bytes to a whole number of 64 bytes (8 secded72 words in 72
stored bytes, 64 secded13 words in 104: blocks of whole 64-bit words); padding codewords are
stored and can fail too.

Decoding visits only the codewords whose stored bits differ from the clean stored image (a
streaming comparison, 64 bits at a time, finds them; the decoding work is proportional to the
faulty codewords); every other word is the clean data, copied. Policy for a detected
uncorrectable word: ``keep`` its raw (faulty) data bits, or ``zero`` its weights (the data bytes
take the bytes of the model's zero image: each code the one that decodes nearest 0.0 in its
tensor's scheme).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import gcd
from typing import TYPE_CHECKING

import numpy as np
from numba import njit, prange

from sramsim.errors import InputError, InputTypeError, check_choice
from sramsim.inject.mapping import FaultSource, apply_faults

if TYPE_CHECKING:
    from sramsim.inject.quantized_model import QuantizedModel

POLICIES = ("keep", "zero")
DECODE_CHUNKS = 64          # fixed (thread-count independent) split of the codeword groups
PARALLEL_MIN_BYTES = 1 << 20


class Code:
    """A SECDED code: `data_bits` k (a multiple of 8, at most 64) protected by `check_bits` r
    (r - 1 Hamming parity bits + 1 overall parity bit); n = k + r stored bits per codeword."""

    def __init__(self, name: str, data_bits: int, check_bits: int):
        k, r = int(data_bits), int(check_bits)
        if k % 8 or not 0 < k <= 64 or (1 << (r - 1)) < k + r:
            raise InputError(f"no SECDED code with {k} data and {r} check bits")
        self.name, self.data_bits, self.check_bits = name, k, r
        self.n = k + r
        # codewords per block of whole 64-bit words of the stored image (the unit of comparison)
        self.block_words = 64 // gcd(self.n, 64)
        self.block_bytes = self.n * self.block_words // 8
        self.data_positions = np.array([p for p in range(3, k + r) if p & (p - 1)][:k],
                                       dtype=np.int64)
        # syndrome contribution of each data byte value: table[j, v] = XOR of the positions of
        # the set bits of v placed as data byte j
        table = np.zeros((k // 8, 256), dtype=np.int64)
        for j in range(k // 8):
            for v in range(256):
                s = 0
                for i in range(8):
                    if v >> i & 1:
                        s ^= int(self.data_positions[8 * j + i])
                table[j, v] = s
        self.syndrome_table = table
        # what a syndrome means: data bit index to flip, -1: a check bit (data stay), -2: no
        # such position (an uncorrectable pattern, detected)
        target = np.full(1 << (r - 1), -2, dtype=np.int64)
        target[0] = -1
        for t in range(r - 1):
            target[1 << t] = -1
        target[self.data_positions] = np.arange(k)
        self.syndrome_target = target

    @property
    def overhead(self) -> float:
        """Stored bits per data bit: n / k (72/64, 13/8): the cells read per data bit."""
        return self.n / self.data_bits

    def padded_bytes(self, data_bytes: int) -> int:
        """Data bytes after padding to whole blocks (64 bytes)."""
        per = self.block_words * self.data_bits // 8
        return -(-int(data_bytes) // per) * per

    def stored_bytes(self, data_bytes: int) -> int:
        """Bytes of the stored image (data + check bits) of `data_bytes` data bytes."""
        per = self.block_words * self.data_bits // 8
        return self.padded_bytes(data_bytes) // per * self.block_bytes

    def __repr__(self) -> str:
        return f"Code({self.name!r}: ({self.n}, {self.data_bits}) SECDED)"


CODES = {"secded72": Code("secded72", 64, 8), "secded13": Code("secded13", 8, 5)}


def get_code(code: str | Code, what: str = "--ecc") -> Code:
    """A `Code` by name; an unknown name is an InputError naming `what` and the choices."""
    if isinstance(code, Code):
        return code
    if code not in CODES:
        raise InputError(f"{what} {code!r}: unknown code; use one of {', '.join(CODES)}")
    return CODES[code]


def check_policy(policy: str, what: str = "--ecc-policy") -> str:
    """`policy` if it is 'keep' or 'zero', else an InputError naming `what`."""
    return check_choice(policy, POLICIES, what)


@dataclass(frozen=True)
class EccStats:
    """What the decoder did to one read of the memory.

    faulty_words: codewords with at least one stored bit differing from the clean codeword;
    corrected: of those, words decoded to the clean data; detected: words the decoder flagged
    uncorrectable (two errors, or a syndrome that points nowhere); miscorrected: words decoded
    without a flag to data that differ from the clean data (3+ errors miscorrected, or 4+ missed).
    faulty_words = corrected + detected + miscorrected.
    """

    words: int
    faulty_words: int = 0
    corrected: int = 0
    detected: int = 0
    miscorrected: int = 0

    def as_dict(self) -> dict:
        """The counts as a JSON-ready dict."""
        return asdict(self)


# ------------------------------------------------------------------------------ kernels

@njit(cache=True, inline="always")
def _get_bits(a: np.ndarray, pos: int, nbits: int) -> np.uint64:
    """Bits [pos, pos + nbits) of the little-endian bit stream `a` as an integer (nbits <= 64)."""
    v = np.uint64(0)
    b = pos >> 3
    have = -(pos & 7)
    while have < nbits:
        x = np.uint64(a[b])
        if have < 0:
            v = x >> np.uint64(-have)
        else:
            v |= x << np.uint64(have)
        have += 8
        b += 1
    if nbits < 64:
        v &= (np.uint64(1) << np.uint64(nbits)) - np.uint64(1)
    return v


@njit(cache=True, inline="always")
def _get_xor_bits(a: np.ndarray, b: np.ndarray, pos: int, nbits: int) -> np.uint64:
    """`_get_bits` of the stream a ^ b (without forming it)."""
    v = np.uint64(0)
    i = pos >> 3
    have = -(pos & 7)
    while have < nbits:
        x = np.uint64(a[i] ^ b[i])
        if have < 0:
            v = x >> np.uint64(-have)
        else:
            v |= x << np.uint64(have)
        have += 8
        i += 1
    if nbits < 64:
        v &= (np.uint64(1) << np.uint64(nbits)) - np.uint64(1)
    return v


@njit(cache=True, inline="always")
def _or_bits(a: np.ndarray, pos: int, nbits: int, v: np.uint64) -> None:
    """OR the nbits-bit value `v` into bits [pos, pos + nbits) of `a` (the bits must be zero)."""
    b = pos >> 3
    sh = pos & 7
    a[b] |= np.uint8((v << np.uint64(sh)) & np.uint64(0xFF))
    done = 8 - sh
    b += 1
    while done < nbits:
        a[b] |= np.uint8((v >> np.uint64(done)) & np.uint64(0xFF))
        done += 8
        b += 1


@njit(cache=True, inline="always")
def _parity(x: np.uint64) -> np.uint64:
    x ^= x >> np.uint64(32)
    x ^= x >> np.uint64(16)
    x ^= x >> np.uint64(8)
    x ^= x >> np.uint64(4)
    x ^= x >> np.uint64(2)
    x ^= x >> np.uint64(1)
    return np.int64(x & np.uint64(1))


@njit(cache=True, inline="always")
def _hamming(d: np.uint64, table: np.ndarray) -> np.int64:
    """XOR of the Hamming positions of the set data bits of `d`."""
    s = np.int64(0)
    for j in range(table.shape[0]):
        s ^= table[j, np.int64((d >> np.uint64(8 * j)) & np.uint64(0xFF))]
    return s


@njit(cache=True)
def _encode(data: np.ndarray, stored: np.ndarray, k: int, r: int, table: np.ndarray) -> None:
    """stored (zeroed) <- the codewords of `data` (a whole number of k-bit words)."""
    n = k + r
    top = np.uint64(r - 1)
    for w in range(data.shape[0] * 8 // k):
        d = _get_bits(data, w * k, k)
        c = np.uint64(_hamming(d, table))
        c |= np.uint64(_parity(d) ^ _parity(c)) << top
        _or_bits(stored, w * n, k, d)
        _or_bits(stored, w * n + k, r, c)


def _decode(faulty: np.ndarray, clean: np.ndarray, faulty64: np.ndarray, clean64: np.ndarray,
            zero: np.ndarray, out: np.ndarray, k: int, r: int, block_words: int,
            table: np.ndarray, target: np.ndarray, zero_policy: bool,
            counts: np.ndarray) -> None:
    """Decode the codewords of `faulty` that differ from `clean` into `out` (which already holds
    the clean data; bytes past its end are not written). faulty64/clean64: the same arrays
    viewed as uint64 (blocks are compared 64 bits at a time). counts[chunk] += (faulty words,
    corrected, detected, miscorrected). Each chunk owns whole blocks: thread-count independent.

    Every clean stored word is a codeword (syndrome 0, even parity), so by linearity the
    syndrome and parity the decoder computes on the faulty word are those of the error pattern
    e = faulty ^ clean: the kernel reads e only, and writes the data error left after decoding.
    """
    n = k + r
    kbytes = k // 8
    hmask = np.int64((1 << (r - 1)) - 1)
    block64 = n * block_words // 64
    n_blocks = faulty64.shape[0] // block64
    nout = out.shape[0]
    nchunks = counts.shape[0]
    for ch in prange(nchunks):
        for g in range(n_blocks * ch // nchunks, n_blocks * (ch + 1) // nchunks):
            base = g * block64
            diff = np.uint64(0)
            for t in range(block64):
                diff |= faulty64[base + t] ^ clean64[base + t]
            if diff == 0:
                continue
            for ww in range(block_words):
                w = g * block_words + ww
                ed = _get_xor_bits(faulty, clean, w * n, k)
                ec = _get_xor_bits(faulty, clean, w * n + k, r)
                if ed == 0 and ec == 0:
                    continue
                counts[ch, 0] += 1
                s = _hamming(ed, table) ^ (np.int64(ec) & hmask)
                detected = False
                if _parity(ed) ^ _parity(ec) == 1:
                    t = target[s]
                    if t >= 0:
                        ed ^= np.uint64(1) << np.uint64(t)
                    elif t == -2:
                        detected = True
                elif s != 0:
                    detected = True
                if detected:
                    counts[ch, 2] += 1
                    if zero_policy:
                        for j in range(kbytes):
                            i = w * kbytes + j
                            if i < nout:
                                out[i] = zero[i]
                        continue
                elif ed == 0:
                    counts[ch, 1] += 1
                    continue
                else:
                    counts[ch, 3] += 1
                for j in range(kbytes):           # the data error left: raw (detected, keep)
                    i = w * kbytes + j            # or after a miscorrection
                    if i < nout:
                        out[i] ^= np.uint8((ed >> np.uint64(8 * j)) & np.uint64(0xFF))


decode_kernel = njit(cache=True, parallel=True)(_decode)
decode_kernel_serial = njit(cache=True)(_decode)


# ------------------------------------------------------------------------------ the memory

def encode(code: str | Code, data: np.ndarray) -> np.ndarray:
    """The stored image (data + check bits, laid out as the module docstring says) of `data`."""
    code = get_code(code, "code")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1):
        raise InputTypeError("data must be a 1-D uint8 numpy array")
    padded = np.zeros(code.padded_bytes(data.size), dtype=np.uint8)
    padded[:data.size] = data
    stored = np.zeros(code.stored_bytes(data.size), dtype=np.uint8)
    _encode(padded, stored, code.data_bits, code.check_bits, code.syndrome_table)
    return stored


class EccMemory:
    """A data image stored under a SECDED code in a faulty memory, and read back through it.

    `data`: the clean data image (uint8); `zero`: the data image whose every code is the zero
    weight (needed by the 'zero' policy; default: all-zero bytes, right for symmetric codes).
    `stored` is the clean stored image: it is what a fault source's mapping places on the chip.
    Holds no scratch state: several threads may read through one EccMemory at once.
    """

    def __init__(self, data: np.ndarray, code: str | Code, zero: np.ndarray | None = None):
        self.code = get_code(code)
        self.stored = encode(self.code, data)
        self.stored.setflags(write=False)
        self.data = data
        size = self.code.padded_bytes(data.size)
        self.zero = np.zeros(size, dtype=np.uint8)
        if zero is not None:
            if zero.shape != data.shape or zero.dtype != np.uint8:
                raise InputError("zero must be a uint8 array shaped like the data image")
            self.zero[:data.size] = zero
        self.zero.setflags(write=False)
        self.words = size * 8 // self.code.data_bits

    @property
    def n_bits(self) -> int:
        """Bits of the stored image (what a random fault source draws over)."""
        return self.stored.size * 8

    def read(self, source: FaultSource, voltage: float | None = None, offset: int = 0,
             policy: str = "keep",
             out: np.ndarray | None = None,
             scratch: np.ndarray | None = None) -> tuple[np.ndarray, EccStats]:
        """(data image read back through `source` and the decoder, what the decoder did).

        source: as `sramsim.inject.mapping.apply_faults` (a Chip at `voltage` placed at `offset`
        chip words, RandomBitErrors over the stored bits, or Faults addressed into the stored
        image); the faults land on the stored image. `scratch` (stored-sized uint8) receives
        the faulty stored image when given.
        """
        check_policy(policy, "policy")
        stored = apply_faults(self.stored, source, voltage, offset, scratch)
        return self.decode(stored, policy, out)

    def decode(self, stored: np.ndarray, policy: str = "keep",
               out: np.ndarray | None = None) -> tuple[np.ndarray, EccStats]:
        """Decode a (faulty) stored image into the data image (`out` when given)."""
        check_policy(policy, "policy")
        if not (isinstance(stored, np.ndarray) and stored.dtype == np.uint8
                and stored.shape == self.stored.shape):
            raise InputError(f"stored must be a uint8 array of {self.stored.size} bytes")
        if out is None:
            out = np.empty_like(self.data)
        elif not isinstance(out,
                            np.ndarray) or out.shape != self.data.shape or out.dtype != np.uint8:
            raise InputError("out must be a uint8 array shaped like the data image")
        np.copyto(out, self.data)
        counts = np.zeros((DECODE_CHUNKS, 4), dtype=np.int64)
        c = self.code
        kernel = decode_kernel if stored.size >= PARALLEL_MIN_BYTES else decode_kernel_serial
        kernel(stored, self.stored, stored.view(np.uint64), self.stored.view(np.uint64), self.zero,
               out, c.data_bits, c.check_bits, c.block_words, c.syndrome_table,
               c.syndrome_target, policy == "zero", counts)
        f, corrected, detected, mis = (int(x) for x in counts.sum(axis=0))
        return out, EccStats(self.words, f, corrected, detected, mis)

    def __repr__(self) -> str:
        return (f"EccMemory({self.code.name}, {self.data.size} data bytes -> "
                f"{self.stored.size} stored bytes)")


def zero_image(qm: QuantizedModel) -> np.ndarray:
    """The data image of `qm` (a QuantizedModel) with every weight the code nearest 0.0 of its
    tensor's scheme (0 for symmetric; for asymmetric/rquant round(-lo/delta), clamped)."""
    import torch

    from sramsim.inject import quantization as Q
    codes = torch.cat([Q.quantize(torch.zeros(s.count), s.quant) for s in qm.segments])
    packed = Q.pack(codes, qm.bits).numpy()
    out = np.zeros_like(qm.image)
    out[:packed.size] = packed
    return out


def protect(qm: QuantizedModel, code: str | Code) -> EccMemory:
    """`qm`'s memory image stored under `code`, with its zero image for the 'zero' policy."""
    return EccMemory(qm.image, code, zero_image(qm))
