"""DRAM energy per command and per row-buffer hit / miss / conflict, from a part's datasheet
currents and voltages, the way DRAMPower computes them, with the array supply lowered.

Per-command energies (DRAMPower, tukl-msd/DRAMPower, src/MemoryPowerModel.cc, `power_calc`: the
engine that models LPDDR2/LPDDR3 parts with their two supply domains; every term is computed once
per supply with that supply's currents and voltage and the two are added). With tCK = 1/clk and
timings in clock cycles, for each supply s (VDD1 and VDD2 on LPDDR3):

    E_act  = V_s * (IDD0_s  - IDD3N_s) * tRAS          * tCK   one ACT
    E_pre  = V_s * (IDD0_s  - IDD2N_s) * (tRC - tRAS)  * tCK   one PRE
    E_rd   = V_s * (IDD4R_s - IDD3N_s) * (BL / DR)     * tCK   one read burst
    E_wr   = V_s * (IDD4W_s - IDD3N_s) * (BL / DR)     * tCK   one write burst
    E_ref  = V_s * (IDD5_s  - IDD3N_s) * tRFC          * tCK   one all-bank REF
    P_act  = V_s * IDD3N_s             (active standby: a row is open somewhere)
    P_pre  = V_s * IDD2N_s             (precharged standby: all banks closed)

(DR = data rate, 2 for DDR; BL / DR is an integer division in DRAMPower, so we require BL to be a
multiple of DR.) The command terms are the current above standby, so a trace's energy is the sum of
its commands plus standby over its cycles: that is DRAMPower's total, and `command_energy` gives it
term by term. (DRAMPower 5, src/DRAMPower/.../core_calculation_LPDDR4.cpp, keeps the ACT, RD and WR
forms and splits the precharge with a separate IBeta current that LPDDR3 memspecs do not give.)
tests/test_dram_energy.py reproduces DRAMPower's own expected energies for an LPDDR3 trace.

Row-buffer accesses (one read burst of device_width x BL bits). Every activation is charged the
precharge that eventually closes its row, and an access is charged the standby energy over the
cycles it keeps its bank busy (with nominal timings: approximate DRAM keeps them):

    hit      = E_rd + (BL/DR) * tCK * P_act                              row already open
    miss     = E_act + E_pre + E_rd + (tRCD + BL/DR) * tCK * P_act       bank closed
    conflict = miss + tRP * tCK * P_pre                                  another row open

A conflict costs the same commands as a miss (its PRE closes the old row, whose energy the old
row's activation already carries, and its own row's PRE comes later) plus the tRP it must wait,
precharged, before it may activate. So over a trace every ACT/PRE pair is counted once, whether
the row closes at a conflict or at the end. Idle time beyond the accesses (standby between them)
and refresh are not in these numbers: `background_power` gives them in watts, to be multiplied by a
run time and reported separately. (Assumed: a conflicting row has been open >= tRAS; bursts back
to back.)

Which supply is lowered: the array supply. SparkXD (DAC 2021) and EDEN (MICRO 2019) lower the DRAM
supply that powers the cell array, the sense amplifiers and the row buffer (Voltron, SIGMETRICS
2017, lowers the same supply of DDR3L parts); on LPDDR3 that is VDD2 (1.2 V), which carries almost
all of the IDD currents (IDD4R: 260 mA on VDD2 vs 5 mA on VDD1 for the default part). VDD1 (1.8 V)
stays at nominal. Every term above is split into its per-supply shares and only the lowered
supply's share scales, as (V / V_nom)^2: DRAMPower's currents are measured at nominal voltage, and
the switching current of a capacitive load scales with V too (I = C V f), so E = V I t ~ V^2 -- the
dynamic model `sramsim.analysis.energy` uses for SRAM. Single-supply parts (`vdd`) lower that
supply.

Parts read from DRAMPower memspecs (`sramsim.memory.memspec`) take the same equations, per supply:
DDR4's wordline pump VPP (2.5 V) is a second supply counted at nominal (its ACT/PRE share comes
from IPP0; the standby IPP currents a memspec leaves out count as 0, as in DRAMPower), and
LPDDR4's VDDQ likewise; the lowered supply is VDD on DDR parts and VDD2 on LPDDR parts. Bank
groups do not enter the energies; bursts are taken BL/DR cycles apart (tCCD_L within a bank group
is not modelled). DRAMPower 4's bank-wise variants (factRho) and DRAMPower 5's IBeta precharge are
not reproduced: with RC = RAS + RP and rho = 1 they differ from the equations above only in the
precharge term (IDD0 - IDD3N over tRP there, IDD0 - IDD2N over tRC - tRAS here).
"""
from __future__ import annotations

import math
import numbers

from sramsim.errors import InputError, check_number
from sramsim.memory.dram import DEFAULT_PART, load_part

ACCESSES = ("hit", "miss", "conflict")
COMMANDS = ("act", "pre", "rd", "wr", "ref")          # joules per command
STANDBY = ("act_standby", "pre_standby")              # joules per clock cycle
CURRENTS = ("idd0", "idd2n", "idd3n", "idd4r", "idd4w", "idd5")
TIMINGS = ("clk_mhz", "RAS", "RC", "RCD", "RP", "RFC", "REFI")


def _supplies(power: dict, where: str) -> list[tuple[str, float, dict]]:
    """(supply name, nominal volts, {current name: mA}) per supply of a part's `power` section:
    VDD1 and VDD2 (LPDDR) or VDD, then VDDQ (LPDDR4) and VPP (DDR4) where given."""
    names = [k for k in ("vdd1", "vdd2") if k in power] or (["vdd"] if "vdd" in power else [])
    if not names:
        raise InputError(f"{where}: the power section names no supply voltage (vdd1/vdd2 or vdd)")
    names += [k for k in ("vddq", "vpp") if k in power]
    unit = power.get("unit_current", "mA")
    if unit != "mA":
        raise InputError(f"{where}: currents must be in mA, got unit_current={unit!r}")
    out = []
    for i, name in enumerate(names):
        volts = check_number(power[name], f"{where}: {name}", positive=True)
        currents = {}
        for key in CURRENTS:
            if key not in power:
                raise InputError(f"{where}: the power section lacks {key!r}")
            value = power[key]
            if isinstance(value, (list, tuple)):
                if len(value) != len(names):
                    raise InputError(f"{where}: {key} has {len(value)} values for "
                                     f"{len(names)} supplies ({', '.join(names)})")
                value = value[i]
            currents[key] = check_number(value, f"{where}: {key} on {name.upper()}", low=0.0)
        for cmd, base in (("idd0", "idd3n"), ("idd0", "idd2n"), ("idd4r", "idd3n"),
                          ("idd4w", "idd3n"), ("idd5", "idd3n")):
            if currents[cmd] < currents[base]:
                raise InputError(f"{where}: {cmd} ({currents[cmd]} mA) is below {base} "
                                 f"({currents[base]} mA) on {name.upper()}: negative command "
                                 "energy")
        out.append((name, volts, currents))
    return out


def _count(value: object, what: str) -> int:
    """`value` as a whole number >= 0 (bools, strings and fractional numbers refused)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0:
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        x = float(value)
        if math.isfinite(x) and x.is_integer() and x >= 0:
            return int(x)
    raise InputError(f"{what} must be a whole number >= 0, got {value!r}")


class DramEnergy:
    """Per-command and per-access energies (J) of one DRAM part, with its array supply lowered."""

    def __init__(self, spec: dict, lowered: str | None = None):
        where = f"DRAM part {spec.get('name', '?')}"
        try:
            timing, arch, power = spec["timing"], spec["architecture"], spec["power"]
        except KeyError as exc:
            raise InputError(f"{where}: lacks the {exc.args[0]!r} section") from None
        for key in TIMINGS:
            if key not in timing:
                raise InputError(f"{where}: the timing section lacks {key!r}")
        self.name = str(spec.get("name", "?"))
        self.tck = 1.0 / (check_number(timing["clk_mhz"], f"{where}: clk_mhz", positive=True) * 1e6)
        self.cycles = {k: _count(timing[k], f"{where}: timing {k}") for k in TIMINGS[1:]}
        zero = [k for k, v in self.cycles.items() if v == 0]
        if zero:
            raise InputError(f"{where}: timing {', '.join(zero)} must be positive")
        if self.cycles["RC"] < self.cycles["RAS"]:
            raise InputError(f"{where}: RC ({self.cycles['RC']}) is shorter than RAS "
                             f"({self.cycles['RAS']})")
        bl = _count(arch.get("burst_length", 0), f"{where}: burst_length")
        dr = _count(arch.get("data_rate", 0), f"{where}: data_rate")
        width = _count(arch.get("device_width", 0), f"{where}: device_width")
        if not (bl and dr and width) or bl % dr:
            raise InputError(f"{where}: burst_length ({bl}) must be a positive multiple of "
                             f"data_rate ({dr}) and device_width ({width}) positive")
        self.burst_cycles = bl // dr
        self.burst_bits = width * bl
        self.supplies = _supplies(power, where)
        names = [s[0] for s in self.supplies]
        array = "vdd2" if "vdd2" in names else names[0]     # the array supply: VDD2 or VDD
        self.lowered = array if lowered is None else str(lowered).lower()
        if self.lowered not in names:
            raise InputError(f"lowered supply must be one of {', '.join(names)}, got {lowered!r}")
        self.nominal_voltage = dict((n, v) for n, v, _ in self.supplies)[self.lowered]

    @classmethod
    def from_part(cls, name: str = DEFAULT_PART, lowered: str | None = None) -> DramEnergy:
        """The energy model of a bundled part (sramsim/memory/parts/NAME.json) or a part file."""
        return cls(load_part(name), lowered=lowered)

    # --- voltage ----------------------------------------------------------------------------
    def check_voltage(self, voltage: float | None = None) -> float:
        """The lowered supply's voltage in volts (None = nominal); refuses <= 0 and > nominal."""
        if voltage is None:
            return self.nominal_voltage
        what = f"{self.lowered.upper()} voltage"
        v = check_number(voltage, what, positive=True)
        if v > self.nominal_voltage * (1.0 + 1e-9):
            raise InputError(f"{what} {voltage!r} V is above the nominal {self.nominal_voltage} V "
                             f"of {self.name} (the model covers lowered supplies only)")
        return v

    def _scales(self, voltage: float | None) -> list[float]:
        """Per-supply energy factor: (V/V_nom)^2 on the lowered supply, 1 on the others."""
        r = self.check_voltage(voltage) / self.nominal_voltage
        return [r * r if name == self.lowered else 1.0 for name, _, _ in self.supplies]

    # --- energies ---------------------------------------------------------------------------
    def command_shares(self) -> dict[str, dict[str, float]]:
        """Nominal per-command energies (J; standby: J per cycle) by supply: {supply: {...}}."""
        c, tck, nb = self.cycles, self.tck, self.burst_cycles
        out = {}
        for name, volts, i in self.supplies:
            e = volts * 1e-3 * tck                       # mA * V * s -> J per (mA x cycle)
            out[name] = {
                "act": e * (i["idd0"] - i["idd3n"]) * c["RAS"],
                "pre": e * (i["idd0"] - i["idd2n"]) * (c["RC"] - c["RAS"]),
                "rd": e * (i["idd4r"] - i["idd3n"]) * nb,
                "wr": e * (i["idd4w"] - i["idd3n"]) * nb,
                "ref": e * (i["idd5"] - i["idd3n"]) * c["RFC"],
                "act_standby": e * i["idd3n"],
                "pre_standby": e * i["idd2n"],
            }
        return out

    def commands(self, voltage: float | None = None) -> dict[str, float]:
        """Energy of one act/pre/rd/wr/ref command and of one act_standby/pre_standby cycle (J)."""
        shares = self.command_shares()
        scales = self._scales(voltage)
        return {k: sum(s * shares[name][k] for s,
                       (name, _, _) in zip(scales, self.supplies, strict=True))
                for k in COMMANDS + STANDBY}

    def access_cycles(self) -> dict[str, int]:
        """Clock cycles each read access keeps its bank busy: hit, miss, conflict."""
        c, nb = self.cycles, self.burst_cycles
        return {"hit": nb, "miss": c["RCD"] + nb, "conflict": c["RP"] + c["RCD"] + nb}

    def access_energies(self, voltage: float | None = None) -> dict[str, float]:
        """Energy (J) of one read burst that is a row-buffer hit, miss or conflict (see module)."""
        e = self.commands(voltage)
        cyc = self.access_cycles()
        hit = e["rd"] + cyc["hit"] * e["act_standby"]
        miss = e["act"] + e["pre"] + e["rd"] + cyc["miss"] * e["act_standby"]
        conflict = miss + self.cycles["RP"] * e["pre_standby"]
        return {"hit": hit, "miss": miss, "conflict": conflict}

    def energy_per_bit(self, voltage: float | None = None) -> dict[str, float]:
        """Access energies divided by the bits of one burst (device_width x burst_length), J/bit."""
        return {k: v / self.burst_bits for k, v in self.access_energies(voltage).items()}

    def trace_energy(self, counts: dict, voltage: float | None = None) -> float:
        """Energy (J) of a read-access trace given as {"hit": n, "miss": n, "conflict": n}."""
        if not isinstance(counts, dict):
            raise InputError(f"access counts must be a dict with keys {', '.join(ACCESSES)}, "
                             f"got {type(counts).__name__}")
        unknown = sorted(set(counts) - set(ACCESSES))
        if unknown:
            raise InputError(f"unknown access kind(s) {', '.join(map(repr, unknown))}; "
                             f"expected {', '.join(ACCESSES)}")
        n = {k: _count(counts.get(k, 0), f"{k} count") for k in ACCESSES}
        e = self.access_energies(voltage)
        return sum(n[k] * e[k] for k in ACCESSES)

    def command_energy(self, counts: dict, active_cycles: int = 0, precharged_cycles: int = 0,
                       voltage: float | None = None) -> dict[str, float]:
        """DRAMPower's trace energy by term (J): command counts {act, pre, rd, wr, ref} plus standby
        over the trace's active and precharged cycles, and their "total"."""
        if not isinstance(counts, dict):
            raise InputError(f"command counts must be a dict with keys {', '.join(COMMANDS)}")
        unknown = sorted(set(counts) - set(COMMANDS))
        if unknown:
            raise InputError(f"unknown command(s) {', '.join(map(repr, unknown))}; "
                             f"expected {', '.join(COMMANDS)}")
        e = self.commands(voltage)
        out = {k: _count(counts.get(k, 0), f"{k} count") * e[k] for k in COMMANDS}
        out["act_standby"] = _count(active_cycles, "active cycles") * e["act_standby"]
        out["pre_standby"] = _count(precharged_cycles, "precharged cycles") * e["pre_standby"]
        out["total"] = sum(out.values())
        return out

    def background_power(self, voltage: float | None = None) -> dict[str, float]:
        """Power (W) outside accesses: active / precharged standby, refresh (one REF per tREFI)."""
        e = self.commands(voltage)
        return {"active_standby": e["act_standby"] / self.tck,
                "precharged_standby": e["pre_standby"] / self.tck,
                "refresh": e["ref"] / (self.cycles["REFI"] * self.tck)}

    def summary(self, voltage: float | None = None) -> dict:
        """Everything above at one voltage as a JSON-ready dict (for reports and `--json`)."""
        v = self.check_voltage(voltage)
        return {"part": self.name, "lowered_supply": self.lowered,
                "nominal_voltage": self.nominal_voltage, "voltage": v,
                "burst_bits": self.burst_bits, "commands_J": self.commands(v),
                "access_J": self.access_energies(v), "access_J_per_bit": self.energy_per_bit(v),
                "access_cycles": self.access_cycles(), "background_W": self.background_power(v)}
