"""Voltage domains: which image bytes each domain holds, reading under an assignment (each byte
as its domain's voltage reads it), nesting per domain, assignments as values and files, and the
energy that sums over domains."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sramsim import BerCurve, Chip, DramGeometry, Geometry, QuantizedModel
from sramsim.analysis.domain_energy import DomainAccesses
from sramsim.analysis.energy import saving
from sramsim.errors import InputError
from sramsim.inject.activations import QuantizedActivations
from sramsim.inject.domains import VoltageAssignment, WeightDomains, bit_mask, read_assigned
from sramsim.inject.layout import MemoryLayout
from sramsim.memory.dram_errors import dram_chip

CURVE = BerCurve.builtin("finfet14")


def model_qm(bits: int = 8) -> QuantizedModel:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 10), torch.nn.ReLU(),
                                torch.nn.Linear(10, 5), torch.nn.Linear(5, 3))
    return QuantizedModel(model, bits=bits)


def test_layer_labels_follow_the_segments():
    qm = model_qm()
    d = WeightDomains.build(qm, "layer")
    assert d.names == ("1.weight", "3.weight", "4.weight")
    labels = d.labels(qm)
    assert np.bincount(labels).tolist() == [200, 50, 15]
    assert d.image_bytes(qm) == [200.0, 50.0, 15.0]
    q4 = model_qm(4)       # 4-bit codes: a byte shared by two layers goes to the first
    lab = WeightDomains.build(q4, "layer").labels(q4)
    assert lab[99] == 0 and lab[100] == 1 and lab[124] == 1 and lab[125] == 2
    assert WeightDomains.build(qm, "memory").labels(qm).tolist() == [0] * qm.image.size


def test_bank_labels_follow_the_placement():
    qm = model_qm()
    g = Geometry(16, 32, banks=4)          # 64 bytes per bank, 256 bytes: the image wraps
    chip = Chip.random(g, CURVE, 0.75, seed=0)
    d = WeightDomains.build(qm, "bank", g)
    assert d.names == ("bank0", "bank1", "bank2", "bank3")
    lab = d.labels(qm, chip, 0)
    assert lab[:64].tolist() == [0] * 64 and lab[64] == 1 and lab[256] == 0
    shifted = d.labels(qm, chip, 10)       # byte b at chip byte (b + 10) % 256
    assert shifted[53] == 0 and shifted[54] == 1 and shifted[246] == 0
    assert d.image_bytes(qm, g) == [qm.image.size / 4] * 4


def test_partition_labels_follow_the_dram_mapping():
    qm = model_qm()
    g = DramGeometry(banks=4, rows=8, columns=16, device_width=8, subarray_rows=4,
                     burst_length=2)
    chip = dram_chip(g, CURVE, 0.75, seed=0, nominal_voltage=1.0)
    layout = MemoryLayout(mapping="drmap", partition="bank")
    d = WeightDomains.build(qm, "partition", g, layout)
    assert d.names == ("bank0", "bank1", "bank2", "bank3")
    lab = d.labels(qm, chip, 0, layout)
    m = layout.dram_mapping(qm, chip, 1.0, 0)
    want = np.repeat(m.locations()["bank"], m.unit_bytes)[:qm.image.size]
    assert np.array_equal(lab, want) and len(set(lab.tolist())) == 4   # drmap: banks in turn
    sub = WeightDomains.build(qm, "partition", g, MemoryLayout(mapping="naive"))
    assert sub.names[:3] == ("bank0.sub0", "bank0.sub1", "bank1.sub0")


def test_uniform_assignment_is_the_plain_read_and_mixed_reads_take_each_domains_voltage():
    qm = model_qm()
    chip = Chip.random(Geometry(32, 64), CURVE, 0.75, seed=4,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})
    d = WeightDomains.build(qm, "layer")
    lab = d.labels(qm)
    for offset in (0, 7):
        plain = MemoryLayout().read(qm, chip, 0.8, offset)[0]
        assert np.array_equal(read_assigned(qm, chip, [0.8] * 3, lab, offset), plain)
        volts = [0.9, 0.76, 0.8]
        got = read_assigned(qm, chip, volts, lab, offset)
        for i, v in enumerate(volts):
            at_v = MemoryLayout().read(qm, chip, v, offset)[0]
            assert np.array_equal(got[lab == i], at_v[lab == i])
    assert not qm.image.flags.writeable                  # the clean image is never written


def test_lowering_one_domain_only_adds_faults_to_its_bytes():
    qm = model_qm()
    chip = Chip.random(Geometry(32, 64), CURVE, 0.75, seed=2)
    lab = WeightDomains.build(qm, "layer").labels(qm)
    a = read_assigned(qm, chip, [0.85, 0.85, 0.85], lab)
    b = read_assigned(qm, chip, [0.85, 0.76, 0.85], lab)
    diff_a, diff_b = a ^ qm.image, b ^ qm.image
    assert np.array_equal(diff_a[lab != 1], diff_b[lab != 1])
    assert np.all((diff_a[lab == 1] & ~diff_b[lab == 1]) == 0)         # flips: nested
    assert np.bitwise_count(diff_b[lab == 1]).sum() > np.bitwise_count(diff_a[lab == 1]).sum()


def test_bit_domains_hold_each_significance_of_every_code():
    qm = model_qm()
    d = WeightDomains.build(qm, "bit")
    assert d.names == tuple(f"bit{b}" for b in range(7, -1, -1))
    assert d.labels(qm).tolist() == [[7, 6, 5, 4, 3, 2, 1, 0]]     # byte bit j -> "bit{j}"
    assert bit_mask(d.labels(qm), [0]).tolist() == [0x80]             # bit7: the sign bit
    assert bit_mask(d.labels(qm), [6, 7]).tolist() == [0x03]
    assert d.image_bytes(qm) == [qm.image.size / 8] * 8
    q4 = model_qm(4)                     # two codes per byte, each from bit 0 of its nibble
    d4 = WeightDomains.build(q4, "bit")
    assert d4.names == ("bit3", "bit2", "bit1", "bit0")
    assert bit_mask(d4.labels(q4), [0]).tolist() == [0x88]
    assert bit_mask(d4.labels(q4), [3]).tolist() == [0x11]
    q2 = model_qm(2)
    assert bit_mask(WeightDomains.build(q2, "bit").labels(q2), [0]).tolist() == [0xAA]
    assert bit_mask(d4.labels(q4), []).tolist() == [0]
    with pytest.raises(InputError, match="without ecc"):
        WeightDomains.build(qm, "bit", layout=MemoryLayout(bit_placement="shuffle"))


def test_bit_domain_read_takes_each_nibble_at_its_voltage():
    """Exact bits: the high nibble as the chip reads at 0.9 V, the low one as at 0.76 V."""
    qm = model_qm()
    chip = Chip.random(Geometry(32, 64), CURVE, 0.75, seed=1)
    plain_hi = MemoryLayout().read(qm, chip, 0.9, 0)[0]
    plain_lo = MemoryLayout().read(qm, chip, 0.76, 0)[0]
    lab = WeightDomains.build(qm, "bit").labels(qm)
    volts = [0.9] * 4 + [0.76] * 4       # bits 7..4 at 0.9 V, bits 3..0 at 0.76 V
    got = read_assigned(qm, chip, volts, lab)
    assert np.array_equal(got & 0xF0, plain_hi & 0xF0)
    assert np.array_equal(got & 0x0F, plain_lo & 0x0F)
    assert np.array_equal(read_assigned(qm, chip, [0.8] * 8, lab),
                          MemoryLayout().read(qm, chip, 0.8, 0)[0])


@settings(max_examples=40, deadline=None)
@given(volts=st.lists(st.sampled_from([0.76, 0.8, 0.85, 0.95]), min_size=8, max_size=8),
       offset=st.integers(0, 300), bits=st.sampled_from([8, 4, 2]),
       seed=st.integers(0, 3))
def test_bit_domain_read_matches_a_per_bit_reference(volts, offset, bits, seed):
    """Against a plain loop: stored bit j of byte i is bit j of the chip's read at the voltage
    of its significance j mod bits."""
    qm = model_qm(bits)
    chip = Chip.random(Geometry(32, 64), CURVE, 0.75, seed=seed,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})
    d = WeightDomains.build(qm, "bit")
    v_of = {d.names.index(f"bit{s}"): v for s, v in zip(range(bits), volts, strict=False)}
    got = read_assigned(qm, chip, [v_of[i] for i in range(bits)], d.labels(qm), offset)
    reads = {v: MemoryLayout().read(qm, chip, v, offset)[0] for v in set(v_of.values())}
    want = np.zeros_like(qm.image)
    for j in range(8):
        v = v_of[d.names.index(f"bit{j % bits}")]
        want |= reads[v] & np.uint8(1 << j)
    assert np.array_equal(got, want)


def test_domains_refuse_what_is_not_modelled():
    qm = model_qm()
    with pytest.raises(InputError, match="without ecc"):
        WeightDomains.build(qm, "layer", layout=MemoryLayout(ecc="secded13"))
    with pytest.raises(InputError, match="SRAM chip geometry"):
        WeightDomains.build(qm, "bank")
    with pytest.raises(InputError, match="DRAM chip"):
        WeightDomains.build(qm, "partition", Geometry(8, 8))
    with pytest.raises(InputError, match="domains"):
        WeightDomains.build(qm, "rows")
    assert WeightDomains.build(qm, "memory", layout=MemoryLayout(ecc="secded13")).names == \
        ("weights",)


def test_assignment_values_and_files(tmp_path):
    a = VoltageAssignment.of({"x": 0.9, "y": 0.85})
    assert a["y"] == 0.85 and a.names == ("x", "y") and a.key() == "x=0.900000,y=0.850000"
    assert a.check(["y", "x"]).names == ("y", "x")
    assert a.replace("x", 0.8).as_dict() == {"x": 0.8, "y": 0.85}
    with pytest.raises(InputError, match="no voltage for domain"):
        a.check(["x", "y", "z"])
    with pytest.raises(InputError, match="unknown domain"):
        a.check(["x"])
    for bad in ({"x": -1}, {"x": "high"}, {"x": float("nan")}, {}, [0.9]):
        with pytest.raises(InputError):
            VoltageAssignment.of(bad)
    (tmp_path / "a.json").write_text(json.dumps({"x": 0.9, "y": 0.85}))
    assert VoltageAssignment.load(tmp_path / "a.json") == a
    (tmp_path / "plan.json").write_text(json.dumps({"planned": {"assignment": {"x": 0.9,
                                                                             "y": 0.85}}}))
    assert VoltageAssignment.load(tmp_path / "plan.json") == a
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not a JSON"):
        VoltageAssignment.load(tmp_path / "bad.json")


def test_energy_sums_over_domains():
    qm = model_qm()
    d = WeightDomains.build(qm, "layer")
    acts = QuantizedActivations(("1", "3"), (1.0, 1.0), (10, 5))
    e = DomainAccesses.of(qm, d, activations=acts)
    assert e.names == ("1.weight", "3.weight", "4.weight", "activations")
    assert e.accesses == (200.0, 50.0, 15.0, 30.0)        # activations: 15 bytes, write + read
    u = VoltageAssignment.uniform(e.names, 0.833)
    assert e.saving(u) == pytest.approx(saving(0.833))
    mixed = VoltageAssignment.of({"1.weight": 0.8, "3.weight": 1.0, "4.weight": 0.9,
                                  "activations": 0.9})
    want = 200 * 0.8 ** 2 + 50 + 15 * 0.81 + 30 * 0.81
    assert e.energy(mixed) == pytest.approx(want)
    assert sum(e.shares(mixed).values()) == pytest.approx(1.0)
    assert e.shares(mixed)["3.weight"] == pytest.approx(50 / want)
    with pytest.raises(InputError):
        e.energy(VoltageAssignment.of({"1.weight": 0.8}))
