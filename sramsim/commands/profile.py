"""`sramsim profile list|synth|import|info|validate|plot`: make, inspect, check chip profiles.

Wherever a profile file is taken, `shipped:NAME` names a profile that ships with sramsim (`sramsim
profile list` prints them), and `validate` takes `shipped` for all of them."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sramsim.commands.helptext import leaf
from sramsim.commands.main import check_writable, integer, number, print_json, seed, voltage
from sramsim.errors import InputError
from sramsim.memory import profiles
from sramsim.memory.chip import Chip
from sramsim.memory.curves import BerCurve
from sramsim.memory.dram import DEFAULT_PART, DramGeometry, load_part
from sramsim.memory.geometry import Geometry
from sramsim.memory.shipped import ALL, resolve_profiles, shipped_profiles
from sramsim.memory.sizes import format_bytes

PROFILE_HELP = "profile file (.h5) or shipped:NAME"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="make, inspect and check chip profiles (HDF5)",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    p = sub.add_parser("list", help="the chip profiles that ship with sramsim (use them as "
                       "shipped:NAME)", **leaf(
                           "The chip profiles that ship with sramsim: name, geometry, technology, "
                           "capacity and file size. Any option that takes a profile file also "
                           "takes shipped:NAME, and lists of profiles take "
                           "shipped for all of them.",
                           "sramsim profile list", "sramsim profile list --json"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_list)

    p = sub.add_parser("synth", help="a synthetic chip drawn from a voltage->BER curve", **leaf(
        "Draw a synthetic chip from a voltage-to-BER curve: every cell fails below its own "
        "voltage, drawn so that the share of failing cells at V follows the curve, down to "
        "--v-floor. The same --seed gives the same chip, bit for bit, on any machine.",
        "sramsim profile synth --curve finfet14 --rows 1024 --cols 1024 --v-floor 0.75 --seed 7 "
        "--out my.h5",
        "sramsim profile synth --curve gaussian:0.706,0.055 --rows 8192 --cols 128 --v-floor 0.8 "
        "--seed 0 --kinds flip=1,stuck0=0.5,stuck1=0.5 --out mixed.h5"))
    p.add_argument("--curve", default="finfet14",
                   help="built-in curve name (finfet14) or gaussian:MU,SIGMA")
    _geometry_args(p)
    p.add_argument("--v-floor", required=True, metavar="V",
                   help="lowest voltage the chip is valid for (faults drawn down to it; at most "
                        "the nominal voltage 1)")
    p.add_argument("--seed", required=True, metavar="S")
    p.add_argument("--kinds", default="flip=1",
                   help="fault kind proportions, e.g. flip=1,stuck0=0.5,stuck1=0.5")
    p.add_argument("--name", help="profile name (default: <curve>-<rows>x<cols>-s<seed>)")
    _out_args(p)
    p.set_defaults(func=run_synth)

    p = sub.add_parser("import", help="a measured chip from per-voltage failing-bit files",
                       **leaf("Import a measured chip from a folder of per-voltage observations "
                              "of failing bits into an HDF5 profile. "
                              + " ".join((profiles.load_bitmap_dir.__doc__ or "")
                                         .split("\n\n")[1].split()),
                              "sramsim profile import bitmaps/ --rows 8192 "
                              "--cols 128 --out chip.h5",
                              "sramsim profile import dram-bitmaps/ --technology dram --out "
                              "dram-chip.h5"))
    p.add_argument("directory", help="folder of v<voltage>[_0to1|_1to0].npy files")
    _geometry_args(p, required=False)
    p.add_argument("--technology", default="sram",
                   help="memory technology label (default sram); 'dram' takes the geometry of "
                        "--part (bit addresses as in sramsim.memory.dram) instead of --rows/--cols")
    p.add_argument("--part", default=None, metavar="P",
                   help=f"DRAM part (bundled name, part JSON or DRAMPower memspec JSON) for "
                        f"--technology dram "
                        f"(default {DEFAULT_PART})")
    p.add_argument("--voltage-unit", choices=profiles.VOLTAGE_UNITS, default=None,
                   help="normalized (default) or V (default for --technology dram)")
    p.add_argument("--nominal-voltage", default=None, metavar="V",
                   help="the chip's nominal supply voltage, in --voltage-unit (default 1.0; "
                        "for --technology dram the part's VDD2)")
    p.add_argument("--name", help="profile name (default: the folder's name)")
    _out_args(p)
    p.set_defaults(func=run_import)

    p = sub.add_parser("info", help="geometry, fault counts and BER at a few voltages", **leaf(
        "Print a profile's geometry, fault counts by kind, and its bit error rate at a few "
        "voltages (the measured ones, or the points of its curve).",
        "sramsim profile info shipped:finfet14-8192x128-s0",
        "sramsim profile info chip.h5 --voltages 0.9 0.85 --json"))
    p.add_argument("file", help=PROFILE_HELP)
    p.add_argument("--voltages", nargs="+", metavar="V",
                   help="voltages to report (default: measured voltages or the curve's points)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_info)

    p = sub.add_parser("validate", help="check profiles; exit 2 if any is bad", **leaf(
        "Check profiles against the schema (format, datasets, addresses within the chip, sorted "
        "failure voltages) and print one line per file; the exit status is 2 if any is bad.",
        "sramsim profile validate shipped", "sramsim profile validate chip.h5 other.h5 --json"))
    p.add_argument("files", nargs="+", help=PROFILE_HELP + ", or shipped (all shipped profiles)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("plot", help="PNG of the fault map at a voltage and BER vs voltage", **leaf(
        "Write a PNG with the chip's fault map at one voltage (faulty bits per block, with a "
        "colour scale) beside its bit error rate over voltage.",
        "sramsim profile plot shipped:finfet14-8192x128-s0 --voltage 0.8 --out chip.png"))
    p.add_argument("file", help=PROFILE_HELP)
    p.add_argument("--voltage", required=True, metavar="V",
                   help="supply voltage (between the chip's floor and its nominal voltage)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_plot)


def _geometry_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--rows", required=required, metavar="N", help="rows of bits per bank")
    p.add_argument("--cols", required=required, metavar="N", help="columns of bits per bank")
    p.add_argument("--banks", default="1", metavar="N", help="banks (default 1)")
    p.add_argument("--word-bits", default="8", metavar="N", help="bits per memory word (default 8)")


def _out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="profile to write (.h5)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# --- actions --------------------------------------------------------------------------------------
def run_synth(args: argparse.Namespace) -> int:
    curve = parse_curve(args.curve)
    geometry = _geometry(args)
    kinds = parse_kinds(args.kinds)
    chip_seed = seed(args.seed)
    # Synthetic chips are normalised to the nominal voltage 1; a floor above it is unusable.
    v_floor = voltage(args.v_floor, "--v-floor", curve.v_min, 1.0, f"curve {curve.name!r}")
    _check_out(args)
    try:
        chip = Chip.random(geometry, curve, v_floor, chip_seed, kinds=kinds, name=args.name)
    except ValueError as exc:
        raise InputError(f"--v-floor {args.v_floor}: {exc}") from None
    chip.save(args.out)
    return _report_written(args, chip)


def run_import(args: argparse.Namespace) -> int:
    geometry, unit, nominal = _import_geometry(args)
    _check_out(args)
    chip = profiles.import_bitmaps(args.directory, geometry, name=args.name,
                                   voltage_unit=unit, nominal_voltage=nominal)
    chip.save(args.out)
    return _report_written(args, chip)


def run_info(args: argparse.Namespace) -> int:
    chip = Chip.load(args.file)
    voltages = None if args.voltages is None else [chip_voltage(v, chip, "--voltages")
                                                   for v in args.voltages]
    info = {"file": args.file, **profiles.summary(chip, voltages)}
    if args.json:
        print_json(info)
    else:
        _print_info(info)
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = [shipped_row(path) for path in shipped_profiles()]
    if args.json:
        print_json({"profiles": rows})
        return 0
    width = max(len(r["name"]) for r in rows) + len("shipped:")
    print(f"{'name':<{width}} {'geometry':<28} {'technology':<10} {'capacity':>9} {'file':>9}")
    for r in rows:
        g = r["geometry"]
        shape = f"{g['rows']}x{g['cols']} bits x {g['banks']} bank(s)"
        print(f"{'shipped:' + r['name']:<{width}} {shape:<28} {r['technology']:<10} "
              f"{format_bytes(g['capacity_bits'] // 8):>9} {format_bytes(r['file_bytes']):>9}")
    return 0


def shipped_row(path: Path) -> dict:
    """What `profile list` shows of one shipped profile."""
    chip = Chip.load(path)
    g = chip.geometry
    return {"name": chip.name, "spec": f"shipped:{path.stem}", "technology": g.technology,
            "source": chip.source, "v_floor": chip.v_floor, "faults": len(chip),
            "geometry": {"rows": g.rows, "cols": g.cols,
                         "banks": getattr(g, "total_banks", g.banks),
                         "word_bits": g.word_bits, "capacity_bits": g.capacity_bits},
            "file_bytes": path.stat().st_size}


def run_validate(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    for path in _expand(args.files):
        problems = profiles.validate(path)
        results.append({"file": str(path), "valid": not problems, "problems": problems})
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


def run_plot(args: argparse.Namespace) -> int:
    from sramsim.analysis.plots import save_profile_plot  # matplotlib only when plotting
    chip = Chip.load(args.file)
    v = chip_voltage(args.voltage, chip, "--voltage")
    check_writable(args.out, "--out")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out {args.out}: expected a .png path")
    if not out.parent.is_dir():
        raise InputError(f"--out {args.out}: folder {out.parent} does not exist")
    drawn = save_profile_plot(chip, v, out)
    report = {"file": args.file, "out": str(out), "voltage": v, **drawn}
    if args.json:
        print_json(report)
    else:
        print(f"wrote {out}: {drawn['faults']} faulty bits at V={v:g} "
              f"(BER {drawn['ber']:.3g}), blocks of {drawn['block'][0]}x{drawn['block'][1]} bits")
    return 0


# --- argument parsing helpers ---------------------------------------------------------------------
def _expand(files: list[str]) -> list[str]:
    """Profile arguments with `shipped` expanded into `shipped:NAME` for each shipped profile."""
    out = []
    for f in files:
        out += [f"shipped:{p.stem}" for p in resolve_profiles([ALL])] if f == ALL else [f]
    return out


def parse_curve(spec: str) -> BerCurve:
    """'finfet14' or 'gaussian:MU,SIGMA' -> BerCurve (InputError naming --curve otherwise)."""
    if spec.startswith("gaussian:"):
        try:
            mu, sigma = (float(x) for x in spec.split(":", 1)[1].split(","))
            if not (math.isfinite(mu) and math.isfinite(sigma)):
                raise ValueError("MU and SIGMA must be finite numbers")
            return BerCurve.gaussian(mu, sigma)
        except ValueError as exc:
            detail = (str(exc) if "SIGMA" in str(exc) or "sigma" in str(exc)
                      else "expected gaussian:MU,SIGMA")
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


def chip_voltage(text: str | float, chip: Chip, flag: str) -> float:
    """A voltage `chip` is valid at: from its floor (or lowest measured voltage) to nominal."""
    what = "lowest measured voltage" if chip.source == "measured" else "v_floor"
    v = number(text, flag, positive=True)
    if v < chip.v_floor - 1e-9 and np.float32(v) < np.float32(chip.v_floor):
        raise InputError(f"{flag} {text}: below chip {chip.name!r}'s {what} {chip.v_floor:g}")
    if v > chip.nominal_voltage + 1e-9:
        raise InputError(f"{flag} {text}: above chip {chip.name!r}'s nominal voltage "
                         f"{chip.nominal_voltage:g} (nothing is known about higher voltages)")
    return v


def _geometry(args: argparse.Namespace, technology: str = "sram") -> Geometry:
    rows, cols, banks, word_bits = (integer(getattr(args, k), f"--{k.replace('_', '-')}")
                                    for k in ("rows", "cols", "banks", "word_bits"))
    try:
        return Geometry(rows, cols, banks, word_bits, technology=technology)
    except ValueError as exc:
        raise InputError(f"bad geometry: {exc}") from None


def _import_geometry(args: argparse.Namespace) -> tuple:
    """(geometry, voltage unit, nominal voltage) of `profile import`: --rows/--cols for SRAM, the
    part's DramGeometry (volts, nominal VDD2) for --technology dram."""
    if args.technology != "dram":
        if args.part is not None:
            raise InputError("--part is for --technology dram")
        if args.rows is None or args.cols is None:
            raise InputError("give --rows and --cols (or --technology dram --part P)")
        nominal = number(args.nominal_voltage or "1.0", "--nominal-voltage", positive=True)
        return (_geometry(args, technology=args.technology), args.voltage_unit or "normalized",
                nominal)
    if args.rows is not None or args.cols is not None:
        raise InputError("--technology dram takes its geometry from --part, not --rows/--cols")
    part = args.part or DEFAULT_PART
    geometry = DramGeometry.from_part(part, word_bits=integer(args.word_bits, "--word-bits"))
    power = load_part(part)["power"]
    nominal = number(args.nominal_voltage or power.get("vdd2", power.get("vdd")),
                     "--nominal-voltage", positive=True)
    return geometry, args.voltage_unit or "V", nominal


def _check_out(args: argparse.Namespace) -> None:
    check_writable(args.out, "--out")           # the text itself: '' is not the current folder
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"--out {args.out}: file exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise InputError(f"--out {args.out}: folder {out.parent} does not exist")


def _report_written(args: argparse.Namespace, chip: Chip) -> int:
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
    print(f"{'voltage':>9} {'faults':>10} "
          f"{'BER':>11}" + (f" {'curve BER':>11}" if has_curve else ""))
    for r in info["voltages"]:
        line = f"{r['voltage']:>9.4g} {r['faults']:>10d} {r['ber']:>11.4g}"
        if has_curve:
            cb = r.get("curve_ber")
            line += f" {cb:>11.4g}" if cb is not None else f" {'-':>11}"
        print(line)
