"""`sramsim demo`: the main job end to end, on Fashion-MNIST and the shipped chips.

Train (or reuse) the default 8-bit CNN on Fashion-MNIST, sweep the shipped finfet14 chips from
nominal voltage down to 0.75, print the accuracy/energy table and where accuracy first drops by
more than one point, and write the plot.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sramsim.commands.helptext import leaf
from sramsim.commands.main import check_writable, integer, print_json, workers
from sramsim.errors import InputError
from sramsim.memory.shipped import ALL as SHIPPED
from sramsim.memory.shipped import resolve_profiles

DEFAULT_VOLTAGES = "1.0:0.75:-0.025"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim demo` to the parser."""
    p = subparsers.add_parser("demo",
                              help="train/reuse the default CNN and sweep the shipped chips",
                              **leaf(" ".join(__doc__.split("\n\n")[1].split()),
                                     "sramsim demo",
                                     "sramsim demo --epochs 1 --limit 2000 --out quick-demo"))
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="output folder (default demo-out)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="where the trained model is kept and reused (default OUT/cache)")
    p.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                   help="dataset (default fashion-mnist)")
    p.add_argument("--epochs", default="2", metavar="E",
                   help="base model training epochs (default 2)")
    p.add_argument("--limit", default=None, metavar="N",
                   help="first N train/test samples only (quick runs)")
    p.add_argument("--profiles", nargs="+", default=None, metavar="H5",
                   help="chip profiles: files, shipped:NAME, or shipped (the default: every "
                        "profile `sramsim profile list` shows)")
    p.add_argument("--voltages", default=DEFAULT_VOLTAGES, metavar="LIST",
                   help=f"voltages to sweep (default {DEFAULT_VOLTAGES})")
    p.add_argument("--workers", default="2", metavar="W", help="sweep workers (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train or reuse the base CNN, sweep the chips, print the table and the first drop."""
    from sramsim.analysis.executors import Execution
    from sramsim.analysis.operating_point import lowest_within
    from sramsim.analysis.sweep import SweepSettings, first_drop, parse_voltages, run_sweep
    from sramsim.memory.chip import Chip, VoltageError
    from sramsim.nn.training import TrainOptions, train_base

    epochs = integer(args.epochs, "--epochs")
    limit = integer(args.limit, "--limit", minimum=2)
    n_workers = workers(args.workers)
    check_writable(args.out, "--out", folder=True)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    check_writable(cache, "--cache" if args.cache else "--out", folder=True)
    # Voltages and chips are checked before the base model trains, not after.
    voltages = parse_voltages(args.voltages, "--voltages")
    profiles = resolve_profiles(args.profiles or [SHIPPED])
    for path in profiles:
        try:
            chip = Chip.load(path)
            for v in (min(voltages), max(voltages)):     # below the floor, above nominal
                chip.check_voltage(v)
        except VoltageError as exc:
            raise InputError(f"--voltages {args.voltages}: {exc}") from None
    cache.mkdir(parents=True, exist_ok=True)
    # One stable name: train_base keeps it when its settings match and retrains otherwise.
    ckpt = cache / "base-cnn-8bit.pt"
    log = None if args.json else (lambda msg: print(msg, file=sys.stderr))

    meta = train_base("cnn", args.data, ckpt, TrainOptions(epochs=epochs, seed=0), overwrite=True,
                      limit=limit, progress=not args.no_progress, log=log)
    summary = run_sweep(str(ckpt), args.data, [str(p) for p in profiles], voltages,
                        out / "sweep", SweepSettings(limit=limit),
                        Execution(workers=n_workers, progress=not args.no_progress))
    drop = first_drop(summary, 0.01)
    result = {"checkpoint": str(ckpt), "clean_accuracy": summary.get("clean_accuracy"),
              "base_model": {k: meta.get(k) for k in ("arch", "bits", "scheme", "test_accuracy",
                                                      "train_seconds", "skipped")},
              "first_drop_over_1_point": drop, "sweep": summary}
    if args.json:
        print_json(result)
        return 0
    print(format_table(summary))
    clean = summary.get("clean_accuracy")
    if clean is not None:
        print(f"\nclean accuracy (8-bit, nominal voltage): {100 * clean:.2f}%")
    if drop is None:
        print("accuracy stays within 1 point of clean down to the lowest voltage swept")
    else:
        safe = lowest_within(summary["points"], clean, 0.01) if clean is not None else None
        print(f"accuracy falls more than 1 point below clean at V = {drop['voltage']:.3f} "
              f"(BER {drop['ber']:.2e}, accuracy {100 * drop['accuracy_mean']:.2f}%)")
        if safe is not None:
            print(f"lowest voltage within 1 point: V = {safe['voltage']:.3f} -> "
                  f"{100 * safe['saving']:.1f}% less weight-memory energy per read")
    print(f"\nplot: {summary['files']['plot']}\ntable: {summary['files']['summary_csv']}")
    return 0


def format_table(summary: dict) -> str:
    """The demo's table: one row per swept voltage."""
    rows = [f"{'V':>6} {'BER':>10} {'acc mean':>9} {'± std':>7} {'± CI95':>7} {'n':>3} "
            f"{'E/read':>7} {'saving':>7}"]
    for p in summary["points"]:
        acc = p["accuracy_mean"]
        rows.append(f"{p['voltage']:6.3f} {p['ber']:10.3e} {100 * acc:8.2f}% "
                    f"{100 * p['accuracy_std']:6.2f} {100 * p['ci95']:6.2f} {p['n']:3d} "
                    f"{p['energy_per_read']:7.3f} {100 * p['saving']:6.1f}%")
    return "\n".join(rows)
