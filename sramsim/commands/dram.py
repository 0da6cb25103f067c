"""`sramsim dram`: a DRAM part's energies, a model's DRAM energy per inference under each weight
placement, and the model's tolerable bit error rate (so the lowest DRAM supply voltage).

    sramsim dram info [--part P] [--voltage V]
    sramsim dram energy --model M.pt [--mapping naive|drmap|error-aware|all] [--voltage V]
    sramsim dram tolerance --model M.pt --data D --margin 0.01 [--maps K] [--out DIR]
                           [--error-model 0..3 | --ber-source random]

Voltages are the part's lowered array supply in volts (VDD2 = 1.2 V on the default LPDDR3 part),
valid from the BER curve's floor up to nominal.
"""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from sramsim.commands.config import add_config, recorded
from sramsim.commands.helptext import deprecated_alias, leaf, paragraph
from sramsim.commands.main import (
    add_execution_arguments,
    ber_range,
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
from sramsim.memory.dram import DEFAULT_PART
from sramsim.memory.dram_curves import DEFAULT_DRAM_CURVE, dram_curve_names

if TYPE_CHECKING:
    from sramsim.analysis.dram_energy import DramEnergy
    from sramsim.analysis.operating_point import Reference
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.memory.curves import BerCurve
    from sramsim.memory.dram import DramGeometry

MAPPINGS = ("naive", "drmap", "error-aware")
ERROR_MODELS = ("0", "1", "2", "3")                 # EDEN's DRAM error models (dram_errors)
FLOOR_BER = 0.5   # the curve's floor: where half the cells fail (below it no error model applies)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim dram` (info, energy, tolerance) to the parser."""
    p = subparsers.add_parser("dram", help="approximate DRAM: part energies, energy per "
                              "inference by placement, tolerable BER search",
                              description=paragraph(__doc__))
    sub = p.add_subparsers(dest="dram_command", required=True, metavar="SUBCOMMAND")

    info = sub.add_parser("info", help="a part's capacity, geometry and energies at a voltage",
                          **leaf("A DRAM part's capacity, geometry, per-command energies and "
                                 "row-buffer hit / miss / conflict energies (DRAMPower's "
                                 "equations) with its array supply at --voltage.",
                                 "sramsim dram info --voltage 1.0",
                                 "sramsim dram info --part MICRON_4Gb_LPDDR3-1333_32bit_A --json"))
    _common(info)
    info.add_argument("--voltage", metavar="V", help="lowered supply voltage in volts "
                      "(default: nominal)")
    info.set_defaults(func=run_info)

    energy = sub.add_parser("energy", help="DRAM energy of one inference of a model, per "
                            "weight placement policy",
                            **leaf("The DRAM energy of reading a model's weights once (one "
                                   "inference) under each weight placement policy: its row-buffer "
                                   "hits, misses and conflicts, and the energy at nominal and at "
                                   "--voltage.",
                                   "sramsim dram energy --model cnn.pt --mapping all --voltage "
                                   "0.93",
                                   "sramsim dram energy --model cnn.pt --mapping drmap --json"))
    _common(energy)
    energy.add_argument("--model", required=True, metavar="CKPT", help="model checkpoint")
    energy.add_argument("--mapping", default="all", choices=(*MAPPINGS, "all"),
                        help="placement policy (default all)")
    energy.add_argument("--voltage", metavar="V", help="lowered supply voltage in volts "
                        "(default: nominal only)")
    _error_model(energy)
    energy.set_defaults(func=run_energy)

    tol = sub.add_parser("tolerance", help="largest BER (lowest voltage) keeping accuracy "
                         "within a margin of fault-free",
                         **leaf("The largest bit error rate whose mean accuracy over --maps fault "
                                "maps stays within --margin of the fault-free accuracy (a log grid "
                                "scan, then bisection), the DRAM voltage it allows and the energy "
                                "per placement there. Points are written to the output folder as "
                                "they finish; a re-run with the same --out resumes.",
                                "sramsim dram tolerance --model cnn.pt --margin 0.01 --maps 5 "
                                "--limit 2000 --out tol",
                                "sramsim dram tolerance --model cnn.pt --error-model 1 --out "
                                "tol-em1"))
    _common(tol)
    tol.add_argument("--model", required=True, metavar="CKPT", help="model checkpoint")
    tol.add_argument("--data", default="fashion-mnist", metavar="SPEC",
                     help="evaluation data (test split; default fashion-mnist)")
    tol.add_argument("--margin", default="0.01", metavar="M",
                     help="allowed drop of mean accuracy, in (0, 1) (default 0.01 = 1 point)")
    tol.add_argument("--maps", default="5", metavar="K", help="fault maps per BER (default 5)")
    tol.add_argument("--limit", default=None, metavar="N", help="use the first N test samples")
    tol.add_argument("--out", default=None, metavar="DIR",
                     help="folder for the points, tolerance.json and tolerance.png (a re-run with "
                          "the same DIR resumes; default: MODEL-tolerance in the current folder)")
    src = tol.add_mutually_exclusive_group()
    src.add_argument("--error-model", default=None, choices=ERROR_MODELS,
                     help="fault maps: DRAM chips from EDEN error model 0-3 (uniform, bitline, "
                          "wordline, data-dependent)")
    deprecated_alias(src, "--model-error", "--error-model", "error_model", choices=ERROR_MODELS)
    src.add_argument("--ber-source", default=None, choices=("random",),
                     help="fault maps: random bit errors at the BER (the default)")
    tol.add_argument("--mapping", default="drmap", choices=MAPPINGS,
                     help="with --error-model: how the weights are placed in the part "
                          "(default drmap)")
    tol.add_argument("--ber-range", default="1e-6,1e-1", metavar="LOW,HIGH",
                     help="BER grid from LOW to HIGH, one point per decade (default 1e-6,1e-1)")
    tol.add_argument("--bisect", default="4", metavar="N",
                     help="bisection steps after the grid (default 4)")
    tol.add_argument("--seed", default="0", help="seed of the fault maps (default 0)")
    tol.add_argument("--reference", default="own", metavar="own|ACC",
                     help="what accuracy must stay within --margin of: own (the model's own "
                          "fault-free quantized accuracy, default) or a given accuracy in [0, 1], "
                          "e.g. a control model's clean accuracy")
    tol.add_argument("--batch-size", default="1000", metavar="B",
                     help="evaluation batch (default 1000)")
    add_execution_arguments(tol)
    add_config(tol)
    tol.set_defaults(func=run_tolerance)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", default=DEFAULT_PART, metavar="P",
                   help=f"bundled DRAM part, a part JSON file, or a DRAMPower memspec JSON file "
                        f"(e.g. MICRON_4Gb_DDR4-2400_8bit_A.json; default {DEFAULT_PART})")
    p.add_argument("--curve", default=DEFAULT_DRAM_CURVE, metavar="NAME|TABLE.csv",
                   help=f"BER vs voltage curve: {', '.join(dram_curve_names())} (default "
                        f"{DEFAULT_DRAM_CURVE}, an illustrative fit), or a CSV of voltage,ber "
                        "lines in volts starting at the nominal voltage")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _error_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--error-model", default="0", choices=ERROR_MODELS,
                   help="error-aware placement: EDEN error model of the chip whose partition "
                        "BERs order the placement (default 0)")
    deprecated_alias(p, "--model-error", "--error-model", "error_model", choices=ERROR_MODELS)
    p.add_argument("--seed", default="0", help="error-aware placement: chip seed (default 0)")


# ------------------------------------------------------------------------------ checks

def part_and_curve(args: argparse.Namespace,
                   ) -> tuple[DramGeometry, DramEnergy, BerCurve, float]:
    """(DramGeometry, DramEnergy, BerCurve, nominal V) of --part/--curve; nominal voltages of the
    part's lowered supply and the curve must agree."""
    from sramsim.analysis.dram_energy import DramEnergy
    from sramsim.memory.dram import DramGeometry
    from sramsim.memory.dram_curves import dram_curve, dram_nominal_voltage
    geometry = DramGeometry.from_part(args.part)
    energy = DramEnergy.from_part(args.part)
    try:
        curve = dram_curve(args.curve)
        nominal = dram_nominal_voltage(args.curve)
    except InputError as exc:
        raise flagged(exc, ["curve"]) from None
    if not math.isclose(nominal, energy.nominal_voltage, rel_tol=1e-9):
        raise InputError(f"--curve {args.curve} has nominal {nominal:g} V but part "
                         f"{energy.name} lowers {energy.lowered.upper()} of nominal "
                         f"{energy.nominal_voltage:g} V")
    return geometry, energy, curve, nominal


def curve_floor(curve: BerCurve) -> float:
    """Lowest voltage a curve is used at: its lowest tabulated voltage, or (a Gaussian curve)
    where its BER reaches FLOOR_BER."""
    if math.isfinite(curve.v_min):
        return float(curve.v_min)
    return float(curve.voltage(FLOOR_BER))


def voltage_arg(text: str | float | None, curve: BerCurve, nominal: float) -> float | None:
    """--voltage in [curve floor, nominal] (None stays None), else a one-line InputError."""
    value = number(text, "--voltage", positive=True)
    if value is None:
        return None
    low = curve_floor(curve)
    if value > nominal + 1e-9:
        raise InputError(f"--voltage {text}: above the nominal voltage {nominal:g} V of the "
                         f"lowered supply")
    if value < low - 1e-9:
        raise InputError(f"--voltage {text}: below {low:.4g} V, the floor of curve {curve.name!r} "
                         f"(BER {curve.ber(low):.3g} there)")
    return value


def load_image(path: str) -> tuple[QuantizedModel, list[int]]:
    """(QuantizedModel, layer bytes) of a checkpoint, quantized as its meta says."""
    from sramsim.inject.dram_mapping import image_layer_bytes
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.nn.models import load_checkpoint
    model, meta = load_checkpoint(path)
    qm = QuantizedModel(model, int(meta.get("bits") or 8), meta.get("scheme") or "symmetric",
                        meta.get("clip"))
    return qm, image_layer_bytes(qm)


# ------------------------------------------------------------------------------ info

def info(args: argparse.Namespace) -> dict:
    """The `dram info` report: capacity, geometry, command and access energies at --voltage."""
    geometry, energy, curve, nominal = part_and_curve(args)
    v = voltage_arg(args.voltage, curve, nominal)
    s = energy.summary(v)
    return {"part": energy.name, "capacity_bytes": geometry.capacity_bytes,
            "capacity_gbit": geometry.capacity_bits / 2 ** 30, "geometry": geometry.as_dict(),
            "subarrays_per_bank": geometry.subarrays_per_bank, "row_bytes": geometry.row_bytes,
            "curve": curve.name, "curve_floor_V": curve_floor(curve),
            "ber": float(curve.ber(s["voltage"])), **s}


def run_info(args: argparse.Namespace) -> int:
    """`sramsim dram info`."""
    r = info(args)
    if args.json:
        print_json(r)
        return 0
    g = r["geometry"]
    print(f"part {r['part']}: {r['capacity_gbit']:g} Gbit ({r['capacity_bytes']:,} bytes)")
    print(f"  {g['channels']} channel x {g['ranks']} rank x {g['banks']} banks x {g['rows']} rows "
          f"x {g['columns']} columns x {g['device_width']} bits; {g['subarray_rows']}-row "
          f"subarrays ({r['subarrays_per_bank']} per bank), burst length {g['burst_length']} "
          f"({r['burst_bits']} bits), row buffer {r['row_bytes']} bytes")
    print(f"  {r['lowered_supply'].upper()} = {r['voltage']:g} V (nominal {r['nominal_voltage']:g}"
          f" V); curve {r['curve']}: BER {r['ber']:.3g}")
    print(f"  {'command':<12} {'energy':>10}")
    for k, e in r["commands_J"].items():
        unit = "/cycle" if k.endswith("standby") else ""
        print(f"  {k:<12} {e * 1e9:>8.4f} nJ{unit}")
    print(f"  {'access':<12} {'energy':>10} {'per bit':>10} {'cycles':>6}")
    for k, e in r["access_J"].items():
        print(f"  {k:<12} {e * 1e9:>8.4f} nJ {r['access_J_per_bit'][k] * 1e12:>7.3f} pJ "
              f"{r['access_cycles'][k]:>6}")
    bg = r["background_W"]
    print(f"  background: active standby {bg['active_standby'] * 1e3:.2f} mW, precharged "
          f"standby {bg['precharged_standby'] * 1e3:.2f} mW, refresh {bg['refresh'] * 1e3:.2f} mW")
    return 0


# ------------------------------------------------------------------------------ energy

def energy_report(args: argparse.Namespace) -> dict:
    """The `dram energy` report: per placement policy, access counts and energy per inference."""
    from sramsim.analysis.tolerance import mapping_energies, require_fits
    geometry, energy, curve, nominal = part_and_curve(args)
    v = voltage_arg(args.voltage, curve, nominal)
    chip_seed = seed(args.seed)
    qm, layer_bytes = load_image(args.model)
    require_fits(qm.image.size, geometry, args.part)
    policies = MAPPINGS if args.mapping == "all" else (args.mapping,)
    if "error-aware" in policies and v is None:
        raise InputError("--mapping error-aware needs --voltage (partitions are ordered by their "
                         "BER at that voltage)")
    ber = None if v is None else float(curve.ber(v))
    rows = mapping_energies(qm.image.size, layer_bytes, geometry, energy, v, tolerable_ber=ber,
                            curve=curve, seed=chip_seed, error_model=int(args.error_model),
                            policies=policies)
    return {"model": args.model, "part": energy.name, "weight_bytes": int(qm.image.size),
            "curve": curve.name, "nominal_voltage": nominal, "voltage": v, "ber": ber,
            "error_model": int(args.error_model) if "error-aware" in policies else None,
            "mappings": rows}


def run_energy(args: argparse.Namespace) -> int:
    """`sramsim dram energy`."""
    r = energy_report(args)
    if args.json:
        print_json(r)
        return 0
    at = "" if r["voltage"] is None else f", at {r['voltage']:g} V (BER {r['ber']:.3g})"
    print(f"{r['model']}: {r['weight_bytes']:,} weight bytes in {r['part']} "
          f"(nominal {r['nominal_voltage']:g} V{at})")
    _energy_table(r["mappings"], r["voltage"] is not None)
    return 0


def _energy_table(rows: dict, low: bool) -> None:
    head = f"{'mapping':<12} {'hits':>7} {'misses':>7} {'conflicts':>9} {'E nominal':>11}"
    if low:
        head += f" {'E at V':>11} {'saving':>7}"
    print(head)
    for policy, row in rows.items():
        if "skipped" in row:
            print(f"{policy:<12} {row['skipped']}")
            continue
        c = row["counts"]
        line = (f"{policy:<12} {c['hit']:>7} {c['miss']:>7} {c['conflict']:>9} "
                f"{row['energy_nominal_J'] * 1e6:>8.4f} uJ")
        if low:
            line += f" {row['energy_J'] * 1e6:>8.4f} uJ {100 * row['saving']:>6.2f}%"
        print(line)
        for w in row.get("warnings", []):
            print(f"  warning: {w}")


# ------------------------------------------------------------------------------ tolerance

def tolerance_report(args: argparse.Namespace) -> dict:
    """Check the `dram tolerance` options and run the search."""
    import sys

    from sramsim.analysis.tolerance import search
    geometry, energy, curve, nominal = part_and_curve(args)
    margin = number(args.margin, "--margin")
    if not 0.0 < margin < 1.0:
        raise InputError(f"--margin must lie strictly between 0 and 1, got {args.margin}")
    reference = reference_arg(args.reference)
    run_on = execution(args)
    low, high = ber_range(args.ber_range)
    quiet = args.no_progress or args.json
    out = args.out if args.out is not None else default_out(args.model)
    check_writable(out, "--out", folder=True)
    chosen, args.out = args.out is not None, out        # the run file records where it went
    source = "random" if args.error_model is None else "dram"
    # the first line, once the options are checked and the fault-free pass ran, says where the
    # points go when the user did not choose
    first = [] if chosen else [f"writing to {out}/ (resumable: re-run the same command to "
                               f"continue)"]

    def progress(text: str) -> None:
        for line in first + [text]:
            print(line, file=sys.stderr, flush=True)
        first.clear()
    with recorded(args, out):
        return search(args.model, args.data, margin=margin, maps=maps(args.maps, "--maps"),
                      low=low, high=high, bisect_steps=integer(args.bisect, "--bisect", minimum=0),
                      source=source,
                      error_model=0 if args.error_model is None else int(args.error_model),
                      mapping=args.mapping, curve=args.curve, part=args.part, seed=seed(args.seed),
                      limit=None if args.limit is None else integer(args.limit, "--limit"),
                      batch_size=integer(args.batch_size, "--batch-size"), out_dir=out,
                      reference=reference, execution=run_on, log=None if quiet else progress)


def default_out(model: str) -> str:
    """Where `dram tolerance` writes without --out: MODEL-tolerance in the current folder, so an
    interrupted search is never lost and the same command resumes it."""
    from pathlib import Path
    return f"{Path(model).stem}-tolerance"


def reference_arg(text: str) -> Reference:
    """--reference: "own" or an accuracy in [0, 1], as an operating-point Reference."""
    from sramsim.analysis.operating_point import Reference
    if str(text).strip().lower() == "own":
        return Reference.own_clean()
    return Reference.given(number(text, "--reference", minimum=0, maximum=1),
                           f"given accuracy {text}")


def run_tolerance(args: argparse.Namespace) -> int:
    """`sramsim dram tolerance`."""
    r = tolerance_report(args)
    if r["out"]:
        from pathlib import Path

        from sramsim.analysis.plots import plot_tolerance
        r["plot"] = plot_tolerance(r, Path(r["out"]) / "tolerance.png")
    if args.json:
        print_json(r)
        return 0
    print(f"{'BER':>10} {'voltage':>8} {'accuracy':>9} {'± CI95':>7} {'drop':>6} {'maps':>4} "
          f"{'phase':>6}  result")
    for p in r["points"]:
        print(f"{p['ber']:>10.3g} {p['voltage']:>8.4f} {100 * p['accuracy_mean']:>8.2f}% "
              f"{100 * p['ci95']:>6.2f} {100 * p['accuracy_drop']:>6.2f} {p['n']:>4} "
              f"{p['phase']:>6}  {'pass' if p['passes'] else 'fail'}")
    print(f"fault-free quantized accuracy {100 * r['clean_accuracy']:.2f}%, margin "
          f"{100 * r['margin']:g} points, {r['maps']} maps per BER ({r['faults']['maps_rule']})")
    if r["tolerable_ber"] is None:
        print(f"no tolerable BER: accuracy already falls by more than the margin at BER "
              f"{r['first_failing_ber']:.3g}, the lowest scanned")
    else:
        bound = f" ({r['bound']})" if r["bound"] else ""
        print(f"tolerable BER {r['tolerable_ber']:.3g}{bound}: {r['voltage']:.4f} V on curve "
              f"{r['curve']} (nominal {r['nominal_voltage']:g} V), accuracy "
              f"{100 * r['accuracy_mean']:.2f}% ± {100 * r['ci95']:.2f}")
    _energy_table(r["energy"], r["voltage"] is not None)
    if r["out"]:
        print(f"wrote {r['out']}/points.jsonl, {r['out']}/tolerance.json, {r['plot']}")
    return 0
