"""`sramsim energy`: weight-memory energy per read and the saving at a lowered voltage."""
from __future__ import annotations

import argparse

from sramsim.analysis import energy as E
from sramsim.commands.main import integer, number, print_json
from sramsim.memory.curves import BUILTINS, BerCurve
from sramsim.errors import InputError
from sramsim.analysis.systolic import METHODS, count_accesses

COUNT_LABELS = {"weights": "each weight read once",
                "systolic": "SCALE-Sim output-stationary 32x32, 64-bit reads, closed form",
                "scalesim": "scalesim run, output-stationary 32x32, 64-bit reads"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "energy", help="energy per weight read and saving at a voltage (optionally with an add-on)",
        description=__doc__.splitlines()[0])
    base = p.add_mutually_exclusive_group(required=True)
    base.add_argument("--model", metavar="CKPT", help="model checkpoint: count its weight reads")
    base.add_argument("--accesses", metavar="N", help="weight-memory reads per inference of the base model")
    addon = p.add_mutually_exclusive_group()
    addon.add_argument("--addon-accesses", metavar="M", help="reads per inference of the add-on (at nominal V)")
    addon.add_argument("--addon", metavar="NAME",
                       help="NeuralFuse generator (ConvL, ConvS, DeConvL, DeConvS, UNetL, UNetS): counted "
                            "from fusion.generators with --model; published counts with --accesses")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--voltage", metavar="V", help="supply voltage (in the curve's unit)")
    where.add_argument("--ber", metavar="B", help="or: the bit error rate; the voltage is read off the curve")
    p.add_argument("--curve", default="finfet14", choices=sorted(BUILTINS),
                   help="voltage -> BER curve (default finfet14)")
    p.add_argument("--nominal", default="1.0", metavar="VNOM", help="nominal voltage (default 1.0)")
    p.add_argument("--leakage-share", default="0", metavar="S",
                   help="leakage's share of a read's energy at nominal voltage, in [0, 1] (default 0)")
    p.add_argument("--count", default="weights", choices=METHODS,
                   help="how to count weight reads of --model/--addon: weights (each read once, "
                        "default), systolic (SCALE-Sim's output-stationary 32x32 count, 64-bit reads, "
                        "closed form) or scalesim (the same from a scalesim run; slow)")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="input size for counting --addon next to --accesses (else the published counts)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = compute(args)
    if args.json:
        print_json(report)
    else:
        _print_table(report)
    return 0


def compute(args: argparse.Namespace) -> dict:
    curve = BerCurve.builtin(args.curve)
    nominal = number(args.nominal, "--nominal", positive=True)
    leak = number(args.leakage_share, "--leakage-share")
    if not 0.0 <= leak <= 1.0:
        raise InputError(f"--leakage-share must lie in [0, 1], got {args.leakage_share}")
    voltage = _voltage(args, curve, nominal)
    base, base_source, input_shape = _base_accesses(args)
    addon_name, addon, addon_source = _addon_accesses(args, input_shape)
    e_read = E.energy_per_read(voltage, nominal, leak)
    return {
        "voltage": voltage,
        "nominal_voltage": nominal,
        "curve": curve.name,
        "ber": float(curve.ber(voltage)),
        "leakage_share": leak,
        "count": args.count,
        "energy_per_read": e_read,
        "base_accesses": base,
        "base_accesses_source": base_source,
        "addon": addon_name,
        "addon_accesses": addon,
        "addon_accesses_source": addon_source,
        "energy_base": e_read,                       # base reads at V, per nominal base energy
        "energy_addon": addon / base,                # add-on reads at nominal, same unit
        "saving_without_addon": 1.0 - e_read,
        "saving": E.addon_saving(base, addon, voltage, nominal, leak),
    }


def _voltage(args, curve: BerCurve, nominal: float) -> float:
    if args.ber is not None:
        ber = number(args.ber, "--ber")
        try:
            return float(curve.voltage(ber))
        except ValueError as exc:
            raise InputError(f"--ber {args.ber}: {exc}") from None
    v = number(args.voltage, "--voltage", positive=True)
    if v < curve.v_min - 1e-12:
        raise InputError(f"--voltage {args.voltage} is below the lowest voltage {curve.v_min:g} "
                         f"of curve {curve.name!r}")
    if v > nominal + 1e-12:
        raise InputError(f"--voltage {args.voltage} is above the nominal voltage {nominal:g}")
    return v


def _input_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise InputError(f"--input-shape must be C,H,W (three positive integers), got {text!r}")
    return shape


def _base_accesses(args) -> tuple[int, str, tuple | None]:
    """(reads per inference, where the number came from, the model's input shape [C, H, W])."""
    if args.accesses is not None:
        n = integer(args.accesses, "--accesses", None)
        if n <= 0:
            raise InputError(f"--accesses must be positive, got {args.accesses}")
        return n, "given", _input_shape(args.input_shape) if args.input_shape else None
    from sramsim.nn.models import load_checkpoint
    model, meta = load_checkpoint(args.model)
    if args.input_shape:
        shape = _input_shape(args.input_shape)
    elif meta.get("image_size"):
        shape = (int(meta["in_channels"]), *(int(v) for v in meta["image_size"]))
    else:
        raise InputError(f"{args.model}: the checkpoint does not record its image size; "
                         f"pass --input-shape C,H,W")
    n = count_accesses(model, shape, args.count)
    return n, f"{args.model}: {COUNT_LABELS[args.count]}", shape


def _addon_accesses(args, input_shape: tuple | None) -> tuple[str | None, int, str | None]:
    if args.addon_accesses is not None:
        m = integer(args.addon_accesses, "--addon-accesses", None)
        if m < 0:
            raise InputError(f"--addon-accesses must be >= 0, got {args.addon_accesses}")
        return None, m, "given"
    if args.addon is None:
        return None, 0, None
    name = args.addon
    if input_shape is None:
        # The base count came from elsewhere (e.g. SCALE-Sim): use the matching published counts.
        if name not in E.PUBLISHED_ACCESSES or name in ("ResNet18", "VGG19"):
            known = [k for k in E.PUBLISHED_ACCESSES if k not in ("ResNet18", "VGG19")]
            raise InputError(f"--addon {name}: no published access count (known: {', '.join(known)}); "
                             f"pass --addon-accesses, --input-shape C,H,W, or --model CKPT to count it")
        return name, E.PUBLISHED_ACCESSES[name], E.PUBLISHED_SOURCE
    try:
        from fusion import generators  # optional: fusion builds on sramsim, never the reverse
    except ImportError:
        raise InputError("--addon needs the fusion package; pass --addon-accesses instead") from None
    try:
        generator = generators.build(name, input_shape[0])
    except (KeyError, ValueError) as exc:
        raise InputError(f"--addon {name}: {' '.join(str(exc).split())}") from None
    return name, count_accesses(generator, input_shape, args.count), f"{name}: {COUNT_LABELS[args.count]}"


def _print_table(r: dict) -> None:
    rows = [
        ("voltage", f"{r['voltage']:.4g} (nominal {r['nominal_voltage']:g}, curve {r['curve']})"),
        ("bit error rate", f"{r['ber']:.3g}"),
        ("energy per read", f"{r['energy_per_read']:.4f} of nominal"),
        ("base reads/inference", f"{r['base_accesses']:,} ({r['base_accesses_source']})"),
    ]
    if r["addon_accesses"]:
        label = r["addon"] or "add-on"
        rows.append((f"{label} reads/inference", f"{r['addon_accesses']:,} at nominal voltage "
                                                 f"({r['addon_accesses_source']})"))
    rows += [("saving without add-on", f"{100 * r['saving_without_addon']:.2f}%"),
             ("saving", f"{100 * r['saving']:.2f}%")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
