"""How much does each bit significance of the weights cost under faults? The measurement behind
plan_study's case (d): on plan_study's CNN, the weight memory read from 4 random finfet14 chips
(256 KB, validation placements 1, 3, 5, 7) at each voltage, with the faults kept only in the low
k bits of every 8-bit code (the other bits read fault-free), k = 4 .. 8; accuracy on the last
2,000 training images (plan_study's validation images), the drop below the fault-free accuracy
on the worst map and on the mean.

Run: `.venv/bin/python benchmarks/bit_significance.py` (after plan_study.py has trained its CNN)
-> benchmarks/results/bit_significance.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import repo_path, write_result  # noqa: E402
from plan_study import CACHE, checkpoint  # noqa: E402

from sramsim.analysis.sweep import random_chips  # noqa: E402
from sramsim.commands.main import load_quantized  # noqa: E402
from sramsim.inject.domains import take_bits  # noqa: E402
from sramsim.inject.layout import MemoryLayout  # noqa: E402
from sramsim.nn.data import Dataset, load_dataset  # noqa: E402
from sramsim.nn.evaluation import Evaluator  # noqa: E402

VOLTAGES = (0.8875, 0.85, 0.8, 0.75)
LOW_BITS = (4, 5, 6, 7, 8)
IMAGES = 2000
CHIPS = 4


def main() -> None:
    torch.set_num_threads(1)
    path = checkpoint("cnn")
    qm, _ = load_quantized(str(path), None, None)
    train = load_dataset("fashion-mnist", "train")
    n = len(train)
    val = Dataset(train.x[n - IMAGES:], train.y[n - IMAGES:], train.num_classes, "validation")
    ev = Evaluator(qm)
    clean = ev.evaluate(val)["accuracy"]
    chips = [c.build() for c in random_chips(CHIPS, "finfet14", 1024, 2048, 1, 0, v_floor=0.75)]
    layout = MemoryLayout()
    rows = []
    for v in VOLTAGES:
        reads = [layout.read(qm, chip, v, 2 * k + 1)[0].copy() for k, chip in enumerate(chips)]
        for low in LOW_BITS:
            mask = np.uint8((1 << low) - 1)
            accs = []
            for r in reads:
                image = qm.image.copy()
                take_bits(image, r, mask)             # faults kept only in the low bits
                accs.append(ev.evaluate(val, image)["accuracy"])
            rows.append({"voltage": v, "ber": float(np.mean([c.ber(v) for c in chips])),
                         "faulty_bits": f"0-{low - 1}", "accuracy": accs,
                         "worst_drop": clean - min(accs),
                         "mean_drop": clean - float(np.mean(accs))})
            print(f"{v} V, faults in bits 0-{low - 1}: worst drop "
                  f"{100 * rows[-1]['worst_drop']:.2f}, mean {100 * rows[-1]['mean_drop']:.2f}",
                  flush=True)
    write_result("bit_significance.json", {
        "what": (__doc__ or "").splitlines()[0], "model": repo_path(CACHE / "cnn.pt"),
        "images": f"fashion-mnist train[{n - IMAGES}:{n}]", "clean_accuracy": clean,
        "chips": "4 x finfet14 1024 x 2048, seeds 0-3, v_floor 0.75, placements 1, 3, 5, 7",
        "rows": rows})


if __name__ == "__main__":
    main()
