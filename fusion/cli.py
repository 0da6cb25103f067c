"""`fusion`: train NeuralFuse generators with EOPM against SRAM fault maps, and evaluate them.

A thin layer over fusion.pipeline / fusion.evaluation on sramsim's CLI frame (each subcommand is a
module in fusion.commands; bad input -> one line on stderr, exit status 2)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sramsim.commands.main import build_parser, run_main

COMMANDS = ("train", "eval", "demo")


def parser() -> argparse.ArgumentParser:
    """The `fusion` argument parser (one subparser per module in fusion.commands)."""
    p = build_parser("fusion", "fusion.commands", COMMANDS)
    p.description = __doc__.splitlines()[0]
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `fusion`: the exit status (0 ok, 2 bad input)."""
    return run_main(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
