"""Protect the weights with a MemoryLayout: ECC and fault-aware bit placement on a shipped chip.

The same model on the same chip at the same voltages, stored four ways: plainly, under SECDED
(72,64) (check bits in the same faulty memory, every codeword decoded), and with the bits of each
word placed around the chip's known faults (ReSpawn's shuffle and skip-faulty-words). The record
of each evaluation says what the protection did.

    python examples/protect_with_layout.py [--train-limit 10000] [--limit 2000]
"""
from __future__ import annotations

import argparse

from sramsim import Chip, Evaluator, MemoryLayout

from _common import quantized_cnn, size_options

LAYOUTS = {"plain": MemoryLayout(), "secded72": MemoryLayout(ecc="secded72"),
           "shuffle": MemoryLayout(bit_placement="shuffle"),
           "skip-faulty-words": MemoryLayout(bit_placement="skip-faulty-words")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_options(p)
    args = p.parse_args(argv)

    qm, test = quantized_cnn(args)
    chip = Chip.load("shipped:finfet14-8192x128-s0")

    for name, layout in LAYOUTS.items():
        evaluator = Evaluator(qm, layout)
        for v in (0.825, 0.8):
            r = evaluator.evaluate(test, chip, voltage=v)
            what = r.get("ecc") or r.get("bit_placement") or {}
            note = ", ".join(f"{k} {val:g}" for k, val in what.items()
                             if isinstance(val, (int, float)))
            print(f"{name:18} {v:.3f} V  accuracy {r['accuracy']:6.2%}  {note}")


if __name__ == "__main__":
    main()
