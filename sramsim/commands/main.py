"""`sramsim` command line: a thin layer over the library; each subcommand lives in sramsim.commands.

Every subcommand module defines `register(subparsers)`, which adds its parser and sets
`func=run(args) -> int`. Bad input (InputError, missing files, bad values) prints one line and exits 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys

from sramsim.errors import InputError

COMMANDS = ("profile", "train_base", "sweep", "energy", "demo", "vuln")


def build_parser(prog: str = "sramsim", package: str = "sramsim.commands",
                 commands=COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        try:
            module = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{package}.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def run_main(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse, dispatch, and turn bad input into one line on stderr with exit status 2."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; finished results are kept, re-run to resume",
              file=sys.stderr)
        return 130


def number(text, flag: str, positive: bool = False) -> float | None:
    """A command-line number, or an InputError naming the flag (None stays None)."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise InputError(f"{flag} must be a {'positive ' if positive else ''}finite number, got {text!r}")
    return value


def integer(text, flag: str, minimum: int | None = 1) -> int | None:
    """A command-line whole number ("1_000" and "1,000" accepted), at least `minimum`."""
    if text is None:
        return None
    try:
        value = int(str(text).replace("_", "").replace(",", ""))
    except ValueError:
        raise InputError(f"{flag} must be a whole number, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise InputError(f"{flag} must be >= {minimum}, got {text!r}")
    return value


def torch_device(name: str):
    """A --device value as a torch.device; unknown names and missing CUDA are bad input."""
    import torch
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device available")
    return device


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split())


def print_json(obj) -> None:
    """The one JSON object a `--json` command prints on stdout."""
    json.dump(obj, sys.stdout, indent=None, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def main(argv=None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
