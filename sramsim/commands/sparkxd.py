"""`sramsim sparkxd`: the SparkXD study in one command (baseline, its tolerance curve, fault-aware
training, the FAT model's curve, DRAM energy at the tolerable voltages); see
sramsim.analysis.sparkxd.

    sramsim sparkxd --model snn-fc400 --data fashion-mnist --margin 0.01 --out DIR
                    [--base CKPT] [--epochs E] [--fat-epochs E] [--no-control] [--fat-ber 1e-2]
                    [--fat-curriculum log] [--fat-loss faulty] [--clip W]
                    [--fat-source dram:error-model=0] [--error-model 0] [--maps K]
                    [--maps-max K2] [--batch-size B] [--limit N] [--seed S] [--no-progress]
                    [--json]

Every model family trains here, the Diehl & Cook networks (`diehl-cook<N>`) by STDP. The
headline tolerable BER of both arms is judged against the control's clean accuracy (SparkXD's
rule); each arm's own-clean tolerable BER is reported beside it.

A re-run with the same DIR resumes every stage.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sramsim.commands.config import add_config, recorded
from sramsim.commands.helptext import leaf, paragraph
from sramsim.commands.main import (
    add_execution_arguments,
    ber_range,
    check_ber,
    check_writable,
    execution,
    flagged,
    integer,
    maps,
    number,
    print_json,
    seed,
)
from sramsim.errors import InputError
from sramsim.nn.fat import CURRICULA, LOSSES, SOURCE_HELP
from sramsim.nn.models import arch_names

if TYPE_CHECKING:
    from sramsim.analysis.sparkxd import StudyOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim sparkxd` to the parser."""
    from sramsim.analysis.sparkxd import DEFAULT_FAT_BER, DEFAULT_FAT_SOURCE, DEFAULT_MODEL
    p = subparsers.add_parser("sparkxd", help="the SparkXD study: FAT vs baseline tolerable BER "
                              "and DRAM energy at the tolerable voltages",
                              **leaf(paragraph(__doc__) + " A re-run with the same --out resumes "
                                     "every stage.",
                                     "sramsim sparkxd --model snn-fc400 --margin 0.01 --limit "
                                     "10000 --eval-limit 2000 --maps 3 --dram-rows 2048 --out "
                                     "study",
                                     "sramsim sparkxd --model snn-fc100 --epochs 1 --fat-epochs 1 "
                                     "--limit 2000 --maps 2 --out quick-study",
                                     "sramsim sparkxd --config study/run.toml"))
    p.add_argument("--model", default=None, metavar="ARCH",
                   help=f"architecture: {arch_names()} (default: --base's, else {DEFAULT_MODEL})")
    p.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                   help="dataset (training split to train, test split to measure; default "
                        "fashion-mnist)")
    p.add_argument("--margin", default="0.01", metavar="M",
                   help="allowed drop of mean accuracy, in (0, 1) (default 0.01 = 1 point)")
    p.add_argument("--out", required=True, metavar="DIR", help="study folder (resumable)")
    p.add_argument("--base", default=None, metavar="CKPT",
                   help="use this trained checkpoint as the pretrained model both arms start "
                        "from, instead of pretraining one into DIR")
    p.add_argument("--epochs", default="2", metavar="E",
                   help="clean pretraining epochs (default 2)")
    p.add_argument("--fat-epochs", default="4", metavar="E",
                   help="fault-aware training epochs from the pretrained model; the baseline "
                        "gets the same number of clean epochs (default 4)")
    p.add_argument("--no-control", action="store_true",
                   help="compare FAT against the pretrained model itself instead of the "
                        "equal-budget clean continuation")
    p.add_argument("--fat-ber", default=str(DEFAULT_FAT_BER), metavar="P",
                   help=f"FAT target BER, fixed in advance (default {DEFAULT_FAT_BER:g}; not "
                        "chosen from the test-set tolerance)")
    p.add_argument("--fat-curriculum", default="log",
                   help=f"how the FAT BER rises: {', '.join(CURRICULA)} (default log)")
    p.add_argument("--fat-start", default="1e-5", metavar="P0",
                   help="first FAT epoch's BER (default 1e-5)")
    p.add_argument("--fat-loss", default="faulty", choices=LOSSES,
                   help="FAT loss: the faulty pass alone or the mean of the clean and the faulty "
                        "pass (for STDP: the mean of both presentations' changes) (default "
                        "faulty)")
    p.add_argument("--clip", default=None, metavar="W",
                   help="FAT arm only: keep its stored weights in [-W, W] (for STDP, W is the "
                        "synapses' upper bound); the control is not clipped")
    p.add_argument("--fat-source", default=DEFAULT_FAT_SOURCE, metavar="SOURCE",
                   help=f"FAT faults: {SOURCE_HELP} (default {DEFAULT_FAT_SOURCE})")
    p.add_argument("--error-model", default=None, choices=("0", "1", "2", "3"),
                   help="EDEN error model of the tolerance searches' DRAM chips (default: "
                        "FAT's dram:error-model=K, else 0)")
    p.add_argument("--maps", default="5", metavar="K", help="fault maps per BER (default 5)")
    p.add_argument("--maps-max", default=None, metavar="K2",
                   help="sequential maps: add K maps at a time while a point's 95%% interval "
                        "contains the pass threshold, up to K2 (default: K fixed)")
    p.add_argument("--batch-size", default="128", metavar="B",
                   help="training batch size (default 128)")
    p.add_argument("--limit", default=None, metavar="N",
                   help="use the first N training and N test samples")
    p.add_argument("--eval-limit", default=None, metavar="N",
                   help="the searches use the first N test samples (default: --limit)")
    p.add_argument("--ber-range", default="1e-6,1e-1", metavar="LOW,HIGH",
                   help="BER grid of the searches, one point per decade (default 1e-6,1e-1)")
    p.add_argument("--bisect", default="4", metavar="N",
                   help="bisection steps after the grid (default 4)")
    p.add_argument("--dram-rows", default=None, metavar="R",
                   help="searches only: a part with R rows per bank instead of the part's "
                        "(cheaper whole-part maps at high BER; the image must still fit)")
    p.add_argument("--seed", default="0", help="training and fault-map seed (default 0)")
    add_execution_arguments(p, "tolerance searches' fault maps")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_config(p)
    p.set_defaults(func=run)


def options(args: argparse.Namespace) -> StudyOptions:
    """StudyOptions from the command line (each number checked, naming its flag)."""
    from sramsim.analysis.sparkxd import DEFAULT_MODEL, StudyOptions
    from sramsim.commands.train_base import fat_source_arg
    run_on = execution(args)
    model = args.model
    if model is None:
        model = DEFAULT_MODEL
        if args.base is not None:
            from pathlib import Path

            from sramsim.nn.models import load_checkpoint
            if not Path(args.base).is_file():
                raise InputError(f"--base {args.base}: no such checkpoint file")
            try:
                model = load_checkpoint(args.base)[1]["arch"]
            except InputError as exc:
                raise InputError(f"--base: {exc}") from None
    low, high = ber_range(args.ber_range)
    rows = integer(args.dram_rows, "--dram-rows")
    check_writable(args.out, "--out", folder=True)
    return StudyOptions(
        out=args.out, model=model, data=args.data, base=args.base,
        margin=number(args.margin, "--margin"), epochs=integer(args.epochs, "--epochs"),
        fat_epochs=integer(args.fat_epochs, "--fat-epochs"),
        fat_ber=check_ber(args.fat_ber, "--fat-ber", allow_one=False),
        fat_curriculum=args.fat_curriculum,
        fat_start=check_ber(args.fat_start, "--fat-start", allow_one=False),
        fat_source=fat_source_arg(args.fat_source),
        error_model=None if args.error_model is None else int(args.error_model),
        fat_loss=args.fat_loss, clip=number(args.clip, "--clip", positive=True),
        maps=maps(args.maps, "--maps"),
        maps_max=integer(args.maps_max, "--maps-max", minimum=2),
        batch_size=integer(args.batch_size, "--batch-size"),
        limit=integer(args.limit, "--limit", minimum=2),
        eval_limit=integer(args.eval_limit, "--eval-limit", minimum=2),
        seed=seed(args.seed), low=low, high=high,
        bisect_steps=integer(args.bisect, "--bisect", minimum=0),
        geometry=None if rows is None else {"rows": rows},
        workers=run_on.workers, threads=run_on.threads, executor=run_on.executor,
        ray_address=run_on.ray_address, control=not args.no_control)


def run(args: argparse.Namespace) -> int:
    """Check every option, run (or resume) the study, print the table or JSON."""
    from sramsim.analysis.sparkxd import table
    try:
        opts, summary = _study(args)
    except InputError as exc:           # StudyOptions names its fields: say the flags
        from dataclasses import fields

        from sramsim.analysis.sparkxd import StudyOptions
        names = {f.name: "--" + f.name.replace("_", "-") for f in fields(StudyOptions)}
        raise flagged(exc, {**names, "bisect_steps": "--bisect"}) from None
    if args.json:
        print_json(summary)
    else:
        print(table(summary))
        print(f"wrote {opts.out}/summary.json, {summary['png']}")
    return 0


def _study(args: argparse.Namespace) -> tuple[StudyOptions, dict]:
    """(StudyOptions, summary): the options checked, the study run (or resumed)."""
    from sramsim.analysis.sparkxd import run_study
    opts = options(args)
    if opts.geometry is not None:
        from sramsim.memory.dram import DramGeometry
        DramGeometry.from_part(**opts.geometry)     # a bad --dram-rows fails here, one line
    check_writable(opts.out, "--out", folder=True)
    quiet = args.no_progress or args.json
    log = None if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    with recorded(args, opts.out):
        return opts, run_study(opts, progress=not args.no_progress, log=log)
