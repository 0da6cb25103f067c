"""`sramsim plan`: the cheapest supply voltage for each memory domain within an accuracy budget."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from sramsim.analysis.plan_search import ACCEPT_RULES
from sramsim.commands.config import add_config, recorded
from sramsim.commands.helptext import leaf, paragraph
from sramsim.commands.main import (
    add_execution_arguments,
    add_layout_arguments,
    check_channels,
    check_writable,
    execution,
    integer,
    load_quantized,
    maps,
    memory_layout,
    number,
    print_json,
    seed,
)
from sramsim.inject.domains import BY
from sramsim.memory.curves import BUILTINS
from sramsim.memory.shipped import resolve_profiles
from sramsim.progress import progress

if TYPE_CHECKING:
    import torch

    from sramsim.analysis.sweep import ChipSpec
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.nn.data import Dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim plan` and its options to the CLI's subparsers."""
    p = subparsers.add_parser(
        "plan", help="cheapest voltage per memory domain (layers, banks, activations) within an "
                     "accuracy budget",
        **leaf(paragraph(__doc__) + " Chooses on validation images and maps only (the last "
               "--val-images training images, chips at validation placements), then reports the "
               "plan beside the best single voltage on the test images and fresh test maps. "
               "Search: per-domain sensitivity at the best single voltage, Lagrangian candidates "
               "over the per-domain energy/accuracy curves checked jointly on validation, greedy "
               "lowering, both choices confirmed on held-back validation maps "
               "(sramsim.analysis.plan). Every evaluation is written to OUT as it finishes; "
               "re-running with the same --out resumes. OUT gets plan.json and plan.png; "
               "--assignment evaluates a given assignment instead of searching.",
               "sramsim plan --model cnn.pt --chips 4 --domains layer --out plan-out",
               "sramsim plan --model cnn.pt --chips 4 --domains layer --activations "
               "--act-rows 512 --act-cols 1024 --out plan-acts",
               "sramsim plan --model cnn.pt --chips 4 --domains bit --out plan-bits",
               "sramsim plan --model cnn.pt --profile chip8banks.h5 --domains bank --margin 0.02 "
               "--reference 0.90 --out plan-banks",
               "sramsim plan --model cnn.pt --chips 4 --domains layer --assignment "
               "plan-out/plan.json --out plan-check",
               "sramsim plan --config plan-out/run.toml --margin 0.02 --out plan-2pt"))
    p.add_argument("--model", required=True, metavar="CKPT", help="model checkpoint (sramsim "
                   "train-base)")
    p.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                   help="fashion-mnist, mnist or a dataset directory (default fashion-mnist)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--chips", metavar="N", help="N random weight chips drawn from --curve")
    src.add_argument("--profile", nargs="+", metavar="H5",
                     help="weight chip profiles: files, shipped:NAME, or shipped (all shipped "
                          "profiles)")
    p.add_argument("--curve", default="finfet14", choices=sorted(BUILTINS),
                   help="BER curve of random chips (default finfet14)")
    p.add_argument("--rows", default="1024", help="random weight chips: rows per bank (default "
                   "1024)")
    p.add_argument("--cols", default="2048", help="random weight chips: bits per row (default "
                   "2048: 256 KB)")
    p.add_argument("--banks", default="1", help="random weight chips: banks (default 1)")
    p.add_argument("--domains", default="layer", choices=BY,
                   help="how the weight memory is split into voltage domains: one (memory), "
                        "each layer's weights (layer, default), each bank of the chip (bank), "
                        "each DRAM partition (partition, with --mapping naive/drmap), each bit "
                        "significance of the weight codes in its own column group (bit)")
    p.add_argument("--activations", action="store_true",
                   help="also store every conv/linear output (8-bit, scales calibrated on "
                        "training images) in a faulty activation buffer: one more domain")
    p.add_argument("--act-chips", default=None, metavar="N",
                   help="random activation buffer chips (default: as many as weight chips)")
    p.add_argument("--act-profile", nargs="+", metavar="H5",
                   help="activation buffer profiles: files, shipped:NAME, or shipped")
    p.add_argument("--act-rows", default="512", help="random buffer chips: rows (default 512)")
    p.add_argument("--act-cols", default="1024", help="random buffer chips: bits per row "
                   "(default 1024: 64 KB)")
    p.add_argument("--act-writes", default="1", metavar="N",
                   help="buffer writes per stored activation and inference (default 1)")
    p.add_argument("--act-reads", default="1", metavar="N",
                   help="buffer reads per stored activation and inference (default 1)")
    p.add_argument("--voltages", default="1.0:0.75:-0.025", metavar="LIST",
                   help="voltage grid, nominal first: start:stop:step or a comma list "
                        "(default 1.0:0.75:-0.025)")
    p.add_argument("--margin", default="0.01", metavar="M",
                   help="accuracy may fall at most M below the reference (default 0.01: 1 point)")
    p.add_argument("--reference", default="own-clean", metavar="REF",
                   help="own-clean (the fault-free accuracy as stored, on the same images; "
                        "default) or an accuracy in [0, 1]")
    p.add_argument("--val-images", default="2000", metavar="N",
                   help="validation images: the last N training images (default 2000)")
    p.add_argument("--check-images", default=None, metavar="N",
                   help="confirmation images: the N training images before the validation "
                        "ones (default: as many as --val-images)")
    p.add_argument("--calib-images", default="512", metavar="N",
                   help="activation scales from the first N training images (default 512)")
    p.add_argument("--limit", default=None, metavar="N", help="use the first N test images")
    p.add_argument("--val-maps", default="4", metavar="M",
                   help="validation maps the search uses (default 4)")
    p.add_argument("--check-maps", default=None, metavar="C",
                   help="other validation maps, held back to confirm the choices (default: as "
                        "many as --val-maps); more of them catch rare bad chips")
    p.add_argument("--repairs", default="2", metavar="R",
                   help="rounds of repairing a plan that fails confirmation: the domains that "
                        "cost most on the failing maps go back to the single voltage, then "
                        "fresh confirmation maps judge it (default 2; 0: none)")
    p.add_argument("--accept", default="every-map", choices=ACCEPT_RULES,
                   help="pass test: every-map (default: each map within the margin, so every "
                        "sampled chip meets the budget) or mean (the mean over the maps)")
    p.add_argument("--test-maps", default="8", metavar="K", help="test maps (default 8)")
    p.add_argument("--seed", default="0", metavar="S", help="seed of random chips and maps "
                   "(default 0)")
    p.add_argument("--refine", default=None, metavar="N",
                   help="joint validations for greedy lowering (default: 2 per domain)")
    p.add_argument("--assignment", default=None, metavar="JSON",
                   help="evaluate this assignment ({domain: voltage}, or a plan.json) instead "
                        "of searching")
    p.add_argument("--bits", default=None, choices=("8", "4", "2"),
                   help="override the checkpoint's bits")
    p.add_argument("--scheme", default=None, choices=("symmetric", "asymmetric", "rquant"),
                   help="override the checkpoint's quantization scheme")
    p.add_argument("--batch-size", default="1000", metavar="B", help="evaluation batch "
                   "(default 1000)")
    p.add_argument("--leakage-share", default="0", metavar="S",
                   help="leakage share of an access's energy at nominal voltage (default 0)")
    add_layout_arguments(p, "at each evaluated voltage")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: every evaluation as it finishes (a re-run resumes), "
                        "plan.json, plan.png")
    add_execution_arguments(p, "evaluations")
    p.add_argument("--json", action="store_true", help="print plan.json's object on stdout")
    add_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check everything, load model, data and chips, plan (or evaluate), print (exit 0)."""
    from sramsim.analysis import plan as P
    from sramsim.analysis import sweep as S
    from sramsim.analysis.operating_point import Reference
    from sramsim.errors import InputError
    from sramsim.inject.domains import VoltageAssignment

    run_on = execution(args)
    voltages = tuple(S.parse_voltages(args.voltages))
    margin = number(args.margin, "--margin", positive=True, maximum=0.999)
    reference = Reference.own_clean() if args.reference == "own-clean" else \
        Reference.given(number(args.reference, "--reference", minimum=0, maximum=1),
                        f"given accuracy {args.reference}")
    val_n = integer(args.val_images, "--val-images")
    check_n = val_n if args.check_images is None else integer(args.check_images,
                                                              "--check-images")
    calib_n = integer(args.calib_images, "--calib-images")
    limit = None if args.limit is None else integer(args.limit, "--limit")
    s = seed(args.seed)
    layout = memory_layout(args, None if args.profile else "--profile")
    settings = P.PlanSettings(
        voltages, margin, reference, maps(args.val_maps, "--val-maps"),
        maps(args.test_maps, "--test-maps"), s, integer(args.batch_size, "--batch-size"),
        None if args.refine is None else integer(args.refine, "--refine", minimum=0),
        check_maps=None if args.check_maps is None else maps(args.check_maps, "--check-maps"),
        accept=args.accept, repairs=integer(args.repairs, "--repairs", minimum=0),
        activation_writes=integer(args.act_writes, "--act-writes", minimum=0),
        activation_reads=integer(args.act_reads, "--act-reads", minimum=0),
        leakage_share=number(args.leakage_share, "--leakage-share", minimum=0, maximum=1))
    check_writable(args.out, "--out", folder=True)
    if not args.activations and (args.act_profile or args.act_chips is not None):
        raise InputError("--act-chips / --act-profile need --activations")
    assignment = None if args.assignment is None else VoltageAssignment.load(args.assignment)
    if args.profile:
        weights = S.profile_chips([str(p) for p in resolve_profiles(args.profile)])
    else:
        weights = S.random_chips(integer(args.chips, "--chips"), args.curve,
                                 integer(args.rows, "--rows"), integer(args.cols, "--cols"),
                                 integer(args.banks, "--banks"), s, v_floor=min(voltages))
    acts: list[ChipSpec] = []
    if args.activations:
        if args.act_profile:
            acts = S.profile_chips([str(p) for p in resolve_profiles(args.act_profile)])
        else:
            n = len(weights) if args.act_chips is None else integer(args.act_chips, "--act-chips")
            acts = S.random_chips(n, args.curve, integer(args.act_rows, "--act-rows"),
                                  integer(args.act_cols, "--act-cols"), 1, s + 10_000,
                                  v_floor=min(voltages))
    qm, validation, check, test, calibration = _load(args, val_n, check_n, calib_n, limit)
    memories = P.Memories(tuple(weights), args.domains, tuple(acts), layout)
    bar = progress(unit="eval", desc="plan", enabled=run_on.progress)
    try:
        with recorded(args, args.out):
            report = P.plan(qm, validation, test, memories, settings, calibration, run_on,
                            args.out, on_done=bar.update, assignment=assignment,
                            check=check)
    finally:
        bar.close()
    from pathlib import Path
    report["model"] = str(args.model)
    report["plot"] = None if assignment is not None else \
        P.plot_plan(report, Path(args.out) / "plan.png")
    from sramsim.analysis.store import write_json
    write_json(Path(args.out) / "plan.json", report)
    if args.json:
        print_json(report)
    else:
        print_table(report)
    return 0


def _load(args: argparse.Namespace, val_n: int, check_n: int, calib_n: int, limit: int | None
          ) -> tuple[QuantizedModel, Dataset, Dataset, Dataset, torch.Tensor]:
    """(QuantizedModel, validation set, check set, test set, calibration images): from the end
    of the training split, the validation images, the check images before them; the calibration
    images from its start."""
    from sramsim.errors import InputError
    from sramsim.nn.data import Dataset, load_dataset
    qm, meta = load_quantized(args.model, args.bits, args.scheme)
    train = load_dataset(args.data, "train")
    used = val_n + check_n + (calib_n if args.activations else 0)
    if used > len(train):
        raise InputError(f"--val-images {val_n} + --check-images {check_n}"
                         + (f" + --calib-images {calib_n}" if args.activations else "")
                         + f": more than the {len(train)} training images (they must not "
                         "overlap)")
    n = len(train)

    def part(lo: int, hi: int, what: str) -> Dataset:
        return Dataset(train.x[lo:hi], train.y[lo:hi], train.num_classes,
                       f"{train.name} ({what}: training images {lo}-{hi - 1})")

    validation = part(n - val_n, n, "validation")
    check = part(n - val_n - check_n, n - val_n, "check")
    test = load_dataset(args.data, "test", limit)
    check_channels(args.model, meta, test)
    return qm, validation, check, test, train.x[:calib_n]


def print_table(report: dict, file: TextIO | None = None) -> None:
    """The plan's table (domain, voltage, BER, energy share) and the comparison."""
    f = file or sys.stdout
    ref = report["reference"]
    clean = report["clean"]
    imgs, maps = report["images"], report["maps"]
    print(f"search: {imgs['validation']['n']} validation images x {maps['validation']} maps; "
          f"confirmation: {imgs['check']['n']} held-back images x {maps['validation_check']} "
          f"other validation maps; report: {imgs['test']['n']} test images x {maps['test']} "
          f"test maps; pass test: {report['accept']}", file=f)
    print(f"budget: within {100 * report['margin']:.2f} points of {ref['test']['label']} "
          f"(validation {100 * ref['validation']['accuracy']:.2f}%, test "
          f"{100 * ref['test']['accuracy']:.2f}%); fault-free as stored: validation "
          f"{100 * clean['validation']:.2f}%, test {100 * clean['test']:.2f}%", file=f)
    p = report["planned"]
    width = max([len("domain")] + [len(r["domain"]) for r in p["table"]])
    title = "assignment (given)" if "single" not in report else "planned assignment"
    print(f"\n{title}", file=f)
    print(f"{'domain':<{width}} {'voltage':>8} {'BER':>10} {'accesses':>10} {'energy':>7}",
          file=f)
    for r in p["table"]:
        print(f"{r['domain']:<{width}} {r['voltage']:>8.4g} {r['ber']:>10.3g} "
              f"{r['accesses']:>10.0f} {100 * r['energy_share']:>6.1f}%", file=f)
    rows = [("planned" if "single" in report else "given", p)]
    if "single" in report:
        rows.append((f"single {report['single']['voltage']:g} V", report["single"]))
    w = max(len(label) for label, _ in rows)
    print(f"\n{'':<{w}} {'saving':>7} {'test accuracy':>14} {'± CI95':>7} {'within budget':>14}"
          f" {'maps within':>12}", file=f)
    for label, r in rows:
        t = r["test"]
        k, n = r["test_maps_within_budget"]
        print(f"{label:<{w}} {100 * r['saving']:>6.1f}% {100 * t['accuracy_mean']:>13.2f}% "
              f"{100 * t['ci95']:>7.2f} {'yes' if r['passes_test'] else 'no':>14} "
              f"{f'{k}/{n}':>12}", file=f)
    if "single" in report:
        print(f"\nthe plan saves {100 * report['gain']:.1f} points more memory energy than the "
              f"best single voltage ({report['evaluations']} evaluations run now)", file=f)
    print("wrote " + ", ".join(x for x in (str(report.get('plot') or ''),) if x) +
          ("" if not report.get("plot") else ", ") + "plan.json", file=f)
