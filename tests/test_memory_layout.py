"""MemoryLayout: one validated value for how weights are stored; its read path composes mapping,
bit placement and ECC exactly as the pieces do by hand, and refuses what is not modelled in one
place (with the CLI's flag names where the CLI builds it)."""
import argparse

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.commands.main import LAYOUT_FLAGS, memory_layout
from sramsim.errors import InputError
from sramsim.inject import dram_mapping as DM
from sramsim.inject import inplace
from sramsim.inject.layout import MemoryLayout, check_fields
from sramsim.inject.mapping import apply_faults
from sramsim.memory.chip import Faults
from sramsim.memory.dram import DramGeometry
from sramsim.memory.kernels import changed_bits, fault_masks, read_byte

MIXED = {"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25}
SMALL_DRAM = DramGeometry(banks=2, rows=32, columns=16, device_width=8, subarray_rows=8,
                          burst_length=4)


def small_qm(bits: int = 8) -> QuantizedModel:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4))
    return QuantizedModel(model, bits=bits)


def dram_chip(n: int = 300, seed: int = 1) -> Chip:
    rng = np.random.default_rng(seed)
    address = rng.choice(SMALL_DRAM.capacity_bits, n, replace=False).astype(np.uint64)
    vfail = np.sort(rng.uniform(0.8, 1.2, n).astype(np.float32))[::-1].copy()
    return Chip(SMALL_DRAM, address, vfail, rng.integers(0, 3, n).astype(np.uint8), 0.8,
                voltage_unit="V", nominal_voltage=1.2)


# ------------------------------------------------------------------------------ the byte rule

def plain_read(stored: int, kinds: dict[int, int]) -> int:
    """A stored byte read back bit by bit: kinds maps bit position -> 0 flip / 1 stuck0 / 2 stuck1."""
    out = stored
    for j, kind in kinds.items():
        bit = 1 << j
        out = out ^ bit if kind == 0 else (out & ~bit & 0xFF) if kind == 1 else out | bit
    return out


@settings(max_examples=200, deadline=None)
@given(stored=st.integers(0, 255), kinds=st.dictionaries(st.integers(0, 7), st.integers(0, 2)))
def test_byte_rule_equals_the_bitwise_reference(stored, kinds):
    x = c = s = 0
    for j, kind in kinds.items():
        fx, fc, fs = fault_masks(kind, np.uint8(1 << j))
        x, c, s = x | int(fx), c | int(fc), s | int(fs)
    assert int(read_byte(np.uint8(stored), np.uint8(x), np.uint8(c), np.uint8(s))) == \
        plain_read(stored, kinds)


def test_byte_rule_exact_cases():
    # 0b1010_0101: flip bit 0 -> 0xA4; stuck0 bit 2 -> 0xA1; stuck1 bit 1 -> 0xA7; all three
    assert read_byte(np.uint8(0xA5), np.uint8(1), np.uint8(0), np.uint8(0)) == 0xA4
    assert read_byte(np.uint8(0xA5), np.uint8(0), np.uint8(4), np.uint8(0)) == 0xA1
    assert read_byte(np.uint8(0xA5), np.uint8(0), np.uint8(0), np.uint8(2)) == 0xA7
    assert read_byte(np.uint8(0xA5), np.uint8(1), np.uint8(4), np.uint8(2)) == 0xA2


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_changed_bits_is_the_popcount_of_the_applied_faults(data):
    image = np.array(data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=16)),
                     dtype=np.uint8)
    address = sorted(data.draw(st.sets(st.integers(0, image.size * 8 - 1))))
    kind = data.draw(st.lists(st.integers(0, 2), min_size=len(address), max_size=len(address)))
    faults = Faults(np.array(address, dtype=np.uint64), np.array(kind, dtype=np.uint8))
    faulty = apply_faults(image, faults)
    assert changed_bits(image, faults.address, faults.kind) == \
        int(np.unpackbits(image ^ faulty).sum())


# ------------------------------------------------------------------------------ the value

def test_layout_is_a_checked_immutable_value():
    plain = MemoryLayout()
    assert plain.is_plain and plain.describe() == {} and plain.read_overhead == 1.0
    ecc = MemoryLayout(ecc="secded72", ecc_policy="zero")
    assert ecc.describe() == {"ecc": "secded72", "ecc_policy": "zero"}
    assert ecc.read_overhead == pytest.approx(72 / 64) and ecc.ecc_record() == \
        {"code": "secded72", "policy": "zero"}
    assert MemoryLayout(bit_placement="shuffle").table_bits_per_word(8) == 3
    assert MemoryLayout(mapping="drmap").dram and not plain.dram
    with pytest.raises(AttributeError):
        plain.ecc = "secded72"                       # frozen
    assert MemoryLayout(ecc="secded13") == MemoryLayout(ecc="secded13")


@pytest.mark.parametrize("fields,match", [
    ({"mapping": "diagonal"}, "mapping 'diagonal'"),
    ({"bit_placement": "rotate"}, "bit placement 'rotate'"),
    ({"ecc": "hamming"}, "ecc 'hamming'"),
    ({"ecc": "secded72", "ecc_policy": "drop"}, "ecc policy 'drop'"),
    ({"ecc_policy": "zero"}, "ecc policy needs ecc"),
    ({"bit_placement": "shuffle", "ecc": "secded72"}, "shuffle with ecc is not modelled"),
    ({"bit_placement": "shuffle", "mapping": "drmap"}, "with the DRAM mapping drmap"),
    ({"ecc": "secded72", "mapping": "error-aware"}, "error-aware DRAM mapping is not modelled"),
    ({"planning_voltage": 0.8}, "applies to a bit placement only"),
    ({"bit_placement": "shuffle", "planning_voltage": float("nan")}, "planning_voltage"),
    ({"layer_tolerance": (0.1,)}, "error-aware mapping only"),
    ({"mapping": "error-aware", "layer_tolerance": (0.1, 2.0)}, r"layer_tolerance\[1\]"),
    ({"partition": "rank"}, "partition 'rank'"),
])
def test_refusals_in_one_place(fields, match):
    with pytest.raises(InputError, match=match):
        MemoryLayout(**fields)


def test_the_cli_builds_it_with_its_flag_names():
    def args(**kw):
        base = {"mapping": "linear", "bit_placement": "linear", "ecc": None, "ecc_policy": "keep"}
        return argparse.Namespace(**{**base, **kw})
    assert memory_layout(args(ecc="secded13")) == MemoryLayout(ecc="secded13")
    with pytest.raises(InputError, match="--bit-placement shuffle with --ecc is not modelled"):
        memory_layout(args(bit_placement="shuffle", ecc="secded72"))
    with pytest.raises(InputError, match="--ecc-policy needs --ecc"):
        memory_layout(args(ecc_policy="zero"))
    with pytest.raises(InputError, match="needs a known chip map \\(--profile\\)"):
        memory_layout(args(bit_placement="shuffle"), "--profile")
    with pytest.raises(InputError, match="--mapping drmap needs DRAM chip profiles"):
        memory_layout(args(mapping="drmap"), "--profile")
    with pytest.raises(InputError, match="--mapping 'x'"):
        check_fields({"mapping": "x"}, LAYOUT_FLAGS)


def test_sources_a_layout_cannot_read_are_refused():
    qm = small_qm()
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.75, seed=0)
    with pytest.raises(InputError, match="needs a voltage"):
        qm.faulty_image(chip)
    with pytest.raises(InputError, match="a voltage was given with a RandomBitErrors"):
        qm.faulty_image(RandomBitErrors(0.01, seed=0), voltage=0.8)
    with pytest.raises(InputError, match="needs a DRAM chip"):
        qm.faulty_image(chip, 0.8, layout=MemoryLayout(mapping="naive"))
    with pytest.raises(InputError, match="unknown fault source str"):
        qm.faulty_image("chip")


# ------------------------------------------------------------------------------ the read path

@pytest.mark.parametrize("policy", ["naive", "drmap"])
@pytest.mark.parametrize("code", ["secded72", "secded13"])
def test_ecc_over_a_dram_mapping_is_the_pieces_composed_by_hand(policy, code):
    """The stored image (check bits included) is what the DRAM mapping places; its faulty read is
    decoded: bit-identical to doing the three steps by hand, and to the in-place path."""
    qm = small_qm(4)
    chip = dram_chip(2000)
    layout = MemoryLayout(mapping=policy, ecc=code, ecc_policy="zero")
    memory = qm.ecc_memory(code)
    for v, start in ((1.0, 0), (0.85, 2)):
        mapping = DM.place(memory.stored.size, SMALL_DRAM, policy, start=start)
        stored = DM.apply_placed(memory.stored, chip, v, mapping)
        expected, stats = memory.decode(stored, "zero")
        image, record = layout.read(qm, chip, v, start)
        assert np.array_equal(image, expected) and record == {"ecc": stats.as_dict()}
        model = __import__("copy").deepcopy(qm.model)
        ref = qm.dequantize(image)
        with inplace.faults_applied(qm, model, chip, v, start, layout) as applied:
            for name, p in model.named_parameters():
                if name in ref:
                    assert torch.equal(p.detach().view(torch.int32), ref[name].view(torch.int32))
        assert applied.record == record
    assert stats.faulty_words > 0


def test_error_aware_fills_the_most_reliable_partitions_first():
    qm = small_qm()
    chip = dram_chip(3000, seed=4)
    layout = MemoryLayout(mapping="error-aware")
    mapping = layout.dram_mapping(qm, chip, 0.9)
    ber = DM.partition_bers(chip, 0.9, "subarray")
    used = np.unique(SMALL_DRAM.partition_index(mapping.chip_unit * mapping.unit_bytes * 8,
                                                "subarray"))
    best = DM.partition_order(SMALL_DRAM, ber, "subarray")[:used.size]
    assert sorted(used.tolist()) == sorted(best.tolist())
    assert np.array_equal(qm.faulty_image(chip, 0.9, layout=layout),
                          DM.apply_placed(qm.image, chip, 0.9, mapping))
