"""Vulnerability analysis: group masks, restriction of faults to one layer / bit, the analysis, CLI."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from sramsim import Chip, Faults, Geometry, QuantizedModel, RandomBitErrors
from sramsim.inject import quantization as Q
from sramsim.analysis import vulnerability as V
from sramsim.commands.main import main
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import accuracy
from sramsim.memory.geometry import FLIP, STUCK1


def two_layers(sizes=((3, 3), (3, 2))) -> nn.Module:
    """Flatten + bias-free linear layers with seeded weights (9 + 6 codes: layer 2 starts inside
    a byte at 4 bits)."""
    torch.manual_seed(0)
    layers = [nn.Linear(a, b, bias=False) for a, b in sizes]
    return nn.Sequential(nn.Flatten(), *layers).eval()


def codes_of(qm: QuantizedModel, image: np.ndarray) -> np.ndarray:
    return Q.unpack(torch.from_numpy(image.copy()), qm.bits, qm.n_codes).numpy()


def every_bit(qm: QuantizedModel, kind: int = FLIP) -> Faults:
    n = qm.image.size * 8
    return Faults(np.arange(n, dtype=np.uint64), np.full(n, kind, dtype=np.uint8))


# ------------------------------------------------------------------------------ masks

def test_bit_range_mask_exact():
    lo, hi, m = V.bit_range_mask(0, 16)
    assert (lo, hi, m.tolist()) == (0, 2, [0xFF, 0xFF])
    lo, hi, m = V.bit_range_mask(36, 60)          # nibble-aligned: byte 4 upper half .. byte 7 lower
    assert (lo, hi, m.tolist()) == (4, 8, [0xF0, 0xFF, 0xFF, 0x0F])
    lo, hi, m = V.bit_range_mask(2, 6)            # inside one byte
    assert (lo, hi, m.tolist()) == (0, 1, [0b00111100])
    with pytest.raises(ValueError):
        V.bit_range_mask(5, 5)


def test_bit_patterns_for_8_4_2_bit_codes():
    assert [V.bit_pattern(8, j) for j in range(8)] == [1 << j for j in range(8)]
    assert [V.bit_pattern(4, j) for j in range(4)] == [0x11, 0x22, 0x44, 0x88]
    assert [V.bit_pattern(2, j) for j in range(2)] == [0x55, 0xAA]
    with pytest.raises(ValueError):
        V.bit_pattern(4, 4)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_groups_partition_the_code_bits(bits):
    qm = QuantizedModel(two_layers(), bits=bits)
    for by in ("layer", "bit"):
        total = np.zeros_like(qm.image)
        for g in V.groups(qm, by):
            full = np.zeros_like(qm.image)
            full[g.lo:g.hi] = g.mask
            full[g.hi - 1] &= g.last
            assert not np.any(total & full), "groups overlap"
            total |= full
        bits_covered = int(np.unpackbits(total).sum())
        assert bits_covered == qm.n_codes * bits
        assert sum(g.n_bits for g in V.groups(qm, by)) == qm.n_codes * bits


# ------------------------------------------------------------------------------ restriction

@pytest.mark.parametrize("bits", [8, 4])
def test_fault_confined_to_one_layer_changes_only_that_layer(bits):
    qm = QuantizedModel(two_layers(), bits=bits)
    faulty = qm.faulty_image(every_bit(qm))       # every bit flipped
    clean_codes = codes_of(qm, qm.image)
    for seg in qm.segments:
        g = V.layer_group(qm, seg.name)
        image = V.restrict(qm.image, faulty, g)
        codes = codes_of(qm, image)
        inside = np.zeros(qm.n_codes, dtype=bool)
        inside[seg.start:seg.start + seg.count] = True
        assert np.array_equal(codes[inside], clean_codes[inside] ^ (2 ** bits - 1))
        assert np.array_equal(codes[~inside], clean_codes[~inside])
        w, clean, full = qm.dequantize(image), qm.clean_weights(), qm.dequantize(faulty)
        for name in qm.names:
            assert torch.equal(w[name], full[name] if name == seg.name else clean[name])
    assert qm.image.tolist() == QuantizedModel(two_layers(), bits=bits).image.tolist()  # untouched


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_bit_position_masks_flip_and_stuck_at(bits):
    qm = QuantizedModel(two_layers(), bits=bits)
    clean = codes_of(qm, qm.image)
    flipped = qm.faulty_image(every_bit(qm, FLIP))
    stuck1 = qm.faulty_image(every_bit(qm, STUCK1))
    for j in range(bits):
        g = V.bit_group(qm, j)
        assert np.array_equal(codes_of(qm, V.restrict(qm.image, flipped, g)), clean ^ (1 << j))
        assert np.array_equal(codes_of(qm, V.restrict(qm.image, stuck1, g)), clean | (1 << j))
    assert "sign" in V.bit_group(qm, bits - 1).label


def test_random_faults_split_exactly_over_layers_and_bits():
    qm = QuantizedModel(two_layers(((20, 30), (30, 7))), bits=4)
    faulty = qm.faulty_image(RandomBitErrors(0.05, seed=3))
    total = V.changed_bits(qm.image, faulty)
    assert total > 0
    for by in ("layer", "bit"):
        parts = [V.changed_bits(qm.image, V.restrict(qm.image, faulty, g)) for g in V.groups(qm, by)]
        assert sum(parts) == total


# ------------------------------------------------------------------------------ analysis

def _hand_case():
    """Two identity layers; one sign-bit flip in layer 1's W[0, 0] (byte 0, bit 7) at V <= 0.9.
    Clean predictions are right on 3 of 4 examples; with the fault only example 3 stays right."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
        model[2].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).reshape(4, 2, 1, 1)
    data = Dataset(x, torch.tensor([0, 0, 1, 0]), 2, "hand")
    chip = Chip(Geometry(1, 64), np.array([7], dtype=np.uint64), np.array([0.9], dtype=np.float32),
                np.array([FLIP], dtype=np.uint8), v_floor=0.8, name="hand")
    return QuantizedModel(model.eval(), bits=8), data, chip


def test_analyze_hand_case_exact():
    qm, data, chip = _hand_case()
    r = V.analyze(qm, data, chips=[chip], voltage=0.85, models=1)
    assert r["clean_accuracy"] == pytest.approx(0.75)
    assert r["all"]["accuracy_mean"] == pytest.approx(0.25) and r["all"]["drop_mean"] == pytest.approx(0.5)
    layers = {row["layer"]: row for row in r["layers"]}
    assert layers["1.weight"]["drop_mean"] == pytest.approx(0.5)
    assert layers["1.weight"]["faulty_bits_mean"] == 1
    assert layers["2.weight"]["drop_mean"] == 0.0 and layers["2.weight"]["faulty_bits_mean"] == 0
    assert [row["layer"] for row in r["layers"]] == ["1.weight", "2.weight"]   # sorted by drop
    assert r["bits"][0]["bit"] == 7 and r["bits"][0]["drop_mean"] == pytest.approx(0.5)
    assert all(row["drop_mean"] == 0.0 for row in r["bits"][1:])
    assert layers["1.weight"]["share"] == pytest.approx(0.5)


def test_analyze_random_errors_matches_direct_evaluation():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(64, 8, 1, 1)
    data = Dataset(x, model(x).argmax(1).detach(), 4, "toy")
    qm = QuantizedModel(model, bits=8)
    r = V.analyze(qm, data, ber=0.02, models=4, by="layer", seed=5)
    source = RandomBitErrors(0.02, seed=5)
    direct = [accuracy(model, data, qm.perturbed(source)) for _ in range(4)]
    assert r["all"]["accuracy"] == pytest.approx(direct)
    assert r["all"]["accuracy_std"] == pytest.approx(float(np.std(direct, ddof=1)))
    assert r["models"] == 4 and r["bits"] == [] and len(r["layers"]) == 2
    drops = [row["drop_mean"] for row in r["layers"]]
    assert drops == sorted(drops, reverse=True)


def test_vuln_and_fusion_eval_select_the_same_maps():
    """One selection rule (sramsim.inject.draws.fixed_draws) for `sramsim vuln` and `fusion eval`."""
    fusion_eval = pytest.importorskip("fusion.evaluation")
    from sramsim.inject.draws import apply_numpy
    qm, _, chip = _hand_case()
    other = Chip(Geometry(1, 64), np.array([3, 9], dtype=np.uint64),
                 np.array([0.95, 0.9], dtype=np.float32), np.array([FLIP, FLIP], dtype=np.uint8),
                 v_floor=0.8, name="other")
    cases = [({"chips": [chip, other], "voltage": 0.85},
              fusion_eval.FaultSpec(voltage=0.85, chips=[chip, other])),
             ({"ber": 0.1}, fusion_eval.FaultSpec(ber=0.1))]
    for kwargs, spec in cases:
        maps = [m.copy() for m, _ in V.fault_maps(qm, 7, seed=3, **kwargs)]
        out = np.empty_like(qm.image)
        expected = [apply_numpy(qm.image, d, out).copy() for d in spec.eval_draws(qm.n_bits, 7, 3)]
        assert [m.tolist() for m in maps] == [m.tolist() for m in expected]
        assert len({m.tobytes() for m in maps}) > 1


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_one_ber_check_one_message(value):
    """vuln, fusion's FaultSpec and the samplers all use sramsim.errors.check_ber."""
    fusion_eval = pytest.importorskip("fusion.evaluation")
    from sramsim.errors import InputError, check_ber
    from sramsim.inject.draws import RandomSampler
    qm, _, _ = _hand_case()
    with pytest.raises(InputError) as ref:
        check_ber(value, "ber")
    for make in (lambda: RandomSampler(float(value)), lambda: list(V.fault_maps(qm, 1, ber=float(value)))):
        with pytest.raises(InputError) as exc:
            make()
        assert str(exc.value) == str(ref.value).replace(repr(value), repr(float(value)))
    with pytest.raises(InputError, match=r"^ber must lie in \[0, 1\)"):
        fusion_eval.FaultSpec(ber=float(value))
    with pytest.raises(InputError, match=r"^ber must lie in \[0, 1\)"):
        fusion_eval.FaultSpec(ber=1.0)                          # no voltage on the curve at BER 1


def test_chip_maps_beyond_the_pool_use_other_offsets():
    qm, data, chip = _hand_case()
    maps = [m.copy() for m, _ in V.fault_maps(qm, 3, chips=[chip], voltage=0.85, seed=0)]
    assert maps[0].tolist() == qm.faulty_image(chip, 0.85).tolist()
    with pytest.raises(Exception):
        list(V.fault_maps(qm, 1, chips=[chip], voltage=0.5))


# ------------------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sramsim.nn.models import build, save_checkpoint
    root = tmp_path_factory.mktemp("vuln")
    rng = np.random.default_rng(0)
    n = 24
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 255, (n, 28, 28))
    data = root / "data"
    data.mkdir()
    with open(data / "t10k-images-idx3-ubyte", "wb") as f:
        f.write((0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)))
        f.write(images.astype(np.uint8).tobytes())
    with open(data / "t10k-labels-idx1-ubyte", "wb") as f:
        f.write((0x0801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes())
    torch.manual_seed(0)
    ckpt = root / "cnn.pt"
    save_checkpoint(ckpt, build("cnn").eval(), {"arch": "cnn", "in_channels": 1, "num_classes": 10,
                                                "norm": "batch", "bits": 4, "scheme": "symmetric"})
    _, _, chip = _hand_case()
    chip.save(root / "chip.h5")
    return {"ckpt": str(ckpt), "data": str(data), "chip": str(root / "chip.h5")}


def test_cli_json_and_table(files, capsys):
    args = ["vuln", "--model", files["ckpt"], "--data", files["data"], "--ber", "0.01",
            "--models", "2", "--no-progress"]
    assert main(args + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["quantization"]["bits"] == 4 and r["models"] == 2 and r["samples"] == 24
    assert len(r["layers"]) == 4 and [b["bit"] for b in r["bits"]] != [] and len(r["bits"]) == 4
    assert sum(row["share"] for row in r["layers"]) == pytest.approx(1.0)
    assert main(args + ["--by", "bit"]) == 0
    out = capsys.readouterr().out
    assert "by bit position" in out and "by layer" not in out and "bit 3 (sign)" in out
    assert main(["vuln", "--model", files["ckpt"], "--data", files["data"], "--profile",
                 files["chip"], "--voltage", "0.85", "--models", "1", "--no-progress", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["faults"]["kind"] == "chips" and r["faults"]["voltage"] == 0.85


@pytest.mark.parametrize("extra, needle", [
    (["--ber", "2"], "--ber"),
    (["--ber", "x"], "--ber"),
    (["--ber", "0.01", "--models", "0"], "--models"),
    (["--ber", "0.01", "--limit", "-3"], "--limit"),
    (["--ber", "0.01", "--voltage", "0.9"], "--voltage"),
    (["--profile", "CHIP"], "--voltage"),
    (["--profile", "CHIP", "--voltage", "0.5"], "below"),
    (["--profile", "/nonexistent.h5", "--voltage", "0.9"], "nonexistent"),
])
def test_cli_bad_input_one_line_exit_2(files, capsys, extra, needle):
    extra = [files["chip"] if e == "CHIP" else e for e in extra]
    code = main(["vuln", "--model", files["ckpt"], "--data", files["data"], "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_cli_missing_model_and_usage_errors(files, capsys):
    assert main(["vuln", "--model", "/nonexistent.pt", "--data", files["data"], "--ber", "0.01"]) == 2
    assert "nonexistent.pt" in capsys.readouterr().err
    for argv in (["--ber", "0.01", "--profile", files["chip"]], [], ["--ber", "0.01", "--by", "row"]):
        with pytest.raises(SystemExit) as exc:
            main(["vuln", "--model", files["ckpt"], "--data", files["data"], *argv])
        assert exc.value.code == 2
    capsys.readouterr()
