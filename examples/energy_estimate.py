"""The weight-memory energy saved at each voltage, with and without a NeuralFuse generator.

Energy per read scales as (V/Vnom)^2; a generator runs at nominal voltage, so its own reads are
charged at full price. Reads per inference are counted from the models' shapes (no training, no
data): every weight once, or as SCALE-Sim's output-stationary 32x32 array reads them (64-bit
reads), the count NeuralFuse used.

    python examples/energy_estimate.py [--count weights|systolic]
"""
from __future__ import annotations

import argparse

from fusion.generators import build as build_generator
from sramsim import BerCurve
from sramsim.analysis.energy import addon_saving, saving
from sramsim.analysis.systolic import count_accesses
from sramsim.nn import build

SHAPE = (1, 28, 28)                     # Fashion-MNIST


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", choices=("weights", "systolic"), default="weights")
    args = p.parse_args(argv)

    base = count_accesses(build("cnn", in_channels=1, num_classes=10), SHAPE, args.count)
    generators = {f"ConvS x{w:g}": count_accesses(build_generator("ConvS", 1, width=w), SHAPE,
                                                  args.count) for w in (1.0, 0.25)}
    print(f"reads per inference ({args.count}): cnn {base:,}, " +
          ", ".join(f"{name} {n:,}" for name, n in generators.items()))

    curve = BerCurve.builtin("finfet14")
    print("voltage      BER   cnn alone  " + "  ".join(f"+ {name:>10}" for name in generators))
    for v in (0.95, 0.9, 0.875, 0.85, curve.voltage(0.01), 0.8):
        row = [f"{addon_saving(base, n, v):11.1%}" for n in generators.values()]
        print(f"{v:7.3f} {curve.ber(v):8.1e}  {saving(v):10.1%}  " + "  ".join(row))


if __name__ == "__main__":
    main()
