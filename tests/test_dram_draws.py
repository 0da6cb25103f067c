"""DramBitErrors (fresh DRAM error-model faults over a placed image, the FAT source): addresses
against the placement's own rule, per-line rates inside binomial intervals, model 3's direction,
determinism, and properties of every draw."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binomtest

from sramsim.inject.dram_draws import DramBitErrors
from sramsim.inject.dram_mapping import place, placed_faults
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_errors import data_dependent_kinds, dram_chip, line_index
from sramsim.memory.geometry import FLIP, STUCK0, STUCK1

# 2 banks x 64 rows x 32 columns of 8 bits (subarrays of 16 rows), bursts of 4 columns.
SMALL = DramGeometry(banks=2, rows=64, columns=32, device_width=8, subarray_rows=16,
                     burst_length=4)


def test_chip_address_is_the_placements_bit_rule():
    """An image bit reads the chip bit the placement puts it on: placed_faults (the evaluation
    path) maps a chip's faults to image bits, chip_address maps them back to the same cells."""
    placement = place(3000, SMALL, "drmap")
    src = DramBitErrors(placement, 0)
    chip = dram_chip(SMALL, "lpddr3-illustrative", v_floor=0.7, seed=1, error_model=0)
    v = 0.75
    pf = placed_faults(chip, v, placement)
    assert pf.address.size > 50
    back = src.chip_address(pf.address)
    assert set(back.tolist()) <= set(chip.faults(v).address.tolist())
    # hand case: image bit 0 of burst k sits at bit 0 of chip burst chip_unit[k]
    bpu = placement.unit_bytes * 8
    k = 5
    assert int(src.chip_address([k * bpu + 3])[0]) == int(placement.chip_unit[k]) * bpu + 3


@pytest.mark.parametrize("model", [0, 1, 2])
def test_rates_per_line_inside_binomial_intervals(model):
    """Given the line multipliers of a draw (the first numbers of its stream), every cell fails
    with p = min(1, ber * f): weak and normal cells pooled by multiplier, checked at 99.9%."""
    params = {"weak_fraction": 0.2, "weak_factor": 8.0} if model else {"spread": 0.8}
    placement = place(SMALL.capacity_bytes // 2, SMALL, "naive")
    src = DramBitErrors(placement, model, **params)
    ber, hits, trials = 0.02, {}, {}
    for seed in range(40):
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        f = src.line_factors(rng)[src._line_of_bit]
        faulty = np.zeros(src.n_bits, dtype=bool)
        faulty[src.draw(ber, seed).address.astype(np.int64)] = True
        for value in np.unique(np.round(f, 9)):
            sel = np.isclose(f, value)
            key = round(float(min(1.0, ber * value)), 9)
            hits[key] = hits.get(key, 0) + int(faulty[sel].sum())
            trials[key] = trials.get(key, 0) + int(sel.sum())
    assert len(hits) >= 2
    for p, k in hits.items():
        ci = binomtest(k, trials[p], p).proportion_ci(0.999)
        assert ci.low <= p <= ci.high, (p, k, trials[p])


def test_multipliers_average_one():
    """The chip-wide expected BER is the curve's: multipliers average 1 (models 1, 2 by the
    expected weak fraction)."""
    placement = place(SMALL.capacity_bytes, SMALL, "naive")
    for model in (1, 2):
        src = DramBitErrors(placement, model, weak_fraction=0.1, weak_factor=20.0)
        rng = np.random.default_rng(0)
        means = [src.line_factors(rng).mean() for _ in range(200)]
        assert abs(np.mean(means) - 1.0) < 0.05
    src0 = DramBitErrors(placement, 0, spread=0.5)
    assert src0.line_factors(np.random.default_rng(3))[src0._line_of_bit].mean() == \
        pytest.approx(1.0)


def test_model3_fails_towards_the_cells_direction():
    placement = place(SMALL.capacity_bytes // 4, SMALL, "drmap")
    src = DramBitErrors(placement, 3, group_rows=1)
    faults = src.draw(0.05, 7)
    assert faults.address.size > 100
    expect = data_dependent_kinds(SMALL, src.chip_address(faults.address), 1)
    np.testing.assert_array_equal(faults.kind, expect)
    assert set(np.unique(faults.kind).tolist()) == {STUCK0, STUCK1}


def test_deterministic_and_fresh_per_seed():
    src = DramBitErrors(place(4000, SMALL, "drmap"), 1)
    a, b, c = src.draw(0.01, 5), src.draw(0.01, 5), src.draw(0.01, 6)
    np.testing.assert_array_equal(a.address, b.address)
    np.testing.assert_array_equal(a.kind, b.kind)
    assert not np.array_equal(a.address, c.address)
    assert set(a.kind.tolist()) == {FLIP}


def test_lines_follow_line_index():
    placement = place(2000, SMALL, "drmap")
    src = DramBitErrors(placement, 2)
    bits = np.arange(src.n_bits)
    lines = line_index(SMALL, src.chip_address(bits), 2)
    np.testing.assert_array_equal(src._lines[src._line_of_bit], lines)


@settings(max_examples=30, deadline=None)
@given(n_bytes=st.integers(1, 2048), ber=st.floats(0.0, 0.5), seed=st.integers(0, 2**32 - 1),
       model=st.integers(0, 3), policy=st.sampled_from(["naive", "drmap"]))
def test_every_draw_is_a_valid_fault_list(n_bytes, ber, seed, model, policy):
    src = DramBitErrors(place(n_bytes, SMALL, policy), model)
    f = src.draw(ber, seed)
    a = f.address.astype(np.int64)
    assert a.dtype == np.int64 and f.kind.shape == a.shape
    assert np.all(np.diff(a) > 0) and (a.size == 0 or (a[0] >= 0 and a[-1] < n_bytes * 8))
    if ber == 0:
        assert a.size == 0


def test_every_bit_fails_when_every_line_is_certain():
    src = DramBitErrors(place(100, SMALL, "naive"), 0, spread=0.0)
    assert src.draw(1.0, 0).address.size == 800
