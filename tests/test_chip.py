"""Chips: exact bits on hand-made maps, nesting, statistics, determinism, voltage bounds."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from conftest import naive_apply
from sramsim import BerCurve, Chip, Faults, Geometry, RandomBitErrors, VoltageError
from sramsim.inject.mapping import apply_faults

FINFET = BerCurve.builtin("finfet14")


def tiny_chip() -> Chip:
    """32 bits = 4 bytes: a flip at bit 3 (fails <= 0.9), stuck0 at bit 9 (<= 0.8), stuck1 at 17 (<= 0.7)."""
    return Chip(Geometry(rows=2, cols=16), address=np.array([3, 9, 17], np.uint64),
                vfail=np.array([0.9, 0.8, 0.7], np.float32), kind=np.array([0, 1, 2], np.uint8),
                v_floor=0.7)


def test_faults_prefix_and_kinds():
    chip = tiny_chip()
    assert len(chip.faults(1.0)) == 0
    assert chip.faults(0.9).address.tolist() == [3]
    assert chip.faults(0.85).address.tolist() == [3]
    assert chip.faults(0.8).address.tolist() == [3, 9]
    f = chip.faults(0.7)
    assert f.address.tolist() == [3, 9, 17] and f.kind.tolist() == [0, 1, 2]
    assert chip.ber(0.7) == 3 / 32
    with pytest.raises(VoltageError, match="below"):
        chip.faults(0.69)


def test_exact_bits_each_kind():
    chip = tiny_chip()
    image = np.array([0x00, 0xFF, 0x00, 0xAA], np.uint8)
    # bit 3 of byte 0 flips 0 -> 1; bit 1 of byte 1 stuck at 0 clears it; bit 1 of byte 2 stuck at 1 sets it
    assert chip_apply(image, chip, 0.7).tolist() == [0x08, 0xFD, 0x02, 0xAA]
    # stuck-at only changes bits that differ: stuck0 on a 0, stuck1 on a 1 are invisible
    image2 = np.array([0x08, 0x00, 0x02, 0x00], np.uint8)
    assert chip_apply(image2, chip, 0.7).tolist() == [0x00, 0x00, 0x02, 0x00]
    # at 0.85 only the flip is present
    assert chip_apply(image, chip, 0.85).tolist() == [0x08, 0xFF, 0x00, 0xAA]


def chip_apply(image, chip, v, offset=0):
    out = apply_faults(image, chip, v, offset)
    assert out is not image
    return out


@pytest.mark.parametrize("offset", [0, 1, 3, 4, 7])
@pytest.mark.parametrize("size", [3, 4, 10, 37])
def test_tiling_and_offset_match_reference(offset, size):
    chip = tiny_chip()
    rng = np.random.default_rng(size * 10 + offset)
    image = rng.integers(0, 256, size).astype(np.uint8)
    before = image.copy()
    out = chip_apply(image, chip, 0.7, offset)
    expected = naive_apply(image, {3: 0, 9: 1, 17: 2}, capacity_bytes=4, offset_bytes=offset % 4)
    assert np.array_equal(out, expected)
    assert np.array_equal(image, before), "clean image must never change"


def test_word_bits_16_offsets_in_words():
    """offset counts memory words; with 16-bit words one word is 2 bytes."""
    geo = Geometry(rows=2, cols=32, word_bits=16)  # 64 bits = 4 words = 8 bytes
    chip = Chip(geo, np.array([0, 15, 16, 63], np.uint64), np.full(4, 0.9, np.float32),
                np.zeros(4, np.uint8), v_floor=0.8)
    image = np.zeros(12, np.uint8)
    out = chip_apply(image, chip, 0.9, offset=1)
    fault_bits = {0: 0, 15: 0, 16: 0, 63: 0}
    assert np.array_equal(out, naive_apply(image, fault_bits, capacity_bytes=8, offset_bytes=2))
    # word k of the image sits at chip word k+1: chip bit 16 (word 1, bit 0) hits image byte 0 bit 0
    assert out[0] == 0x01


def test_mask_cache_builds_incrementally_and_matches_fresh():
    chip = Chip.random(Geometry(64, 64), FINFET, 0.75, seed=3, kinds={"flip": 1, "stuck0": 1, "stuck1": 1})
    image = np.random.default_rng(0).integers(0, 256, 1500).astype(np.uint8)
    voltages = [0.95, 0.9, 0.85, 0.8, 0.75, 0.82]
    swept = [chip_apply(image, chip, v, 5) for v in voltages]
    fresh = Chip(chip.geometry, chip.address, chip.vfail, chip.kind, chip.v_floor)
    for v, got in zip(voltages, swept):
        fresh._mask_cache.clear()
        f = chip.faults(v)
        ref = naive_apply(image, dict(zip(f.address.tolist(), f.kind.tolist())),
                          chip.geometry.capacity_bytes, 5)
        assert np.array_equal(got, ref)
        assert np.array_equal(chip_apply(image, fresh, v, 5), ref)


def test_nesting_over_many_voltages():
    chip = Chip.random(Geometry(256, 128), FINFET, 0.75, seed=1)
    voltages = np.linspace(1.0, 0.75, 60)
    previous = set()
    for v in voltages:  # descending: the fault set can only grow
        current = set(chip.faults(v).address.tolist())
        assert previous <= current
        previous = current
    assert np.all(np.diff(chip.vfail) <= 0)
    assert len(np.unique(chip.address)) == len(chip)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31), v_hi=st.floats(0.75, 1.0), v_lo=st.floats(0.75, 1.0))
def test_nesting_property(seed, v_hi, v_lo):
    v_hi, v_lo = max(v_hi, v_lo), min(v_hi, v_lo)
    chip = Chip.random(Geometry(32, 64), FINFET, 0.75, seed=seed)
    hi, lo = chip.faults(v_hi), chip.faults(v_lo)
    assert np.isin(hi.address, lo.address).all()
    assert np.all(chip.vfail[:len(hi)] >= np.float32(v_hi)) and np.all(chip.vfail[len(hi):] < v_hi)


def binomial_ok(count: int, n: int, p: float, level: float = 0.999) -> bool:
    lo, hi = stats.binom.interval(level, n, p)
    return lo <= count <= hi


def test_empirical_ber_inside_binomial_interval():
    geo = Geometry(rows=8192, cols=1280)          # 10,485,760 bits
    chip = Chip.random(geo, FINFET, 0.75, seed=7)
    for v in [0.958, 0.917, 0.9, 0.875, 0.85, 0.833, 0.8, 0.792, 0.75]:
        p = FINFET.ber(v)
        assert binomial_ok(chip.count(v), geo.capacity_bits, p), (v, chip.count(v) / geo.capacity_bits, p)


def test_kind_proportions():
    chip = Chip.random(Geometry(1024, 1024), FINFET, 0.8, seed=2,
                       kinds={"flip": 0.5, "stuck0": 0.3, "stuck1": 0.2})
    n = len(chip)
    counts = chip.faults(0.8).counts()
    for name, share in {"flip": 0.5, "stuck0": 0.3, "stuck1": 0.2}.items():
        assert binomial_ok(counts[name], n, share), (name, counts[name] / n)


def test_random_bit_errors_match_chip_statistics():
    nbits = 10_485_760
    rbe = RandomBitErrors(0.01, kinds={"flip": 0.6, "stuck1": 0.4}, seed=4)
    counts = []
    for _ in range(3):
        f = rbe.draw(nbits)
        assert np.all(np.diff(f.address.astype(np.int64)) > 0) and f.address[-1] < nbits
        assert binomial_ok(len(f), nbits, 0.01)
        assert binomial_ok(f.counts()["stuck1"], len(f), 0.4)
        counts.append(len(f))
    assert len(set(counts)) == 3, "each draw is a fresh pattern"
    # same seed -> same sequence of patterns
    a, b = RandomBitErrors(0.01, seed=9), RandomBitErrors(0.01, seed=9)
    assert np.array_equal(a.draw(10_000).address, b.draw(10_000).address)


def test_random_errors_exact_application_and_ber():
    image = np.random.default_rng(1).integers(0, 256, 1_400_000).astype(np.uint8)
    rbe = RandomBitErrors(0.02, kinds={"flip": 1.0}, seed=5)
    out = apply_faults(image, rbe)
    flipped = int(np.unpackbits(out ^ image).sum())
    assert binomial_ok(flipped, image.size * 8, 0.02)
    f = Faults(np.array([0, 7, 8, 9], np.uint64), np.array([0, 2, 1, 0], np.uint8))
    small = np.array([0x00, 0xFF, 0x10], np.uint8)
    ref = naive_apply(small, {0: 0, 7: 2, 8: 1, 9: 0}, capacity_bytes=3)
    assert np.array_equal(apply_faults(small, f), ref)
    # unsorted explicit faults give the same result
    f2 = Faults(f.address[::-1].copy(), f.kind[::-1].copy())
    assert np.array_equal(apply_faults(small, f2), ref)
    with pytest.raises(ValueError, match="beyond"):
        apply_faults(small, Faults(np.array([24], np.uint64), np.zeros(1, np.uint8)))


def test_same_seed_same_chip_and_different_seed_differs():
    geo = Geometry(512, 128)
    a = Chip.random(geo, FINFET, 0.75, seed=11)
    b = Chip.random(geo, FINFET, 0.75, seed=11)
    c = Chip.random(geo, FINFET, 0.75, seed=12)
    assert a.same_faults(b) and not a.same_faults(c)


def test_chip_below_floor_and_bad_voltage():
    chip = Chip.random(Geometry(64, 64), FINFET, 0.8, seed=0)
    with pytest.raises(VoltageError, match="v_floor 0.8"):
        chip.ber(0.79)
    with pytest.raises(VoltageError):
        chip.faults(float("nan"))
    with pytest.raises(ValueError):
        apply_faults(np.zeros(4, np.uint8), chip)  # a chip needs a voltage


def test_geometry_validation_and_split():
    g = Geometry(rows=4, cols=8, banks=2)
    assert g.capacity_bits == 64 and g.capacity_words == 8
    bank, row, col = g.split(np.array([((1 * 4) + 2) * 8 + 5], np.uint64))
    assert (bank[0], row[0], col[0]) == (1, 2, 5)
    with pytest.raises(ValueError):
        Geometry(rows=0, cols=8)
    with pytest.raises(ValueError):
        Geometry(rows=1, cols=8, word_bits=12)
