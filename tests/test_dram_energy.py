"""DRAM energy model: per-command energies of the default part worked by hand from its JSON numbers,
hit < miss < conflict, DRAMPower's own expected energies for an LPDDR3 trace, (V/Vnom)^2 scaling of
the lowered supply only, and one-line errors for bad input."""
import json
import math

import pytest

from sramsim.analysis.dram_energy import DramEnergy
from sramsim.errors import InputError
from sramsim.memory.dram import load_part

PJ = 1e-12


def test_commands_of_default_part_by_hand():
    # MICRON_4Gb_LPDDR3-1600_32bit_A: clk 800 MHz -> tCK = 1.25 ns; VDD1 = 1.8 V, VDD2 = 1.2 V;
    # RAS 36, RC 48, RFC 104, BL 8, DR 2; currents (mA) [VDD1, VDD2]: IDD0 15/80, IDD2N 2/38,
    # IDD3N 2/45, IDD4R 5/260, IDD4W 10/284, IDD5 40/160.  mA * V * ns = pJ.
    e = DramEnergy.from_part().commands()
    act = (1.8 * (15 - 2) + 1.2 * (80 - 45)) * 36 * 1.25        # (23.4 + 42.0) * 45 = 2943 pJ
    pre = (1.8 * (15 - 2) + 1.2 * (80 - 38)) * (48 - 36) * 1.25  # (23.4 + 50.4) * 15 = 1107 pJ
    rd = (1.8 * (5 - 2) + 1.2 * (260 - 45)) * (8 // 2) * 1.25    # (5.4 + 258.0) * 5 = 1317 pJ
    wr = (1.8 * (10 - 2) + 1.2 * (284 - 45)) * (8 // 2) * 1.25   # (14.4 + 286.8) * 5 = 1506 pJ
    ref = (1.8 * (40 - 2) + 1.2 * (160 - 45)) * 104 * 1.25       # 206.4 * 130 = 26832 pJ
    act_sb = (1.8 * 2 + 1.2 * 45) * 1.25                         # 57.6 mW * 1.25 ns = 72 pJ
    pre_sb = (1.8 * 2 + 1.2 * 38) * 1.25                         # 49.2 mW * 1.25 ns = 61.5 pJ
    assert (act, pre, rd, wr, ref, act_sb, pre_sb) == pytest.approx(
        (2943, 1107, 1317, 1506, 26832, 72, 61.5), rel=1e-12)
    expected = {"act": act, "pre": pre, "rd": rd, "wr": wr, "ref": ref,
                "act_standby": act_sb, "pre_standby": pre_sb}
    assert {k: v / PJ for k, v in e.items()} == pytest.approx(expected, rel=1e-12)


def test_access_energies_of_default_part_by_hand():
    d = DramEnergy.from_part()
    assert d.access_cycles() == {"hit": 4, "miss": 15 + 4, "conflict": 15 + 15 + 4}
    acc = d.access_energies()
    hit = 1317 + 4 * 72                             # RD burst + 4 cycles active standby = 1605 pJ
    miss = 2943 + 1107 + 1317 + (15 + 4) * 72       # ACT + its PRE + RD + tRCD+burst = 6735 pJ
    conflict = miss + 15 * 61.5                     # + tRP waiting precharged = 7657.5 pJ
    assert {k: v / PJ for k, v in acc.items()} == pytest.approx(
        {"hit": hit, "miss": miss, "conflict": conflict}, rel=1e-12)
    assert acc["hit"] < acc["miss"] < acc["conflict"]
    per_bit = d.energy_per_bit()
    assert d.burst_bits == 32 * 8
    assert per_bit["hit"] / PJ == pytest.approx(1605 / 256, rel=1e-12)   # 6.27 pJ/bit
    assert per_bit["hit"] < per_bit["miss"] < per_bit["conflict"]


def test_order_holds_on_every_bundled_part_and_voltage():
    for name in ("MICRON_4Gb_LPDDR3-1600_32bit_A", "MICRON_4Gb_LPDDR3-1333_32bit_A"):
        d = DramEnergy.from_part(name)
        for v in (1.2, 1.0, 0.8, 0.5):
            acc = d.access_energies(v)
            assert 0 < acc["hit"] < acc["miss"] < acc["conflict"], (name, v)


def test_matches_drampower_reference_trace_lpddr3_1333():
    # DRAMPower's test test/test.py::test_transaction_scheduler runs
    #   ./drampower -m memspecs/MICRON_4Gb_LPDDR3-1333_32bit_A.xml \
    #               -t traces/mediabench-jpegencode.trace
    # and expects test/reference/test_transaction_scheduler.out (tukl-msd/DRAMPower, commit
    # 7179d50fa445fff9ee238a24b8f0248049171a53). Its trace details: 92905 activates, 81572 reads,
    # 11333 writes, 92905 precharges, 14895 refreshes, 3842707 active and 34885360 precharged
    # cycles (no power-down, no self-refresh); its energies (pJ, printed to 2 decimals):
    expected = {"act": 298354587.71, "pre": 102794437.78, "rd": 122981713.94,
                "wr": 19492080.36, "ref": 412656260.87, "act_standby": 283450051.57,
                "pre_standby": 2447728407.80, "total": 3687457540.03}
    d = DramEnergy.from_part("MICRON_4Gb_LPDDR3-1333_32bit_A")
    got = d.command_energy({"act": 92905, "pre": 92905, "rd": 81572, "wr": 11333, "ref": 14895},
                           active_cycles=3842707, precharged_cycles=34885360)
    for key, pj in expected.items():
        assert got[key] / PJ == pytest.approx(pj, abs=0.006), key


def test_lowered_supply_alone_scales_as_v_squared():
    d = DramEnergy.from_part()
    shares = d.command_shares()                      # nominal, per supply
    v = 0.9
    r2 = (v / 1.2) ** 2                              # 0.5625
    low = d.commands(v)
    for k, e in low.items():
        assert e == pytest.approx(shares["vdd1"][k] + r2 * shares["vdd2"][k], rel=1e-12), k
    # by hand: E_act(0.9 V) = 23.4 * 45 (VDD1, nominal) + 0.5625 * 42 * 45 (VDD2) = 2116.125 pJ
    assert low["act"] / PJ == pytest.approx(23.4 * 45 + 0.5625 * 42.0 * 45, rel=1e-12)
    # the VDD1 share stays, so the total falls by less than (V/Vnom)^2
    nom = d.commands()
    assert r2 < low["act"] / nom["act"] < 1.0
    acc_nom, acc_low = d.access_energies(), d.access_energies(v)
    assert all(r2 < acc_low[k] / acc_nom[k] < 1.0 for k in acc_nom)
    # nominal voltage given explicitly == None
    assert d.access_energies(1.2) == acc_nom
    # lowering VDD1 instead scales the other share (nominal 1.8 V)
    d1 = DramEnergy.from_part(lowered="vdd1")
    assert d1.nominal_voltage == 1.8
    e1 = d1.commands(0.9)
    assert e1["rd"] == pytest.approx(0.25 * shares["vdd1"]["rd"] + shares["vdd2"]["rd"], rel=1e-12)


def test_trace_energy_and_background():
    d = DramEnergy.from_part()
    acc = d.access_energies(1.0)
    assert d.trace_energy({"hit": 10, "miss": 2, "conflict": 3}, voltage=1.0) == pytest.approx(
        10 * acc["hit"] + 2 * acc["miss"] + 3 * acc["conflict"], rel=1e-12)
    assert d.trace_energy({"hit": 5}) == pytest.approx(5 * d.access_energies()["hit"], rel=1e-12)
    assert d.trace_energy({"hit": 0, "miss": 0, "conflict": 0}) == 0.0
    bg = d.background_power()
    # refresh: one REF (26832 pJ) every tREFI = 3120 cycles * 1.25 ns = 3900 ns -> 6.88 mW
    assert bg["refresh"] == pytest.approx(26832e-12 / 3900e-9, rel=1e-12)
    assert bg["active_standby"] == pytest.approx(57.6e-3, rel=1e-12)
    assert bg["precharged_standby"] == pytest.approx(49.2e-3, rel=1e-12)
    s = d.summary(1.0)
    json.dumps(s)
    assert s["voltage"] == 1.0 and s["lowered_supply"] == "vdd2" and s["access_J"] == acc


@pytest.mark.parametrize("voltage, msg", [
    (1.3, "above the nominal 1.2 V"), (0.0, "positive"), (-0.5, "positive"),
    (math.nan, "positive"), ("low", "positive"), (math.inf, "positive")])
def test_bad_voltage(voltage, msg):
    d = DramEnergy.from_part()
    for call in (d.commands, d.access_energies, d.energy_per_bit, d.background_power, d.summary):
        with pytest.raises(InputError, match=msg) as info:
            call(voltage)
        assert "\n" not in str(info.value) and "VDD2 voltage" in str(info.value)


@pytest.mark.parametrize("counts, msg", [
    ({"hits": 1}, "unknown access kind"), ({"hit": -1}, "hit count"),
    ({"miss": 1.5}, "miss count"), ({"conflict": True}, "conflict count"),
    ({"hit": "3"}, "hit count"), ([1, 2, 3], "must be a dict")])
def test_bad_counts(counts, msg):
    with pytest.raises(InputError, match=msg):
        DramEnergy.from_part().trace_energy(counts)


def test_bad_command_counts():
    d = DramEnergy.from_part()
    with pytest.raises(InputError, match="unknown command"):
        d.command_energy({"read": 1})
    with pytest.raises(InputError, match="active cycles"):
        d.command_energy({"rd": 1}, active_cycles=-3)


def test_bad_part_and_supply(tmp_path):
    with pytest.raises(InputError, match="unknown DRAM part"):
        DramEnergy.from_part("NO_SUCH_PART")
    with pytest.raises(InputError, match="lowered supply must be one of vdd1, vdd2"):
        DramEnergy.from_part(lowered="vddq")

    def broken(edit):
        spec = load_part("MICRON_4Gb_LPDDR3-1600_32bit_A")
        edit(spec)
        path = tmp_path / "part.json"
        path.write_text(json.dumps(spec))
        return str(path)

    cases = [
        (lambda s: s["power"].pop("idd4r"), "lacks 'idd4r'"),
        (lambda s: s["power"].update(idd0=[15.0]), "idd0 has 1 values for 2 supplies"),
        (lambda s: s["power"].update(idd0=[1.0, 80.0]), "idd0 .* is below idd3n .* on VDD1"),
        (lambda s: s["power"].update(vdd2=-1.2), "vdd2 must be a positive number"),
        (lambda s: s["power"].update(unit_current="A"), "currents must be in mA"),
        (lambda s: s["timing"].pop("RFC"), "timing section lacks 'RFC'"),
        (lambda s: s["timing"].update(RC=30), r"RC \(30\) is shorter than RAS \(36\)"),
        (lambda s: s["timing"].update(RP=0), "timing RP must be positive"),
        (lambda s: s["architecture"].update(burst_length=7), "multiple of data_rate"),
    ]
    for edit, msg in cases:
        with pytest.raises(InputError, match=msg) as info:
            DramEnergy.from_part(broken(edit))
        assert "\n" not in str(info.value)
