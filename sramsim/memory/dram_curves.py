"""DRAM bit error rate vs supply voltage: the bundled parametric curves, in volts, by name.

Which supply: the array supply. SparkXD (DAC 2021) and EDEN (MICRO 2019) lower the DRAM supply
that powers the cell array, the sense amplifiers and the row buffer, because that is where most of
an access's energy goes (activation/precharge and bursts); Voltron (SIGMETRICS 2017) lowers the
same supply of DDR3L parts (1.35 V nominal). On the default LPDDR3 part (DRAMPower memspec
MICRON_4Gb_LPDDR3-1600_32bit_A) that supply is VDD2 = 1.2 V: VDD2 carries almost all of the
datasheet's IDD currents (e.g. IDD4R 260 mA on VDD2 vs 5 mA on VDD1 = 1.8 V), so it is the one
lowered and the nominal voltage of the curve below is 1.2 V.

No measured public BER-vs-voltage curve of this part exists to bundle, so the default curve is an
ILLUSTRATIVE parametric fit, not a measurement:

    "lpddr3-illustrative" = BerCurve.gaussian(mu=0.80 V, sigma=0.05 V), nominal 1.2 V (VDD2)

i.e. each cell's minimum operating voltage ~ N(0.80 V, 0.05 V). Its shape follows Voltron's
qualitative observation that a part runs error-free down to a vendor-dependent voltage somewhat
below nominal, after which errors rise steeply: here BER ~ 1e-9 at 1.10 V (8% below nominal),
3e-7 at 1.05 V, 3e-5 at 1.00 V, 1.3e-3 at 0.95 V, 2.3e-2 at 0.90 V. The numbers mu and sigma are
our choice (round values giving that shape), not fitted to any chip; users with measurements pass
their own curve (`BerCurve.from_table` in volts) together with their part's nominal voltage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sramsim.errors import InputError
from sramsim.memory.curves import BerCurve

DEFAULT_DRAM_CURVE = "lpddr3-illustrative"

# name -> (mu [V], sigma [V], nominal voltage [V] of the lowered supply, what it is)
DRAM_CURVES = {
    "lpddr3-illustrative": (0.80, 0.05, 1.2,
                            "illustrative Gaussian fit (not a measurement) shaped after Voltron: "
                            "Vmin ~ N(0.80 V, 0.05 V), nominal VDD2 = 1.2 V"),
}


def dram_curve_names() -> list[str]:
    """Names of the bundled DRAM BER curves (for listings and error messages)."""
    return sorted(DRAM_CURVES)


def _unknown(name: str) -> InputError:
    return InputError(f"unknown DRAM BER curve {name!r}; bundled: {', '.join(dram_curve_names())}, "
                      "or a CSV table file (voltage,ber per line)")


def read_curve_table(path: str) -> tuple[BerCurve, float]:
    """A user's DRAM BER curve from a CSV file of `voltage,ber` lines (volts; a header line and
    `#` comments are skipped), and its nominal voltage: the table's highest voltage, so a table
    starts at the nominal voltage of the supply it lowers. Bad files -> one-line InputError."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"curve {path}: cannot read the table ({exc})") from None
    seen_first = False
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = [x.strip() for x in text.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            rows.append((float(parts[0]), float(parts[1])))
        except ValueError:
            if seen_first:          # only the first line may be a header
                raise InputError(f"curve {path}: line {i} is not 'voltage,ber': {line!r}") from None
        seen_first = True
    if not rows:
        raise InputError(f"curve {path}: no (voltage, ber) rows")
    v, b = np.array(rows).T
    try:
        curve = BerCurve.from_table(v, b, name=Path(path).name)
    except ValueError as exc:
        raise InputError(f"curve {path}: {exc}") from None
    if not np.all(v > 0):
        raise InputError(f"curve {path}: voltages must be positive volts")
    return curve, float(v.max())


def _is_table(name: str) -> bool:
    return str(name).lower().endswith(".csv")


def dram_curve(name: str = DEFAULT_DRAM_CURVE) -> BerCurve:
    """The DRAM BER curve `name` (volts): a bundled one, or a CSV table file (read_curve_table)."""
    if _is_table(name):
        return read_curve_table(name)[0]
    if name not in DRAM_CURVES:
        raise _unknown(name)
    mu, sigma, _, _ = DRAM_CURVES[name]
    curve = BerCurve.gaussian(mu, sigma)
    curve.name = name
    return curve


def dram_nominal_voltage(name: str = DEFAULT_DRAM_CURVE) -> float:
    """Nominal voltage (V) of the supply that curve `name` lowers (a table's highest voltage)."""
    if _is_table(name):
        return read_curve_table(name)[1]
    if name not in DRAM_CURVES:
        raise _unknown(name)
    return float(DRAM_CURVES[name][2])


def dram_curve_description(name: str = DEFAULT_DRAM_CURVE) -> str:
    """One line saying what bundled curve `name` is and where its parameters come from."""
    if _is_table(name):
        return f"user table {name} (voltage,ber in volts; nominal = its highest voltage)"
    if name not in DRAM_CURVES:
        raise _unknown(name)
    return DRAM_CURVES[name][3]
