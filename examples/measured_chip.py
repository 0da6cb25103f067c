"""Your measured chip: import per-voltage failing-bit files, save a profile, run a model on it.

The folder holds one .npy file per tested voltage and direction (v0.850_1to0.npy: the addresses
of the bits seen reading 0 where 1 was stored, at 0.85 of nominal). By default it is the sample
of docs/data/measured-chip (written by docs/data/make_measured_chip.py).

    python examples/measured_chip.py [BITMAP_DIR] [--rows 8192 --cols 128] [--limit 2000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sramsim import Evaluator, Geometry
from sramsim.memory.profiles import import_bitmaps, summary

from _common import quantized_cnn, size_options

SAMPLE = Path(__file__).resolve().parents[1] / "docs" / "data" / "measured-chip"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bitmaps", nargs="?", default=str(SAMPLE), help="folder of v<V>[_dir].npy files")
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--cols", type=int, default=128)
    p.add_argument("--profile", default="my-chip.h5", help="profile to write")
    size_options(p)
    args = p.parse_args(argv)

    chip = import_bitmaps(args.bitmaps, Geometry(args.rows, args.cols))
    chip.save(args.profile)
    info = summary(chip)
    print(f"{chip.name}: {info['faults']} faulty bits, {info['non_nested']} non-nested")

    qm, test = quantized_cnn(args)
    evaluator = Evaluator(qm)
    print(f"fault-free accuracy {evaluator.clean(test)['accuracy']:.2%}")
    for row in info["voltages"]:
        result = evaluator.evaluate(test, chip, voltage=row["voltage"])
        print(f"{row['voltage']:.3f} V  BER {row['ber']:.2e}  {row['kinds']}  "
              f"accuracy {result['accuracy']:.2%}")


if __name__ == "__main__":
    main()
