"""DRAM weight placement: policies (exact small layouts), faults through a placement (vs a dense
reference and vs the SRAM mapping), the row-buffer access trace (hand-counted) and bad input."""
import numba
import numpy as np
import pytest
import torch
from torch import nn

from sramsim.inject.layout import MemoryLayout
from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.analysis.dram_energy import DramEnergy
from sramsim.errors import InputError
from sramsim.inject.mapping import apply_faults
from sramsim.inject.dram_mapping import (FAULT_INDEX, POLICIES, DramMapping, access_counts,
                                      apply_placed, image_layer_bytes, inference_energy,
                                      partition_bers, place)
from sramsim.memory.dram import DramGeometry

# 3 rows x 2 banks, 2 bursts per row (4 columns, BL2), 8-bit columns: a burst is 2 bytes.
HAND = DramGeometry(banks=2, rows=3, columns=4, device_width=8, subarray_rows=3, burst_length=2)
# 4 rows x 2 banks in subarrays of 2 rows (4 subarray partitions of 4 bursts).
SUB = DramGeometry(banks=2, rows=4, columns=4, device_width=8, subarray_rows=2, burst_length=2)


def make_chip(geometry, n_faults, seed=0, nominal=1.2, v_floor=0.8, stuck=True) -> Chip:
    """A DRAM chip with `n_faults` distinct random bits, vfail uniform in [v_floor, nominal]."""
    rng = np.random.default_rng(seed)
    address = rng.choice(geometry.capacity_bits, n_faults, replace=False).astype(np.uint64)
    vfail = np.sort(rng.uniform(v_floor, nominal, n_faults).astype(np.float32))[::-1].copy()
    kind = rng.integers(0, 3 if stuck else 1, n_faults).astype(np.uint8)
    return Chip(geometry, address, vfail, kind, v_floor, name=f"dram-test-{seed}",
                voltage_unit="V", nominal_voltage=nominal)


def dense_reference(image, chip, voltage, placement) -> np.ndarray:
    """Bit by bit: image bit i reads chip bit chip_unit[i // B] * B + i % B (B: bits a burst)."""
    faults = chip.faults(voltage)
    state = np.full(chip.geometry.capacity_bits, -1, dtype=np.int8)      # -1: healthy
    state[faults.address.astype(np.int64)] = faults.kind
    bits = np.unpackbits(image, bitorder="little").astype(np.int8)
    i = np.arange(bits.size)
    ub8 = placement.unit_bytes * 8
    chip_bit = placement.chip_unit[i // ub8] * ub8 + i % ub8
    s = state[chip_bit]
    bits = np.where(s == 0, 1 - bits, bits)
    bits = np.where(s == 1, 0, bits)
    bits = np.where(s == 2, 1, bits)
    return np.packbits(bits.astype(np.uint8), bitorder="little")


# --- layouts ---------------------------------------------------------------------------------
def test_naive_and_drmap_slots_by_hand():
    # Slots: bank b, row r, burst c -> (b * 3 + r) * 2 + c. 11 bytes = 6 bursts (last one partial).
    naive = place(11, HAND, "naive")
    assert naive.unit_bytes == 2 and naive.n_units == 6
    assert naive.chip_unit.tolist() == [0, 1, 2, 3, 4, 5]            # b0r0, b0r1, b0r2
    drmap = place(11, HAND, "drmap")
    assert drmap.chip_unit.tolist() == [0, 1, 6, 7, 2, 3]            # b0r0, b1r0, b0r1
    # the next subarray before the next row of a subarray: SUB has rows {0,1} and {2,3}
    assert place(16, SUB, "drmap").chip_unit.tolist() == [0, 1, 8, 9, 4, 5, 12, 13]
    # start skips bursts of the policy's order
    assert place(4, HAND, "drmap", start=2).chip_unit.tolist() == [6, 7]
    assert place(4, HAND, "naive", start=3).chip_unit.tolist() == [3, 4]


def test_access_counts_three_rows_two_banks_by_hand():
    # naive, 6 bursts: b0r0 miss, hit | b0r1 conflict (b0r0 open), hit | b0r2 conflict, hit
    assert access_counts(place(11, HAND, "naive")) == \
        {"hit": 3, "miss": 1, "conflict": 2, "bursts": 6}
    # drmap, 6 bursts: b0r0 miss, hit | b1r0 miss (bank 1 closed), hit | b0r1 conflict, hit
    assert access_counts(place(11, HAND, "drmap")) == \
        {"hit": 3, "miss": 2, "conflict": 1, "bursts": 6}
    # naive, all 12 bursts: bank 0 rows 0-2 = m h c h c h, bank 1 the same
    assert access_counts(place(24, HAND, "naive")) == \
        {"hit": 6, "miss": 2, "conflict": 4, "bursts": 12}
    # drmap, all 12: b0r0 m h, b1r0 m h, b0r1 c h, b1r1 c h, b0r2 c h, b1r2 c h
    assert access_counts(place(24, HAND, "drmap")) == \
        {"hit": 6, "miss": 2, "conflict": 4, "bursts": 12}


def test_access_counts_subarray_parallel_by_hand():
    # SUB, drmap, 8 bursts: b0r0 m h, b1r0 m h, b0r2 (subarray 1 of bank 0, row 0 open) c h,
    # b1r2 c h. With SALP each subarray keeps its own row: b0s1 and b1s1 are closed -> misses.
    drmap = place(16, SUB, "drmap")
    assert access_counts(drmap) == {"hit": 4, "miss": 2, "conflict": 2, "bursts": 8}
    assert access_counts(drmap, subarray_parallel=True) == \
        {"hit": 4, "miss": 4, "conflict": 0, "bursts": 8}
    # naive, 8 bursts = bank 0 rows 0..3: m h c h c h c h; SALP: r0 m h, r1 c h (same subarray),
    # r2 m h (subarray 1 closed), r3 c h
    naive = place(16, SUB, "naive")
    assert access_counts(naive) == {"hit": 4, "miss": 1, "conflict": 3, "bursts": 8}
    assert access_counts(naive, subarray_parallel=True) == \
        {"hit": 4, "miss": 2, "conflict": 2, "bursts": 8}


def test_drmap_spends_less_than_naive_for_the_default_cnn():
    g, energy = DramGeometry(), DramEnergy.from_part()
    n = 86_944                                       # the default CNN's 8-bit weights, in bytes
    naive, drmap = place(n, g, "naive"), place(n, g, "drmap")
    # 2717 bursts over 22 rows (128 bursts a row). naive: all in bank 0, every new row closes the
    # previous one. drmap: the first row of each of the 8 banks finds its bank closed.
    assert access_counts(naive) == {"hit": 2695, "miss": 1, "conflict": 21, "bursts": 2717}
    assert access_counts(drmap) == {"hit": 2695, "miss": 8, "conflict": 14, "bursts": 2717}
    for voltage in (None, 1.0):
        e_naive = inference_energy(naive, energy, voltage)
        e_drmap = inference_energy(drmap, energy, voltage)
        per = e_naive["per_access_j"]
        assert e_drmap["energy_j"] < e_naive["energy_j"]
        # the difference is exactly 7 conflicts turned into misses
        assert e_naive["energy_j"] - e_drmap["energy_j"] == \
            pytest.approx(7 * (per["conflict"] - per["miss"]), rel=1e-9)
    low = inference_energy(drmap, energy, 1.0)["energy_j"]
    assert low < inference_energy(drmap, energy)["energy_j"]


def test_inference_energy_refuses_another_parts_burst():
    with pytest.raises(InputError, match="bits per burst"):
        inference_energy(place(11, HAND, "naive"), DramEnergy.from_part())


# --- error-aware -----------------------------------------------------------------------------
def test_error_aware_puts_the_most_sensitive_layer_in_the_most_reliable_partition():
    # SUB's subarray partitions: 0 = bank 0 rows 0-1, 1 = bank 0 rows 2-3, 2 = bank 1 rows 0-1,
    # 3 = bank 1 rows 2-3. By BER: 1 (1e-5), 3 (1e-4), 0 (1e-3), 2 (1e-2).
    pber = [1e-3, 1e-5, 1e-2, 1e-4]
    p = place(16, SUB, "error-aware", layer_bytes=[8, 8], layer_tolerance=[1e-2, 1e-5],
              partition_ber=pber, partition="subarray")
    # layer 1 (tolerance 1e-5) -> partition 1: slots of bank 0 rows 2, 3 = 4, 5, 6, 7;
    # layer 0 (1e-2) -> next most reliable, partition 3: bank 1 rows 2, 3 = 12..15
    assert p.chip_unit.tolist() == [12, 13, 14, 15, 4, 5, 6, 7]
    assert p.layer_partitions == ((3,), (1,)) and p.warnings == ()
    # by bank: bank BERs [1e-3, 1e-5]: layer 1 -> bank 1 in drmap order inside the bank
    # (row 0, then the next subarray's first row 2, then row 1, row 3)
    q = place(16, SUB, "error-aware", layer_bytes=[8, 8], layer_tolerance=[1e-2, 1e-5],
              partition_ber=[1e-3, 1e-5], partition="bank")
    assert q.chip_unit[4:].tolist() == [8, 9, 12, 13]      # layer 1: bank 1 rows 0 and 2
    assert q.chip_unit[:4].tolist() == [10, 11, 14, 15]    # layer 0: bank 1 rows 1 and 3
    assert q.layer_partitions == ((1,), (1,))


def test_error_aware_spills_and_warns_when_no_partition_meets_a_layer():
    pber = [1e-3, 1e-5, 1e-2, 1e-4]
    # layer 0 needs 6 bursts at 5e-5: partition 1 (4 bursts, 1e-5) then partition 3 (1e-4 > 5e-5)
    p = place(16, SUB, "error-aware", layer_bytes=[12, 4], layer_tolerance=[5e-5, 1e-1],
              partition_ber=pber)
    assert p.chip_unit.tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert p.layer_partitions == ((1, 3), (3,))
    assert len(p.warnings) == 1 and p.warnings[0].startswith("layer 0 (tolerable BER 5e-05)")
    # a burst shared by two layers follows the more sensitive one (bytes 2-3: layer 0 and 1)
    s = place(8, SUB, "error-aware", layer_bytes=[3, 5], layer_tolerance=[1e-1, 1e-5],
              partition_ber=pber)
    # units 1, 2, 3 hold layer 1 (1e-5) -> partition 1 first; unit 0 (layer 0 only) after them
    assert s.chip_unit.tolist() == [7, 4, 5, 6]


def test_partition_bers_counts_faults_per_partition():
    chip = Chip(SUB, np.array([SUB.compose(bank=0, row=2, column=1, bit=3),
                               SUB.compose(bank=1, row=0, column=0, bit=0),
                               SUB.compose(bank=0, row=3, column=3, bit=7)], dtype=np.uint64),
                np.array([1.1, 1.0, 0.9], dtype=np.float32), np.zeros(3, dtype=np.uint8),
                0.8, voltage_unit="V", nominal_voltage=1.2)
    bits = 2 * SUB.cols                               # bits of one 2-row subarray
    assert partition_bers(chip, 0.9, "subarray").tolist() == [0, 2 / bits, 1 / bits, 0]
    assert partition_bers(chip, 1.05, "subarray").tolist() == [0, 1 / bits, 0, 0]
    assert partition_bers(chip, 0.9, "bank").tolist() == [2 / (2 * bits), 1 / (2 * bits)]


# --- faults through a placement --------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_apply_placed_matches_a_dense_reference(policy):
    g = DramGeometry(banks=4, rows=64, columns=16, device_width=8, subarray_rows=16,
                     burst_length=4)                  # 4 KiB, bursts of 4 bytes
    chip = make_chip(g, 600, seed=1)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, 2_047, dtype=np.uint8)         # not a whole number of bursts
    kw = {}
    if policy == "error-aware":
        kw = dict(layer_bytes=[100, 1500, 447], layer_tolerance=[1e-2, 1e-4, 1e-3],
                  partition_ber=partition_bers(chip, 0.9, "subarray"))
    for start in ([0, 5] if policy != "error-aware" else [0]):
        p = place(image.size, g, policy, start=start, **kw)
        for v in (1.15, 0.9, 1.0, 0.8):              # out of order: one index serves them all
            clean = image.copy()
            got = apply_placed(image, chip, v, p)
            assert np.array_equal(got, dense_reference(image, chip, v, p))
            assert np.array_equal(image, clean)


def test_naive_from_zero_reads_what_the_sram_mapping_reads():
    g = DramGeometry(banks=2, rows=32, columns=64, device_width=16, subarray_rows=8)
    chip = make_chip(g, 3000, seed=4)
    image = np.random.default_rng(5).integers(0, 256, 7_000, dtype=np.uint8)
    p = place(image.size, g, "naive")
    for v in (1.1, 0.95, 0.8):
        assert np.array_equal(apply_placed(image, chip, v, p), apply_faults(image, chip, v, 0))
    # and drmap reads other bits of the same chip
    assert not np.array_equal(apply_placed(image, chip, 0.8, place(image.size, g, "drmap")),
                              apply_faults(image, chip, 0.8, 0))


def test_quantized_model_reads_through_a_placement():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10))
    qm = QuantizedModel(model, bits=8)
    g = DramGeometry(banks=2, rows=32, columns=64, device_width=16, subarray_rows=8)
    chip = make_chip(g, 3000, seed=6)
    sizes = image_layer_bytes(qm)
    assert sizes == [1200, 300]
    p = place(qm.image.size, g, "error-aware", layer_bytes=sizes, layer_tolerance=[1e-3, 1e-2],
              partition_ber=partition_bers(chip, 0.9, "subarray"))
    layout = MemoryLayout(mapping="error-aware", layer_tolerance=(1e-3, 1e-2))
    assert layout.dram_mapping(qm, chip, 0.9) == p
    faulty = qm.faulty_image(chip, 0.9, layout=layout)
    assert np.array_equal(faulty, apply_placed(qm.image, chip, 0.9, p))
    assert not np.array_equal(faulty, qm.image)
    w = qm.perturbed(chip, 0.9, layout=layout)
    ref = qm.dequantize(faulty)
    assert all(torch.equal(w[k], ref[k]) for k in ref)
    drmap = MemoryLayout(mapping="drmap")           # offset = bursts left empty before the image
    assert np.array_equal(qm.faulty_image(chip, 0.9, offset=3, layout=drmap),
                          apply_placed(qm.image, chip, 0.9, place(qm.image.size, g, "drmap",
                                                                  start=3)))
    with pytest.raises(InputError, match="offset must be 0"):
        qm.faulty_image(chip, 0.9, offset=3, layout=layout)
    with pytest.raises(InputError, match="needs a DRAM chip"):
        qm.faulty_image(RandomBitErrors(1e-3, seed=0), layout=layout)
    sram = Chip.random(Geometry(8, 64), BerCurve.builtin("finfet14"), 0.75, seed=0)
    with pytest.raises(InputError, match="needs a DRAM chip"):
        qm.faulty_image(sram, 0.9, layout=drmap)


def test_image_layer_bytes_for_sub_byte_words():
    torch.manual_seed(0)
    qm = QuantizedModel(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1)), bits=4)
    # 9 codes (4.5 bytes) then 3 codes: the shared byte 4 counts to layer 0
    assert image_layer_bytes(qm) == [5, qm.image.size - 5]
    assert sum(image_layer_bytes(qm)) == qm.image.size


def test_fault_index_is_rebuilt_for_another_chip_and_is_deterministic():
    g = DramGeometry(banks=2, rows=32, columns=64, device_width=16, subarray_rows=8)
    image = np.random.default_rng(7).integers(0, 256, 5_000, dtype=np.uint8)
    p = place(image.size, g, "drmap", start=3)
    a, b = make_chip(g, 2000, seed=8), make_chip(g, 2000, seed=9)
    first = [apply_placed(image, c, 0.85, p) for c in (a, b)]
    for _ in range(FAULT_INDEX.size + 2):              # evict and rebuild, alternate chips
        for c, want in zip((b, a), first[::-1]):
            assert np.array_equal(apply_placed(image, c, 0.85, p), want)
    assert place(image.size, g, "drmap", start=3) == p


def test_apply_placed_is_the_same_with_any_thread_count():
    """1, 2 (and 3 where numba's pool has them; tests/test_determinism.py runs 3 in its own
    process) threads: the same bytes, equal to the bit-by-bit reference."""
    from conftest import numba_thread_counts
    g = DramGeometry(banks=2, rows=256, columns=1024, device_width=32, subarray_rows=64)  # 2 MiB
    chip = make_chip(g, 40_000, seed=10)
    image = np.random.default_rng(11).integers(0, 256, 1_500_000, dtype=np.uint8)  # parallel path
    p = place(image.size, g, "drmap", start=7)
    before = numba.get_num_threads()
    outs = []
    try:
        for threads in numba_thread_counts():
            numba.set_num_threads(threads)
            outs.append(apply_placed(image, chip, 0.9, p))
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert np.array_equal(outs[0], dense_reference(image, chip, 0.9, p))


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(policy="zigzag"), "unknown mapping policy 'zigzag'"),
    (dict(start=-1), "start"),
    (dict(start=1.5), "start"),
    (dict(policy="error-aware", layer_bytes=[5, 5], layer_tolerance=[1e-3, 1e-3],
          partition_ber=[0] * 4), "layer_bytes sum to 10 bytes, not the image's 16"),
    (dict(policy="error-aware", layer_bytes=[8, 8], layer_tolerance=[0, 1e-3],
          partition_ber=[0] * 4), r"layer_tolerance\[0\] must lie in \(0, 1\]"),
    (dict(policy="error-aware", layer_bytes=[8, 8], layer_tolerance=[1e-3, 1.5],
          partition_ber=[0] * 4), r"layer_tolerance\[1\] must lie in \(0, 1\], got 1.5"),
    (dict(policy="error-aware", layer_bytes=[8, 8], layer_tolerance=[1e-3, float("nan")],
          partition_ber=[0] * 4), r"layer_tolerance\[1\]"),
    (dict(policy="error-aware", layer_bytes=[8, 8], layer_tolerance=[1e-3],
          partition_ber=[0] * 4), "layer_tolerance has 1 values for 2 layers"),
    (dict(policy="error-aware", layer_bytes=[8, 8], layer_tolerance=[1e-3, 1e-3],
          partition_ber=[0] * 3), "partition_ber has 3 values; the part has 4 subarray"),
    (dict(policy="error-aware", layer_bytes=[16]), "needs layer_bytes, layer_tolerance"),
    (dict(policy="error-aware", layer_bytes=[16], layer_tolerance=[1e-3], partition_ber=[0] * 4,
          start=2), "start must be 0"),
    (dict(policy="drmap", layer_tolerance=[1e-3]), "apply to the error-aware policy"),
    (dict(policy="error-aware", layer_bytes=[16], layer_tolerance=[1e-3], partition_ber=[0] * 4,
          partition="rank"), "partition must be one of bank, subarray"),
])
def test_bad_input_is_one_line(kwargs, message):
    with pytest.raises(InputError, match=message) as exc:
        place(16, SUB, **kwargs)
    assert "\n" not in str(exc.value)


def test_a_model_too_large_for_the_dram_names_both_sizes():
    with pytest.raises(InputError, match="image of 33 bytes does not fit the DRAM of 32 bytes"):
        place(33, SUB, "drmap")
    with pytest.raises(InputError, match="32 bytes from burst 1 does not fit the DRAM of 32"):
        place(32, SUB, "naive", start=1)
    place(32, SUB, "naive")                            # exactly full is fine


def test_apply_placed_refuses_mismatches():
    p = place(16, SUB, "naive")
    other = make_chip(HAND, 10)
    with pytest.raises(InputError, match="placement was made for"):
        apply_placed(np.zeros(16, np.uint8), other, 1.0, p)
    with pytest.raises(InputError, match="image of 15 bytes"):
        apply_placed(np.zeros(15, np.uint8), make_chip(SUB, 10), 1.0, p)
    assert isinstance(p, DramMapping)


def test_a_placement_built_by_hand_is_checked():
    DramMapping(SUB, "custom", 4, 2, [3, 0])
    with pytest.raises(InputError, match="lists a chip burst twice"):
        DramMapping(SUB, "custom", 4, 2, [3, 3])
    with pytest.raises(InputError, match=r"must lie in \[0, 16\)"):
        DramMapping(SUB, "custom", 4, 2, [3, 16])
    with pytest.raises(InputError, match="needs 2"):
        DramMapping(SUB, "custom", 4, 2, [3])
    with pytest.raises(InputError, match="one burst"):
        DramMapping(SUB, "custom", 4, 4, [3])
    assert not place(16, SUB, "drmap").chip_unit.flags.writeable
