"""`--part` takes DRAMPower's own memspec JSON (sramsim.memory.memspec): geometry and energies
from the file, by DRAMPower 4's equations, per supply. Test data: tests/data/drampower/ (real
parts, copied from DRAMPower with their source in its README)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sramsim.analysis.dram_energy import DramEnergy
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.memory.dram import DramGeometry, load_part
from sramsim.memory.memspec import from_memspec

DATA = Path(__file__).resolve().parent / "data" / "drampower"
DDR4 = DATA / "MICRON_4Gb_DDR4-2400_8bit_A.json"
LPDDR3 = DATA / "MICRON_4Gb_LPDDR3-1600_32bit_A.json"
LPDDR4 = DATA / "MICRON_6Gb_LPDDR4-3200_32bit_A.json"
DDR3 = DATA / "MICRON_1Gb_DDR3-1600_8bit_G.json"
PJ = 1e-12


def test_lpddr3_memspec_agrees_with_the_bundled_part():
    bundled = "MICRON_4Gb_LPDDR3-1600_32bit_A"
    assert DramGeometry.from_part(str(LPDDR3)) == DramGeometry.from_part(bundled)
    mine, theirs = DramEnergy.from_part(bundled), DramEnergy.from_part(str(LPDDR3))
    assert theirs.name == bundled and theirs.lowered == "vdd2" and theirs.nominal_voltage == 1.2
    for v in (None, 1.0, 0.9):
        a, b = mine.summary(v), theirs.summary(v)
        for key in ("commands_J", "access_J", "background_W"):
            assert b[key] == pytest.approx(a[key], rel=1e-12), (v, key)
    # the 2019 spelling of the same file (vdd / idd0 for VDD1) reads the same
    doc = json.loads(LPDDR3.read_text())
    p = doc["mempowerspec"]
    for old, new in (("vdd1", "vdd"), ("idd01", "idd0"), ("idd2n1", "idd2n"),
                     ("idd3n1", "idd3n"), ("idd51", "idd5"), ("idd61", "idd6")):
        p[new] = p.pop(old)
    again = DramEnergy(from_memspec(doc, "2019 spelling"))
    assert again.summary(1.0)["access_J"] == pytest.approx(mine.summary(1.0)["access_J"], rel=1e-12)


def test_ddr3_memspec_reproduces_drampowers_reference_energies():
    # DRAMPower test/reference/test_MICRON_1Gb_DDR3-1600_8bit_G_Sigma_100_pasr_0_reference.out,
    # bank 0: 268 ACT, 268 RD, 268 PRE, 36 REF (all-bank, shared by 8 banks); energies in pJ
    # (printed rounded). At rho = 100% its bank-wise ACT/PRE equal DRAMPower 4's totals here
    # (IDD2N = IDD3N and tRC - tRAS = tRP for this part).
    e = DramEnergy.from_part(str(DDR3)).commands()
    assert e["act"] * 268 / PJ == pytest.approx(351750, abs=0.5)
    assert e["rd"] * 268 / PJ == pytest.approx(190950, abs=0.5)
    assert e["pre"] * 268 / PJ == pytest.approx(125625, abs=0.5)
    assert e["ref"] * 36 / 8 / PJ == pytest.approx(92812, abs=1.0)
    g = DramGeometry.from_part(str(DDR3))
    assert (g.banks, g.rows, g.columns, g.device_width) == (8, 16384, 1024, 8)


def test_ddr4_memspec_vdd_lowered_vpp_counted_at_nominal():
    spec = load_part(str(DDR4))
    assert spec["memory_type"] == "DDR4" and spec["architecture"]["bank_groups"] == 4
    assert spec["architecture"]["devices"] == 8 and spec["timing"]["RFC"] == 313
    g = DramGeometry.from_part(str(DDR4))
    assert (g.banks, g.rows, g.columns, g.device_width, g.burst_length) == (16, 32768, 1024, 8, 8)
    assert g.capacity_bits == 4 * 2 ** 30
    d = DramEnergy.from_part(str(DDR4))
    assert [s[0] for s in d.supplies] == ["vdd", "vpp"] and d.lowered == "vdd"
    assert d.nominal_voltage == 1.2
    tck = 1 / 1200e6
    # by hand, DRAMPower 4's two-supply equations (mA x V x cycles x tCK):
    act_vdd = 1.2 * (60.75 - 44.0) * 1e-3 * 39 * tck
    act_vpp = 2.5 * (4.05 - 0.0) * 1e-3 * 39 * tck          # IPP3N absent: 0, as in DRAMPower
    pre_vdd = 1.2 * (60.75 - 38.25) * 1e-3 * (55 - 39) * tck
    pre_vpp = 2.5 * 4.05e-3 * (55 - 39) * tck
    rd_vdd = 1.2 * (184.5 - 44.0) * 1e-3 * 4 * tck
    ref_vdd = 1.2 * (118.0 - 44.0) * 1e-3 * 313 * tck
    nominal = d.commands()
    assert nominal["act"] == pytest.approx(act_vdd + act_vpp, rel=1e-12)
    assert nominal["pre"] == pytest.approx(pre_vdd + pre_vpp, rel=1e-12)
    assert nominal["rd"] == pytest.approx(rd_vdd, rel=1e-12)
    assert nominal["ref"] == pytest.approx(ref_vdd, rel=1e-12)
    low = d.commands(1.0)                                # only VDD's share scales
    r2 = (1.0 / 1.2) ** 2
    assert low["act"] == pytest.approx(r2 * act_vdd + act_vpp, rel=1e-12)
    assert low["pre"] == pytest.approx(r2 * pre_vdd + pre_vpp, rel=1e-12)


def test_ddr4_refresh_mode_picks_its_rfc():
    doc = json.loads(DDR4.read_text())
    for mode, rfc in ((1, 313), ("2X", 192), (4, 132)):
        doc["memspec"]["RefreshMode"] = mode
        assert from_memspec(doc, "ddr4")["timing"]["RFC"] == rfc
    doc["memspec"]["RefreshMode"] = 3
    with pytest.raises(InputError, match="RefreshMode must be 1, 2 or 4"):
        from_memspec(doc, "ddr4")


def test_lpddr4_memspec_three_supplies():
    spec = load_part(str(LPDDR4))
    assert spec["timing"]["RP"] == 29 and spec["timing"]["RFC"] == 448
    d = DramEnergy.from_part(str(LPDDR4))
    assert [s[0] for s in d.supplies] == ["vdd1", "vdd2", "vddq"] and d.lowered == "vdd2"
    assert d.nominal_voltage == 1.1
    acc = d.access_energies()
    assert 0 < acc["hit"] < acc["miss"] < acc["conflict"]


def test_cli_takes_a_ddr4_memspec(capsys):
    assert main(["dram", "info", "--part", str(DDR4), "--voltage", "1.0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["part"] == "MICRON_4Gb_DDR4-2400_8bit_A" and r["lowered_supply"] == "vdd"
    assert r["capacity_gbit"] == 4 and r["geometry"]["banks"] == 16
    assert main(["dram", "info", "--part", str(DDR4)]) == 0
    assert "VDD = 1.2 V" in capsys.readouterr().out


@pytest.mark.parametrize("doc, needle", [
    ({"memspec": {"memoryType": "DDR4", "memarchitecturespec": {}, "mempowerspec": {},
                  "memtimingspec": {"tCK": 7.7e-10}}}, "a DRAMPower 5 memspec"),
    ({"memspec": {"memoryType": "HBM2", "memarchitecturespec": {}, "mempowerspec": {},
                  "memtimingspec": {"clkMhz": 1000}}}, "memoryType 'HBM2' is not modelled"),
    ({"memspec": {"memoryType": "DDR3", "memarchitecturespec": {}}},
     "lacks the 'memtimingspec' section"),
])
def test_unreadable_memspecs_are_one_line_cli_errors(tmp_path, capsys, doc, needle):
    path = tmp_path / "part.json"
    path.write_text(json.dumps(doc))
    assert main(["dram", "info", "--part", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and str(path) in err, err


def test_a_missing_current_is_named(tmp_path):
    doc = json.loads(DDR3.read_text())
    del doc["mempowerspec"]["idd4r"]
    with pytest.raises(InputError, match="the mempowerspec section lacks 'idd4r'"):
        from_memspec(doc, "x.json")
