"""DRAMPower memspec JSON files read as sramsim DRAM parts (the `--part` of `sramsim dram`).

DRAMPower (tukl-msd/DRAMPower) describes a part as one JSON document of three sections:
`memarchitecturespec` (banks, rows, columns, width, burst length, data rate, ...),
`memtimingspec` (clock in MHz and timings in clock cycles) and `mempowerspec` (IDD currents in
mA per supply, supply voltages), with `memoryId` and `memoryType` beside them; the files of its
4.x history hold them at the top level (2019-2020, e.g. `MICRON_4Gb_LPDDR3-1600_32bit_A.json`)
or inside a `memspec` object (2020-2021, e.g. `MICRON_4Gb_DDR4-2400_8bit_A.json` and the LPDDR4
part). `from_memspec` turns either into the part dictionary of `sramsim/memory/parts/*.json`
(`architecture`, `timing`, `power`), so geometry and energies come from the user's own file.

Supplies by memory type (DRAMPower's own assignment):
- LPDDR, LPDDR2, LPDDR3, WIDEIO_SDR: VDD1 and VDD2 (currents `idd01`/`idd0`, `idd2n1`/`idd2n`, ...
  on VDD1 and `idd02`, `idd2n2`, ... on VDD2; `vdd1` was spelled `vdd` in the 2019 files);
- LPDDR4: VDD1 (`vdd`), VDD2 (`vdd2`) and VDDQ (`vddq`), currents `iddX`, `iddX2`, `iddXq`;
  precharge and refresh are the per-bank tRPpb and the all-bank tRFCab/tREFIab;
- DDR4: VDD and the wordline pump VPP (`vpp` with `ipp0`, `ipp2n`, ... in the `memspec` files;
  `vdd2` with `idd02` in the 2019-2020 files); `RefreshMode` 1/2/4 picks tRFC, tRFC2 or tRFC4;
- DDR2, DDR3 and other single-supply parts: VDD.
A current the file leaves out is 0, as DRAMPower reads it (the VPP standby currents of DDR4).

What the energy model then covers (`sramsim.analysis.dram_energy`): DRAMPower 4's per-command
equations evaluated per supply and summed; the array supply (VDD2 on LPDDR parts, VDD on DDR
parts) is the one lowered, every other supply -- VDD1, VDDQ and DDR4's VPP -- stays at nominal
and its energy is counted at nominal. Bank groups (DDR4) are counted into the flat bank index
(`nbrOfBanks` banks in all) and do not change the per-command energies; back-to-back bursts are
taken BL/DR cycles apart (tCCD_S), so the longer tCCD_L within one bank group is not modelled.
One device is modelled, as DRAMPower's per-device energies are: a DIMM rank of N devices moves N
times the bits for N times the energy, the same energy per bit. IO and termination power are not
modelled. DRAMPower 5's memspecs (timings as `tCK` in seconds, currents in A, `iBeta`) follow
different equations and are refused with a one-line error.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sramsim.errors import InputError

SUBARRAY_ROWS = 512          # ours (EDEN / SALP), as in the bundled part files: memspecs give none
SUPPORTED = ("DDR2", "DDR3", "DDR4", "LPDDR", "LPDDR2", "LPDDR3", "LPDDR4", "WIDEIO_SDR")
TWO_SUPPLY = ("LPDDR", "LPDDR2", "LPDDR3", "WIDEIO_SDR")
CURRENTS = ("idd0", "idd2n", "idd3n", "idd4r", "idd4w", "idd5", "idd6")


def is_memspec(doc: object) -> bool:
    """Whether a JSON document is a DRAMPower memspec (wrapped in `memspec` or not)."""
    return isinstance(doc, dict) and ("memspec" in doc or "memarchitecturespec" in doc)


def from_memspec(doc: dict, where: str) -> dict:
    """The sramsim part dictionary of a DRAMPower 4 memspec document (`where` names the file
    in errors)."""
    spec = doc.get("memspec", doc)
    if not isinstance(spec, dict):
        raise InputError(f"{where}: 'memspec' must be an object")
    sections = {}
    for key in ("memarchitecturespec", "memtimingspec", "mempowerspec"):
        if not isinstance(spec.get(key), dict):
            raise InputError(f"{where}: DRAMPower memspec lacks the {key!r} section")
        sections[key] = spec[key]
    arch, timing, power = (sections[k] for k in ("memarchitecturespec", "memtimingspec",
                                                 "mempowerspec"))
    if "tCK" in timing and "clkMhz" not in timing:
        raise InputError(f"{where}: a DRAMPower 5 memspec (tCK in seconds, currents in A); "
                         "sramsim reads DRAMPower 4 memspecs (clkMhz, mA), whose equations its "
                         "energies follow")
    kind = str(spec.get("memoryType", ""))
    if kind not in SUPPORTED:
        raise InputError(f"{where}: memoryType {kind!r} is not modelled (supported: "
                         f"{', '.join(SUPPORTED)})")
    name = str(spec.get("memoryId") or where)
    return {
        "name": name,
        "memory_type": kind,
        "source": f"DRAMPower memspec {where} (memoryId {name}), read by sramsim.memory.memspec",
        "architecture": _architecture(arch, where),
        "timing": _timing(kind, spec, timing, where),
        "power": _power(kind, power, where),
    }


def _need(section: dict, key: str, where: str, what: str) -> Any:
    if key not in section:
        raise InputError(f"{where}: the {what} section lacks {key!r}")
    return section[key]


def _first(section: dict, *keys: str, default: Any = None) -> Any:
    """The value of the first of `keys` present in `section` (DRAMPower renamed some in 2020)."""
    for key in keys:
        if key in section:
            return section[key]
    return default


def _architecture(arch: dict, where: str) -> dict:
    need = lambda k: _need(arch, k, where, "memarchitecturespec")  # noqa: E731
    rows = need("nbrOfRows")
    # 512-row subarrays where they tile the bank, else the largest power of two that does
    # (DramGeometry checks the numbers themselves)
    subarray = SUBARRAY_ROWS
    if isinstance(rows, int) and rows > 0 and rows % SUBARRAY_ROWS:
        subarray = math.gcd(rows, SUBARRAY_ROWS)
    return {
        "channels": max(1, int(arch.get("nbrOfChannels", 1) or 1)),
        "ranks": need("nbrOfRanks"), "banks": need("nbrOfBanks"), "rows": rows,
        "columns": need("nbrOfColumns"), "device_width": need("width"),
        "data_rate": need("dataRate"), "burst_length": need("burstLength"),
        "subarray_rows": subarray,
        "bank_groups": arch.get("nbrOfBankGroups", 1),
        "devices": arch.get("nbrOfDevicesOnDIMM", arch.get("nbrOfDevices", 1)),
    }


def _timing(kind: str, spec: dict, timing: dict, where: str) -> dict:
    need = lambda k: _need(timing, k, where, "memtimingspec")  # noqa: E731
    out = {k: v for k, v in timing.items() if k != "clkMhz"}
    out["clk_mhz"] = need("clkMhz")
    if kind == "LPDDR4":
        out.update(RP=need("RPPB"), RFC=need("RFCAB"), REFI=need("REFIAB"))
    elif kind == "DDR4":
        mode = str(spec.get("RefreshMode", 1)).upper().rstrip("X")
        key = {"1": "RFC", "2": "RFC2", "4": "RFC4"}.get(mode)
        if key is None:
            raise InputError(f"{where}: RefreshMode must be 1, 2 or 4, got "
                             f"{spec.get('RefreshMode')!r}")
        out["RFC"] = need(key)
        out["refresh_mode"] = int(mode)
    for key in ("RAS", "RC", "RCD", "RP", "RFC", "REFI"):
        if key not in out:
            need(key)
    return out


def _power(kind: str, power: dict, where: str) -> dict:
    """The `power` section: supply voltages and per-supply current lists (mA)."""
    def current(*keys: str, required: bool = True) -> Any:
        value = _first(power, *keys)
        if value is None:
            if required:
                raise InputError(f"{where}: the mempowerspec section lacks {keys[0]!r}")
            return 0.0
        return value

    def voltage(*keys: str) -> Any:
        value = _first(power, *keys)
        if value is None:
            raise InputError(f"{where}: the mempowerspec section lacks {keys[0]!r}")
        return value

    if kind == "DDR4" and "vpp" in power:
        supplies = {"vdd": voltage("vdd"), "vpp": voltage("vpp")}
        names = {"idd5": ("idd5B", "idd5")}
        main = {c: current(*names.get(c, (c,))) for c in CURRENTS}
        pump = {c: current(*("ipp" + n[3:] for n in names.get(c, (c,))), required=False)
                for c in CURRENTS}
        per_supply = [main, pump]
    elif kind == "DDR4":                                   # 2019-2020: VPP spelled vdd2
        supplies = {"vdd": voltage("vdd1", "vdd"), "vpp": voltage("vdd2")}
        per_supply = [_domain(current, 1), _domain(current, 2, required=False)]
    elif kind == "LPDDR4":
        supplies = {"vdd1": voltage("vdd"), "vdd2": voltage("vdd2"), "vddq": voltage("vddq")}
        per_supply = [{c: current(c) for c in CURRENTS},
                      {c: current(c + "2") for c in CURRENTS},
                      {c: current(c + "q", required=False) for c in CURRENTS}]
    elif kind in TWO_SUPPLY:
        supplies = {"vdd1": voltage("vdd1", "vdd"), "vdd2": voltage("vdd2")}
        per_supply = [_domain(current, 1), _domain(current, 2)]
    else:
        supplies = {"vdd": voltage("vdd1", "vdd")}
        per_supply = [_domain(current, 1)]
    out = {"unit_current": "mA", **supplies}
    for c in CURRENTS:
        out[c] = [float(d[c]) for d in per_supply]
    return out


def _domain(current: Callable[..., Any], n: int, required: bool = True) -> dict:
    """One supply's currents of a DRAMPower 4 file: supply 1 as `idd01`/`idd0`, `idd2n1`/`idd2n`,
    `idd4r`, ... (2020 / 2019 names); supply 2 as `idd02`, `idd2n2`, `idd4r2`, ..."""
    if n == 1:
        return {"idd0": current("idd01", "idd0", required=required),
                "idd2n": current("idd2n1", "idd2n", required=required),
                "idd3n": current("idd3n1", "idd3n", required=required),
                "idd4r": current("idd4r", required=required),
                "idd4w": current("idd4w", required=required),
                "idd5": current("idd51", "idd5", required=required),
                "idd6": current("idd61", "idd6", required=False)}
    return {c: current(c + "2", required=required) if c != "idd6" else current("idd62",
                                                                              required=False)
            for c in CURRENTS}
