"""Run a model under faults with the Evaluator: random bit errors, a chip, and your own loop.

The Evaluator owns a copy of the model and writes each fault map into its weights in place
(restored after the block), so the model you pass is never changed. `evaluate` gives accuracy and
loss; `faults(...)` gives the model under one map for any computation of your own.

    python examples/evaluate_under_faults.py [--train-limit 10000] [--limit 2000] [--maps 5]
"""
from __future__ import annotations

import argparse

import torch

from sramsim import BerCurve, Chip, Evaluator, Geometry, RandomBitErrors
from sramsim.nn import load_checkpoint
from sramsim.stats import mean_std

from _common import quantized_cnn, size_options


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_options(p)
    p.add_argument("--maps", type=int, default=5, help="random fault maps per bit error rate")
    args = p.parse_args(argv)

    qm, test = quantized_cnn(args)
    evaluator = Evaluator(qm)
    print(f"fault-free accuracy {evaluator.clean(test)['accuracy']:.2%}")

    # Non-persistent random bit errors (Stutz et al.'s model): a fresh map per seed.
    for ber in (1e-3, 1e-2, 5e-2):
        accs = [evaluator.evaluate(test, RandomBitErrors(ber, seed=s))["accuracy"]
                for s in range(args.maps)]
        mean, std = mean_std(accs)
        print(f"random errors, BER {ber:g}: accuracy {mean:.2%} ± {std:.2%} over {args.maps} maps")

    # A persistent chip: the same faults at every read, more of them as the voltage drops.
    curve = BerCurve.builtin("finfet14")
    chip = Chip.random(Geometry(8192, 128), curve, v_floor=0.75, seed=0)
    for v in (0.85, curve.voltage(0.01), 0.8):
        with evaluator.faults(chip, voltage=v) as run:            # the model under this map
            pred = run.logits(test.x).argmax(1)
        per_class = [float((pred[test.y == c] == c).double().mean()) for c in range(10)]
        worst = min(range(10), key=per_class.__getitem__)
        print(f"chip at {v:.3f} V (BER {chip.ber(v):.2e}): accuracy "
              f"{float((pred == test.y).double().mean()):.2%}, worst class {worst} "
              f"({per_class[worst]:.2%})")
    saved = load_checkpoint(args.model)[0].state_dict()
    assert all(torch.equal(t, saved[k]) for k, t in qm.model.state_dict().items())
    print("your model's weights are untouched")


if __name__ == "__main__":
    main()
