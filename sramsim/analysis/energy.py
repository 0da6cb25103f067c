"""Weight-memory energy vs supply voltage, and the NeuralFuse add-on accounting.

Model (all energies relative to one read at nominal voltage V_nom):

    e(V) = (1 - s) * (V / V_nom)**2 + s * (V / V_nom)

The first term is dynamic switching energy, C·V² per access. The second is leakage charged to
each access: static power V·I_leak over a fixed access time, with I_leak held at its nominal value
(Rabaey, Chandrakasan & Nikolic, *Digital Integrated Circuits*, 2nd ed., ch. 5:
P_stat = V_DD·I_leak).
`s` is leakage's share of one read's energy at nominal voltage. Leakage current in fact falls with V
(DIBL), so s > 0 gives a conservative (smaller) saving. The default s = 0 is the model NeuralFuse
uses (Sun et al., NeurIPS 2024): at finfet14's 1%-BER voltage 0.833, e = 0.694.

Accesses per inference: by default each conv/linear weight is read once from weight memory
(weights stay in the array's registers while they are reused), counted from the model's layers
(`weight_accesses`, from `sramsim.analysis.accesses`). `count_accesses(model, shape, "systolic" |
"scalesim")` (from `sramsim.analysis.systolic`) counts reads the way SCALE-Sim does for
NeuralFuse's output-stationary 32x32 array instead, where a layer's weights are re-read once per
tile of output pixels; it reproduces 4 of the 5 published counts in `PUBLISHED_ACCESSES` exactly
(ResNet18, VGG19, ConvL, ConvS). UNetL is not reproduced: the closed form gives 173,952 reads,
3.8% below the published 180,894 (the cause of the gap is not known).

Add-on accounting: the base model reads at low voltage, the add-on (a NeuralFuse generator) at
nominal voltage, so saving = [E_nom_base - (E_low_base + E_nom_addon)] / E_nom_base.

ECC (`sramsim.inject.ecc`): a SECDED memory reads its check bits with the data, n/k cells per
data cell (72/64, 13/8), and runs a decoder per codeword read, so one data read costs

    e_ecc(V) = e(V) * n / k + d

relative to one read of the unprotected memory at nominal voltage. d is the decoder's energy per
codeword, as a fraction of one nominal read of the codeword's k data bits; the decoder is logic
beside the array and stays at nominal voltage. DEFAULT_DECODER_ENERGY = 0.05 is an
*illustrative* value (no measured figure is bundled): set your own with `--ecc-decoder-energy`.
"""
from __future__ import annotations

import math

from sramsim.analysis.accesses import weight_accesses  # noqa: F401  (re-exported: the plain count)
from sramsim.analysis.systolic import count_accesses  # noqa: F401  (re-exported: every counting method)
from sramsim.errors import InputError, check_number
from sramsim.inject.ecc import get_code

# NeuralFuse (Sun et al., NeurIPS 2024), CIFAR-10, 8-bit weights: weight-memory accesses per
# inference from SCALE-Sim (output-stationary 32x32 array, 256 KB weight SRAM). Our closed form
# (`count_accesses(..., "systolic")` on 3x32x32 inputs) gives exactly these for ResNet18, VGG19,
# ConvL and ConvS; for UNetL it gives 173,952 (6,942 = 3.8% fewer), so that entry is only ever
# looked up, never claimed as reproduced.
PUBLISHED_ACCESSES = {
    "ResNet18": 2_755_968,
    "VGG19": 3_104_128,
    "ConvL": 320_256,
    "UNetL": 180_894,
    "ConvS": 41_508,
}
PUBLISHED_SOURCE = ("NeuralFuse (Sun et al., NeurIPS 2024), CIFAR-10, 8-bit, SCALE-Sim "
                    "output-stationary 32x32 array, 256 KB weight SRAM")


DEFAULT_DECODER_ENERGY = 0.05   # illustrative: decoder energy per codeword / one nominal data read


def energy_per_read(voltage: float, nominal: float = 1.0, leakage_share: float = 0.0) -> float:
    """Energy of one weight-memory read at `voltage` (at most `nominal`), relative to one at
    `nominal`."""
    v, vn, s = float(voltage), float(nominal), float(leakage_share)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"voltage must be a positive finite number, got {voltage!r}")
    if not (math.isfinite(vn) and vn > 0):
        raise InputError(f"nominal voltage must be a positive finite number, got {nominal!r}")
    if not (math.isfinite(s) and 0.0 <= s <= 1.0):
        raise InputError(f"leakage share must lie in [0, 1], got {leakage_share!r}")
    if v > vn * (1.0 + 1e-9):
        raise InputError(f"voltage {voltage!r} is above the nominal voltage {nominal!r} "
                         "(the model covers lowered supplies only)")
    r = v / vn
    return (1.0 - s) * r * r + s * r


def decoder_energy(ecc: str | None, value: float | None = None,
                   what: str = "ecc decoder energy") -> float:
    """The decoder energy per codeword to charge: `value` (checked, >= 0), the illustrative
    default with a code, 0 without one (a value without a code is refused, naming `what`)."""
    if ecc is None:
        if value is not None:
            raise InputError(f"{what} needs an ecc code (there is no decoder without one)")
        return 0.0
    return DEFAULT_DECODER_ENERGY if value is None else check_number(value, what, low=0.0)


def ecc_energy_per_read(voltage: float, nominal: float = 1.0, leakage_share: float = 0.0,
                        ecc: str | None = None, decoder: float | None = None) -> float:
    """Energy of one data read at `voltage` from a memory protected by `ecc` (None: unprotected),
    relative to one unprotected read at nominal: e(V) * n / k + decoder energy per codeword."""
    e = energy_per_read(voltage, nominal, leakage_share)
    d = decoder_energy(ecc, decoder)
    return e if ecc is None else e * get_code(ecc).overhead + d


def addon_saving(base_accesses: int, addon_accesses: int, voltage: float, nominal: float = 1.0,
                 leakage_share: float = 0.0, ecc: str | None = None,
                 decoder: float | None = None) -> float:
    """Fraction of weight-memory energy saved: base at `voltage` (its memory protected by `ecc`
    when given, see `ecc_energy_per_read`), add-on at nominal voltage without ECC."""
    base, addon = int(base_accesses), int(addon_accesses)
    if base <= 0:
        raise InputError(f"base accesses must be positive, got {base_accesses!r}")
    if addon < 0:
        raise InputError(f"add-on accesses must be >= 0, got {addon_accesses!r}")
    e_low = ecc_energy_per_read(voltage, nominal, leakage_share, ecc, decoder)
    e_nom_base = float(base)
    return (e_nom_base - (base * e_low + addon * 1.0)) / e_nom_base


def saving(voltage: float, nominal: float = 1.0, leakage_share: float = 0.0,
           ecc: str | None = None, decoder: float | None = None) -> float:
    """Fraction of weight-memory energy saved at `voltage` without any add-on (with `ecc`: its
    extra reads and decoder counted against the unprotected memory at nominal voltage)."""
    return 1.0 - ecc_energy_per_read(voltage, nominal, leakage_share, ecc, decoder)
