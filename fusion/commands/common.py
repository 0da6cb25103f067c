"""Arguments and loading shared by `fusion train` and `fusion eval`."""
from __future__ import annotations

import argparse
import os
from typing import overload

from fusion.evaluation import CURVE, FaultSpec
from sramsim import BerCurve, Chip, QuantizedModel

# shared by the fusion commands, which import them from here
from sramsim.commands.main import (  # noqa: F401
    ber,
    check_writable,
    flagged,
    integer,
    maps,
    number,
    seed,
    torch_device,
    voltage,
)
from sramsim.errors import InputError
from sramsim.memory.shipped import resolve_profiles
from sramsim.nn.models import load_checkpoint


def add_base_args(p: argparse.ArgumentParser, seed_default: int = 0,
                  seed_help: str = "seed of the run") -> None:
    p.add_argument("--base", required=True, metavar="CKPT",
                   help="base model checkpoint (sramsim train-base)")
    p.add_argument("--data", default="fashion-mnist", metavar="fashion-mnist|mnist|DIR",
                   help="dataset name or directory (default fashion-mnist)")
    p.add_argument("--ber", metavar="P", help="random bit errors at rate P (e.g. 0.01)")
    p.add_argument("--profile", nargs="+", metavar="H5",
                   help="chip profiles (with --voltage): files, shipped:NAME, or shipped (all "
                        "shipped profiles)")
    p.add_argument("--voltage", metavar="V", help="supply voltage for --profile (alone: random "
                   "errors at the finfet14 bit error rate of V)")
    p.add_argument("--limit", metavar="N", help="use only the first N samples")
    p.add_argument("--batch-size", metavar="B", help="batch size")
    p.add_argument("--seed", default=str(seed_default), metavar="S",
                   help=f"{seed_help} (default {seed_default})")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


device = torch_device  # the fusion commands' name for it


def fault_spec(args: argparse.Namespace) -> FaultSpec:
    """The fault source of --ber / --profile ... --voltage, every value range-checked here."""
    if args.profile:
        if args.ber is not None:
            raise InputError("give either --ber or --profile ... --voltage, not both")
        chips = [Chip.load(p) for p in resolve_profiles(args.profile)]
        return FaultSpec(voltage=chip_voltage(args.voltage, chips), chips=chips)
    if args.ber is None and args.voltage is None:
        raise InputError("give --ber P or --profile A.h5 ... --voltage V")
    if args.ber is not None and args.voltage is not None:
        raise InputError("give either --ber or --voltage for random errors, not both")
    return FaultSpec(ber=curve_ber(args.ber), voltage=curve_voltage(args.voltage))


@overload
def curve_ber(text: None, flag: str = ...) -> None: ...
@overload
def curve_ber(text: str | float, flag: str = ...) -> float: ...
def curve_ber(text: str | float | None, flag: str = "--ber") -> float | None:
    """A random-error BER: in [0, 1) and within the BER curve (whose voltage the energy needs)."""
    value = ber(text, flag, BerCurve.builtin(CURVE))
    if value is not None and value >= 1.0:
        raise InputError(f"{flag} must lie in [0, 1), got {text!r}")
    return value


@overload
def curve_voltage(text: None, flag: str = ...) -> None: ...
@overload
def curve_voltage(text: str | float, flag: str = ...) -> float: ...
def curve_voltage(text: str | float | None, flag: str = "--voltage") -> float | None:
    """A voltage for random errors at the curve's BER: between its lowest voltage and nominal."""
    curve = BerCurve.builtin(CURVE)
    return voltage(text, flag, curve.v_min, 1.0, f"curve {curve.name!r}")


def chip_voltage(text: str | float | None, chips: list[Chip], flag: str = "--voltage") -> float:
    """A voltage every chip is valid at: not below its floor, not above its nominal voltage."""
    if text is None:
        raise InputError("chip profiles need --voltage")
    for chip in chips:
        voltage(text, flag, chip.v_floor, chip.nominal_voltage, f"chip {chip.name!r}")
    return number(text, flag)


def memory_bytes() -> int:
    """This machine's physical memory in bytes (what a run's tensors must fit into)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(nbytes: int, what: str) -> None:
    """Refuse up front, naming the size, a run whose tensors cannot fit in this machine's memory."""
    have = memory_bytes()
    if nbytes > have:
        raise InputError(f"{what} needs about {nbytes / 2 ** 30:,.1f} GiB, more than this "
                         f"machine's {have / 2 ** 30:,.1f} GiB of memory")


def load_base(path: str | os.PathLike[str]) -> tuple[QuantizedModel, dict]:
    """The base model as the accelerator stores it: quantized as its checkpoint says."""
    model, meta = load_checkpoint(path)
    try:
        qm = QuantizedModel(model, bits=int(meta["bits"]), scheme=meta["scheme"], clip=meta["clip"])
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return qm, meta


def base_info(path: str | os.PathLike[str], meta: dict, qm: QuantizedModel) -> dict:
    """What the run records about its base model (settings and memory-image fingerprint)."""
    from fusion.eopm import image_fingerprint
    keep = ("arch", "in_channels", "num_classes", "norm", "bits", "scheme", "clip", "dataset")
    return {"path": str(path), **{k: meta.get(k) for k in keep}, "image": image_fingerprint(qm)}
