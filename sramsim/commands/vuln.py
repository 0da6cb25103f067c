"""`sramsim vuln`: accuracy drop when only one layer, or one bit position, carries the faults."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

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
)
from sramsim.errors import InputError, check_ber
from sramsim.inject import quantization as Q
from sramsim.inject.torch_quantized import is_exported_file

if TYPE_CHECKING:
    from sramsim.inject.layout import MemoryLayout
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.inject.torch_quantized import TorchQuantizedModel
    from sramsim.nn.data import Dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim vuln` and its options to the CLI's subparsers."""
    p = subparsers.add_parser(
        "vuln", help="which layers / bit positions hurt: drop with faults confined to one of them",
        **leaf(paragraph(__doc__) + " Tells which layers to protect or keep at nominal voltage. "
               "Every group sees the same fault maps (paired). --plot (or --out) writes the drops "
               "as a bar chart.",
               "sramsim vuln --model cnn.pt --ber 0.01 --models 5 --limit 2000",
               "sramsim vuln --model cnn.pt --profile shipped --voltage 0.8 --by bit "
               "--bit-placement shuffle --plot vuln.png"))
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="model checkpoint (sramsim train-base), or a PT2E-quantized program saved "
                        "with torch.export.save (.pt2: its own int8 weights and kernels)")
    p.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                   help="fashion-mnist, mnist or a dataset directory (default fashion-mnist)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ber", metavar="P", help="random bit errors at rate P (e.g. 0.01)")
    src.add_argument("--profile", nargs="+", metavar="H5",
                     help="chip profiles (with --voltage): files, shipped:NAME, or shipped (all "
                          "shipped profiles)")
    p.add_argument("--voltage", metavar="V", help="supply voltage of the --profile chips")
    p.add_argument("--models", default="10", metavar="M",
                   help="fault maps to average over (default 10)")
    p.add_argument("--limit", default=None, metavar="N", help="use the first N test samples")
    p.add_argument("--by", default="both", choices=("layer", "bit", "both"),
                   help="group faults by layer, by bit position, or both (default both)")
    p.add_argument("--bits", default=None, choices=("8", "4", "2"),
                   help="override the checkpoint's bits")
    p.add_argument("--scheme", default=None, choices=Q.SCHEMES,
                   help="override the checkpoint's quantization scheme")
    p.add_argument("--seed", default="0", metavar="S", help="seed of the fault maps (default 0)")
    p.add_argument("--batch-size", default="1000", metavar="B",
                   help="evaluation batch (default 1000)")
    add_layout_arguments(p, "at --voltage (needs --profile)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the maps' results, written as each finishes (a re-run with "
                        "the same settings resumes), vuln.json and vuln.png")
    p.add_argument("--plot", metavar="PNG", help="write the drops as a bar chart to this .png "
                   "(default with --out: OUT/vuln.png)")
    add_execution_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load model, data and fault source, run `analyze`, print the table or JSON (exit 0)."""
    from sramsim.analysis.vulnerability import analyze
    from sramsim.memory.chip import Chip
    from sramsim.nn.data import load_dataset

    models = maps(args.models, "--models")
    limit = None if args.limit is None else integer(args.limit, "--limit")
    seed = integer(args.seed, "--seed", 0)
    batch_size = integer(args.batch_size, "--batch-size")
    layout = memory_layout(args, None if args.profile else "--profile")
    run_on = execution(args)
    if args.out is not None:
        check_writable(args.out, "--out", folder=True)
    plot = args.plot
    if plot is not None:
        if not str(plot).lower().endswith(".png"):
            raise InputError(f"--plot {plot}: expected a .png path")
        check_writable(plot, "--plot")
    elif args.out is not None:
        from pathlib import Path
        plot = str(Path(args.out) / "vuln.png")
    ber: float | None = None
    chips: list[Chip] = []
    voltage: float | None = None
    if args.profile:
        if args.voltage is None:
            raise InputError("--profile needs --voltage V")
        voltage = number(args.voltage, "--voltage")
        from sramsim.memory.shipped import resolve_profiles
        chips = [Chip.load(path) for path in resolve_profiles(args.profile)]
        for chip in chips:
            chip.check_voltage(voltage)
    else:
        if args.voltage is not None:
            raise InputError("--voltage goes with --profile; for random errors give --ber only")
        ber = check_ber(args.ber, "--ber")
    qm: QuantizedModel | TorchQuantizedModel
    if is_exported_file(args.model):
        qm, dataset = _exported(args, layout, limit, batch_size)
    else:
        qm, meta = load_quantized(args.model, args.bits, args.scheme)
        dataset = load_dataset(args.data, "test", limit)
        check_channels(args.model, meta, dataset)
    from sramsim.progress import progress
    bar = progress(total=models, unit="map", desc="vuln", enabled=run_on.progress)
    try:
        report = analyze(qm, dataset, ber=ber, chips=chips, voltage=voltage, models=models,
                         by=args.by, seed=seed, batch_size=batch_size, layout=layout,
                         execution=run_on, out_dir=args.out, on_map=lambda _: bar.update(1))
    finally:
        bar.close()
    faults: dict[str, Any] = {"kind": "random", "ber": ber}
    if chips:
        assert voltage is not None                  # --profile needs --voltage
        faults = {"kind": "chips", "voltage": voltage, "chips": [c.name for c in chips],
                  "ber": float(sum(c.ber(voltage) for c in chips) / len(chips))}
    report.update({"model": str(args.model), "data": str(args.data), "limit": limit,
                   "faults": faults})
    if plot is not None:
        from sramsim.analysis.plots import plot_vulnerability
        report["plot"] = plot_vulnerability(report, plot)
    if args.json:
        print_json(report)
    else:
        print_table(report)
        if plot is not None:
            print(f"wrote {plot}")
    return 0


def _exported(args: argparse.Namespace, layout: MemoryLayout, limit: int | None,
              batch_size: int) -> tuple[TorchQuantizedModel, Dataset]:
    """(TorchQuantizedModel, test set) of a `.pt2` PT2E program, after refusing the options that
    would requantize or re-encode its int8 weights and checking it runs on the data."""
    from sramsim.inject.torch_quantized import (
        TorchQuantizedModel,
        check_runs,
        load_exported,
        refuse_options,
    )
    from sramsim.nn.data import load_dataset
    refuse_options(args.model, {f"--bits {args.bits}": args.bits not in (None, "8"),
                                f"--scheme {args.scheme}": args.scheme is not None,
                                f"--ecc {layout.ecc}": layout.ecc is not None})
    gm = load_exported(args.model)
    dataset = load_dataset(args.data, "test", limit)
    check_runs(gm, dataset.x, dataset.num_classes, batch_size, args.model, dataset.name)
    return TorchQuantizedModel(gm), dataset


def _row(r: dict, width: int) -> str:
    return (f"{r['label']:<{width}} {100 * r['share']:>6.1f}% {r['faulty_bits_mean']:>10.1f} "
            f"{100 * r['accuracy_mean']:>8.2f}% ± {100 * r['accuracy_std']:<5.2f} "
            f"{100 * r['drop_mean']:>7.2f} ± {100 * r['drop_std']:.2f}")


def print_table(report: dict, file: TextIO | None = None) -> None:
    """Header, then per-layer and per-bit rows sorted by accuracy drop (largest first)."""
    f = file or sys.stdout
    q, src = report["quantization"], report["faults"]
    where = (f"{len(src['chips'])} chip(s) at V={src['voltage']:g} (BER {src['ber']:.3g})"
             if src["kind"] == "chips" else f"random bit errors, BER {src['ber']:g}")
    print(f"{report['dataset']}, {report['samples']} samples, {q['bits']}-bit {q['scheme']}, "
          f"{report['models']} fault maps: {where}", file=f)
    if report.get("bit_placement", "linear") != "linear":
        print(f"bit placement {report['bit_placement']}, planned from each chip's map at "
              f"V={src['voltage']:g}", file=f)
    e = report.get("ecc")
    if e:
        print(f"weights under {e['code']} (policy {e['policy']}), words per map: "
              f"{e['corrected']:.1f} corrected, {e['detected']:.1f} detected, "
              f"{e['miscorrected']:.1f} miscorrected", file=f)
    print(f"clean quantized accuracy {100 * report['clean_accuracy']:.2f}%; all layers faulty: "
          f"{100 * report['all']['accuracy_mean']:.2f}% (drop "
          f"{100 * report['all']['drop_mean']:.2f} points)", file=f)
    rows = report["layers"] + report["bits"]
    width = max([len("faults only in")] + [len(r["label"]) for r in rows])
    for title, part in (("layer", report["layers"]), ("bit position", report["bits"])):
        if not part:
            continue
        print(f"\nby {title} (sorted by drop)", file=f)
        print(f"{'faults only in':<{width}} {'share':>7} {'bad bits':>10} {'accuracy ± std':>17} "
              f"{'drop ± std (points)':>20}", file=f)
        for r in part:
            print(_row(r, width), file=f)
