"""`sramsim profile synth|import|info|validate|plot`: make, inspect and check HDF5 chip profiles."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sramsim.memory import profiles
from sramsim.memory.chip import Chip
from sramsim.commands.main import print_json
from sramsim.memory.curves import BerCurve
from sramsim.errors import InputError
from sramsim.memory.geometry import Geometry


def register(subparsers) -> None:
    parser = subparsers.add_parser("profile", help="make, inspect and check chip profiles (HDF5)",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    p = sub.add_parser("synth", help="a synthetic chip drawn from a voltage->BER curve")
    p.add_argument("--curve", default="finfet14",
                   help="built-in curve name (finfet14) or gaussian:MU,SIGMA")
    _geometry_args(p)
    p.add_argument("--v-floor", type=float, required=True,
                   help="lowest voltage the chip is valid for (faults drawn down to it)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--kinds", default="flip=1",
                   help="fault kind proportions, e.g. flip=1,stuck0=0.5,stuck1=0.5")
    p.add_argument("--name", help="profile name (default: <curve>-<rows>x<cols>-s<seed>)")
    _out_args(p)
    p.set_defaults(func=run_synth)

    p = sub.add_parser("import", help="a measured chip from per-voltage failing-bit files",
                       description=profiles.load_bitmap_dir.__doc__)
    p.add_argument("directory", help="folder of v<voltage>[_0to1|_1to0].npy files")
    _geometry_args(p)
    p.add_argument("--technology", default="sram", help="memory technology label (default sram)")
    p.add_argument("--voltage-unit", choices=profiles.VOLTAGE_UNITS, default="normalized")
    p.add_argument("--nominal-voltage", type=float, default=1.0)
    p.add_argument("--name", help="profile name (default: the folder's name)")
    _out_args(p)
    p.set_defaults(func=run_import)

    p = sub.add_parser("info", help="geometry, fault counts and BER at a few voltages")
    p.add_argument("file")
    p.add_argument("--voltages", type=float, nargs="+",
                   help="voltages to report (default: measured voltages or the curve's points)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_info)

    p = sub.add_parser("validate", help="check profiles; exit 2 if any is bad")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("plot", help="PNG of the fault map at a voltage and BER vs voltage")
    p.add_argument("file")
    p.add_argument("--voltage", type=float, required=True)
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_plot)


def _geometry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, required=True, help="rows of bits per bank")
    p.add_argument("--cols", type=int, required=True, help="columns of bits per bank")
    p.add_argument("--banks", type=int, default=1)
    p.add_argument("--word-bits", type=int, default=8)


def _out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="profile to write (.h5)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# --- actions --------------------------------------------------------------------------------------
def run_synth(args) -> int:
    curve = parse_curve(args.curve)
    geometry = _geometry(args)
    kinds = parse_kinds(args.kinds)
    _check_out(args)
    if args.seed < 0:
        raise InputError(f"--seed {args.seed}: must be a non-negative integer")
    try:
        if args.v_floor < curve.v_min:
            raise ValueError(f"below the lowest voltage {curve.v_min:g} of curve {curve.name!r}")
        chip = Chip.random(geometry, curve, args.v_floor, args.seed, kinds=kinds, name=args.name)
    except ValueError as exc:
        raise InputError(f"--v-floor {args.v_floor:g}: {exc}") from None
    chip.save(args.out)
    return _report_written(args, chip)


def run_import(args) -> int:
    geometry = _geometry(args, technology=args.technology)
    _check_out(args)
    chip = profiles.import_bitmaps(args.directory, geometry, name=args.name,
                                   voltage_unit=args.voltage_unit,
                                   nominal_voltage=args.nominal_voltage)
    chip.save(args.out)
    return _report_written(args, chip)


def run_info(args) -> int:
    chip = Chip.load(args.file)
    info = {"file": args.file, **profiles.summary(chip, args.voltages)}
    if args.json:
        print_json(info)
    else:
        _print_info(info)
    return 0


def run_validate(args) -> int:
    results = []
    for path in args.files:
        problems = profiles.validate(path)
        results.append({"file": path, "valid": not problems, "problems": problems})
    ok = all(r["valid"] for r in results)
    if args.json:
        print_json({"valid": ok, "files": results})
    else:
        for r in results:
            if r["valid"]:
                print(f"{r['file']}: ok")
            else:
                more = f" (+{len(r['problems']) - 1} more)" if len(r["problems"]) > 1 else ""
                print(f"{r['file']}: {r['problems'][0]}{more}", file=sys.stderr)
    return 0 if ok else 2


def run_plot(args) -> int:
    from sramsim.analysis.plots import save_profile_plot  # matplotlib only when plotting
    chip = Chip.load(args.file)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out {args.out}: expected a .png path")
    if not out.parent.is_dir():
        raise InputError(f"--out {args.out}: folder {out.parent} does not exist")
    drawn = save_profile_plot(chip, args.voltage, out)
    report = {"file": args.file, "out": str(out), "voltage": args.voltage, **drawn}
    if args.json:
        print_json(report)
    else:
        print(f"wrote {out}: {drawn['faults']} faulty bits at V={args.voltage:g} "
              f"(BER {drawn['ber']:.3g}), blocks of {drawn['block'][0]}x{drawn['block'][1]} bits")
    return 0


# --- argument parsing helpers ---------------------------------------------------------------------
def parse_curve(spec: str) -> BerCurve:
    """'finfet14' or 'gaussian:MU,SIGMA' -> BerCurve (InputError naming --curve otherwise)."""
    if spec.startswith("gaussian:"):
        try:
            mu, sigma = (float(x) for x in spec.split(":", 1)[1].split(","))
            return BerCurve.gaussian(mu, sigma)
        except ValueError as exc:
            detail = str(exc) if "sigma" in str(exc) else "expected gaussian:MU,SIGMA"
            raise InputError(f"--curve {spec}: {detail}") from None
    try:
        return BerCurve.builtin(spec)
    except ValueError as exc:
        raise InputError(f"--curve {spec}: {exc}") from None


def parse_kinds(spec: str) -> dict[str, float]:
    """'flip=1,stuck0=0.5' -> {"flip": 1.0, "stuck0": 0.5} (checked by the chip)."""
    kinds = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        try:
            kinds[key.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise InputError(f"--kinds {spec}: {item!r} is not KIND=WEIGHT") from None
    from sramsim.memory.geometry import parse_kinds as check
    try:
        check(kinds)
    except ValueError as exc:
        raise InputError(f"--kinds {spec}: {exc}") from None
    return kinds


def _geometry(args, technology: str = "sram") -> Geometry:
    try:
        return Geometry(args.rows, args.cols, args.banks, args.word_bits, technology=technology)
    except ValueError as exc:
        raise InputError(f"bad geometry: {exc}") from None


def _check_out(args) -> None:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"--out {args.out}: file exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise InputError(f"--out {args.out}: folder {out.parent} does not exist")


def _report_written(args, chip: Chip) -> int:
    info = {"file": args.out, **profiles.summary(chip)}
    if args.json:
        print_json(info)
    else:
        print(f"wrote {args.out}")
        _print_info(info)
    return 0


def _print_info(info: dict) -> None:
    g = info["geometry"]
    kinds = ", ".join(f"{k} {n}" for k, n in info["kinds"].items() if n)
    print(f"{info['name']} ({info['source']}, {info['technology']}): "
          f"{g['rows']}x{g['cols']} bits x {g['banks']} bank(s), {g['word_bits']}-bit words, "
          f"{g['capacity_bits']} bits")
    print(f"voltage unit {info['voltage_unit']}, nominal {info['nominal_voltage']:g}, "
          f"v_floor {info['v_floor']:g}, curve {info['curve'] or '-'}")
    print(f"{info['faults']} faulty bits ({kinds or 'none'})"
          + (f", non-nested bits {info['non_nested']}" if info["non_nested"] is not None else ""))
    has_curve = any("curve_ber" in r for r in info["voltages"])
    print(f"{'voltage':>9} {'faults':>10} {'BER':>11}" + (f" {'curve BER':>11}" if has_curve else ""))
    for r in info["voltages"]:
        line = f"{r['voltage']:>9.4g} {r['faults']:>10d} {r['ber']:>11.4g}"
        if has_curve:
            cb = r.get("curve_ber")
            line += f" {cb:>11.4g}" if cb is not None else f" {'-':>11}"
        print(line)
