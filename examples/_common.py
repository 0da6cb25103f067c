"""What several examples share: their size options and the default CNN, trained once.

`train_base` keeps a checkpoint that already holds a model trained with the same settings, so
every example that needs the CNN trains it only the first time.
"""
from __future__ import annotations

import argparse

from sramsim import QuantizedModel
from sramsim.nn import Dataset, load_checkpoint, load_dataset
from sramsim.nn.training import TrainOptions, train_base


def size_options(parser: argparse.ArgumentParser) -> None:
    """--model, --train-limit and --limit (the test suite runs every example small)."""
    parser.add_argument("--model", default="cnn.pt", help="checkpoint (trained here if absent)")
    parser.add_argument("--train-limit", type=int, default=10000, help="training images")
    parser.add_argument("--limit", type=int, default=2000, help="test images")


def trained_cnn(args: argparse.Namespace) -> str:
    """The default 8-bit CNN trained for one epoch on Fashion-MNIST, at args.model."""
    train_base("cnn", "fashion-mnist", args.model, TrainOptions(epochs=1),
               limit=args.train_limit, progress=False)
    return args.model


def quantized_cnn(args: argparse.Namespace) -> tuple[QuantizedModel, Dataset]:
    """(the trained CNN as stored in memory, the first args.limit test images)."""
    model, meta = load_checkpoint(trained_cnn(args))
    qm = QuantizedModel(model, meta["bits"], meta["scheme"], meta["clip"])
    return qm, load_dataset("fashion-mnist", "test", args.limit)
