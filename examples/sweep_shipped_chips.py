"""Voltage against accuracy on the five shipped chips, from Python.

Trains the default 8-bit CNN on Fashion-MNIST (kept when the checkpoint already holds it), sweeps
it from nominal voltage down to 0.8 of nominal on every shipped chip, and names the lowest voltage
whose mean accuracy stays within 1 point of the model's own fault-free accuracy.

    python examples/sweep_shipped_chips.py [--train-limit 10000] [--limit 2000] [--out sweep-py]
"""
from __future__ import annotations

import argparse

from sramsim import Reference
from sramsim.analysis.executors import Execution
from sramsim.analysis.operating_point import lowest_within
from sramsim.analysis.sweep import SweepSettings, run_sweep
from sramsim.memory.shipped import resolve_profiles

from _common import size_options, trained_cnn


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size_options(p)
    p.add_argument("--out", default="sweep-py", help="output folder (re-running resumes)")
    args = p.parse_args(argv)

    summary = run_sweep(trained_cnn(args), "fashion-mnist", resolve_profiles(["shipped"]),
                        "1.0:0.8:-0.025", args.out, SweepSettings(limit=args.limit),
                        Execution(progress=False))

    print(f"fault-free accuracy {summary['clean_accuracy']:.2%}")
    for point in summary["points"]:
        print(f"{point['voltage']:6.3f}  BER {point['ber']:8.2e}  accuracy "
              f"{point['accuracy_mean']:6.2%} ± {point['ci95']:.2%}  saving {point['saving']:5.1%}")
    reference = Reference.own_clean()
    best = lowest_within(summary["points"], reference.value(summary["clean_accuracy"]), 0.01)
    if best is None:
        print(f"no voltage stays within 1 point of the {reference.label}")
    else:
        print(f"lowest voltage within 1 point of the {reference.label}: {best['voltage']:g} "
              f"(saving {best['saving']:.1%})")


if __name__ == "__main__":
    main()
