"""Arguments and loading shared by `fusion train` and `fusion eval`."""
from __future__ import annotations

import argparse


from sramsim import Chip, QuantizedModel
from sramsim.commands.main import integer, number, torch_device  # noqa: F401  (shared by the fusion commands)
from sramsim.errors import InputError
from sramsim.nn.models import load_checkpoint

from fusion.evaluation import FaultSpec


def add_base_args(p: argparse.ArgumentParser, seed_default: int = 0,
                  seed_help: str = "seed of the run") -> None:
    p.add_argument("--base", required=True, metavar="CKPT", help="base model checkpoint (sramsim train-base)")
    p.add_argument("--data", default="fashion-mnist", metavar="fashion-mnist|mnist|DIR",
                   help="dataset name or directory (default fashion-mnist)")
    p.add_argument("--ber", metavar="P", help="random bit errors at rate P (e.g. 0.01)")
    p.add_argument("--profile", nargs="+", metavar="H5", help="chip profiles (with --voltage)")
    p.add_argument("--voltage", metavar="V", help="supply voltage for --profile (alone: random "
                   "errors at the finfet14 bit error rate of V)")
    p.add_argument("--limit", metavar="N", help="use only the first N samples")
    p.add_argument("--batch-size", metavar="B", help="batch size")
    p.add_argument("--seed", default=str(seed_default), metavar="S",
                   help=f"{seed_help} (default {seed_default})")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


device = torch_device  # the fusion commands' name for it


def fault_spec(args) -> FaultSpec:
    ber = number(args.ber, "--ber")
    voltage = number(args.voltage, "--voltage", positive=True)
    if args.profile:
        if ber is not None:
            raise InputError("give either --ber or --profile ... --voltage, not both")
        return FaultSpec(voltage=voltage, chips=[Chip.load(p) for p in args.profile])
    return FaultSpec(ber=ber, voltage=voltage)


def load_base(path: str) -> tuple[QuantizedModel, dict]:
    """The base model as the accelerator stores it: quantized as its checkpoint says."""
    model, meta = load_checkpoint(path)
    try:
        qm = QuantizedModel(model, bits=int(meta["bits"]), scheme=meta["scheme"], clip=meta["clip"])
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return qm, meta


def base_info(path: str, meta: dict, qm: QuantizedModel) -> dict:
    from fusion.eopm import image_fingerprint
    keep = ("arch", "in_channels", "num_classes", "norm", "bits", "scheme", "clip", "dataset")
    return {"path": str(path), **{k: meta.get(k) for k in keep}, "image": image_fingerprint(qm)}
