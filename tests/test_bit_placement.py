"""Fault-aware bit placement (ReSpawn): hand-made chips with known stored positions and read-back
bytes, a property test against a plain per-word reference (plan and read), MSB faults never
increased by shuffle, nesting above the planning voltage, QuantizedModel plumbing and refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import small_world

from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.errors import InputError
from sramsim.analysis.executors import Execution
from sramsim.inject import bit_placement as BP
from sramsim.inject.layout import MemoryLayout

FLIP, STUCK0, STUCK1 = 0, 1, 2


def make_chip(geometry: Geometry, faults: list[tuple[int, float, int]]) -> Chip:
    """A chip from (address, vfail, kind) triples (sorted here by vfail descending)."""
    faults = sorted(faults, key=lambda f: -f[1])
    return Chip(geometry, np.array([f[0] for f in faults], dtype=np.uint64),
                np.array([f[1] for f in faults], dtype=np.float32),
                np.array([f[2] for f in faults], dtype=np.uint8), v_floor=0.5)


# ------------------------------------------------------------------------------ the reference

def ref_rotation(cells: list[int], word_bits: int, bits: int) -> int:
    """Smallest rotation whose per-significance fault counts, MSB first, are least."""
    def counts(r):
        c = [0] * bits
        for cell in cells:
            c[(cell - r) % word_bits % bits] += 1
        return c[::-1]
    return min(range(word_bits), key=lambda r: (counts(r), r))


def ref_read(image: np.ndarray, chip: Chip, v_plan: float, v_read: float, policy: str,
             bits: int, offset: int) -> np.ndarray:
    """Store each image word bit by bit through the placement, apply the faults cell by cell,
    read back through the inverse placement. Plain Python, one word at a time."""
    g = chip.geometry
    wb, cap = g.word_bits, g.capacity_words
    plan_cells, read_cells = {}, {}
    for a, vf, k in zip(chip.address.tolist(), chip.vfail.tolist(), chip.kind.tolist()):
        if vf >= np.float32(v_plan):
            plan_cells.setdefault(a // wb, []).append(a % wb)
        if vf >= np.float32(v_read):
            read_cells[a] = k
    n_words = -(-image.size * 8 // wb)
    if policy == "skip-faulty-words":
        order = [(offset + i) % cap for i in range(cap)]
        good = [w for w in order if w not in plan_cells]
        assert len(good) >= n_words
        chip_word = good[:n_words]
    else:
        chip_word = [(k + offset) % cap for k in range(n_words)]
    bits_in = np.unpackbits(image, bitorder="little").tolist()
    bits_out = list(bits_in)
    for k in range(n_words):
        w = chip_word[k]
        r = ref_rotation(plan_cells.get(w, []), wb, bits) if policy == "shuffle" else 0
        stored = [0] * wb
        for i in range(wb):
            if k * wb + i < len(bits_in):
                stored[(i + r) % wb] = bits_in[k * wb + i]
        for c in range(wb):
            kind = read_cells.get(w * wb + c)
            if kind == FLIP:
                stored[c] ^= 1
            elif kind == STUCK0:
                stored[c] = 0
            elif kind == STUCK1:
                stored[c] = 1
        for i in range(wb):
            if k * wb + i < len(bits_out):
                bits_out[k * wb + i] = stored[(i + r) % wb]
    return np.packbits(np.array(bits_out, dtype=np.uint8), bitorder="little")


def read(image, chip, v_plan, v_read, policy, bits, offset=0):
    """The module under test: plan at v_plan, read at v_read."""
    p = BP.plan(chip, v_plan, policy, bits, -(-image.size * 8 // chip.geometry.word_bits), offset)
    return BP.apply_placed_bits(image, chip, v_read, p), p


# ------------------------------------------------------------------------------ exact cases

def test_shuffle_hand_made_8bit():
    # 4 words of 8 bits; word 0: cell 7 (the MSB) flips; word 1: cells 6 and 7 stuck at 0
    chip = make_chip(Geometry(4, 8), [(7, 0.9, FLIP), (14, 0.9, STUCK0), (15, 0.9, STUCK0)])
    image = np.array([0x00, 0xFF, 0x5A, 0x00], dtype=np.uint8)
    out, p = read(image, chip, 0.9, 0.9, "shuffle", 8)
    # word 0: rotation 7 puts logical bit 0 on cell 7; word 1: rotation 6, bits 0, 1 on cells 6, 7
    assert p.words.tolist() == [0, 1] and p.rotation.tolist() == [7, 6]
    stored_word1 = ((0xFF << 6) | (0xFF >> 2)) & 0xFF           # rotl(0xFF, 6)
    assert stored_word1 == 0xFF
    assert out.tolist() == [0x01, 0xFC, 0x5A, 0x00]
    linear, _ = read(image, chip, 0.9, 0.9, "linear", 8)
    assert linear.tolist() == [0x80, 0x3F, 0x5A, 0x00]
    assert p.overhead()["remapped_words"] == 2 and p.overhead()["table_bits_per_word"] == 3


def test_shuffle_stored_positions_rotate_data():
    # data 0b1000_0001 in word 0, flip at cell 7 -> rotation 7: stored rotl(x, 7) = 0b1100_0000;
    # cell 7 flips -> stored 0b0100_0000 -> read rotr(., 7) = rotl(., 1) = 0b1000_0000
    chip = make_chip(Geometry(2, 8), [(7, 0.9, FLIP)])
    out, p = read(np.array([0x81, 0x00], dtype=np.uint8), chip, 0.9, 0.9, "shuffle", 8)
    assert p.rotation.tolist() == [7]
    assert out.tolist() == [0x80, 0x00]


def test_shuffle_4bit_codes_each_have_an_msb():
    # cells 3 and 7 are the MSBs of the two 4-bit codes of word 0: rotation 3 turns both into LSBs
    chip = make_chip(Geometry(2, 8), [(3, 0.9, FLIP), (7, 0.9, FLIP)])
    out, p = read(np.array([0x00, 0x00], dtype=np.uint8), chip, 0.9, 0.9, "shuffle", 4)
    assert p.rotation.tolist() == [3]
    assert out.tolist() == [0x11, 0x00]            # bit 0 of each code
    assert p.table_bits_per_word == 2


def test_skip_faulty_words_lays_out_on_good_words():
    # words 0, 1 faulty at 0.9; word 2 gets a fault only at 0.8
    chip = make_chip(Geometry(4, 8), [(7, 0.9, FLIP), (14, 0.9, STUCK0), (16 + 7, 0.8, FLIP)])
    image = np.array([0x00, 0xFF], dtype=np.uint8)
    out, p = read(image, chip, 0.9, 0.9, "skip-faulty-words", 8)
    assert p.words.tolist() == [0, 1] and out.tolist() == [0x00, 0xFF]
    out, _ = read(image, chip, 0.9, 0.8, "skip-faulty-words", 8)
    assert out.tolist() == [0x80, 0xFF]            # image word 0 sits on chip word 2
    # offset 3: image words on chip words 3, 2 (wrapping past 0 and 1)
    out, _ = read(image, chip, 0.9, 0.8, "skip-faulty-words", 8, offset=3)
    assert out.tolist() == [0x00, 0x7F]
    assert p.overhead()["skipped_words"] == 2


def test_skip_faulty_words_refuses_an_image_too_large():
    chip = make_chip(Geometry(4, 8), [(7, 0.9, FLIP), (14, 0.9, STUCK0)])
    with pytest.raises(InputError, match="needs 3 words .* only 2 fault-free words of 4"):
        read(np.zeros(3, dtype=np.uint8), chip, 0.9, 0.9, "skip-faulty-words", 8)


def test_wide_words_and_tiling():
    # 16-bit words: two 8-bit codes, MSBs at cells 7 and 15; image of 3 words on a 2-word chip
    chip = make_chip(Geometry(2, 16, word_bits=16), [(7, 0.9, FLIP), (15, 0.9, FLIP)])
    image = np.zeros(6, dtype=np.uint8)
    out, p = read(image, chip, 0.9, 0.9, "shuffle", 8)
    assert p.rotation.tolist() == [7]
    assert out.tolist() == [0x01, 0x01, 0x00, 0x00, 0x01, 0x01]   # words 0 and 2 share chip word 0
    assert np.array_equal(out, ref_read(image, chip, 0.9, 0.9, "shuffle", 8, 0))


def test_linear_is_the_default_mapping():
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.8, 3,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})
    image = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)
    from sramsim.inject.mapping import apply_faults
    out, _ = read(image, chip, 0.8, 0.8, "linear", 8, offset=5)
    assert np.array_equal(out, apply_faults(image, chip, 0.8, 5))


# ------------------------------------------------------------------------------ properties

@settings(max_examples=60, deadline=None)
@given(data=st.data(), policy=st.sampled_from(BP.POLICIES), bits=st.sampled_from([8, 4, 2]),
       word_bits=st.sampled_from([8, 16]))
def test_matches_the_reference(data, policy, bits, word_bits):
    rows = data.draw(st.integers(1, 6))
    g = Geometry(rows, 32, word_bits=word_bits)
    n = data.draw(st.integers(0, min(20, g.capacity_bits)))
    addr = data.draw(st.lists(st.integers(0, g.capacity_bits - 1), min_size=n, max_size=n,
                              unique=True))
    vf = data.draw(st.lists(st.sampled_from([0.95, 0.9, 0.85, 0.8]), min_size=n, max_size=n))
    kinds = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    chip = make_chip(g, list(zip(addr, vf, kinds)))
    nbytes = data.draw(st.integers(1, 3 * g.capacity_bytes))
    image = np.frombuffer(data.draw(st.binary(min_size=nbytes, max_size=nbytes)), dtype=np.uint8)
    offset = data.draw(st.integers(-50, 50))
    v_plan, v_read = data.draw(st.sampled_from([0.95, 0.85])), data.draw(st.sampled_from([0.9, 0.8]))
    if policy == "skip-faulty-words":
        bad = len({a // word_bits for a, v in zip(addr, vf) if v >= v_plan})
        if -(-nbytes * 8 // word_bits) > g.capacity_words - bad:
            with pytest.raises(InputError, match="fault-free words"):
                read(image, chip, v_plan, v_read, policy, bits, offset)
            return
    out, _ = read(image, chip, v_plan, v_read, policy, bits, offset)
    assert np.array_equal(out, ref_read(image, chip, v_plan, v_read, policy, bits,
                                        offset % g.capacity_words))


def significance_counts(chip: Chip, placement: BP.BitPlacement, v: float) -> np.ndarray:
    """Faults at v on the logical bits of each significance (index m-1: the codes' MSBs)."""
    f = BP.logical_faults(placement, chip, v)
    p = (f.address % np.uint64(placement.word_bits) % np.uint64(placement.bits)).astype(np.int64)
    return np.bincount(p, minlength=placement.bits)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), bits=st.sampled_from([8, 4, 2]),
       v=st.sampled_from([0.85, 0.8, 0.78]))
def test_shuffle_never_adds_msb_faults(seed, bits, v):
    chip = Chip.random(Geometry(32, 64), BerCurve.builtin("finfet14"), 0.75, seed)
    n_words = chip.geometry.capacity_words
    lin = significance_counts(chip, BP.plan(chip, v, "linear", bits, n_words), v)
    p = BP.plan(chip, v, "shuffle", bits, n_words)
    shu = significance_counts(chip, p, v)
    assert shu.sum() == lin.sum()                   # the same faults, on other bits
    assert shu[bits - 1] <= lin[bits - 1]
    # per word the order is lexicographic from the MSB down, so the totals are too
    assert tuple(shu[::-1]) <= tuple(lin[::-1])
    # above the planning voltage the faults are a subset of the planned ones (nesting), on the
    # same logical bits: no significance gets more faults than at the planning voltage
    assert np.all(significance_counts(chip, p, v + 0.03) <= shu)


def test_skip_faulty_words_is_clean_at_and_above_the_planning_voltage():
    chip = Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.75, 7)
    image = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)
    for v_read in (0.85, 0.9, 1.0):
        out, _ = read(image, chip, 0.85, v_read, "skip-faulty-words", 8, offset=11)
        assert np.array_equal(out, image)
    out, _ = read(image, chip, 0.85, 0.8, "skip-faulty-words", 8, offset=11)
    assert not np.array_equal(out, image)


# ------------------------------------------------------------------------------ QuantizedModel

@pytest.fixture(scope="module")
def qm_chip():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    chip = Chip.random(Geometry(64, 256), BerCurve.builtin("finfet14"), 0.75, 5,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})
    return QuantizedModel(model, bits=8), chip


@pytest.mark.parametrize("policy", ["shuffle", "skip-faulty-words"])
def test_quantized_model_plumbing(qm_chip, policy):
    qm, chip = qm_chip
    layout = MemoryLayout(bit_placement=policy)
    img = qm.faulty_image(chip, 0.8, offset=9, layout=layout)
    p = layout.plan_bits(qm, chip, 0.8, 9)
    assert np.array_equal(img, BP.apply_placed_bits(qm.image, chip, 0.8, p))
    assert np.array_equal(img, ref_read(qm.image, chip, 0.8, 0.8, policy, 8, 9))
    w = qm.perturbed(chip, 0.8, offset=9, layout=layout)
    for k, t in qm.dequantize(img).items():
        assert torch.equal(w[k], t)
    assert np.array_equal(qm.faulty_image(chip, 0.8, 9, layout=MemoryLayout()),
                          qm.faulty_image(chip, 0.8, 9))
    # planned at 0.8, read at 0.78: the fixed table, more faults
    fixed = MemoryLayout(bit_placement=policy, planning_voltage=0.8)
    assert np.array_equal(qm.faulty_image(chip, 0.78, offset=9, layout=fixed),
                          ref_read(qm.image, chip, 0.8, 0.78, policy, 8, 9))
    assert np.array_equal(qm.faulty_image(chip, 0.78, offset=9, layout=fixed),
                          BP.apply_placed_bits(qm.image, chip, 0.78, p))


def test_quantized_model_refusals(qm_chip):
    qm, chip = qm_chip
    with pytest.raises(InputError, match="bit placement 'rotate'"):
        MemoryLayout(bit_placement="rotate")
    with pytest.raises(InputError, match="with ecc is not modelled"):
        MemoryLayout(ecc="secded72", bit_placement="shuffle")
    with pytest.raises(InputError, match="known chip map"):
        qm.faulty_image(RandomBitErrors(0.01, seed=0), layout=MemoryLayout(bit_placement="shuffle"))
    with pytest.raises(InputError, match="ecc policy needs ecc"):
        MemoryLayout(ecc_policy="zero", bit_placement="shuffle")
    with pytest.raises(InputError, match="planning_voltage applies to a bit placement"):
        MemoryLayout(planning_voltage=0.8)


# ------------------------------------------------------------------------------ sweeps

@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("policy", ["shuffle", "skip-faulty-words"])
def test_sweep_points_read_through_the_placement(tmp_path, policy):
    """Each point equals the model read through the placement planned at its voltage and offset;
    the configuration records the policy (a resume with another one is refused)."""
    import json

    from sramsim.analysis import sweep as S
    from sramsim.nn.evaluation import evaluate
    model, ds = small_world()
    chips = S.random_chips(1, "finfet14", 64, 256, seed=2, v_floor=0.78)
    summary = S.run_sweep(model, ds, chips, [0.84, 0.8], tmp_path / "s",
                          S.SweepSettings(offsets=2, layout=MemoryLayout(bit_placement=policy)),
                          Execution(progress=False))
    qm, chip = QuantizedModel(model), chips[0].build()
    lines = (tmp_path / "s" / "points.jsonl").read_text().splitlines()
    points = [p for p in map(json.loads, lines) if not p.get("clean")]
    assert len(points) == 4
    for p in points:
        plan = MemoryLayout(bit_placement=policy).plan_bits(qm, chip, p["voltage"], p["offset"])
        image = BP.apply_placed_bits(qm.image, chip, p["voltage"], plan)
        assert p["accuracy"] == evaluate(model, ds, qm.dequantize(image))["accuracy"]
        key = "remapped_words" if policy == "shuffle" else "skipped_words"
        assert p["bit_placement"][key] == plan.overhead()[key] > 0
    assert summary["bit_placement"]["policy"] == policy
    assert "bit_placement" in summary["points"][0]
    with pytest.raises(InputError, match="different configuration"):
        S.run_sweep(model, ds, chips, [0.84, 0.8], tmp_path / "s", S.SweepSettings(offsets=2),
                    Execution(progress=False))


@pytest.mark.usefixtures("one_torch_thread")
def test_vuln_reads_through_the_placement():
    """The 'all' row equals the model read through the placement planned at the voltage; with
    shuffle the codes' MSBs (bit 7) carry fewer faulty bits than with linear."""
    from sramsim.analysis import vulnerability as V
    from sramsim.inject.draws import fixed_draws
    from sramsim.nn.evaluation import accuracy
    model, ds = small_world()
    qm = QuantizedModel(model)
    chip = Chip.random(Geometry(16, 64), BerCurve.builtin("finfet14"), 0.78, 4)
    reports = {}
    for policy in ("linear", "shuffle"):
        layout = MemoryLayout(bit_placement=policy)
        r = V.analyze(qm, ds, chips=[chip], voltage=0.8, models=2, by="bit", seed=1,
                      layout=layout)
        expect = [accuracy(model, ds, qm.dequantize(qm.faulty_image(
            d.chip, d.voltage, d.offset, layout=layout)))
            for d in fixed_draws(qm.n_bits, 2, chips=[chip], voltage=0.8, seed=1)]
        assert r["all"]["accuracy"] == expect and r["bit_placement"] == policy
        reports[policy] = {row["bit"]: row["faulty_bits_mean"] for row in r["bits"]}
    assert reports["shuffle"][7] < reports["linear"][7]
    with pytest.raises(InputError, match="needs a known chip map"):
        V.analyze(qm, ds, ber=0.01, models=1, layout=MemoryLayout(bit_placement="shuffle"))


@pytest.mark.usefixtures("one_torch_thread")
def test_fusion_eval_reads_through_the_placement():
    """PA per map equals the base model read through the placement planned at the voltage."""
    from fusion.evaluation import FaultSpec, evaluate
    from sramsim.inject.draws import fixed_draws
    from sramsim.nn.evaluation import accuracy
    model, ds = small_world()
    qm = QuantizedModel(model)
    chip = Chip.random(Geometry(64, 256), BerCurve.builtin("finfet14"), 0.78, 4)
    spec = FaultSpec(voltage=0.8, chips=[chip])
    layout = MemoryLayout(bit_placement="skip-faulty-words")
    report = evaluate(qm, ds, spec, n_models=2, seed=3, layout=layout)
    expect = [accuracy(model, ds, qm.dequantize(qm.faulty_image(
        d.chip, d.voltage, d.offset, layout=layout)))
        for d in fixed_draws(qm.n_bits, 2, chips=[chip], voltage=0.8, seed=3)]
    assert report["pa"] == expect and report["bit_placement"] == "skip-faulty-words"
    with pytest.raises(InputError, match="needs a known chip map"):
        evaluate(qm, ds, FaultSpec(ber=0.01), n_models=1, layout=MemoryLayout(bit_placement="shuffle"))
