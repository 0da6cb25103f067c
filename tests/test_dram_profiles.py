"""A DRAM chip is a Chip: it goes through the HDF5 profile with technology="dram" and its DRAM
geometry in /geometry, and through the same fault application as an SRAM chip."""
import h5py
import numpy as np
import torch

from sramsim import Chip, QuantizedModel
from sramsim.memory import profiles
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_errors import dram_chip
from sramsim.nn.models import build

G = DramGeometry(channels=2, ranks=1, banks=2, rows=64, columns=32, device_width=8,
                 subarray_rows=16, burst_length=4)


def test_dram_chip_round_trips_with_its_geometry(tmp_path):
    chip = dram_chip(G, v_floor=0.9, seed=3, error_model=1)
    path = tmp_path / "dram.h5"
    chip.save(path)
    with h5py.File(path) as f:
        assert f.attrs["technology"] == "dram"
        assert {k: int(v) for k, v in f["geometry"].attrs.items()} == G.as_dict()
    back = Chip.load(path)
    assert isinstance(back.geometry, DramGeometry) and back.geometry == G
    assert back == chip and back.same_faults(chip)
    assert profiles.validate(path) == []
    info = profiles.summary(back)
    assert info["technology"] == "dram" and info["faults"] == len(chip)
    assert info["geometry"]["dram"] == G.as_dict()
    assert info["geometry"]["banks"] == 4 and info["geometry"]["capacity_bits"] == G.capacity_bits


def test_dram_chip_faults_a_quantized_model_like_an_sram_chip():
    torch.manual_seed(0)
    qm = QuantizedModel(build("cnn").eval())
    big = DramGeometry(banks=2, rows=256, columns=256, device_width=8, subarray_rows=64)
    chip = dram_chip(big, v_floor=0.9, seed=1, error_model=0)
    v = 0.92
    img = qm.faulty_image(chip, voltage=v, offset=5)
    # the reference: flip/stuck bits of the chip's faults at the image's bytes, tiled with the offset
    ref = qm.image.copy()
    f = chip.faults(v)
    cap = big.capacity_bytes
    for a, k in zip(f.address.tolist(), f.kind.tolist()):
        chip_byte, bit = divmod(a, 8)
        for b in range((chip_byte - 5) % cap, ref.size, cap):
            if k == 0:
                ref[b] ^= 1 << bit
            elif k == 1:
                ref[b] &= ~(1 << bit) & 0xFF
            else:
                ref[b] |= 1 << bit
    assert np.array_equal(img, ref)


def test_profile_info_reads_a_dram_profile(tmp_path, capsys):
    import json
    from sramsim.commands.main import main
    path = tmp_path / "d.h5"
    dram_chip(G, v_floor=0.9, seed=0, error_model=3).save(path)
    assert main(["profile", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["technology"] == "dram" and info["voltage_unit"] == "V"
    assert info["geometry"]["dram"]["subarray_rows"] == 16
    assert main(["profile", "validate", str(path)]) == 0


def test_profile_import_of_measured_dram_bitmaps(tmp_path, capsys):
    from sramsim.commands.main import main
    g = DramGeometry()
    # failing bits as DRAM locations: bank 3 row 100 column 7 bit 5 fails from 1.0 V, another
    # cell only at 0.9 V (1 -> 0 direction seen there)
    a = int(g.compose(bank=3, row=100, column=7, bit=5))
    b = int(g.compose(bank=0, row=16383, column=1023, bit=31))
    d = tmp_path / "bitmaps"
    d.mkdir()
    np.save(d / "v1.000.npy", np.array([a], dtype=np.uint64))
    np.save(d / "v0.900.npy", np.array([a], dtype=np.uint64))
    np.save(d / "v0.900_1to0.npy", np.array([b], dtype=np.uint64))
    out = tmp_path / "measured.h5"
    assert main(["profile", "import", str(d), "--technology", "dram", "--out", str(out)]) == 0
    chip = Chip.load(out)
    assert chip.geometry == g and chip.voltage_unit == "V" and chip.nominal_voltage == 1.2
    assert chip.faults(1.0).address.tolist() == [a]
    assert sorted(chip.faults(0.9).address.tolist()) == sorted([a, b])
    capsys.readouterr()
    assert main(["profile", "import", str(d), "--technology", "dram", "--rows", "8",
                 "--out", str(tmp_path / "x.h5")]) == 2
    assert "from --part, not --rows/--cols" in capsys.readouterr().err
    assert main(["profile", "import", str(d), "--technology", "dram", "--part", "nope",
                 "--out", str(tmp_path / "x.h5")]) == 2
    assert "unknown DRAM part 'nope'" in capsys.readouterr().err
    assert main(["profile", "import", str(d), "--out", str(tmp_path / "x.h5")]) == 2
    assert "give --rows and --cols" in capsys.readouterr().err


def test_user_dram_curve_from_a_csv_table(tmp_path, capsys):
    import json
    import pytest
    from sramsim.commands.main import main
    from sramsim.errors import InputError
    from sramsim.memory.dram_curves import dram_curve, dram_nominal_voltage
    table = tmp_path / "curve.csv"
    table.write_text("voltage,ber\n1.2,0\n1.0,1e-6  # measured\n0.95,1e-4\n0.9,1e-2\n")
    curve = dram_curve(str(table))
    assert dram_nominal_voltage(str(table)) == 1.2
    assert curve.ber(0.95) == pytest.approx(1e-4) and curve.ber(1.2) == 0
    assert main(["dram", "info", "--curve", str(table), "--voltage", "0.95", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["curve"] == "curve.csv" and out["ber"] == pytest.approx(1e-4)
    for text, match in (("1.2,0\n1.0,x\n", "line 2"), ("", "no \\(voltage, ber\\) rows"),
                        ("1.2,0\n1.0,0.5\n0.9,0.1\n", "monotone|lower voltage")):
        table.write_text(text)
        with pytest.raises(InputError, match=match):
            dram_curve(str(table))
    assert main(["dram", "info", "--curve", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read the table" in capsys.readouterr().err
