"""In-place faulty weights (`sramsim.inject.inplace.faults_applied`): bit-identical to `perturbed` for every
scheme, bit width and word width with chips, random errors, fault records, faulty images and DRAM
placements; exact restoration (also when the block raises); exact small cases; bad input; and a
property test against the functional path."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import numba_thread_counts
from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.errors import InputError
from sramsim.inject import inplace
from sramsim.inject import quantization as Q
from sramsim.inject.layout import MemoryLayout
from sramsim.memory.chip import ByteFaults, Faults
from sramsim.memory.dram import DramGeometry

MIXED = {"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25}
# every scheme at every bit width it defines (stutz-symmetric: 8 bits only)
COMBOS = [(bits, scheme) for bits in Q.BITS for scheme in Q.schemes_for(bits)]


def small_model() -> nn.Module:
    # 135 + 245 + 7 weights: odd counts, so 4- and 2-bit layers share bytes and the image pads
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 7, 7),
                         nn.Linear(7, 1))


def small_case(seed: int) -> tuple[nn.Module, QuantizedModel, Chip]:
    """small_model(), its 8-bit QuantizedModel and a 16x64 finfet14 chip with faults at 0.75."""
    model = small_model()
    return (model, QuantizedModel(model, bits=8),
            Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.75, seed=seed))


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_bitwise(ref: dict, got: dict, names) -> None:
    for n in names:
        assert torch.equal(ref[n].view(torch.int32), got[n].view(torch.int32)), n


def check_against_perturbed(qm, model, make, voltage=None, offset=0, layout=None):
    """Inside the block the parameters equal perturbed(...) bit for bit; after it, the clean
    weights; the counts match the faulty image. `make()` returns the source (a fresh, equal one
    each call: a random source is consumed by each use)."""
    ref = qm.perturbed(make(), voltage, offset, layout=layout)
    clean = qm.clean_weights()
    with inplace.faults_applied(qm, model, make(), voltage, offset, layout) as applied:
        inside = params_of(model)
    assert_bitwise(ref, inside, ref)
    assert_bitwise(clean, params_of(model), clean)
    faulty = qm.faulty_image(make(), voltage, offset, layout=layout)
    assert applied.changed_bytes == int(np.count_nonzero(faulty != qm.image))
    assert applied.unchanged == np.array_equal(faulty, qm.image)
    codes = [Q.unpack(torch.from_numpy(im.copy()), qm.bits, qm.n_codes)
             for im in (faulty, qm.image)]
    assert applied.changed_weights == int(torch.count_nonzero(codes[0] != codes[1]))
    return applied


@pytest.mark.parametrize("bits, scheme", COMBOS)
@pytest.mark.parametrize("word_bits", [8, 16])
def test_chip_bit_identical_to_perturbed(bits, scheme, word_bits):
    model = small_model()
    qm = QuantizedModel(model, bits=bits, scheme=scheme, word_bits=word_bits, include_bias=True)
    work = copy.deepcopy(model)
    curve = BerCurve.builtin("finfet14")
    # smaller than the image (tiled), and larger than it
    small = Chip.random(Geometry(8, 32, word_bits=word_bits), curve, 0.75, seed=1, kinds=MIXED)
    large = Chip.random(Geometry(64, 64, word_bits=word_bits), curve, 0.75, seed=2, kinds=MIXED)
    for chip in (small, large):
        for v in (0.9, 0.8, 0.75):
            for offset in (0, 3, -5, 1000):
                check_against_perturbed(qm, work, lambda: chip, v, offset)


@pytest.mark.parametrize("bits, scheme", COMBOS)
def test_random_errors_and_fault_records_bit_identical(bits, scheme):
    model = small_model()
    qm = QuantizedModel(model, bits=bits, scheme=scheme)
    work = copy.deepcopy(model)
    for seed in range(3):
        check_against_perturbed(qm, work, lambda: RandomBitErrors(0.05, MIXED, seed))
    rng = np.random.default_rng(0)
    address = rng.choice(qm.n_bits, 60, replace=False).astype(np.uint64)   # unsorted
    faults = Faults(address, rng.integers(0, 3, 60).astype(np.uint8))
    check_against_perturbed(qm, work, lambda: faults)
    image = qm.faulty_image(RandomBitErrors(0.1, MIXED, seed=9))      # a faulty image as source
    ref = qm.dequantize(image)
    with inplace.faults_applied(qm, work, image) as applied:
        assert_bitwise(ref, params_of(work), ref)
    assert applied.changed_bytes == int(np.count_nonzero(image != qm.image))
    assert_bitwise(qm.clean_weights(), params_of(work), ref)


def test_dram_placement_bit_identical():
    model = small_model()
    qm = QuantizedModel(model, bits=4, scheme="rquant")
    work = copy.deepcopy(model)
    g = DramGeometry(banks=2, rows=32, columns=16, device_width=8, subarray_rows=8, burst_length=4)
    rng = np.random.default_rng(3)
    n = 400
    address = rng.choice(g.capacity_bits, n, replace=False).astype(np.uint64)
    vfail = np.sort(rng.uniform(0.8, 1.2, n).astype(np.float32))[::-1].copy()
    chip = Chip(g, address, vfail, rng.integers(0, 3, n).astype(np.uint8), 0.8,
                voltage_unit="V", nominal_voltage=1.2)
    for policy in ("naive", "drmap", "error-aware"):
        layout = MemoryLayout(mapping=policy)
        for v in (1.0, 0.8):
            check_against_perturbed(qm, work, lambda: chip, v, 0 if policy == "error-aware" else 3,
                                    layout=layout)
    with pytest.raises(InputError, match="offset must be 0"):
        with inplace.faults_applied(qm, work, chip, 0.8, 1, MemoryLayout(mapping="error-aware")):
            pass


@pytest.mark.parametrize("ecc", ["secded72", "secded13"])
def test_ecc_bit_identical(ecc):
    model = small_model()
    qm = QuantizedModel(model, bits=4, scheme="asymmetric")
    work = copy.deepcopy(model)
    chip = Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.75, seed=8, kinds=MIXED)
    for policy in ("keep", "zero"):
        layout = MemoryLayout(ecc=ecc, ecc_policy=policy)
        ref = qm.perturbed(chip, 0.75, 7, layout=layout)
        with inplace.faults_applied(qm, work, chip, 0.75, 7, layout):
            assert_bitwise(ref, params_of(work), ref)
        assert_bitwise(qm.clean_weights(), params_of(work), ref)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("word_bits", [8, 16])
def test_many_work_items_any_thread_count_bit_identical(monkeypatch, bits, word_bits):
    # 3 faulty bytes per work item: items start mid-segment, mid-tile and past the image; the
    # parallel kernels run (2 and 3 threads where numba's pool has them; test_determinism runs 3
    # in a process of its own) and write exactly what 1 thread does
    import numba
    from sramsim.inject import weight_kernels as kernels
    monkeypatch.setattr(kernels, "PIECE", 3)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_FAULTS", 6)
    model = small_model()
    qm = QuantizedModel(model, bits=bits, scheme="rquant", word_bits=word_bits,
                        include_bias=True)
    work = copy.deepcopy(model)
    curve = BerCurve.builtin("finfet14")
    small = Chip.random(Geometry(8, 32, word_bits=word_bits), curve, 0.75, seed=1, kinds=MIXED)
    large = Chip.random(Geometry(64, 64, word_bits=word_bits), curve, 0.75, seed=2, kinds=MIXED)
    before = numba.get_num_threads()
    try:
        for chip in (small, large):
            for v, offset in ((0.8, 0), (0.75, 3), (0.75, -77)):
                seen = []
                for threads in numba_thread_counts():
                    numba.set_num_threads(threads)
                    applied = check_against_perturbed(qm, work, lambda: chip, v, offset)
                    with inplace.faults_applied(qm, work, chip, v, offset):
                        seen.append((applied, params_of(work)))
                assert all(a == seen[0][0] for a, _ in seen)
                for _, p in seen:
                    assert_bitwise(seen[0][1], p, p)
        seen = []
        for threads in numba_thread_counts():          # random errors: the same draws, same weights
            numba.set_num_threads(threads)
            with inplace.faults_applied(qm, work, RandomBitErrors(0.05, MIXED, seed=4)) as applied:
                seen.append((applied, params_of(work)))
        assert all(a == seen[0][0] for a, _ in seen)
        assert_bitwise(seen[0][1], seen[-1][1], seen[0][1])
    finally:
        numba.set_num_threads(before)


def test_plan_pieces_covers_each_image_byte_once_in_order():
    from sramsim.inject import weight_kernels as kernels
    byte = np.array([0, 2, 5, 6, 9], dtype=np.int64)        # a 10-byte chip tiled over 23 bytes
    for offset, first in ((0, 0), (4, 2), (7, 4)):
        lo, hi, base, out, slots = kernels.plan_pieces(byte, first, offset, 10, 23, 4, piece=2)
        seen = np.concatenate([byte[a:z] + b for a, z, b in zip(lo, hi, base)])
        expected = np.array([i for i in range(23) if (i + offset) % 10 in byte.tolist()])
        assert seen.tolist() == expected.tolist()
        assert (hi - lo).max() <= 2                          # 2 codes per byte at 4 bits:
        assert out.tolist() == (2 * (np.cumsum(hi - lo) - (hi - lo))).tolist()
        assert slots == 2 * len(seen)


def test_exact_small_case_by_hand():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -0.5], [0.25, 0.0]]))
    qm = QuantizedModel(model, bits=8, scheme="symmetric")   # delta 1/127: codes 127, -64, 32, 0
    delta = np.float32(1.0 / 127)
    # flip bit 7 of code 0 (127 -> -1) and bit 0 of code 3 (0 -> 1);
    # stuck0 on bit 5 of code 2 (32 -> 0)
    faults = Faults(np.array([7, 24, 21], dtype=np.uint64), np.array([0, 0, 1], dtype=np.uint8))
    with inplace.faults_applied(qm, model, faults) as applied:
        w = model.weight.detach().clone()
    assert (applied.changed_bytes, applied.changed_weights) == (3, 3)
    expected = np.array([[-1 * delta, -64 * delta], [0.0, 1 * delta]], dtype=np.float32)
    assert np.array_equal(w.numpy(), expected)
    assert np.array_equal(model.weight.detach().numpy(),
                          np.array([[127, -64], [32, 0]], dtype=np.float32) * delta)


def test_fault_on_padding_changes_a_byte_but_no_weight():
    model = nn.Linear(3, 1, bias=False)          # 3 weights, 2-bit: one byte with 1 code of padding
    qm = QuantizedModel(model, bits=2, scheme="asymmetric")
    with inplace.faults_applied(qm, model, Faults(np.array([6], dtype=np.uint64),
                                         np.array([2], dtype=np.uint8))) as applied:
        pass
    assert (applied.changed_bytes, applied.changed_weights, applied.unchanged) == (1, 0, False)
    with inplace.faults_applied(qm, model, Faults(np.zeros(0, dtype=np.uint64), np.zeros(0, np.uint8))) as a:
        pass
    assert a.unchanged


def test_restored_when_the_block_raises_and_reusable():
    model = small_model()
    qm = QuantizedModel(model, bits=8)
    inplace.load_clean(qm, model)
    clean = params_of(model)
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.75, seed=3)
    with pytest.raises(KeyError):
        with inplace.faults_applied(qm, model, chip, 0.75):
            assert not torch.equal(model[0].weight, clean["0.weight"])
            raise KeyError("boom")
    assert_bitwise(clean, params_of(model), clean)
    with inplace.faults_applied(qm, model, chip, 0.75):         # the model is free again
        pass
    assert_bitwise(clean, params_of(model), clean)


def test_first_use_and_outside_changes_load_the_clean_weights():
    model = small_model()
    floats = params_of(model)
    qm = QuantizedModel(model, bits=4)
    clean = qm.clean_weights()
    faults = Faults(np.array([0], dtype=np.uint64), np.array([0], dtype=np.uint8))
    with inplace.faults_applied(qm, model, faults):
        pass
    assert_bitwise(clean, params_of(model), clean)          # the float weights are replaced
    assert not torch.equal(floats["0.weight"], model[0].weight.detach())
    with torch.no_grad():
        model[2].weight.add_(1.0)                            # torch bumps its version counter
    ref = qm.perturbed(faults)
    with inplace.faults_applied(qm, model, faults):
        assert_bitwise(ref, params_of(model), ref)
    assert_bitwise(clean, params_of(model), clean)


def test_backward_across_the_block_boundary_fails_loudly():
    model, qm, chip = small_case(seed=4)
    x = torch.randn(2, 3, 3, 9)          # conv output 1 x 7 -> 35 features
    with inplace.faults_applied(qm, model, chip, 0.75):
        loss = model(x * 1.0).sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    with inplace.faults_applied(qm, model, chip, 0.75):          # backward inside the block works
        model(x).sum().backward()


def test_bad_input_is_refused_before_any_write():
    model, qm, chip = small_case(seed=5)
    with inplace.faults_applied(qm, model, chip, 0.75):
        with pytest.raises(InputError, match="already applied"):
            with inplace.faults_applied(qm, model, chip, 0.75):
                pass
    with pytest.raises(InputError, match="no parameter '0.weight'"):
        with inplace.faults_applied(qm, nn.Linear(2, 2), chip, 0.75):
            pass
    with pytest.raises(InputError, match=r"parameter '0.weight' is torch.float64 on cpu"):
        with inplace.faults_applied(qm, copy.deepcopy(model).double(), chip, 0.75):
            pass
    assert not inplace.inplace_fits(qm, copy.deepcopy(model).double()) and inplace.inplace_fits(qm, model)
    with pytest.raises(ValueError, match="needs a voltage"):
        with inplace.faults_applied(qm, model, chip):
            pass
    with pytest.raises(TypeError, match="offset must be an integer"):
        with inplace.faults_applied(qm, model, chip, 0.75, offset=1.5):
            pass
    with pytest.raises(InputError, match="faulty image must be uint8"):
        with inplace.faults_applied(qm, model, qm.image[:-1]):
            pass
    with pytest.raises(InputError, match="unknown fault source"):
        with inplace.faults_applied(qm, model, "chip"):
            pass
    assert_bitwise(qm.clean_weights(), params_of(model), qm.clean_weights())


def test_chip_byte_faults_match_the_dense_masks():
    chip = Chip.random(Geometry(64, 128), BerCurve.builtin("finfet14"), 0.75, seed=6, kinds=MIXED)
    for v in (0.95, 0.85, 0.8, 0.75, 0.9):       # descending, then one from the cache's base
        bf = chip.byte_faults(v)
        masks = chip.byte_masks(v)
        zero = np.zeros_like(masks.xor)
        clear, set_ = (zero, zero) if masks.clear is None else (masks.clear, masks.set)
        dense_bytes = np.flatnonzero(masks.xor | clear | set_)
        assert np.array_equal(bf.byte, dense_bytes)
        assert np.array_equal(bf.xor, masks.xor[dense_bytes])
        if bf.clear is None:
            assert not np.any(clear | set_)
        else:
            assert np.array_equal(bf.clear, clear[dense_bytes])
            assert np.array_equal(bf.set, set_[dense_bytes])
    fresh = Chip(chip.geometry, chip.address, chip.vfail, chip.kind, chip.v_floor)
    for field in ("byte", "xor", "clear", "set"):
        assert np.array_equal(getattr(fresh.byte_faults(0.8), field),
                              getattr(chip.byte_faults(0.8), field))
    flips = ByteFaults.from_sorted(np.array([1, 3, 9], dtype=np.uint64), np.zeros(3, np.uint8))
    assert flips.byte.tolist() == [0, 1] and flips.xor.tolist() == [0b1010, 0b10]
    assert flips.clear is None and flips.set is None


@settings(max_examples=40, deadline=None)
@given(bits_scheme=st.sampled_from(COMBOS),
       word_bits=st.sampled_from([8, 16]),
       sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
       data=st.data())
def test_property_matches_the_functional_path(bits_scheme, word_bits, sizes, data):
    bits, scheme = bits_scheme
    layers = [nn.Linear(s, 1, bias=False) for s in sizes]
    model = nn.ModuleList(layers)
    qm = QuantizedModel(model, bits=bits, scheme=scheme, word_bits=word_bits)
    address = data.draw(st.lists(st.integers(0, qm.n_bits - 1), unique=True,
                                 max_size=3 * qm.n_bits // 4))
    kind = data.draw(st.lists(st.integers(0, 2), min_size=len(address), max_size=len(address)))
    faults = Faults(np.array(address, dtype=np.uint64), np.array(kind, dtype=np.uint8))
    check_against_perturbed(qm, model, lambda: faults)


def test_evaluator_in_place_and_functional_give_the_same_logits(monkeypatch):
    from sramsim.nn.evaluation import Evaluator
    model = small_model().eval()
    qm = QuantizedModel(model, bits=4, scheme="symmetric")
    floats = params_of(model)
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.75, seed=11, kinds=MIXED)
    x = torch.randn(5, 3, 3, 9)
    fast = Evaluator(qm)
    assert fast.inplace and fast.model is not model
    results = []
    for source in (chip, qm.faulty_image(chip, 0.8, 3)):
        args = (0.8, 3) if source is chip else ()
        with fast.faults(source, *args) as run:
            results.append((run.logits(x), run.changed))
    assert_bitwise(floats, params_of(model), floats)          # the caller's model is untouched
    monkeypatch.setattr(inplace, "inplace_fits", lambda qm, m: False)
    slow = Evaluator(qm)
    assert not slow.inplace and slow.model is model
    for (expected, was_changed), source in zip(results, (chip, qm.faulty_image(chip, 0.8, 3))):
        args = (0.8, 3) if source is chip else ()
        with slow.faults(source, *args) as run:
            assert run.changed == was_changed
            assert torch.equal(run.logits(x), expected)
    assert_bitwise(floats, params_of(model), floats)          # still untouched


@settings(max_examples=30, deadline=None)
@given(bits_scheme=st.sampled_from(COMBOS),
       word_bits=st.sampled_from([8, 16]), rows=st.integers(1, 12), offset=st.integers(-500, 500),
       voltage=st.floats(0.75, 1.0), seed=st.integers(0, 1000))
def test_property_chips_match_the_functional_path(bits_scheme, word_bits, rows, offset, voltage,
                                                   seed):
    bits, scheme = bits_scheme
    model = small_model()
    qm = QuantizedModel(model, bits=bits, scheme=scheme, word_bits=word_bits)
    chip = Chip.random(Geometry(rows, 16 * word_bits // 8, word_bits=word_bits),
                       BerCurve.builtin("finfet14"), 0.75, seed=seed, kinds=MIXED)
    check_against_perturbed(qm, model, lambda: chip, voltage, offset)


@pytest.mark.parametrize("bits, scheme", COMBOS)
def test_load_clean_gives_exactly_the_clean_weights_for_any_chunk(bits, scheme):
    # 135, 5, 245, 7, 7, 1 codes: segments start mid-byte for 4 and 2 bits, and chunks of 1, 3,
    # 5, 7 codes start and end mid-byte too; 64 and the default cover whole segments
    model = small_model()
    qm = QuantizedModel(model, bits=bits, scheme=scheme, include_bias=True, word_bits=16)
    assert any(s.start % (8 // bits) for s in qm.segments) or bits == 8
    clean = qm.clean_weights()
    for chunk in (1, 3, 5, 7, 64, inplace.LOAD_CHUNK):
        work = copy.deepcopy(model)
        inplace.load_clean(qm, work, chunk=chunk)
        assert_bitwise(clean, params_of(work), clean)
        floats = params_of(model)      # parameters outside the image are left alone
        assert all(torch.equal(floats[n], p.detach()) for n, p in work.named_parameters()
                   if n not in clean)


def test_load_clean_chunk_is_checked():
    model = small_model()
    qm = QuantizedModel(model, bits=8)
    for bad in (0, -4, 2.5, True, "8"):
        with pytest.raises(InputError, match="chunk must be a positive number"):
            inplace.load_clean(qm, model, chunk=bad)


def _peak_rise(fn) -> int:
    """Bytes the process's peak resident memory rose above its current RSS while fn() ran
    (Linux: the peak mark is reset through /proc/self/clear_refs)."""
    def kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = kib("VmRSS")
    fn()
    return 1024 * (kib("VmHWM") - before)


def test_load_clean_temporaries_stay_chunk_sized():
    """One 12.6 M-weight layer (50 MB of float32, above glibc's 32 MB mmap threshold, so a
    whole-layer temporary gets fresh pages): loading its clean weights LOAD_CHUNK codes at a time
    raises the peak resident memory by less than 16 float32 chunks (4 MiB), while decoding the
    whole model at once (clean_weights, what load_clean did before) raises it by the layer."""
    try:
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    torch.manual_seed(0)
    with torch.no_grad():
        model = nn.Linear(3072, 4096, bias=False)
    layer_bytes = model.weight.numel() * 4
    qm = QuantizedModel(model, bits=4, scheme="asymmetric")
    inplace.load_clean(qm, model)                    # first call: lazy imports, slot
    rise = _peak_rise(lambda: inplace.load_clean(qm, model))
    assert rise < 16 * 4 * inplace.LOAD_CHUNK, (rise, layer_bytes)
    whole = _peak_rise(lambda: qm.clean_weights())           # the measurement sees a copy
    assert whole >= layer_bytes * 0.9, (whole, layer_bytes)
    assert_bitwise(qm.clean_weights(), {"weight": model.weight.detach()}, ["weight"])


# --- the stored code read off the clean weight (issue 21: one cache line per fault) -------------

def guessed(qm: QuantizedModel, seg: int, weights: np.ndarray) -> np.ndarray:
    """A plain reference of the kernel's guess: u = rint(ga * w + gb); the code u mod 256 where u
    lies in umin..umax and that code decodes back to w, else -1 (read off the image)."""
    st_ = inplace.state(qm)
    u = np.rint(weights.astype(np.float64) * st_.ga[seg] + st_.gb[seg]).astype(np.int64)
    code = u & 255
    back = Q.dequantize(torch.from_numpy(code.astype(np.uint8)), qm.segments[seg].quant).numpy()
    hit = (u >= st_.umin[seg]) & (u <= st_.umax[seg]) & (back == weights)
    return np.where(hit, code, -1)


@pytest.mark.parametrize("scheme", Q.schemes_for(8))
@pytest.mark.parametrize("clip", [None, 0.05])
def test_every_stored_8_bit_code_is_read_off_its_clean_weight(scheme, clip):
    torch.manual_seed(3)
    model = small_model()
    qm = QuantizedModel(model, bits=8, scheme=scheme, clip=clip)
    clean = np.concatenate([w.reshape(-1).numpy() for w in qm.clean_weights().values()])
    for i, s in enumerate(qm.segments):
        stored = qm.image[s.start:s.start + s.count].astype(np.int64)
        assert np.array_equal(guessed(qm, i, clean[s.start:s.start + s.count]), stored)


def test_code_inverse_refuses_what_it_cannot_read_back():
    stutz = Q.LayerQuant("stutz-symmetric", 8, 0.01, -1.27, 1.27)
    # codes 128 (-128) and 129 (-127) both decode to the clamp -1.27: one weight, two codes
    assert inplace.code_inverse(stutz, np.array([128, 129, 0], dtype=np.uint8)) == (0, 0, 1, 0)
    # only -127 .. 5 stored: decoding is one-to-one over that span
    ga, gb, umin, umax = inplace.code_inverse(stutz, np.array([129, 0, 5], dtype=np.uint8))
    assert (umin, umax) == (-127, 5) and round(ga * 0.05 + gb) == 5
    # stored codes decode apart, but a code between them shares a clamped value: span refused
    rq = Q.LayerQuant("rquant", 8, 0.01, 0.0, 0.5)
    assert inplace.code_inverse(rq, np.array([10, 60], dtype=np.uint8))[2:] == (1, 0)
    assert inplace.code_inverse(rq, np.array([10, 50], dtype=np.uint8))[2:] == (10, 50)
    four = Q.LayerQuant("symmetric", 4, 0.1)
    assert inplace.code_inverse(four, np.array([1, 2], dtype=np.uint8)) == (0, 0, 1, 0)
    one = Q.LayerQuant("symmetric", 8, 0.1)
    assert inplace.code_inverse(one, np.array([7, 7], dtype=np.uint8)) == (0.0, 7.0, 7, 7)


def sparse_faults(nbytes: int, seed: int) -> Faults:
    """Mixed bit faults ~100 bytes apart (< 1 per image cache line: the kernel reads 8-bit codes
    off the clean weights)."""
    rng = np.random.default_rng(seed)
    byte = np.arange(3, nbytes, 100) + rng.integers(0, 40, size=len(range(3, nbytes, 100)))
    address = (byte * 8 + rng.integers(0, 8, size=byte.size)).astype(np.uint64)
    return Faults(address, rng.integers(0, 3, size=byte.size).astype(np.uint8))


def wide_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 48))


@pytest.mark.parametrize("scheme", Q.schemes_for(8))
def test_sparse_faults_read_off_the_weights_are_bit_identical_to_perturbed(scheme):
    torch.manual_seed(5)
    model = wide_model()
    qm = QuantizedModel(model, bits=8, scheme=scheme)
    faults = sparse_faults(qm.image.size, seed=6)
    applied = check_against_perturbed(qm, model, lambda: faults)
    assert applied.changed_bytes > 20


@pytest.mark.parametrize("scheme", ["symmetric", "stutz-rquant"])
@pytest.mark.parametrize("dense", [False, True])
def test_weights_that_are_not_clean_values_fall_back_to_the_image(scheme, dense):
    """A weight whose guessed code does not decode back to it (changed behind torch's back,
    version unchanged) is decoded from the image byte: the faulty values are still those of `perturbed`."""
    torch.manual_seed(7)
    model = wide_model()
    qm = QuantizedModel(model, bits=8, scheme=scheme)
    chip = Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.75, seed=8, kinds=MIXED)
    source, voltage = (chip, 0.75) if dense else (sparse_faults(qm.image.size, seed=9), None)
    weights = inplace.load_clean(qm, model)
    ga = inplace.state(qm).ga
    for i, s in enumerate(qm.segments):         # 0.6 of a step up: the guess is one code off
        weights[s.start:s.start + s.count] += np.float32(0.6 / ga[i])   # (no version bump)
    ref = qm.perturbed(source, voltage)
    faulty = qm.faulty_image(source, voltage)
    changed = np.flatnonzero(faulty[:qm.n_codes] != qm.image[:qm.n_codes])
    assert changed.size > 10
    with inplace.faults_applied(qm, model, source, voltage) as applied:
        inside = np.concatenate([p.detach().reshape(-1).numpy().copy()
                                 for p in inplace.quantized_parameters(qm, model)])
    flat_ref = np.concatenate([ref[s.name].reshape(-1).numpy() for s in qm.segments])
    assert np.array_equal(inside[changed].view(np.int32), flat_ref[changed].view(np.int32))
    assert applied.changed_bytes == int(np.count_nonzero(faulty != qm.image))


def test_a_replaced_parameter_or_submodule_is_checked_again():
    model, qm, chip = small_case(seed=9)
    with inplace.faults_applied(qm, model, chip, 0.75):
        pass
    model[2].weight = nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(InputError, match=r"parameter '2.weight' has shape \[3, 3\]"):
        with inplace.faults_applied(qm, model, chip, 0.75):
            pass
    model[2] = nn.Linear(5 * 7, 7)                       # a fresh submodule of the right shape
    ref = qm.perturbed(chip, 0.75)
    with inplace.faults_applied(qm, model, chip, 0.75):
        assert_bitwise(ref, params_of(model), ref)        # the faults land in the new module
    assert_bitwise(qm.clean_weights(), params_of(model), qm.clean_weights())


def test_a_change_inside_the_block_is_not_taken_for_clean(monkeypatch):
    model, qm, chip = small_case(seed=10)
    loads = []
    real = inplace.load_clean
    monkeypatch.setattr(inplace, "load_clean", lambda *a, **k: loads.append(1) or real(*a, **k))
    for _ in range(3):                      # blocks in a row: the clean weights loaded once
        with inplace.faults_applied(qm, model, chip, 0.75):
            pass
    assert len(loads) == 1
    with inplace.faults_applied(qm, model, chip, 0.75):
        with torch.no_grad():
            model[2].weight.add_(1.0)       # a change the restore does not undo
    ref = qm.perturbed(chip, 0.75)
    with inplace.faults_applied(qm, model, chip, 0.75):
        assert_bitwise(ref, params_of(model), ref)      # reloaded: the faults of the clean model
    assert len(loads) == 2
    with inplace.faults_applied(qm, model, chip, 0.75):
        model[2].weight.data = model[2].weight.data * 2     # new storage, its own version
    with inplace.faults_applied(qm, model, chip, 0.75):
        assert_bitwise(ref, params_of(model), ref)
    assert len(loads) == 3
    assert_bitwise(qm.clean_weights(), params_of(model), qm.clean_weights())


def test_a_same_address_view_of_another_shape_is_taken_for_a_change():
    # `.data = ` a view of the same memory with other strides: same address and version, so
    # only the shape and strides in the stamp tell; the next block reloads
    model, qm, chip = small_case(seed=11)
    with inplace.faults_applied(qm, model, chip, 0.75):
        pass
    w = model[3].weight                                  # (1, 7): transposing keeps the address
    w.data = w.data.t()
    with pytest.raises(InputError, match=r"parameter '3.weight' has shape \[7, 1\]"):
        with inplace.faults_applied(qm, model, chip, 0.75):
            pass


def test_a_block_is_entered_once_and_a_failed_entry_frees_the_model():
    model, qm, chip = small_case(seed=12)
    block = inplace.faults_applied(qm, model, chip, 0.75)
    with block:
        with pytest.raises(InputError, match="already entered"):
            block.__enter__()
    with pytest.raises(InputError, match="below"):        # refused inside __enter__
        with inplace.faults_applied(qm, model, chip, 0.1):
            pass
    ref = qm.perturbed(chip, 0.75)
    with block:                                          # reusable after leaving; model free
        assert_bitwise(ref, params_of(model), ref)
    block.__exit__(None, None, None)                     # a second exit does nothing
    assert_bitwise(qm.clean_weights(), params_of(model), qm.clean_weights())


def test_a_dropped_model_takes_its_slot_with_it():
    import gc
    qm = QuantizedModel(small_model(), bits=8)
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.75, seed=13)
    model = small_model()
    with inplace.faults_applied(qm, model, chip, 0.75):
        pass
    slots = inplace.state(qm).slots
    assert list(slots) == [id(model)]
    del model
    gc.collect()
    assert not slots
    other = small_model()                               # a new model, maybe at the same id
    with inplace.faults_applied(qm, other, chip, 0.75) as applied:
        assert applied.changed_bytes > 0
    assert list(slots) == [id(other)]


def test_the_serial_write_asks_for_room_and_writes_nothing_without_it():
    from sramsim.inject import weight_kernels as kernels
    model = small_model()
    qm = QuantizedModel(model, bits=8)
    weights = inplace.load_clean(qm, model)
    clean = weights.copy()
    st_ = inplace.state(qm)
    located, _ = inplace.image_faults(qm, Chip.random(Geometry(16, 64), BerCurve.builtin(
        "finfet14"), 0.75, seed=14), 0.75)
    f = located.faults
    none = f.xor[:0]
    pos, old = np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32)

    def write(pos, old):
        return kernels.write_planned_serial(
            qm.image, f.byte, f.xor, none if f.clear is None else f.clear,
            none if f.set is None else f.set, located.first, located.offset_bytes,
            located.cap_bytes, qm.bits, st_.seg_end, st_.scheme, st_.delta, st_.lo, st_.hi,
            st_.ga, st_.gb, st_.umin, st_.umax, weights, pos, old)

    changed, codes, out, written, need = write(pos, old)
    assert need > 0 and (changed, codes) == (0, 0) and not written.any()
    assert np.array_equal(weights, clean)
    pos, old = np.empty(need, dtype=np.int32), np.empty(need, dtype=np.float32)
    changed, codes, out, written, again = write(pos, old)
    assert again == need and changed > 0 and int(written.sum()) == need
    kernels.restore_codes_serial(weights, pos, old, out, written)
    assert np.array_equal(weights, clean)
