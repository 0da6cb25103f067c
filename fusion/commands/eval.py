"""`fusion eval`: clean / perturbed accuracy with and without a generator, recovery, net saving."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fusion.commands import common
from fusion.evaluation import EVAL_SEED, check_shapes, evaluate
from fusion.store import load_generator
from sramsim.analysis.systolic import METHODS
from sramsim.commands.helptext import leaf
from sramsim.commands.main import (
    add_execution_arguments,
    add_layout_arguments,
    check_writable,
    execution,
    memory_layout,
    print_json,
)
from sramsim.nn.data import load_dataset

if TYPE_CHECKING:
    import torch

    from fusion.evaluation import FaultSpec
    from fusion.generators import Generator
    from sramsim import QuantizedModel
    from sramsim.analysis.executors import Execution
    from sramsim.inject.layout import MemoryLayout
    from sramsim.nn.data import Dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fusion eval` to the fusion parser."""
    p = subparsers.add_parser(
        "eval", help="CA/PA without and with a generator, recovery, net energy saving",
        **leaf("Evaluate a base model over fixed fault maps, without and with a generator "
               "(which may come from another, surrogate base model: transfer): clean and "
               "perturbed accuracy, the accuracy recovered, and the net memory-energy saving "
               "with the generator's reads charged at nominal voltage.",
               "fusion eval --base cnn.pt --generator g/generator.pt --ber 0.01 --limit 2000",
               "fusion eval --base cnn.pt --generator g/generator.pt --profile shipped "
               "--voltage 0.825 --count systolic"))
    common.add_base_args(p, EVAL_SEED, "seed of the evaluation fault maps")
    p.add_argument("--generator", metavar="G.pt", help="generator file written by fusion train")
    p.add_argument("--models", metavar="M", help="fault maps to average over (default 10 for "
                   "random errors, one per chip for profiles)")
    p.add_argument("--count", default="weights", choices=METHODS,
                   help="how weight reads are counted for the energy: weights (each read once, "
                        "default), systolic or scalesim (SCALE-Sim "
                        "output-stationary 32x32, as NeuralFuse)")
    add_layout_arguments(p, "at --voltage (needs --profile)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for each map's result, written as it finishes (a re-run with the "
                        "same settings resumes), and eval.json")
    add_execution_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every option, then run; bad input raises InputError (one line, exit 2)."""
    limit = common.integer(args.limit, "--limit")
    n_models = common.maps(args.models, "--models")
    batch_size = common.integer(args.batch_size, "--batch-size") or 1000
    seed = common.seed(args.seed)
    device = common.device(args.device)
    faults = common.fault_spec(args)
    layout = memory_layout(args, None if faults.chips else "--profile ... --voltage")
    run_on = execution(args)
    if args.out is not None:
        check_writable(args.out, "--out", folder=True)
    qm, meta = common.load_base(args.base)
    generator: Generator | None = None
    g_meta: dict = {}
    if args.generator:
        generator, g_meta = load_generator(args.generator)
    test_set = load_dataset(args.data, "test", limit)
    check_shapes(test_set, meta, generator, where=args.base)
    report = _evaluate(qm, test_set, faults, generator, n_models, batch_size, device, seed,
                       args.count, layout, run_on, args.out)
    info = common.base_info(args.base, meta, qm)
    report["base"] = info
    if generator is not None:
        trained_on = (g_meta.get("base") or {}).get("image")
        report["generator_file"] = args.generator
        report["generator_trained_on"] = (g_meta.get("base") or {}).get("path")
        report["transfer"] = trained_on is not None and trained_on != info["image"]
    if args.json:
        print_json(report)
    else:
        _print_table(report)
    return 0


def _evaluate(qm: QuantizedModel, test_set: Dataset, faults: FaultSpec,
              generator: Generator | None, n_models: int | None, batch_size: int,
              device: torch.device, seed: int, count: str, layout: MemoryLayout,
              run_on: Execution, out: str | None) -> dict:
    """`evaluate` with progress over the maps (tqdm on a terminal, plain lines otherwise)."""
    from sramsim.progress import progress
    bar = progress(total=faults.n_maps(n_models), unit="map", desc="fusion eval",
                   enabled=run_on.progress)
    try:
        return evaluate(qm, test_set, faults, generator, n_models, batch_size, device, seed,
                        count, layout, run_on, out, on_map=lambda _: bar.update(1))
    finally:
        bar.close()


def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:6.2f}%" + (f" ± {100 * std:.2f}" if std is not None else "")


def _print_table(r: dict) -> None:
    f = r["faults"]
    where = (f"{len(f['chips'])} chip(s) at V={f['voltage']:g}" if f["kind"] == "chips"
             else f"random bit errors, BER {f['ber']:g} (V={f['voltage']:.4g})")
    print(f"{r['dataset']}, {r['samples']} samples, {r['n_models']} fault maps: {where}")
    if r.get("bit_placement", "linear") != "linear":
        print(f"bit placement {r['bit_placement']}, planned from each chip's map at "
              f"V={f['voltage']:g}")
    e = r.get("ecc")
    if e:
        print(f"weights under {e['code']} (policy {e['policy']}), words per map: "
              f"{e['corrected']:.1f} corrected, {e['detected']:.1f} detected, "
              f"{e['miscorrected']:.1f} miscorrected")
    print(f"{'':14}{'clean (CA)':>12}  {'perturbed (PA)':>18}")
    print(f"{'base':14}{_pct(r['ca']):>12}  {_pct(r['pa_mean'], r['pa_std']):>18}")
    if r["generator"]:
        label = r["generator"] + (" (transfer)" if r.get("transfer") else "")
        print(f"{label:14}{_pct(r['ca_nf']):>12}  {_pct(r['pa_nf_mean'], r['pa_nf_std']):>18}")
        print(f"recovery: {100 * r['recovery']:+.2f} points")
    errors = (f"clean error {_pct(r['clean_error'])}, robust error (RErr) "
              f"{_pct(r['rerr_mean'], r['rerr_std'])}")
    if r["generator"]:
        errors += (f"; with {r['generator']}: {_pct(r['clean_error_nf'])}, "
                   f"{_pct(r['rerr_nf_mean'], r['rerr_nf_std'])}")
    print(" ".join(errors.split()))
    print(f"net energy saving: {100 * r['energy_saving']:.2f}% (base alone "
          f"{100 * r['energy_saving_base']:.2f}%; generator {r['generator_accesses']:,} reads at "
          f"nominal V vs base {r['base_accesses']:,})")
