"""Chips: exact bits on hand-made maps, nesting, statistics, determinism, voltage bounds."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from conftest import naive_apply
from sramsim import BerCurve, Chip, Faults, Geometry, RandomBitErrors, VoltageError
from sramsim.errors import InputError
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


# --- constructor invariants (one O(n) pass, first bad index named) ---------------------------------
GOOD = dict(address=[3, 9, 17], vfail=[0.9, 0.8, 0.7], kind=[0, 1, 2])
BROKEN = {
    "unsorted vfail": (dict(vfail=[0.8, 0.9, 0.7]), r"sorted descending; first bad fault: vfail\[1\]"),
    "NaN vfail": (dict(vfail=[0.9, np.nan, 0.7]), r"vfail must be finite; first bad fault: vfail\[1\]"),
    "address = capacity": (dict(address=[3, 32, 17]), r"below the capacity; .*address\[1\] = 32 >= capacity 32"),
    "repeated address": (dict(address=[3, 9, 3]), r"distinct; first bad fault: address\[2\] = 3"),
    "kind code 3": (dict(kind=[0, 3, 2]), r"kind codes .*; first bad fault: kind\[1\] = 3"),
    "vfail above nominal": (dict(vfail=[1.2, 0.8, 0.7]), r"exceed the nominal voltage 1; .*vfail\[0\]"),
    "vfail below floor": (dict(vfail=[0.9, 0.8, 0.6]), r"below v_floor 0.7; first bad fault: vfail\[2\]"),
    "float address": (dict(address=[3.0, 9.5, 17.0]), "address must be integers"),
    "negative address": (dict(address=[3, -9, 17]), r"non-negative, got -9 at index 1"),
    "length mismatch": (dict(kind=[0, 1]), "equal length"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_constructor_refuses_each_broken_invariant(what):
    change, message = BROKEN[what]
    fields = {**GOOD, **change}
    with pytest.raises(InputError, match=message):
        Chip(Geometry(rows=2, cols=16), np.asarray(fields["address"]),
             np.asarray(fields["vfail"], np.float32), np.asarray(fields["kind"]), v_floor=0.7)


def test_unsorted_vfail_no_longer_miscounts():
    """Before: count(0.9) searched an unsorted vfail and counted the 0.8 cell as faulty."""
    with pytest.raises(InputError, match="sorted descending"):
        Chip(Geometry(2, 16), np.array([3, 9], np.uint64), np.float32([0.8, 0.9]),
             np.zeros(2, np.uint8), v_floor=0.7)


def test_repeats_found_on_huge_sparse_chips_too():
    """Capacity 1.28e14 bits: repeats are found with a hash set (no capacity-sized bitset)."""
    geo = Geometry(10 ** 12, 128)
    addresses = np.array([5, 10 ** 13, 7, 2 ** 40, 10 ** 13 + 1], np.uint64)
    assert len(Chip(geo, addresses, np.full(5, 0.8, np.float32), np.zeros(5, np.uint8), 0.8)) == 5
    with pytest.raises(InputError, match=r"address\[5\] = 1099511627776 appeared earlier"):
        Chip(geo, np.r_[addresses, addresses[3:4]], np.full(6, 0.8, np.float32),
             np.zeros(6, np.uint8), 0.8)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 63), min_size=1, max_size=40))
def test_repeat_check_matches_a_naive_reference(addresses):
    n = len(addresses)
    args = (Geometry(4, 16), np.array(addresses, np.uint64), np.full(n, 0.9, np.float32),
            np.zeros(n, np.uint8), 0.9)
    seen, first_repeat = set(), None
    for i, a in enumerate(addresses):
        if a in seen and first_repeat is None:
            first_repeat = i
        seen.add(a)
    if first_repeat is None:
        assert len(Chip(*args)) == n
    else:
        with pytest.raises(InputError, match=rf"address\[{first_repeat}\] = "):
            Chip(*args)


def test_floor_and_nominal_of_the_constructor():
    with pytest.raises(InputError, match="v_floor must be a positive voltage at most the nominal"):
        Chip(Geometry(2, 16), [], [], [], v_floor=1.5)
    with pytest.raises(InputError, match="nominal_voltage must be a positive number"):
        Chip(Geometry(2, 16), [], [], [], v_floor=0.5, nominal_voltage=float("nan"))
    with pytest.raises(InputError, match="at most the nominal 1.0"):
        Chip.random(Geometry(8, 8), FINFET, 1.5, seed=0)
    # Gaussian cells can fail above nominal: recorded as failing at nominal (same faults at V <= 1)
    chip = Chip.random(Geometry(4096, 1024), BerCurve.gaussian(0.9, 0.03), 0.9, seed=0)
    assert chip.vfail[0] == np.float32(1.0) and chip.count(1.0) > 0


# --- equality -----------------------------------------------------------------------------------
def test_chip_equality():
    a = Chip.random(Geometry(64, 64), FINFET, 0.75, seed=3)
    b = Chip.random(Geometry(64, 64), FINFET, 0.75, seed=3)
    assert a == b and not (a != b)
    assert a != Chip.random(Geometry(64, 64), FINFET, 0.75, seed=4)
    assert a != Chip.random(Geometry(64, 64), FINFET, 0.76, seed=3)
    renamed = Chip(a.geometry, a.address, a.vfail, a.kind, a.v_floor, name="other", curve=a.curve,
                   attrs=dict(a.attrs))
    assert renamed != a and renamed.same_faults(a)
    assert Chip(a.geometry, a.address, a.vfail, a.kind, a.v_floor, name=a.name, curve=a.curve,
                attrs=dict(a.attrs)) == a
    assert tiny_chip() == tiny_chip() and tiny_chip() != a and a != "chip"
    a.byte_masks(0.8)                       # the mask cache is not part of the value
    assert a == b


# --- geometry and seeds: refused, never coerced -------------------------------------------------------
@pytest.mark.parametrize("rows", [True, 128.0, 128.5, "128", None, 0, -4])
def test_geometry_refuses_bools_and_non_integers(rows):
    with pytest.raises(InputError, match="geometry rows must be a positive integer"):
        Geometry(rows, 128)


def test_geometry_takes_numpy_integers():
    g = Geometry(np.int32(4), np.uint64(8), np.int64(2))
    assert g == Geometry(4, 8, 2) and type(g.rows) is int and g.capacity_bits == 64


@pytest.mark.parametrize("seed", [1.5, 2.0, "3", True, -1, None])
def test_seeds_must_be_non_negative_integers(seed):
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        Chip.random(Geometry(8, 8), FINFET, 0.8, seed=seed)
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        RandomBitErrors(0.1, seed=seed)
    assert RandomBitErrors(0.1, seed=np.int64(3)).seed == 3


# --- layering and documentation of sramsim.memory --------------------------------------------------
MEMORY_MODULES = ["chip", "curves", "geometry", "kernels", "profile_file", "profiles",
                  "random_errors", "sampling", "sizes"]


def test_every_public_name_of_the_memory_layer_has_a_docstring():
    import importlib
    import inspect
    missing = []
    for m in MEMORY_MODULES:
        mod = importlib.import_module(f"sramsim.memory.{m}")
        if not (mod.__doc__ or "").strip():
            missing.append(m)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or hasattr(obj, "py_func")):
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{m}.{name}")
            for key, value in (vars(obj).items() if inspect.isclass(obj) else ()):
                f = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                if not key.startswith("_") and (isinstance(f, property) or inspect.isfunction(f)) \
                        and not (f.__doc__ or "").strip():
                    missing.append(f"{m}.{name}.{key}")
    assert missing == []


def test_byte_faults_by_voltage_is_the_counted_lookup():
    # a voltage asked for before is looked up by its value: the same faults as counting, never
    # a voltage that was refused, and nothing the LRU cache has let go
    import pickle
    curve = BerCurve.builtin("finfet14")
    chip = Chip.random(Geometry(64, 64), curve, 0.75, seed=5)
    first = chip.byte_faults(0.8)
    assert chip.byte_faults(0.8) is first
    assert chip.byte_faults(np.float64(0.8)) is first
    fresh = Chip.random(Geometry(64, 64), curve, 0.75, seed=5)
    for v in (0.8, 0.76, np.float32(0.76), 0.75):
        got, ref = chip.byte_faults(v), fresh.byte_faults(v)
        assert np.array_equal(got.byte, ref.byte) and np.array_equal(got.xor, ref.xor)
        assert len(got) <= len(chip.faults(float(v)))
    for bad in (float("nan"), 0.1, 2.0):
        with pytest.raises(VoltageError):
            chip.byte_faults(bad)
    with pytest.raises((VoltageError, TypeError)):
        chip.byte_faults([0.8])                         # unhashable: refused by the count
    for v in np.linspace(0.99, 0.75, 4 * Chip.MASK_CACHE_SIZE):   # more voltages than cached
        chip.byte_faults(float(v))
    held = {id(faults) for _, faults in chip._sorted_cache.values()}
    assert {id(faults) for faults in chip._sorted_at.values()} <= held
    assert pickle.loads(pickle.dumps(chip))._sorted_at == {}
