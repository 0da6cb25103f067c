"""`sramsim train-base`: quantization-aware training of a base model (clipping, RandBET
optional)."""
from __future__ import annotations

import argparse
from dataclasses import fields

from sramsim.commands.helptext import leaf
from sramsim.commands.main import (
    check_ber,
    check_writable,
    flagged,
    integer,
    number,
    seed,
    torch_device,
)
from sramsim.errors import InputError
from sramsim.inject import quantization as Q
from sramsim.nn.fat import CURRICULA, LOSSES, SOURCE_HELP
from sramsim.nn.models import NORMS, arch_names, check_arch
from sramsim.nn.training import OPTIMIZERS, OutputExists, TrainOptions, train_base

# Resized images are held in memory as float32: 4096x4096x3 is 200 MB per image already.
MAX_IMAGE_SIZE = 4096
# the library's parameter names that are this command's flags (TrainOptions' fields, --init)
FLAG_NAMES = (*(f.name for f in fields(TrainOptions)), "init")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sramsim train-base` to the parser."""
    p = subparsers.add_parser(
        "train-base", help="train a base model with quantization-aware training", **leaf(
            "Train a base model with quantization-aware training (straight-through estimator), "
            "optionally with weight clipping, RandBET or fault-aware training. Checkpoints every "
            "epoch to OUT.partial and resumes from it when re-run with the same --out.",
            "sramsim train-base --model cnn --data fashion-mnist --epochs 1 --limit 10000 "
            "--out cnn.pt",
            "sramsim train-base --model snn-fc400 --epochs 4 --limit 10000 --init snn.pt "
            "--fat-ber 1e-2 --fat-source dram:error-model=0 --out snn-fat.pt"))
    p.add_argument("--model", default="cnn", metavar="ARCH",
                   help=f"architecture: {arch_names()} (default cnn)")
    p.add_argument("--data", default="fashion-mnist", metavar="fashion-mnist|mnist|DIR",
                   help="dataset name or directory (IDX, CIFAR batches, ImageFolder)")
    p.add_argument("--epochs", default="2", metavar="E",
                   help="passes over the training set (default 2)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write")
    p.add_argument("--limit", default=None, metavar="N",
                   help="use only the first N train and N test samples")
    p.add_argument("--image-size", default=None, metavar="S",
                   help="resize ImageFolder images to SxS (needed when their sizes differ)")
    p.add_argument("--batch-size", default="128", metavar="B", help="default 128")
    p.add_argument("--lr", default=None, metavar="LR",
                   help="learning rate (default 1e-3 for adam, 0.05 for sgd; cosine decay)")
    p.add_argument("--optimizer", default="adam", help=f"{' or '.join(OPTIMIZERS)} (default adam)")
    p.add_argument("--weight-decay", default="0", metavar="WD", help="default 0")
    p.add_argument("--seed", default="0", metavar="S",
                   help="fixes initial weights, batch order and RandBET patterns (default 0)")
    p.add_argument("--bits", default="8",
                   help=f"weight bits: {', '.join(map(str, Q.BITS))} (default 8)")
    p.add_argument("--scheme", default="symmetric", help=f"quantization: {', '.join(Q.SCHEMES)}")
    p.add_argument("--clip", default=None, metavar="W",
                   help="keep stored weights in [-W, W] (projected after every step)")
    p.add_argument("--norm", default="batch", help=f"normalisation: {', '.join(NORMS)}")
    p.add_argument("--randbet-p", default="0", metavar="P",
                   help="RandBET: also train on random bit errors at rate P (e.g. 0.01)")
    p.add_argument("--randbet-grad-clip", default=None, metavar="C",
                   help="RandBET: clamp each element of the perturbed gradient to [-C, C] before "
                        "averaging it with the clean one (Stutz et al. use "
                        "0.05; default: no clamp)")
    p.add_argument("--randbet-start", default="0", metavar="E",
                   help="RandBET: train E clean epochs before the perturbed "
                        "pass starts (default 0)")
    p.add_argument("--fat-ber", default="0", metavar="P",
                   help="fault-aware training: train on weights read through faults, the BER "
                        "raised over the epochs to P (e.g. 1e-2); 0 = off")
    p.add_argument("--fat-curriculum", default="log",
                   help=f"how the FAT BER rises: {', '.join(CURRICULA)} (default log)")
    p.add_argument("--fat-start", default="1e-5", metavar="P0",
                   help="first epoch's BER of a log/linear curriculum (default 1e-5)")
    p.add_argument("--fat-loss", default="faulty", choices=LOSSES,
                   help="FAT loss: the faulty pass alone, or the mean of the clean and the faulty "
                        "pass (RandBET's loss on FAT's faults; for STDP, the mean of both "
                        "presentations' changes) (default faulty)")
    p.add_argument("--fat-source", default="random", metavar="SOURCE",
                   help=f"where FAT faults come from: {SOURCE_HELP} (default random)")
    p.add_argument("--stdp-intensity", default=None, metavar="HZ",
                   help="Diehl & Cook: input rate at pixel 1 (default 128, BindsNET's examples; "
                        "the paper 63.75)")
    p.add_argument("--stdp-rest-ms", default=None, metavar="MS",
                   help="Diehl & Cook: theta also decays over a batch's online time, each image "
                        "followed by MS of rest (the paper: 150); default: BindsNET's batched "
                        "time base")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint's weights (same architecture), e.g. to "
                        "retrain a baseline fault-aware")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--force", action="store_true",
                   help="retrain even if CKPT already holds this model, or overwrite a CKPT "
                        "trained with other settings (refused without --force)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def fat_source_arg(text: str) -> str:
    """--fat-source in its one spelling; an old spelling ("dram:model0") works, with a note."""
    from sramsim.nn.fat import canonical_source
    new = canonical_source(text, warn=False)
    if new != text:
        import sys
        print(f"note: --fat-source {text} is deprecated; use --fat-source {new}", file=sys.stderr)
    return new


def _bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        bits = None
    if bits not in Q.BITS:
        raise InputError(f"--bits must be one of {', '.join(map(str, Q.BITS))}, got {text!r}")
    return bits


def run(args: argparse.Namespace) -> int:
    """Check every option, train (or keep a finished checkpoint) and report."""
    try:
        check_arch(args.model)
    except InputError as exc:
        raise InputError(f"--model: {exc}") from None
    if args.norm not in NORMS:
        raise InputError(f"--norm must be one of {', '.join(NORMS)}, got {args.norm!r}")
    limit = integer(args.limit, "--limit", minimum=2)
    image_size = integer(args.image_size, "--image-size", maximum=MAX_IMAGE_SIZE)
    randbet_p = check_ber(args.randbet_p, "--randbet-p", allow_one=False)
    try:
        opts = TrainOptions(epochs=integer(args.epochs, "--epochs"),
                            batch_size=integer(args.batch_size, "--batch-size"),
                            lr=number(args.lr, "--lr", positive=True), optimizer=args.optimizer,
                            weight_decay=number(args.weight_decay, "--weight-decay", minimum=0),
                            seed=seed(args.seed), bits=_bits(args.bits), scheme=args.scheme,
                            clip=number(args.clip, "--clip", positive=True), randbet_p=randbet_p,
                            randbet_grad_clip=number(args.randbet_grad_clip, "--randbet-grad-clip",
                                                     positive=True),
                            randbet_start=integer(args.randbet_start, "--randbet-start", minimum=0),
                            fat_ber=check_ber(args.fat_ber, "--fat-ber", allow_one=False),
                            fat_curriculum=args.fat_curriculum,
                            fat_start=check_ber(args.fat_start, "--fat-start", allow_one=False),
                            fat_source=fat_source_arg(args.fat_source),
                            fat_loss=args.fat_loss,
                            stdp_intensity=number(args.stdp_intensity, "--stdp-intensity",
                                                  positive=True),
                            stdp_rest_ms=number(args.stdp_rest_ms, "--stdp-rest-ms", minimum=0))
    except InputError as exc:                # TrainOptions names its fields: say the flags
        raise flagged(exc, FLAG_NAMES) from None
    device = torch_device(args.device)
    check_writable(args.out, "--out")
    try:
        meta = train_base(args.model, args.data, args.out, opts, norm=args.norm, limit=limit,
                          image_size=image_size, device=device, init=args.init,
                          force=args.force, progress=not args.no_progress)
    except OutputExists as exc:
        raise InputError(f"--out {exc} (use --force to retrain over it)") from None
    except InputError as exc:
        raise flagged(exc, FLAG_NAMES) from None
    recorded = meta.get("train_config", {}).get("options", {})
    summary = {"out": str(args.out), "skipped": meta["skipped"], "arch": meta["arch"],
               "dataset": meta["dataset"], "bits": meta["bits"], "scheme": meta["scheme"],
               "clip": meta["clip"], "norm": meta["norm"], "randbet_p": meta.get("randbet_p"),
               "randbet_grad_clip": recorded.get("randbet_grad_clip"),
               "randbet_start": recorded.get("randbet_start", 0),
               "fat": meta.get("fat"), "init": meta.get("init"),
               "epochs": meta.get("epochs"), "test_accuracy": meta.get("test_accuracy"),
               "float_test_accuracy": meta.get("float_test_accuracy"),
               "train_seconds": meta.get("train_seconds"), "history": meta.get("history", [])}
    if args.json:
        from sramsim.commands.main import print_json
        print_json(summary)
    else:
        state = "kept existing" if meta["skipped"] else "wrote"
        print(f"{state} {args.out}: {meta['arch']} on {meta.get('dataset_name', meta['dataset'])}, "
              f"{meta['bits']}-bit {meta['scheme']}"
              + (f", clip {meta['clip']}" if meta["clip"] is not None else "")
              + (f", RandBET p={meta['randbet_p']}" if meta.get("randbet_p") else "")
              + (f" (gradient clamp {summary['randbet_grad_clip']:g})"
                 if summary["randbet_grad_clip"] is not None else "")
              + (" (from epoch "
                 f"{summary['randbet_start'] + 1})" if summary["randbet_start"] else "")
              + (f", FAT to BER {meta['fat']['ber']:g} ({meta['fat']['curriculum']}, "
                 f"{meta['fat']['source']})" if meta.get("fat") else ""))
        print(f"test accuracy (quantized, clean): {meta['test_accuracy']:.4f}  "
              f"(float: {meta['float_test_accuracy']:.4f})")
    return 0
