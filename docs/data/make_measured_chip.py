"""Write the sample "measured" chip of the Getting started page: docs/data/measured-chip/*.npy.

Not a measurement: a stand-in shaped like what a chip tester records, so the import can be tried
without a lab. The array is 8192 x 128 bits (the shipped chips' size). Every cell has a minimum
operating voltage Vmin ~ N(0.706, 0.055) (normalized to nominal; the finfet14 curve's fit), four
weak bitlines sit 0.05 higher, and a failing cell fails 1->0 (55%), 0->1 (35%) or both ways (10%).
The tester lowers the supply from 0.9 to 0.825 in steps of 0.025 and records, per voltage and
direction, the addresses of the failing bits (bit address = row * 128 + column), one file each:
v0.900_1to0.npy, v0.900_0to1.npy, ... Twelve cells fail intermittently: seen at 0.875, missed at
0.85 (the import keeps them and counts them as non-nested).

    python docs/data/make_measured_chip.py      # rewrites the files (same seed: the same bytes)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS, COLS = 8192, 128
VOLTAGES = (0.9, 0.875, 0.85, 0.825)
SEED = 2024
OUT = Path(__file__).resolve().parent / "measured-chip"


def observations() -> dict[str, np.ndarray]:
    """{file name: sorted uint32 failing-bit addresses} of the sample."""
    rng = np.random.default_rng(SEED)
    vmin = rng.normal(0.706, 0.055, ROWS * COLS)
    weak = rng.choice(COLS, 4, replace=False)
    vmin.reshape(ROWS, COLS)[:, weak] += 0.05
    direction = rng.choice(3, ROWS * COLS, p=[0.55, 0.35, 0.10])   # 1->0, 0->1, both
    intermittent = rng.choice(np.flatnonzero((vmin > 0.875) & (vmin < 0.9)), 12, replace=False)
    files = {}
    for v in VOLTAGES:
        failing = vmin > v
        if v == 0.85:
            failing[intermittent] = False
        for name, kinds in (("1to0", (0, 2)), ("0to1", (1, 2))):
            bits = np.flatnonzero(failing & np.isin(direction, kinds)).astype(np.uint32)
            files[f"v{v:.3f}_{name}.npy"] = bits
    return files


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, bits in observations().items():
        np.save(OUT / name, bits, allow_pickle=False)


if __name__ == "__main__":
    main()
