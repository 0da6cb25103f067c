"""`fusion train`: train a NeuralFuse generator with EOPM against sampled fault maps."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fusion import generators
from fusion.commands import common
from fusion.eopm import EopmConfig
from fusion.evaluation import FaultSpec
from fusion.pipeline import GENERATOR_FILE, hold_out, train_generator
from sramsim.commands.config import add_config, recorded
from sramsim.commands.helptext import leaf
from sramsim.commands.main import print_json
from sramsim.errors import InputError
from sramsim.nn.data import load_dataset

if TYPE_CHECKING:
    from torch import nn

    from sramsim import QuantizedModel


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fusion train` to the fusion parser."""
    p = subparsers.add_parser(
        "train", help="train a generator with EOPM (resumes from DIR/checkpoint.pt)",
        **leaf("Train a NeuralFuse generator in front of a frozen quantized base model with "
               "EOPM: loss = CE(clean) + lam * mean CE(N perturbed models). Checkpoints every "
               "epoch into DIR and resumes when re-run with the same DIR and settings; DIR also "
               "gets the loss curve (training.png).\n\n"
               "The generator's own reads run at nominal voltage, so it must be small next to the "
               "base model: on the default CNN use --width 0.25 (at the paper's width it costs "
               "more energy than the low voltage saves; fusion eval prints the net saving).",
               "fusion train --base cnn.pt --generator ConvS --width 0.25 --ber 0.01 --epochs 1 "
               "--limit 5000 --out g/",
               "fusion train --base cnn.pt --generator UNetS --width 0.25 --ber 0.015 --epochs 10 "
               "--val-split 5000 --val-ber 0.01 --out g-unet/"))
    common.add_base_args(p)
    p.add_argument("--generator", default="ConvS",
                   help=f"{', '.join(generators.NAMES)} (default ConvS)")
    p.add_argument("--width", default="1", metavar="W",
                   help="scale the generator's hidden channels (default 1 = the paper's)")
    p.add_argument("--epochs", required=True, metavar="E")
    p.add_argument("--out", required=True, metavar="DIR",
                   help=f"output directory (DIR/{GENERATOR_FILE})")
    p.add_argument("--n-perturbed", default="10", metavar="N",
                   help="perturbed models per step (default 10)")
    p.add_argument("--lam", default="5", metavar="L",
                   help="weight of the perturbed term (default 5)")
    p.add_argument("--lr", default="1e-3", help="Adam learning rate (default 1e-3)")
    p.add_argument("--lr-step", default="10", metavar="EPOCHS",
                   help="halve the learning rate every EPOCHS epochs (default 10)")
    p.add_argument("--ema", default="0", metavar="DECAY",
                   help="write a moving average of G with this decay per step, "
                        "e.g. 0.999 (default 0: off)")
    p.add_argument("--val-split", metavar="N",
                   help="hold out the last N training images; score G on them after every epoch "
                        "and write the best-scoring G (default: none, the last G)")
    p.add_argument("--val-maps", default="5", metavar="K",
                   help="fixed validation fault maps for --val-split (default 5)")
    p.add_argument("--val-ber", metavar="P",
                   help="validate at this BER (the deployed one when training at a margin above "
                        "it; default: the training faults)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: autocast G and the base model to bfloat16 "
                        "(faster on AMX CPUs / GPUs)")
    p.add_argument("--time-budget", metavar="SECONDS",
                   help="stop after this much training time (the generator is still written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every option, then run; bad input raises InputError (one line, exit 2)."""
    if args.generator not in generators.NAMES:
        raise InputError(f"--generator must be one of {', '.join(generators.NAMES)}, got "
                         f"{args.generator!r}")
    epochs = common.integer(args.epochs, "--epochs")
    ema = common.number(args.ema, "--ema")
    if not 0 <= ema < 1:
        raise InputError("--ema must be in [0, 1) (a decay per step, e.g. "
                         f"0.999), got {args.ema!r}")
    config = EopmConfig(
        generator=args.generator, width=common.number(args.width, "--width", positive=True),
        n_perturbed=common.integer(args.n_perturbed, "--n-perturbed"),
        lam=common.number(args.lam, "--lam", minimum=0),
        lr=common.number(args.lr, "--lr", positive=True),
        lr_step=common.integer(args.lr_step, "--lr-step"),
        batch_size=common.integer(args.batch_size, "--batch-size") or 128,
        seed=common.seed(args.seed), precision=args.precision,
        ema=ema)
    limit = common.integer(args.limit, "--limit")
    budget = common.number(args.time_budget, "--time-budget", positive=True)
    device = common.device(args.device)
    common.check_writable(args.out, "--out", folder=True)
    out = Path(args.out)
    faults = common.fault_spec(args)
    qm, meta = common.load_base(args.base)
    _check_sizes(config, qm, int(meta["in_channels"]))
    val_split = common.integer(args.val_split, "--val-split")
    val_maps = common.maps(args.val_maps, "--val-maps")
    val_ber = common.curve_ber(args.val_ber, "--val-ber")
    if val_split is None and val_ber is not None:
        raise InputError("--val-ber needs --val-split N (the held-out images to validate on)")
    val_faults = None if val_ber is None else FaultSpec(ber=val_ber)
    train_set = load_dataset(args.data, "train", limit)
    val_set = None
    if val_split is not None:
        try:
            train_set, val_set = hold_out(train_set, val_split)
        except InputError as exc:
            raise common.flagged(exc, ["val_split"]) from None
    info = common.base_info(args.base, meta, qm)
    if not args.json:                       # every option checked: say what the run costs
        note = cost_note(config, qm.model, int(meta["in_channels"]), faults)
        if note:
            import sys
            print(note, file=sys.stderr, flush=True)
    with recorded(args, out):
        result = train_generator(qm, info, train_set, faults, config, epochs, out, device,
                                 progress=not args.no_progress, budget_seconds=budget,
                                 val_set=val_set, val_maps=val_maps, val_faults=val_faults)
    from sramsim.analysis.plots import plot_training
    plot = plot_training(result["history"], out / "training.png",
                         title=f"{config.generator} (width {config.width:g}) with EOPM against "
                               f"{_describe(result['fault_source'])}")
    summary = {"generator_file": str(out / GENERATOR_FILE), "plot": plot,
               **{k: v for k, v in result.items()
                                                                if k != "history"},
               "history": result["history"]}
    if args.json:
        print_json(summary)
    else:
        last = result["history"][-1] if result["history"] else {}
        print(f"{config.generator} trained {result['epochs_done']}/{epochs} epochs "
              f"({result['steps_this_run']} steps this run, {result['steps']} in all, "
              f"{result['train_seconds']:.0f} s of training in all) against "
              f"{_describe(result['fault_source'])}; last loss "
              f"{last.get('loss', float('nan')):.4f}")
        val = result["validation"]
        if val:
            print(f"validation: best {val['best_score']:.4f} mean accuracy over {val['maps']} "
                  f"fault maps on {val['samples']} held-out images, epoch "
                  f"{val['best_epoch']} (written)")
        print(f"wrote {out / GENERATOR_FILE}, {plot}")
    return 0


def _check_sizes(config: EopmConfig, qm: QuantizedModel, in_channels: int) -> None:
    """Refuse up front a generator (--width) or a stack of perturbed models (--n-perturbed) that
    cannot fit in memory: G is counted on the meta device, without allocating it."""
    import torch
    with torch.device("meta"):
        g = generators.build(config.generator, in_channels, width=config.width)
    g_weights = sum(p.numel() for p in g.parameters())
    # float32 weights, gradients and Adam's two moments (plus the moving average with --ema)
    common.check_fits(4 * 5 * g_weights, f"--width {config.width:g}: {config.generator} with "
                                         f"{g_weights:,} weights")
    # each step dequantizes the clean and N perturbed copies of every stored weight (float32)
    common.check_fits(4 * (config.n_perturbed + 1) * qm.n_codes,
                      f"--n-perturbed {config.n_perturbed}: {config.n_perturbed + 1} copies of "
                      f"{qm.n_codes:,} weights")


def cost_note(config: EopmConfig, base: nn.Module, in_channels: int,
              faults: FaultSpec) -> str | None:
    """A warning when G's own weight reads, at nominal voltage, cost more than the lowered
    voltage saves on the base model's reads (net saving <= 0), naming a --width that pays.
    Reads are counted as `fusion eval` counts them by default (each weight once)."""
    import torch

    from sramsim.analysis.accesses import weight_accesses
    from sramsim.analysis.energy import addon_saving
    base_reads = weight_accesses(base)

    def net(width: float) -> tuple[float, int]:
        with torch.device("meta"):
            reads = weight_accesses(generators.build(config.generator, in_channels, width=width))
        return addon_saving(base_reads, reads, faults.read_voltage, faults.nominal), reads

    saving, reads = net(config.width)
    if saving > 0:
        return None
    width = config.width / 2
    while width >= 1 / 64 and net(width)[0] <= 0:
        width /= 2
    hint = f"; --width {width:g} nets {100 * net(width)[0]:.1f}%" if width >= 1 / 64 else ""
    return (f"note: {config.generator} at --width {config.width:g} reads {reads:,} weights per "
            f"inference at nominal voltage against the base model's {base_reads:,}: a net "
            f"memory-energy saving of {100 * saving:.1f}% at V={faults.voltage:.4g}{hint}")


def _describe(src: dict) -> str:
    if src["kind"] == "chips":
        return f"{len(src['chips'])} chip(s) at V={src['voltage']:g}"
    return f"random bit errors at BER {src['ber']:g}"
