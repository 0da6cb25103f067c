"""`sramsim sweep`: accuracy vs supply voltage over many chips, with energy per read and saving."""
from __future__ import annotations

import argparse
from typing import TextIO

from sramsim.commands.config import add_config, recorded
from sramsim.commands.helptext import leaf, paragraph
from sramsim.commands.main import (
    add_execution_arguments,
    add_layout_arguments,
    check_writable,
    execution,
    integer,
    memory_layout,
    number,
    print_json,
    seed,
)
from sramsim.inject import quantization as Q
from sramsim.memory.curves import BUILTINS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim sweep` to the parser."""
    p = subparsers.add_parser(
        "sweep", help="accuracy vs voltage over chips x offsets (resumable)", **leaf(
            paragraph(__doc__) + " Every point is written to OUT/points.jsonl as it finishes; "
            "re-running with the same --out resumes. OUT gets summary.json, summary.csv and "
            "summary.png.",
            "sramsim sweep --model cnn.pt --profiles shipped --voltages 1.0:0.75:-0.025 "
            "--limit 2000 --out sweep-out",
            "sramsim sweep --model cnn.pt --chips 10 --curve finfet14 --voltages 0.9,0.85,0.8 "
            "--workers 2 --out sweep-random",
            "sramsim sweep --config sweep-out/run.toml --limit 5000 --out sweep-5k"))
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="model checkpoint (sramsim train-base), or a PT2E-quantized program saved "
                        "with torch.export.save (.pt2: its own int8 weights and kernels)")
    p.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                   help="fashion-mnist, mnist or a dataset directory (default fashion-mnist)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--profiles", nargs="+", metavar="H5",
                     help="chip profiles: files, shipped:NAME, or shipped (all shipped profiles)")
    src.add_argument("--chips", metavar="N", help="N random chips drawn from --curve")
    p.add_argument("--curve", default="finfet14", choices=sorted(BUILTINS),
                   help="BER curve of random chips (default finfet14)")
    p.add_argument("--rows", default="1024", help="random chips: rows per bank (default 1024)")
    p.add_argument("--cols", default="2048",
                   help="random chips: bits per row (default 2048: 256 KB)")
    p.add_argument("--banks", default="1", help="random chips: banks (default 1)")
    p.add_argument("--seed", default="0", help="random chips: seed of the first chip (default 0)")
    p.add_argument("--voltages", required=True, metavar="LIST",
                   help="start:stop:step (e.g. 1.0:0.75:-0.025, stop included) or a comma list")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (resumes if it exists)")
    p.add_argument("--offsets", default="1", metavar="K",
                   help="placements of the model per chip (default 1)")
    p.add_argument("--limit", default=None, metavar="N", help="use the first N test samples")
    p.add_argument("--bits", default=None, choices=("8", "4", "2"),
                   help="override the checkpoint's bits")
    p.add_argument("--scheme", default=None, choices=Q.SCHEMES,
                   help="override the checkpoint's quantization scheme")
    p.add_argument("--batch-size", default="1000", metavar="B",
                   help="evaluation batch (default 1000)")
    p.add_argument("--leakage-share", default="0", metavar="S",
                   help="leakage share of a read's energy at nominal voltage (default 0)")
    add_layout_arguments(p, "at each point's voltage")
    add_execution_arguments(p, "grid points")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options, run (or resume) the sweep, print its table or JSON summary."""
    from sramsim.analysis import sweep as S
    run_on = execution(args)                 # HOST:PORT and counts, before any chip is drawn
    voltages = S.parse_voltages(args.voltages, "--voltages")
    check_writable(args.out, "--out", folder=True)      # before any chip is drawn or point run
    settings = S.SweepSettings(
        offsets=integer(args.offsets, "--offsets"),
        limit=None if args.limit is None else integer(args.limit, "--limit"),
        bits=None if args.bits is None else int(args.bits), scheme=args.scheme,
        batch_size=integer(args.batch_size, "--batch-size"),
        leakage_share=number(args.leakage_share, "--leakage-share", minimum=0, maximum=1),
        layout=memory_layout(args))
    from sramsim.inject.torch_quantized import is_exported_file, refuse_options
    if is_exported_file(args.model):
        refuse_options(args.model, {f"--bits {args.bits}": args.bits not in (None, "8"),
                                    f"--scheme {args.scheme}": args.scheme is not None,
                                    f"--ecc {args.ecc}": args.ecc is not None})
    if args.profiles:
        from sramsim.memory.shipped import resolve_profiles
        chips = S.profile_chips([str(p) for p in resolve_profiles(args.profiles)])
    else:
        chips = S.random_chips(integer(args.chips, "--chips"), args.curve,
                               integer(args.rows, "--rows"),
                               integer(args.cols, "--cols"), integer(args.banks, "--banks"),
                               seed(args.seed))
    with recorded(args, args.out):
        summary = add_net_saving(S.run_sweep(args.model, args.data, chips, voltages, args.out,
                                             settings, run_on))
    if args.json:
        print_json(summary)
    else:
        print_table(summary)
    return 0


def add_net_saving(summary: dict) -> dict:
    """With `--placement shuffle`, each point's `net_saving`: its saving less the remap table's
    reads, one dense table entry read at nominal voltage beside every weight word (ReSpawn keeps
    the table in reliable memory): saving - table bits / word bits. The array-only `saving` is
    what the lowered voltage saves before that cost."""
    for p in summary["points"]:
        share = (p.get("bit_placement") or {}).get("dense_table_share")
        if share is not None and p.get("saving") is not None:
            p["net_saving"] = p["saving"] - share
    return summary


def print_table(summary: dict, file: TextIO | None = None) -> None:
    """The human table: one row per voltage, then where accuracy first drops > 1 point."""
    import sys
    f = file or sys.stdout
    ecc = summary.get("ecc")
    bp = summary.get("bit_placement") or {}
    if bp.get("policy", "linear") != "linear":
        print(f"bit placement {bp['policy']}, planned from each chip's map at each point's "
              f"voltage" + (f" ({bp['table_bits_per_word']} table bits per word)"
                            if bp.get("table_bits_per_word") else ""), file=f)
    if ecc:
        print(f"weights stored under {ecc['code']} (policy {ecc['policy']}): E/read counts "
              f"{ecc['read_overhead']:g}x cells + decoder {ecc['decoder_energy']:g}; corrected / "
              f"detected / miscorrected: words per point (mean)", file=f)
    net = any("net_saving" in p for p in summary["points"])
    if net:
        print("saving: the lowered voltage on the weight array alone; net: less the shuffle "
              "table's reads at nominal voltage (one entry per word read)", file=f)
    head = (f"{'voltage':>8} {'BER':>10} {'accuracy':>9} {'± CI95':>7} {'std':>6} {'chips':>5} "
            f"{'E/read':>7} {'saving':>7}" + (f" {'net':>7}" if net else "")
            + (f" {'corrected':>10} {'detected':>9} "
                                             f"{'miscorr.':>9}" if ecc else ""))
    print(head, file=f)
    for p in summary["points"]:
        if p["accuracy_mean"] is None:
            print(f"{p['voltage']:>8.4g} {'-':>10} {'-':>9}", file=f)
            continue
        counts = p.get("ecc")
        print(f"{p['voltage']:>8.4g} {p['ber']:>10.3g} {100 * p['accuracy_mean']:>8.2f}% "
              f"{100 * p['ci95']:>6.2f} {100 * p['accuracy_std']:>6.2f} {p['n']:>5d} "
              f"{p['energy_per_read']:>7.3f} {100 * p['saving']:>6.1f}%"
              + (f" {100 * p['net_saving']:>6.1f}%" if "net_saving" in p else "")
              + (f" {counts['corrected']:>10.1f} {counts['detected']:>9.1f} "
                 f"{counts['miscorrected']:>9.1f}" if counts else ""), file=f)
    clean = summary.get("clean_accuracy")
    if clean is not None:
        fp = summary.get("float_accuracy")
        print(f"fault-free quantized accuracy {100 * clean:.2f}% "
              + (f"(float {100 * fp:.2f}%)" if fp is not None else "(int8 model quantized by "
                 "PyTorch: no float model)"), file=f)
        d = summary.get("drop_1pt")
        if d is None:
            print("accuracy stays within 1 point of fault-free down to the lowest voltage swept",
                  file=f)
        else:
            at: dict = next((p for p in summary["points"] if p["voltage"] == d["voltage"]), {})
            extra = (f" ({100 * at['net_saving']:.1f}% net of the shuffle table's reads)"
                     if "net_saving" in at else "")
            print(f"accuracy falls more than 1 point below fault-free at V={d['voltage']:g} "
                  f"(BER {d['ber']:.3g}, accuracy {100 * d['accuracy_mean']:.2f}%), "
                  f"saving {100 * d['saving']:.1f}% of weight-memory energy{extra}", file=f)
    print(f"wrote {summary['files']['summary_json']}, {summary['files']['summary_csv']}"
          + (f", {summary['files']['plot']}" if summary["files"].get("plot") else ""), file=f)
