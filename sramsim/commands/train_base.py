"""`sramsim train-base`: quantization-aware training of a base model (clipping, RandBET optional)."""
from __future__ import annotations

import argparse

from sramsim.inject import quantization as Q
from sramsim.commands.main import torch_device
from sramsim.errors import InputError
from sramsim.nn.models import ARCHS, NORMS
from sramsim.nn.training import OPTIMIZERS, TrainOptions, train_base


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-base", help="train a base model with quantization-aware training",
        description="Train a base model with quantization-aware training (straight-through "
                    "estimator). Checkpoints every epoch to OUT.partial and resumes from it when "
                    "re-run with the same --out.")
    p.add_argument("--model", default="cnn", metavar="ARCH",
                   help=f"architecture: {', '.join(ARCHS)} (default cnn)")
    p.add_argument("--data", default="fashion-mnist", metavar="fashion-mnist|mnist|DIR",
                   help="dataset name or directory (IDX, CIFAR batches, ImageFolder)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training set (default 2)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N train and N test samples")
    p.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="resize ImageFolder images to SxS (needed when their sizes differ)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 1e-3 for adam, 0.05 for sgd; cosine decay)")
    p.add_argument("--optimizer", default="adam", help=f"{' or '.join(OPTIMIZERS)} (default adam)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="default 0")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes initial weights, batch order and RandBET patterns (default 0)")
    p.add_argument("--bits", default="8", help=f"weight bits: {', '.join(map(str, Q.BITS))} (default 8)")
    p.add_argument("--scheme", default="symmetric", help=f"quantization: {', '.join(Q.SCHEMES)}")
    p.add_argument("--clip", type=float, default=None, metavar="W",
                   help="keep stored weights in [-W, W] (projected after every step)")
    p.add_argument("--norm", default="batch", help=f"normalisation: {', '.join(NORMS)}")
    p.add_argument("--randbet-p", type=float, default=0.0, metavar="P",
                   help="RandBET: also train on random bit errors at rate P (e.g. 0.01)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--force", action="store_true", help="retrain even if CKPT already holds this model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def _bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        bits = None
    if bits not in Q.BITS:
        raise InputError(f"--bits must be one of {', '.join(map(str, Q.BITS))}, got {text!r}")
    return bits


def run(args: argparse.Namespace) -> int:
    if args.model not in ARCHS:
        raise InputError(f"--model must be one of {', '.join(ARCHS)}, got {args.model!r}")
    if args.norm not in NORMS:
        raise InputError(f"--norm must be one of {', '.join(NORMS)}, got {args.norm!r}")
    if args.limit is not None and args.limit < 2:
        raise InputError(f"--limit must be at least 2, got {args.limit}")
    if args.image_size is not None and args.image_size < 1:
        raise InputError(f"--image-size must be positive, got {args.image_size}")
    opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.seed,
                        bits=_bits(args.bits), scheme=args.scheme, clip=args.clip,
                        randbet_p=args.randbet_p)
    meta = train_base(args.model, args.data, args.out, opts, norm=args.norm, limit=args.limit,
                      image_size=args.image_size, device=torch_device(args.device), force=args.force,
                      progress=not args.no_progress)
    summary = {"out": str(args.out), "skipped": meta["skipped"], "arch": meta["arch"],
               "dataset": meta["dataset"], "bits": meta["bits"], "scheme": meta["scheme"],
               "clip": meta["clip"], "norm": meta["norm"], "randbet_p": meta.get("randbet_p"),
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
              + (f", RandBET p={meta['randbet_p']}" if meta.get("randbet_p") else ""))
        print(f"test accuracy (quantized, clean): {meta['test_accuracy']:.4f}  "
              f"(float: {meta['float_test_accuracy']:.4f})")
    return 0
