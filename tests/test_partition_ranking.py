"""error-aware ranks subarrays by the error model's expected BER (placement.expected_partition_bers),
not by drawing a whole chip: what the empirical ranking converges to, ties in drmap order, and the
energy of `dram tolerance` / `dram energy` at BER 1e-1 on a 4 Gb part without a chip map."""
from __future__ import annotations

import numpy as np
import pytest

from sramsim.analysis import tolerance as T
from sramsim.analysis.dram_energy import DramEnergy
from sramsim.errors import InputError
from sramsim.inject import dram_mapping as P
from sramsim.memory import dram_errors
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_curves import dram_curve
from sramsim.memory.dram_errors import dram_chip, line_factors

SMALL = DramGeometry.from_part(rows=1024)     # 8 banks x 2 subarrays, 32 MB


def test_equal_bers_are_taken_in_drmap_order():
    g = DramGeometry(banks=2, rows=8, columns=8, device_width=8, subarray_rows=2, burst_length=4)
    # 2 banks x 4 subarrays; subarray 5 (bank 1, subarray 1) is the most reliable, the rest tie:
    # then subarray 0 of bank 0 and of bank 1, subarray 1 of each, ...
    pber = [1e-3] * 8
    pber[5] = 1e-4
    assert P.partition_order(g, pber, "subarray").tolist() == [5, 0, 4, 1, 2, 6, 3, 7]
    assert P.partition_order(g, [1e-3, 1e-3], "bank").tolist() == [0, 1]
    assert P.partition_order(g, [2e-3, 1e-3, 1e-3, 0.0, 5e-3, 1e-3, 1e-3, 1e-3],
                             "subarray").tolist() == [3, 1, 5, 2, 6, 7, 0, 4]


@pytest.mark.parametrize("model", [0, 1, 2, 3])
def test_expected_bers_are_what_a_drawn_chip_measures(model):
    curve, ber, seed = dram_curve(), 1e-2, 3
    v = float(curve.voltage(ber))
    ber = float(curve.ber(v))
    want = P.expected_partition_bers(SMALL, ber, seed, model, "subarray")
    chip = dram_chip(SMALL, curve, v_floor=v, seed=seed, error_model=model)
    got = P.partition_bers(chip, v, "subarray")
    cells = SMALL.capacity_bits // SMALL.n_partitions("subarray")
    # faults per subarray: a sum of independent Bernoullis, variance <= the mean: 5 sigma
    assert np.all(np.abs(got - want) * cells <= 5 * np.sqrt(want * cells))
    if model == 3:
        assert np.all(want == ber)
    if model == 0:        # default bank partitions: each subarray has its bank's BER
        f = line_factors(SMALL, seed, 0)
        assert np.array_equal(want, np.repeat(np.minimum(1, ber * f), 2))
    banks = P.expected_partition_bers(SMALL, ber, seed, model, "bank")
    assert banks == pytest.approx(want.reshape(8, 2).mean(1), rel=1e-12)


def test_expected_bers_refuse_bad_input():
    with pytest.raises(InputError, match="partition"):
        P.expected_partition_bers(SMALL, 1e-3, 0, 1, "rank")
    with pytest.raises(InputError, match="BER"):
        P.expected_partition_bers(SMALL, 1.5, 0, 1)
    with pytest.raises(InputError, match="error model"):
        P.expected_partition_bers(SMALL, 1e-3, 0, 7)


def old_error_aware(n_bytes, layer_bytes, geometry, energy, ber, seed, model):
    """mapping_energies' error-aware row as it was: rank by a whole chip drawn at the voltage."""
    curve = dram_curve()
    v = round(float(curve.voltage(ber)), 6)
    chip = dram_chip(geometry, curve, v_floor=v, seed=seed, error_model=model)
    placement = P.place(n_bytes, geometry, "error-aware", layer_bytes=layer_bytes,
                        partition_ber=P.partition_bers(chip, v, "subarray"),
                        layer_tolerance=[ber] * len(layer_bytes), partition="subarray")
    return P.inference_energy(placement, energy, v)


@pytest.mark.parametrize("model", [0, 1, 2])
def test_energy_matches_the_whole_chip_ranking_on_a_small_part(model):
    energy = DramEnergy.from_part()
    n, layers, ber = 5_000_000, [1_000_000, 4_000_000], 1e-2      # ~2.4 of 16 subarrays
    v = round(float(dram_curve().voltage(ber)), 6)
    new = T.mapping_energies(n, layers, SMALL, energy, v, tolerable_ber=ber, curve=dram_curve(),
                             seed=2, error_model=model, policies=["error-aware"])["error-aware"]
    old = old_error_aware(n, layers, SMALL, energy, ber, 2, model)
    assert new["counts"] == old["counts"]
    assert new["energy_J"] == old["energy_j"]


def test_uniform_model_fills_subarrays_in_drmap_order():
    # model 3 gives every subarray the curve's BER: error-aware takes subarray 0 of banks 0..7,
    # then subarray 1 of each (bank-level parallelism), each filled in drmap order inside
    energy = DramEnergy.from_part()
    v = round(float(dram_curve().voltage(1e-2)), 6)
    ber = float(dram_curve().ber(v))
    pber = P.expected_partition_bers(SMALL, ber, 0, 3)
    p = P.place(5_000_000, SMALL, "error-aware", layer_bytes=[5_000_000],
                layer_tolerance=[1e-2], partition_ber=pber)
    assert p.layer_partitions == ((0, 2, 4),)
    row = T.mapping_energies(5_000_000, [5_000_000], SMALL, energy, v, tolerable_ber=1e-2,
                             curve=dram_curve(), error_model=3, policies=["error-aware"])
    assert row["error-aware"]["counts"] == P.access_counts(p)
    assert row["error-aware"]["counts"]["miss"] == 3          # three banks, opened once each


@pytest.mark.parametrize("model", [0, 1, 2, 3])
def test_error_aware_energy_at_ber_0_1_on_a_4gb_part_draws_no_chip(model, monkeypatch):
    # drawing this part's chip at 1e-1 meant ~430 M faults (~27 GB, minutes): refused now
    def no_chip(*a, **k):
        raise AssertionError("error-aware energy drew a whole DRAM chip")
    monkeypatch.setattr(dram_errors, "dram_chip", no_chip)
    geometry, energy, curve = DramGeometry.from_part(), DramEnergy.from_part(), dram_curve()
    v = round(float(curve.voltage(1e-1)), 6)
    n = 3_000_000
    rows = T.mapping_energies(n, [1_000_000, 2_000_000], geometry, energy, v, tolerable_ber=1e-1,
                              curve=curve, seed=0, error_model=model)
    ea = rows["error-aware"]
    assert ea["counts"]["bursts"] == rows["drmap"]["counts"]["bursts"] == -(-n // 32)
    assert 0 < ea["saving"] < 1
