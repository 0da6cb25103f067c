"""Weight-memory energy vs supply voltage, and the NeuralFuse add-on accounting.

Model (all energies relative to one read at nominal voltage V_nom):

    e(V) = (1 - s) * (V / V_nom)**2 + s * (V / V_nom)

The first term is dynamic switching energy, C·V² per access. The second is leakage charged to
each access: static power V·I_leak over a fixed access time, with I_leak held at its nominal value
(Rabaey, Chandrakasan & Nikolic, *Digital Integrated Circuits*, 2nd ed., ch. 5: P_stat = V_DD·I_leak).
`s` is leakage's share of one read's energy at nominal voltage. Leakage current in fact falls with V
(DIBL), so s > 0 gives a conservative (smaller) saving. The default s = 0 is the model NeuralFuse
uses (Sun et al., NeurIPS 2024): at finfet14's 1%-BER voltage 0.833, e = 0.694.

Accesses per inference: by default each conv/linear weight is read once from weight memory
(weights stay in the array's registers while they are reused), counted from the model's layers.
`count_accesses(model, shape, "systolic" | "scalesim")` (from `sramsim.analysis.systolic`) counts reads the
way SCALE-Sim does for NeuralFuse's output-stationary 32x32 array instead, where a layer's weights
are re-read once per tile of output pixels; it reproduces the published counts in
`PUBLISHED_ACCESSES`.

Add-on accounting: the base model reads at low voltage, the add-on (a NeuralFuse generator) at
nominal voltage, so saving = [E_nom_base - (E_low_base + E_nom_addon)] / E_nom_base.
"""
from __future__ import annotations

import math

from torch import nn

from sramsim.errors import InputError
from sramsim.analysis.systolic import count_accesses  # noqa: F401  (the SCALE-Sim backend, re-exported here)

# NeuralFuse (Sun et al., NeurIPS 2024), CIFAR-10, 8-bit weights: weight-memory accesses per
# inference from SCALE-Sim (output-stationary 32x32 array, 256 KB weight SRAM).
PUBLISHED_ACCESSES = {
    "ResNet18": 2_755_968,
    "VGG19": 3_104_128,
    "ConvL": 320_256,
    "UNetL": 180_894,
    "ConvS": 41_508,
}
PUBLISHED_SOURCE = ("NeuralFuse (Sun et al., NeurIPS 2024), CIFAR-10, 8-bit, SCALE-Sim "
                    "output-stationary 32x32 array, 256 KB weight SRAM")


def energy_per_read(voltage: float, nominal: float = 1.0, leakage_share: float = 0.0) -> float:
    """Energy of one weight-memory read at `voltage`, relative to one read at `nominal`."""
    v, vn, s = float(voltage), float(nominal), float(leakage_share)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"voltage must be a positive finite number, got {voltage!r}")
    if not (math.isfinite(vn) and vn > 0):
        raise InputError(f"nominal voltage must be a positive finite number, got {nominal!r}")
    if not (math.isfinite(s) and 0.0 <= s <= 1.0):
        raise InputError(f"leakage share must lie in [0, 1], got {leakage_share!r}")
    r = v / vn
    return (1.0 - s) * r * r + s * r


def weight_accesses(model: nn.Module, input_shape: tuple | None = None,
                    include_bias: bool = False) -> int:
    """Weight-memory reads per inference: every conv/linear weight read once.

    `input_shape` ([C, H, W] or [N, C, H, W]) is checked against the first layer when given; the
    count itself does not depend on it (a tiling-aware count would).
    """
    from sramsim.inject.quantized_model import quantized_parameter_names  # same tensors as the memory image

    names = quantized_parameter_names(model, include_bias)
    if not names:
        raise InputError("model has no conv/linear weights to count")
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) not in (3, 4) or min(shape) <= 0:
            raise InputError(f"input shape must be [C, H, W] or [N, C, H, W], got {input_shape!r}")
        first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if first is not None and first.in_channels != shape[-3]:
            raise InputError(f"input has {shape[-3]} channels but the model's first layer "
                             f"expects {first.in_channels}")
    params = dict(model.named_parameters())
    return int(sum(params[n].numel() for n in names))


def addon_saving(base_accesses: int, addon_accesses: int, voltage: float, nominal: float = 1.0,
                 leakage_share: float = 0.0) -> float:
    """Fraction of weight-memory energy saved: base at `voltage`, add-on at nominal voltage."""
    base, addon = int(base_accesses), int(addon_accesses)
    if base <= 0:
        raise InputError(f"base accesses must be positive, got {base_accesses!r}")
    if addon < 0:
        raise InputError(f"add-on accesses must be >= 0, got {addon_accesses!r}")
    e_low = energy_per_read(voltage, nominal, leakage_share)
    e_nom_base = float(base)
    return (e_nom_base - (base * e_low + addon * 1.0)) / e_nom_base


def saving(voltage: float, nominal: float = 1.0, leakage_share: float = 0.0) -> float:
    """Fraction of weight-memory energy saved at `voltage` without any add-on."""
    return 1.0 - energy_per_read(voltage, nominal, leakage_share)
