"""`fusion demo`: the NeuralFuse part of `make demo` on the base model `sramsim demo` trained.

At the voltage where finfet14's bit error rate is 2% (about 0.81) a small BatchNorm CNN loses
tens of points; a generator trained for a bounded time budget wins part of that back while it
costs its own weight reads at nominal voltage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusion.commands.common import check_writable, curve_ber, integer, maps, number
from fusion.evaluation import CURVE
from sramsim.commands.helptext import leaf
from sramsim.commands.main import print_json
from sramsim.errors import InputError
from sramsim.memory.curves import BerCurve


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fusion demo` to the fusion parser."""
    p = subparsers.add_parser("demo", help="train a generator for a bounded time and compare CA/PA",
                              **leaf(" ".join(__doc__.split("\n\n")[0].split()) + " "
                                     + " ".join(__doc__.split("\n\n")[1].split()),
                                     "fusion demo --base demo-out/cache/base-cnn-8bit.pt",
                                     "fusion demo --base cnn.pt --ber 0.01 --budget 60 --out "
                                     "g-demo"))
    p.add_argument("--base", required=True, metavar="CKPT", help="base model checkpoint")
    p.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                   help="dataset (default fashion-mnist)")
    p.add_argument("--ber", default="0.02", metavar="P",
                   help="bit error rate to protect against (default 0.02; the "
                        "voltage follows finfet14)")
    p.add_argument("--budget", default="180", metavar="SECONDS",
                   help="training time budget (default 180)")
    p.add_argument("--train-limit", default="20000", metavar="N",
                   help="training samples (default 20000)")
    p.add_argument("--eval-limit", default="2000", metavar="N",
                   help="evaluation samples (default 2000)")
    p.add_argument("--models", default="10", metavar="M",
                   help="fault maps to average over (default 10)")
    p.add_argument("--out", default="demo-out/generator", metavar="DIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train G for the budget, evaluate it, print the CA/PA table (or one JSON object)."""
    from fusion.demo import run_generator_demo
    ber = curve_ber(args.ber)
    if ber == 0:
        raise InputError("--ber must be positive: at BER 0 there is nothing to protect against")
    voltage = float(BerCurve.builtin(CURVE).voltage(ber))
    budget = number(args.budget, "--budget", positive=True)
    train_limit = integer(args.train_limit, "--train-limit")
    eval_limit = integer(args.eval_limit, "--eval-limit")
    n_models = maps(args.models, "--models")
    check_writable(args.out, "--out", folder=True)
    out = Path(args.out)
    result = run_generator_demo(
        args.base, args.data, voltage=voltage, budget_seconds=budget, out_dir=out,
        train_limit=train_limit, eval_limit=eval_limit, n_models=n_models,
        progress=not args.no_progress, log=None if not args.json else (lambda m: None))
    if args.json:
        print_json(result)
        return 0
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    print(f"\nNeuralFuse at V = {result['voltage']:.3f} (finfet14 BER {result['ber']:.2%}), "
          f"{result['generator']} trained {result['train_seconds']:.0f} s "
          f"({result['steps']} steps)")
    print(f"{'':24s}{'clean (CA)':>12s}{'perturbed (PA)':>22s}")
    print(f"{'base model':24s}{pct(result['ca']):>12s}{pct(result['pa_mean']):>14s} ± "
          f"{pct(result['pa_std'])}")
    print(f"{'with generator':24s}{pct(result['ca_nf']):>12s}{pct(result['pa_nf_mean']):>14s} ± "
          f"{pct(result['pa_nf_std'])}")
    print(f"recovered {100 * result['recovery']:.1f} points ({pct(result['recovered_fraction'])} "
          f"of the loss); energy saving {pct(result['energy_saving_base'])} without the generator, "
          f"{pct(result['energy_saving'])} net with it (generator reads at nominal voltage)",
          file=sys.stdout)
    return 0
