"""Several threads over one QuantizedModel and one Chip give the bytes one thread gives."""
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from sramsim import BerCurve, Chip, Geometry, QuantizedModel

VOLTAGES = [0.95, 0.9, 0.87, 0.84, 0.81, 0.78]      # more than Chip.MASK_CACHE_SIZE: evictions
OFFSETS = [0, 5, 1023]
THREADS = 6
ROUNDS = 4


@pytest.fixture
def fast_switching():
    """Switch threads every microsecond so interleavings that are rare by default happen."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def make_chip() -> Chip:
    return Chip.random(Geometry(256, 1024), BerCurve.builtin("finfet14"), v_floor=0.75, seed=3,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})


def fresh_copy(chip: Chip) -> Chip:
    """The same faults in a new Chip (an empty mask cache of its own)."""
    return Chip(chip.geometry, chip.address.copy(), chip.vfail.copy(), chip.kind.copy(),
                chip.v_floor, name=chip.name)


def run_threads(fn, jobs):
    order = [jobs[i] for i in np.random.default_rng(0).permutation(len(jobs) * ROUNDS) % len(jobs)]
    with ThreadPoolExecutor(THREADS) as pool:
        return list(zip(order, pool.map(lambda job: fn(*job), order)))


def test_chip_mask_cache_is_thread_safe(fast_switching):
    # A small chip and a one-entry cache: cheap masks, an eviction on nearly every call, so the
    # races of an unguarded OrderedDict (KeyError, "mutated during iteration") show up.
    chip = Chip.random(Geometry(64, 1024), BerCurve.builtin("finfet14"), v_floor=0.75, seed=3,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})
    chip.MASK_CACHE_SIZE = 1
    voltages = [0.95, 0.92, 0.9, 0.88, 0.87, 0.85, 0.84, 0.82, 0.81, 0.79, 0.78, 0.76]
    reference = {v: fresh_copy(chip).byte_masks(v).copy() for v in voltages}
    calls = [voltages[i] for i in np.random.default_rng(0).integers(0, len(voltages), 12_000)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda v: chip.byte_masks(v).copy(), calls))
    for v, m in zip(calls, results):
        want = reference[v]
        assert m.count == want.count == chip.count(v)
        for got, ref in ((m.xor, want.xor), (m.clear, want.clear), (m.set, want.set)):
            assert (got is None and ref is None) or np.array_equal(got, ref), v


def test_chip_with_its_lock_still_pickles():
    chip = make_chip()
    chip.byte_masks(0.8)
    copy = pickle.loads(pickle.dumps(chip))
    assert copy.same_faults(chip) and len(copy._mask_cache) == 0
    assert np.array_equal(copy.byte_masks(0.8).xor, chip.byte_masks(0.8).xor)


def test_perturbed_from_threads_bit_equals_one_thread(fast_switching):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 128))   # 128 KB image
    qm = QuantizedModel(model, bits=8)
    chip = make_chip()
    jobs = [(v, off) for v in VOLTAGES for off in OFFSETS]
    solo = fresh_copy(chip)
    reference = {job: qm.perturbed(solo, *job) for job in jobs}
    results = run_threads(lambda v, off: qm.perturbed(chip, v, off), jobs)
    for job, weights in results:
        for name, w in weights.items():
            assert torch.equal(w, reference[job][name]), (job, name)


def test_faulty_image_from_threads_with_own_buffers(fast_switching):
    torch.manual_seed(0)
    qm = QuantizedModel(nn.Linear(256, 256), bits=4, word_bits=16)
    chip = make_chip()
    jobs = [(v, off) for v in VOLTAGES for off in OFFSETS]
    solo = fresh_copy(chip)
    reference = {job: qm.faulty_image(solo, *job) for job in jobs}

    def one(v, off):
        out = np.empty_like(qm.image)
        assert qm.faulty_image(chip, v, off, out=out) is out
        return out

    for job, image in run_threads(one, jobs):
        assert np.array_equal(image, reference[job]), job
