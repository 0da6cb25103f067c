"""Property-based tests (hypothesis): what hand-picked cases miss.

- the numba kernels against plain Python/numpy references on random images, masks, offsets and
  tilings (image larger and smaller than the chip, offsets beyond its capacity);
- the torch backend against the numba path, bit for bit, for random-error and chip draws;
- quantize -> dequantize -> quantize round trips for sramsim's own schemes at every bit width
  (also through a QuantizedModel with 16-bit words), pack/unpack round trips;
- random chips through save/load.
Array contents come from a numpy generator seeded by hypothesis (fast to draw, still shrinkable
through the seed and the sizes).
"""
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from conftest import naive_apply
from sramsim import BerCurve, Chip, Faults, Geometry, QuantizedModel
from sramsim.inject import image_kernels as kernels
from sramsim.inject import quantization as Q
from sramsim.inject.draws import ChipDraw, RandomSampler, apply_numpy
from sramsim.inject.mapping import apply_faults
from sramsim.inject.torch_backend import TorchApplier
from sramsim.memory import kernels as memory_kernels

FAST = settings(max_examples=25, deadline=None)
SEEDS = st.integers(0, 2 ** 32 - 1)
KINDS = st.sampled_from([{"flip": 1.0}, {"stuck0": 1.0}, {"stuck1": 1.0},
                         {"flip": 1.0, "stuck0": 1.0, "stuck1": 1.0}, {"flip": 3.0, "stuck1": 1.0},
                         {"stuck0": 1.0, "stuck1": 1.0}])


def naive_bit_faults(image: np.ndarray, address, kind) -> np.ndarray:
    """One fault at a time, in plain Python: flip XOR, stuck0 AND-NOT, stuck1 OR."""
    out = image.copy()
    for a, k in zip(address.tolist(), kind.tolist()):
        bit = 1 << (a & 7)
        if k == 0:
            out[a >> 3] ^= bit
        elif k == 1:
            out[a >> 3] &= ~bit & 0xFF
        else:
            out[a >> 3] |= bit
    return out


def distinct_sorted(rng, n_max: int, limit: int) -> np.ndarray:
    """Up to n_max distinct ascending addresses in [0, limit)."""
    n = int(rng.integers(0, min(n_max, limit) + 1))
    return np.sort(rng.choice(limit, n, replace=False)).astype(np.uint64)


# --- streaming kernels ---------------------------------------------------------------------------
# Images up to ~3 parallel blocks (kernels.BLOCK = 64 KiB), chips from 1 byte up to bigger than
# the image, offsets up to 3 chip capacities.
IMAGE_BYTES = st.one_of(st.integers(1, 300), st.integers(kernels.BLOCK - 50, 3 * kernels.BLOCK + 7))
CHIP_BYTES = st.one_of(st.integers(1, 64), st.integers(65, 5000), st.integers(100_000, 250_000))


@FAST
@given(n=IMAGE_BYTES, c=CHIP_BYTES, offset_tiles=st.floats(0, 3), seed=SEEDS)
def test_tiled_kernels_equal_numpy_reference(n, c, offset_tiles, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, n, dtype=np.uint8)
    x, clear, set_ = (rng.integers(0, 256, c, dtype=np.uint8) for _ in range(3))
    offset = int(offset_tiles * c)
    idx = (np.arange(n) + offset) % c
    want_xor = image ^ x[idx]
    want_all = ((image ^ x[idx]) & ~clear[idx]) | set_[idx]
    for kernel in (kernels.apply_xor_tiled, kernels.apply_xor_tiled_serial):
        out = np.empty_like(image)
        kernel(image, out, x, offset)
        assert np.array_equal(out, want_xor)
    for kernel in (kernels.apply_masks_tiled, kernels.apply_masks_tiled_serial):
        out = np.empty_like(image)
        kernel(image, out, x, clear, set_, offset)
        assert np.array_equal(out, want_all)


@FAST
@given(n=st.one_of(st.integers(1, 200), st.integers(5000, 40_000)),
       max_faults=st.sampled_from([0, 1, 5, 63, 64, 65, 500, 3000]), dense=st.booleans(), seed=SEEDS)
def test_sparse_kernels_equal_python_reference(n, max_faults, dense, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, n, dtype=np.uint8)
    # dense: all faults in the first few bytes (many per byte, chunk borders inside runs)
    address = distinct_sorted(rng, max_faults, min(n * 8, 64) if dense else n * 8)
    kind = rng.integers(0, 3, address.size, dtype=np.uint8)
    want = naive_bit_faults(image, address, kind)
    for kernel in (kernels.apply_sparse_inplace, kernels.apply_sparse_inplace_serial):
        out = image.copy()
        kernel(out, address, kind)
        assert np.array_equal(out, want)
    want_flips = naive_bit_faults(image, address, np.zeros_like(kind))
    for kernel in (kernels.apply_sparse_flips_inplace, kernels.apply_sparse_flips_inplace_serial):
        out = image.copy()
        kernel(out, address)
        assert np.array_equal(out, want_flips)


@FAST
@given(c=st.integers(1, 3000), max_faults=st.integers(0, 2000), split=st.floats(0, 1), seed=SEEDS)
def test_build_byte_masks_equals_python_reference_also_built_in_two_steps(c, max_faults, split, seed):
    rng = np.random.default_rng(seed)
    address = distinct_sorted(rng, max_faults, c * 8)
    address = address[rng.permutation(address.size)]          # any order: masks are ORs
    kind = rng.integers(0, 3, address.size, dtype=np.uint8)
    want = [np.zeros(c, np.uint8) for _ in range(3)]
    for a, k in zip(address.tolist(), kind.tolist()):
        want[k][a >> 3] |= 1 << (a & 7)
    once = [np.zeros(c, np.uint8) for _ in range(3)]
    memory_kernels.build_byte_masks(address, kind, *once)
    twice = [np.zeros(c, np.uint8) for _ in range(3)]
    cut = int(split * address.size)
    memory_kernels.build_byte_masks(address[:cut], kind[:cut], *twice)
    memory_kernels.build_byte_masks(address[cut:], kind[cut:], *twice)
    for a, b, w in zip(once, twice, want):
        assert np.array_equal(a, w) and np.array_equal(b, w)


@FAST
@given(p=st.floats(1e-4, 0.9), limit=st.integers(1, 20_000), start=st.integers(-1, 50),
       draws=st.integers(0, 400), cut=st.floats(0, 1), seed=SEEDS)
def test_geometric_positions_equal_python_reference_and_resume(p, limit, start, draws, cut, seed):
    rng = np.random.default_rng(seed)
    e = rng.standard_exponential(draws)
    rate = -np.log1p(-p)
    # reference: the documented gap 1 + floor(E / rate), stopping at the first position >= limit
    want, cur, finished = [], float(start), False
    for x in e.tolist():
        cur += 1.0 + np.floor(x * (1.0 / rate))
        if cur >= limit:
            finished = True
            break
        want.append(int(cur))
    pos, last, done = memory_kernels.geometric_positions(e, rate, float(limit), float(start))
    assert pos.dtype == np.uint64 and pos.tolist() == want
    assert done == finished and last == cur
    assert np.all(np.diff(pos.astype(np.int64)) >= 1) and all(start < q < limit for q in want)
    # drawing in two calls (resuming at the last position) gives the same positions
    k = int(cut * draws)
    first, mid, done1 = memory_kernels.geometric_positions(e[:k], rate, float(limit), float(start))
    if done1:
        assert first.tolist() == want
    else:
        rest, _, _ = memory_kernels.geometric_positions(e[k:], rate, float(limit), mid)
        assert first.tolist() + rest.tolist() == want


# --- chips and random errors on an image, through the mapping -------------------------------------
def random_chip(rng, rows: int, cols: int, word_bits: int, max_faults: int, banks: int = 1) -> Chip:
    """A chip from arrays: distinct addresses, vfail descending (ties allowed), random kinds."""
    g = Geometry(rows, cols, banks, word_bits)
    address = distinct_sorted(rng, max_faults, g.capacity_bits)
    address = address[rng.permutation(address.size)]
    vfail = np.sort(rng.choice([0.95, 0.9, 0.85, 0.8], address.size).astype(np.float32))[::-1]
    kind = rng.integers(0, 3, address.size, dtype=np.uint8)
    return Chip(g, address, vfail, kind, v_floor=0.8, name="prop")


@settings(max_examples=30, deadline=None)
@given(image_bytes=st.integers(1, 700), rows=st.integers(1, 6), cols16=st.integers(1, 8),
       word_bits=st.sampled_from([8, 16]), voltage=st.sampled_from([0.95, 0.9, 0.85, 0.8]),
       offset_tiles=st.floats(0, 3), seed=SEEDS)
def test_chip_on_image_equals_bit_by_bit_reference(image_bytes, rows, cols16, word_bits, voltage,
                                                   offset_tiles, seed):
    rng = np.random.default_rng(seed)
    chip = random_chip(rng, rows, 16 * cols16, word_bits, 300)
    image_bytes += (-image_bytes) % (word_bits // 8)           # a whole number of words
    image = rng.integers(0, 256, image_bytes, dtype=np.uint8)
    g = chip.geometry
    offset = int(offset_tiles * g.capacity_words)
    f = chip.faults(voltage)
    fault_bits = dict(zip(f.address.tolist(), f.kind.tolist()))
    want = naive_apply(image, fault_bits, g.capacity_bytes, offset * (word_bits // 8))
    assert np.array_equal(apply_faults(image, chip, voltage, offset), want)
    # the same through a reused buffer, and with the offset as a numpy integer
    out = np.full_like(image, 0x5A)
    assert np.array_equal(apply_faults(image, chip, voltage, np.int64(offset), out=out), want)


@FAST
@given(n=st.integers(1, 3000), ber=st.floats(0, 0.3), kinds=KINDS, seed=SEEDS)
def test_fault_records_on_image_equal_python_reference(n, ber, kinds, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, n, dtype=np.uint8)
    faults = RandomSampler(ber, seed=seed, kinds=kinds).draw(n * 8)
    want = naive_bit_faults(image, faults.address, faults.kind)
    assert np.array_equal(apply_numpy(image, faults, np.empty_like(image)), want)
    # unsorted records (a Faults built by a user) are sorted first: same bytes
    order = rng.permutation(len(faults))
    shuffled = Faults(faults.address[order], faults.kind[order])
    assert np.array_equal(apply_faults(image, shuffled), want)


# --- torch backend vs numba --------------------------------------------------------------------
@FAST
@given(n=st.integers(1, 5000), ber=st.floats(0, 0.5), kinds=KINDS, draws=st.integers(1, 3),
       seed=SEEDS)
def test_torch_backend_equals_numba_for_random_errors(n, ber, kinds, draws, seed):
    image = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    applier = TorchApplier(torch.from_numpy(image.copy()))
    sampler = RandomSampler(ber, seed=seed, kinds=kinds)
    for _ in range(draws):
        faults = sampler.draw(n * 8)
        want = apply_numpy(image, faults, np.empty_like(image))
        got = applier(faults)
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)


@FAST
@given(image_words=st.integers(1, 3000), rows=st.integers(1, 40), word_bits=st.sampled_from([8, 16]),
       kinds=KINDS, voltages=st.lists(st.sampled_from([0.95, 0.9, 0.85, 0.8]), min_size=1, max_size=3),
       offsets=st.lists(st.integers(0, 10 ** 9), min_size=1, max_size=3), seed=SEEDS)
def test_torch_backend_equals_numba_for_chip_draws(image_words, rows, word_bits, kinds, voltages,
                                                   offsets, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, image_words * word_bits // 8, dtype=np.uint8)
    chip = Chip.random(Geometry(rows, 64, word_bits=word_bits), BerCurve.builtin("finfet14"),
                       v_floor=0.8, seed=seed, kinds=kinds)
    applier = TorchApplier(torch.from_numpy(image.copy()))
    for v in voltages:
        for off in offsets:                    # far beyond capacity: placed mod capacity_words
            draw = ChipDraw(chip, v, off)
            want = apply_numpy(image, draw, np.empty_like(image))
            assert np.array_equal(applier(draw).numpy(), want), (v, off)


# --- quantization round trips -------------------------------------------------------------------
# sramsim's own schemes round and re-derive the same range from their own output, so they round
# trip; the Stutz schemes (truncation, a 0.001 margin) have their own properties in
# tests/test_stutz_quantization.py
SCHEME = st.sampled_from(("symmetric", "asymmetric", "rquant"))
BITWIDTH = st.sampled_from(Q.BITS)


def random_weights(rng, n: int, scale: float, shift: float, constant: bool) -> torch.Tensor:
    if constant:
        return torch.full((n,), float(shift), dtype=torch.float32)
    return torch.from_numpy((rng.standard_normal(n) * scale + shift).astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(scheme=SCHEME, bits=BITWIDTH, n=st.integers(1, 2000), scale=st.floats(1e-3, 1e3),
       shift=st.floats(-2, 2), constant=st.booleans(), seed=SEEDS)
def test_quantize_dequantize_quantize_round_trip(scheme, bits, n, scale, shift, constant, seed):
    w = random_weights(np.random.default_rng(seed), n, scale, shift * scale, constant)
    q = Q.layer_params(w, bits, scheme)
    codes = Q.quantize(w, q)
    assert codes.dtype == torch.uint8 and int(codes.max()) < 2 ** bits
    values = Q.dequantize(codes, q)
    assert torch.equal(Q.quantize(values, q), codes)
    assert float((values - w).abs().max()) <= q.delta / 2 * (1 + 1e-5) + 1e-6 * float(w.abs().max())
    # every code a stored word can hold decodes to a value that re-encodes to a valid code,
    # and to itself unless it is the one a scheme never writes (symmetric -2**(m-1), rquant 2**m-1)
    all_codes = torch.arange(2 ** bits, dtype=torch.uint8)
    again = Q.quantize(Q.dequantize(all_codes, q), q)
    unused = {"symmetric": 2 ** (bits - 1), "asymmetric": None, "rquant": 2 ** bits - 1}[scheme]
    keep = all_codes != unused if unused is not None else torch.ones_like(all_codes, dtype=torch.bool)
    if scheme == "rquant" and q.hi == q.lo:            # a one-point range: every code reads lo
        assert torch.all(Q.dequantize(all_codes, q) == q.lo) and not torch.any(again)
    else:
        assert torch.equal(again[keep], all_codes[keep])


@settings(max_examples=30, deadline=None)
@given(bits=BITWIDTH, shape=st.tuples(st.integers(1, 6), st.integers(1, 300)), seed=SEEDS)
def test_pack_unpack_round_trip_for_one_image_and_a_stack(bits, shape, seed):
    k, n = shape
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (k, n), generator=g, dtype=torch.uint8)
    packed = torch.stack([Q.pack(row, bits) for row in codes])
    assert packed.shape == (k, -(-n // (8 // bits)))
    assert torch.equal(Q.unpack(packed, bits, n), codes)
    assert torch.equal(Q.unpack(packed[0], bits, n), codes[0])
    assert torch.equal(Q.pack(Q.unpack(packed[0], bits, n), bits), packed[0])


class TwoLayers(nn.Module):
    def __init__(self, a: int, b: int):
        super().__init__()
        self.conv = nn.Conv2d(1, a, 3)
        self.fc = nn.Linear(a, b)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@settings(max_examples=30, deadline=None)
@given(scheme=SCHEME, bits=BITWIDTH, word_bits=st.sampled_from([8, 16, 32]), a=st.integers(1, 7),
       b=st.integers(1, 9), include_bias=st.booleans(), clip=st.sampled_from([None, 0.2]),
       seed=SEEDS)
def test_quantized_model_round_trip(scheme, bits, word_bits, a, b, include_bias, clip, seed):
    torch.manual_seed(seed)
    model = TwoLayers(a, b)
    qm = QuantizedModel(model, bits=bits, scheme=scheme, clip=clip, include_bias=include_bias,
                        word_bits=word_bits)
    assert qm.image.size % (word_bits // 8) == 0 and qm.n_words * word_bits == qm.n_bits
    clean = qm.clean_weights()
    # the clean weights, quantized again with the same settings, give the same memory image
    again = TwoLayers(a, b)
    again.load_state_dict({**model.state_dict(), **clean})
    qm2 = QuantizedModel(again, bits=bits, scheme=scheme, clip=clip, include_bias=include_bias,
                         word_bits=word_bits)
    assert np.array_equal(qm2.image, qm.image)
    # which decodes to the same weights up to float rounding of the re-derived scale (the codes
    # are equal; delta and lo come from weights that are themselves rounded); a stack of the
    # image decodes to exact copies
    stack = qm.dequantize(torch.from_numpy(np.stack([qm.image] * 2)))
    clean2 = qm2.clean_weights()
    for name, w in clean.items():
        tol = 1e-5 * float(w.abs().max()) + 1e-12
        assert torch.allclose(clean2[name], w, rtol=0, atol=tol)
        assert torch.equal(stack[name][0], w) and torch.equal(stack[name][1], w)


# --- chips through save/load ---------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 64), cols8=st.integers(1, 32), banks=st.integers(1, 3),
       word_bits=st.sampled_from([8, 16]), v_floor=st.floats(0.75, 0.95), kinds=KINDS,
       seed=st.integers(0, 2 ** 31 - 1), from_arrays=st.booleans())
def test_random_chips_survive_save_and_load(rows, cols8, banks, word_bits, v_floor, kinds, seed,
                                            from_arrays):
    cols = 16 * cols8
    g = Geometry(rows, cols, banks, word_bits)
    if from_arrays:
        chip = random_chip(np.random.default_rng(seed), rows, cols, word_bits, 500, banks)
    else:
        chip = Chip.random(g, BerCurve.builtin("finfet14"), v_floor=v_floor, seed=seed, kinds=kinds)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chip.h5"
        chip.save(path)
        back = Chip.load(path)
    assert back.same_faults(chip) and back.geometry == chip.geometry
    assert back.address.dtype == np.uint64 and back.vfail.dtype == np.float32
    assert back.kind.dtype == np.uint8
    assert (back.name, back.source, back.voltage_unit) == (chip.name, chip.source, chip.voltage_unit)
    assert back.v_floor == chip.v_floor and back.nominal_voltage == chip.nominal_voltage
    for v in (0.95, max(0.85, chip.v_floor), chip.v_floor):
        assert back.count(v) == chip.count(v)
        assert np.array_equal(back.byte_masks(v).xor, chip.byte_masks(v).xor)
