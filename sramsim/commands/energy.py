"""`sramsim energy`: weight-memory energy per read and the saving at a lowered voltage."""
from __future__ import annotations

import argparse

from sramsim.analysis import addons
from sramsim.analysis import energy as E
from sramsim.analysis.systolic import METHODS, count_accesses
from sramsim.commands.helptext import leaf, paragraph
from sramsim.commands.main import flagged, integer, number, print_json
from sramsim.errors import InputError, check_ber
from sramsim.inject.ecc import get_code
from sramsim.memory.curves import BUILTINS, BerCurve

PUBLISHED = "published"          # --count published: look the add-on up in E.PUBLISHED_ACCESSES
COUNT_LABELS = {"weights": "counted: each weight read once",
                "systolic": "counted: SCALE-Sim output-stationary 32x32, 64-bit reads, closed form",
                "scalesim": "counted: scalesim run, output-stationary 32x32, 64-bit reads",
                PUBLISHED: "looked up, not computed: " + E.PUBLISHED_SOURCE}
ADDONS_PUBLISHED = [k for k in E.PUBLISHED_ACCESSES if k not in ("ResNet18", "VGG19")]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim energy` to the command line."""
    p = subparsers.add_parser(
        "energy", help="energy per weight read and saving at a voltage (optionally with an add-on)",
        **leaf(paragraph(__doc__) + " An add-on such as a NeuralFuse generator runs at nominal "
               "voltage and costs back its own reads; every read count says where it came from.",
               "sramsim energy --model cnn.pt --addon ConvS --ber 0.01",
               "sramsim energy --accesses 2755968 --addon-accesses 320256 --voltage 0.833"))
    base = p.add_mutually_exclusive_group(required=True)
    base.add_argument("--model", metavar="CKPT", help="model checkpoint: count its weight reads")
    base.add_argument("--accesses", metavar="N",
                      help="weight-memory reads per inference of the base model")
    addon = p.add_mutually_exclusive_group()
    addon.add_argument("--addon-accesses", metavar="M",
                       help="reads per inference of the add-on (at nominal V)")
    addon.add_argument("--addon", metavar="NAME",
                       help="a registered add-on (NeuralFuse generators: ConvL, ConvS, DeConvL, "
                            "DeConvS, UNetL, UNetS), counted by --count on the model's input shape "
                            "or --input-shape; --count published looks up "
                            "NeuralFuse's published count")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--voltage", metavar="V", help="supply voltage (in the curve's unit)")
    where.add_argument("--ber", metavar="B",
                       help="or: the bit error rate; the voltage is read off the curve")
    p.add_argument("--curve", default="finfet14", choices=sorted(BUILTINS),
                   help="voltage -> BER curve (default finfet14)")
    p.add_argument("--nominal", default="1.0", metavar="VNOM", help="nominal voltage (default 1.0)")
    p.add_argument("--leakage-share", default="0", metavar="S",
                   help="leakage's share of a read's energy at nominal "
                        "voltage, in [0, 1] (default 0)")
    p.add_argument("--count", default=None, choices=(*METHODS, PUBLISHED),
                   help="how to count weight reads of --model/--addon: weights (each read once, "
                        "the default), systolic (SCALE-Sim's output-stationary 32x32 count, 64-bit "
                        "reads, closed form), scalesim (the same from a scalesim run; slow), or "
                        "published (--accesses with --addon: NeuralFuse's "
                        "published count, looked up)")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="input size for counting --addon next to --accesses")
    p.add_argument("--ecc", metavar="CODE",
                   help="the base model's weight memory holds SECDED check bits: secded72 "
                        "(72/64 cells read per data bit) or secded13 (13/8), plus a decoder")
    p.add_argument("--ecc-decoder-energy", metavar="D",
                   help="with --ecc: decoder energy per codeword, as a fraction of one nominal "
                        "read of its data bits, at nominal voltage (default "
                        f"{E.DEFAULT_DECODER_ENERGY:g}, illustrative)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`sramsim energy`: print the report as a table or one JSON object."""
    report = compute(args)
    if args.json:
        print_json(report)
    else:
        _print_table(report)
    return 0


def compute(args: argparse.Namespace) -> dict:
    """The energy report of parsed `sramsim energy` arguments (each count labelled by its
    source)."""
    curve = BerCurve.builtin(args.curve)
    nominal = number(args.nominal, "--nominal", positive=True)
    leak = number(args.leakage_share, "--leakage-share")
    if not 0.0 <= leak <= 1.0:
        raise InputError(f"--leakage-share must lie in [0, 1], got {args.leakage_share}")
    voltage = _voltage(args, curve, nominal)
    method = _count_method(args)
    base, base_source, input_shape = _base_accesses(args, method)
    addon_name, addon, addon_source = _addon_accesses(args, method, input_shape)
    ecc = None if args.ecc is None else get_code(args.ecc).name
    if ecc is None and args.ecc_decoder_energy is not None:
        raise InputError("--ecc-decoder-energy needs --ecc (there is no decoder without a code)")
    decoder: float | None = E.decoder_energy(ecc, args.ecc_decoder_energy,
                                             "--ecc-decoder-energy")
    decoder = decoder if ecc else None
    e_read = E.energy_per_read(voltage, nominal, leak)
    e_data = E.ecc_energy_per_read(voltage, nominal, leak, ecc, decoder)
    return {
        "voltage": voltage,
        "nominal_voltage": nominal,
        "curve": curve.name,
        "ber": float(curve.ber(voltage)),
        "leakage_share": leak,
        "count": method,                             # None: every number was given
        "energy_per_read": e_read,                   # one read of the (unprotected) array at V
        "ecc": ecc,
        "ecc_read_overhead": get_code(ecc).overhead if ecc else 1.0,
        "ecc_decoder_energy": decoder or 0.0,
        "energy_per_data_read": e_data,              # with ECC: e * n/k + decoder; else e
        "base_accesses": base,
        "base_accesses_source": base_source,
        "addon": addon_name,
        "addon_accesses": addon,
        "addon_accesses_source": addon_source,
        "addon_accesses_looked_up": method == PUBLISHED and addon_name is not None,
        "energy_base": e_data,                       # base reads at V, per nominal base energy
        "energy_addon": addon / base,                # add-on reads at nominal, same unit
        "saving_without_addon": 1.0 - e_data,
        "saving": E.addon_saving(base, addon, voltage, nominal, leak, ecc, decoder),
    }


def _voltage(args: argparse.Namespace, curve: BerCurve, nominal: float) -> float:
    if args.ber is not None:
        ber = check_ber(args.ber, "--ber")
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


def _count_method(args: argparse.Namespace) -> str | None:
    """The counting method that governs every number not given: --count, else "weights".

    None when nothing is counted (the base reads are given and the add-on's are given or absent);
    an explicit --count that would count nothing is refused rather than ignored.
    """
    counts_something = args.model is not None or args.addon is not None
    if not counts_something:
        if args.count is not None:
            raise InputError(f"--count {args.count}: nothing to count (--accesses and "
                             f"{'--addon-accesses' if args.addon_accesses else 'no add-on'} "
                             "given); drop --count or count a --model / --addon")
        return None
    if args.count == PUBLISHED and args.model is not None:
        raise InputError("--count published looks up NeuralFuse's published add-on counts next to "
                         "--accesses N; with --model use weights, systolic or scalesim")
    return args.count or "weights"


def _base_accesses(args: argparse.Namespace, method: str | None) -> tuple[int, str, tuple | None]:
    """(reads per inference, where the number came from, the model's input shape [C, H, W])."""
    if args.accesses is not None:
        n = integer(args.accesses, "--accesses", None)
        if n <= 0:
            raise InputError(f"--accesses must be positive, got {args.accesses}")
        return n, "given", _input_shape(args.input_shape) if args.input_shape else None
    from sramsim.nn.models import load_checkpoint
    model, meta = load_checkpoint(args.model)
    shape: tuple[int, ...]
    if args.input_shape:
        shape = _input_shape(args.input_shape)
    elif meta.get("image_size"):
        shape = (int(meta["in_channels"]), *(int(v) for v in meta["image_size"]))
    else:
        raise InputError(f"{args.model}: the checkpoint does not record its image size; "
                         f"pass --input-shape C,H,W")
    assert method is not None                       # a --model is counted
    n = count_accesses(model, shape, method, progress=True)
    return n, f"{args.model}: {COUNT_LABELS[method]}", shape


def _addon_accesses(args: argparse.Namespace, method: str | None,
                    input_shape: tuple | None) -> tuple[str | None, int, str | None]:
    """(add-on name, its reads per inference, where the number came from)."""
    if args.addon_accesses is not None:
        m = integer(args.addon_accesses, "--addon-accesses", None)
        if m < 0:
            raise InputError(f"--addon-accesses must be >= 0, got {args.addon_accesses}")
        return None, m, "given"
    if args.addon is None:
        return None, 0, None
    name = args.addon
    if method == PUBLISHED:
        if name not in ADDONS_PUBLISHED:
            raise InputError(f"--addon {name}: no published access count (known: "
                             f"{', '.join(ADDONS_PUBLISHED)}); count it with --input-shape C,H,W")
        if input_shape is not None:
            raise InputError("--count published looks the add-on up; --input-shape would not be "
                             "used (drop it, or pick a --count that counts)")
        return name, E.PUBLISHED_ACCESSES[name], f"{name}: {COUNT_LABELS[PUBLISHED]}"
    if input_shape is None:
        raise InputError(f"--addon {name} with --accesses: pass --input-shape C,H,W to count its "
                         f"reads ({method}), or --count published to look up NeuralFuse's count")
    assert method is not None                       # an --addon is counted
    try:
        generator = addons.build(name, input_shape[0])
    except InputError as exc:
        raise flagged(exc, ["addon"]) from None
    return (name, count_accesses(generator, input_shape, method, progress=True),
            f"{name}: {COUNT_LABELS[method]}")


def _print_table(r: dict) -> None:
    rows = [
        ("voltage", f"{r['voltage']:.4g} (nominal {r['nominal_voltage']:g}, curve {r['curve']})"),
        ("bit error rate", f"{r['ber']:.3g}"),
        ("energy per read", f"{r['energy_per_read']:.4f} of nominal"),
    ]
    if r["ecc"]:
        rows.append(("ECC", f"{r['ecc']}: {r['ecc_read_overhead']:g}x cells read + decoder "
                            f"{r['ecc_decoder_energy']:g} per codeword -> "
                            f"{r['energy_per_data_read']:.4f} of nominal per data read"))
    rows += [
        ("base reads/inference", f"{r['base_accesses']:,} ({r['base_accesses_source']})"),
    ]
    if r["addon_accesses"]:
        label = r["addon"] or "add-on"
        rows.append((f"{label} reads/inference", f"{r['addon_accesses']:,} at nominal voltage "
                                                 f"({r['addon_accesses_source']})"))
    if r["addon_accesses_looked_up"]:
        rows.append(("note", f"the {label} count is looked up in a table (--count published), "
                             "not computed"))
    rows += [("saving without add-on", f"{100 * r['saving_without_addon']:.2f}%"),
             ("saving", f"{100 * r['saving']:.2f}%")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
