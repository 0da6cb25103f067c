"""`sramsim` command line: a thin layer over the library; each subcommand lives in sramsim.commands.

Every subcommand module defines `register(subparsers)`, which adds its parser and sets
`func=run(args) -> int`. Bad input (InputError, missing files, bad values, argparse's own
refusals) prints one line and exits 2; a runtime failure (RunError, a full disk) one line and 1.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import math
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, overload

# check_writable and friends are imported from here by the subcommands.
from sramsim.errors import (  # noqa: F401
    MAX_THREADS,
    InputError,
    RunError,
    check_ber,
    check_device,
    check_writable,
)

if TYPE_CHECKING:
    import os

    import torch

    from sramsim.analysis.executors import Execution
    from sramsim.inject.layout import MemoryLayout
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.memory.curves import BerCurve
    from sramsim.nn.data import Dataset

# OSErrors about the path the user gave, not the machine: exit status 2 like other bad input
BAD_PATH_ERRNOS = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EACCES,
                   errno.EROFS, errno.ELOOP, errno.EINVAL)
COMMANDS = ("profile", "train_base", "sweep", "energy", "demo", "vuln", "dram", "sparkxd", "plan")


class Parser(argparse.ArgumentParser):
    """argparse whose refusals are one line (no usage block): "PROG: error: argument --by:
    invalid choice: 'foo' (choose from layer, bit, both)". Subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if "invalid choice" in message:          # (choose from 'a', 'b') -> (choose from a, b)
            head, _, choices = message.partition("(choose from ")
            message = head + "(choose from " + choices.replace("'", "")
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "sramsim", package: str = "sramsim.commands",
                 commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser of `prog`: one subcommand per module `package.NAME` for NAME in `commands`."""
    from sramsim._version import __version__
    parser = Parser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        # No try/except: a subcommand module that fails to import is a bug to surface, not a
        # command to drop silently.
        importlib.import_module(f"{package}.{name}").register(sub)
    return parser


def run_main(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and turn bad input into one line on stderr with exit status 2."""
    from sramsim.commands import config
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    try:
        config.apply(parser, args, argv)        # --config FILE.toml of the commands that take it
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, FileExistsError) as exc:
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a name too long for the file system is bad input; a full disk or an I/O error is a
        # runtime failure (what finished is kept: results are written as they finish)
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if exc.errno in BAD_PATH_ERRNOS else 1
    except RunError as exc:
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; finished results are kept, re-run to resume",
              file=sys.stderr)
        return 130


def flagged(exc: InputError, names: Collection[str] | Mapping[str, str]) -> InputError:
    """`exc` with the parameter names the library wrote (`names`: e.g. TrainOptions' fields, or
    a {name: flag} dict where they differ) written as the flags a user typed: "randbet_p must
    ..." -> "--randbet-p must ...". Names with an underscore are replaced wherever they stand; a
    plain name only as the first word."""
    text = str(exc)
    flags = names if isinstance(names, dict) else {}
    for name in sorted(names, key=len, reverse=True):
        flag = flags.get(name) or "--" + name.replace("_", "-")
        if "_" in name:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flag, text)
        elif re.match(rf"{re.escape(name)}[ :]", text):
            text = flag + text[len(name):]
    return InputError(text)


@overload
def number(text: None, flag: str, positive: bool = ..., minimum: float | None = ...,
           maximum: float | None = ...) -> None: ...
@overload
def number(text: str | float, flag: str, positive: bool = ..., minimum: float | None = ...,
           maximum: float | None = ...) -> float: ...
def number(text: str | float | None, flag: str, positive: bool = False,
           minimum: float | None = None, maximum: float | None = None) -> float | None:
    """A finite command-line number within [minimum, maximum] (None stays None), or an
    InputError naming the flag."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise InputError(f"{flag} must be a {'positive ' if positive else ''}finite number, got "
                         f"{text!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{flag} must be >= {minimum:g}, got {text!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{flag} must be <= {maximum:g}, got {text!r}")
    return value


MAX_SEED = 2 ** 63 - 1   # torch.Generator.manual_seed takes at most a 64-bit integer


@overload
def integer(text: None, flag: str, minimum: int | None = ..., maximum: int | None = ...) -> None:
    ...
@overload
def integer(text: str | int, flag: str, minimum: int | None = ...,
            maximum: int | None = ...) -> int: ...
def integer(text: str | int | None, flag: str, minimum: int | None = 1,
            maximum: int | None = None) -> int | None:
    """A command-line whole number ("1_000" and "1,000" accepted) in [minimum, maximum]."""
    if text is None:
        return None
    try:
        value = int(str(text).replace("_", "").replace(",", ""))
    except ValueError:
        raise InputError(f"{flag} must be a whole number, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise InputError(f"{flag} must be >= {minimum}, got {text!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{flag} must be <= {maximum}, got {text!r}")
    return value


# fault maps a command evaluates per point (vuln --models, tolerance --maps, fusion eval
# --models): each is a test-set evaluation (times the groups in vuln); above this a run cannot
# finish in days, so it is refused up front rather than left to hang
MAX_MAPS = 100_000


@overload
def maps(text: None, flag: str) -> None: ...
@overload
def maps(text: str | int, flag: str) -> int: ...
def maps(text: str | int | None, flag: str) -> int | None:
    """A command-line count of fault maps in [1, MAX_MAPS]."""
    return integer(text, flag, minimum=1, maximum=MAX_MAPS)


# worker processes: each imports torch (hundreds of MB), so a local pool is bounded by this
# machine's cores; a Ray cluster's actors by a count no cluster here reaches
LOCAL_WORKERS_PER_CORE = 4
MAX_RAY_WORKERS = 1024


@overload
def workers(text: None, flag: str = ..., executor: str = ...) -> None: ...
@overload
def workers(text: str | int, flag: str = ..., executor: str = ...) -> int: ...
def workers(text: str | int | None, flag: str = "--workers",
            executor: str = "local") -> int | None:
    """A command-line worker count: at most 4 per core of this machine for local processes,
    at most MAX_RAY_WORKERS Ray actors."""
    import os
    top = MAX_RAY_WORKERS if executor == "ray" else LOCAL_WORKERS_PER_CORE * (os.cpu_count() or 1)
    value = integer(text, flag, minimum=1)
    if value is not None and value > top:
        where = "Ray actors" if executor == "ray" else \
            f"local processes ({LOCAL_WORKERS_PER_CORE} per core of this machine)"
        raise InputError(f"{flag} must be <= {top} {where}, got {text!r}")
    return value


@overload
def threads(text: None, flag: str = ...) -> None: ...
@overload
def threads(text: str | int, flag: str = ...) -> int: ...
def threads(text: str | int | None, flag: str = "--threads") -> int | None:
    """A command-line thread count in [1, MAX_THREADS] (torch crashes far above it)."""
    return integer(text, flag, minimum=1, maximum=MAX_THREADS)


@overload
def seed(text: None, flag: str = ...) -> None: ...
@overload
def seed(text: str | int, flag: str = ...) -> int: ...
def seed(text: str | int | None, flag: str = "--seed") -> int | None:
    """A command-line seed: a whole number in [0, 2^63 - 1]."""
    return integer(text, flag, minimum=0, maximum=MAX_SEED)


@overload
def ber(text: None, flag: str = ..., curve: BerCurve | None = ...) -> None: ...
@overload
def ber(text: str | float, flag: str = ..., curve: BerCurve | None = ...) -> float: ...
def ber(text: str | float | None, flag: str = "--ber",
        curve: BerCurve | None = None) -> float | None:
    """A command-line bit error rate in [0, 1] (None stays None); with `curve`, also no higher
    than the curve's highest BER (its voltage, which the energy model needs, is unknown above)."""
    if text is None:
        return None
    value = check_ber(text, flag)
    if curve is not None and math.isfinite(curve.v_min) and value > curve.ber(curve.v_min):
        top = curve.ber(curve.v_min)
        raise InputError(f"{flag} {text}: above {top:g}, the highest bit error rate of curve "
                         f"{curve.name!r}")
    return value


def ber_range(text: str, flag: str = "--ber-range") -> tuple[float, float]:
    """LOW,HIGH: a BER range with 0 < LOW < HIGH < 1."""
    parts = [p for p in str(text).split(",")]
    if len(parts) != 2:
        raise InputError(f"{flag} must be LOW,HIGH (e.g. 1e-6,1e-1), got {text!r}")
    low = check_ber(parts[0].strip(), f"{flag} LOW", allow_one=False)
    high = check_ber(parts[1].strip(), f"{flag} HIGH", allow_one=False)
    if not 0.0 < low < high:
        raise InputError(f"{flag} needs 0 < LOW < HIGH, got {text!r}")
    return low, high


@overload
def voltage(text: None, flag: str, low: float, nominal: float, what: str) -> None: ...
@overload
def voltage(text: str | float, flag: str, low: float, nominal: float, what: str) -> float: ...
def voltage(text: str | float | None, flag: str, low: float, nominal: float,
            what: str) -> float | None:
    """A command-line voltage in [low, nominal] (None stays None): `what` ("chip 'c0'", "curve
    'finfet14'") is valid down to `low`, and above its nominal voltage nothing is known."""
    value = number(text, flag, positive=True)
    if value is not None and value < low - 1e-9:
        raise InputError(f"{flag} {text}: below the lowest voltage {low:g} of {what}")
    if value is not None and value > nominal + 1e-9:
        raise InputError(f"{flag} {text}: above the nominal voltage {nominal:g} of {what}")
    return value


def add_layout_arguments(p: argparse.ArgumentParser, planned_at: str,
                         mapping_default: str = "linear") -> None:
    """--mapping, --bit-placement, --ecc and --ecc-policy: how the weights are stored, as every
    command that faults weights takes them (`memory_layout` turns them into one MemoryLayout).
    planned_at: when a bit placement is planned, e.g. "at each point's voltage"."""
    from sramsim.inject.bit_placement import POLICIES
    from sramsim.inject.layout import MAPPINGS
    p.add_argument("--mapping", default=mapping_default, metavar="M",
                   help=f"where weight words go in the memory: {MAPPINGS[0]} (at a word offset; "
                        f"any chip), or on a DRAM chip {', '.join(MAPPINGS[1:])} (error-aware: "
                        f"EDEN, the most reliable partitions first) (default {mapping_default})")
    p.add_argument("--bit-placement", "--placement", dest="bit_placement", default="linear",
                   metavar="P",
                   help="fault-aware bit placement (ReSpawn), planned from each chip's map "
                        f"{planned_at}: {POLICIES[0]} (none, default), shuffle (rotate each word's "
                        "bits so code MSBs sit on good cells) or skip-faulty-words "
                        "(--placement is its old name)")
    p.add_argument("--ecc", metavar="CODE", help="weights stored with SECDED check bits in the "
                   "same faulty memory: secded72 (72,64) or secded13 (13,8); decoded per "
                   "codeword, results carry the errors left after decoding")
    p.add_argument("--ecc-policy", default="keep", metavar="P",
                   help="with --ecc, a detected uncorrectable word: keep its raw data (default) "
                        "or zero its weights")


LAYOUT_FLAGS = {"mapping": "--mapping", "bit_placement": "--bit-placement", "ecc": "--ecc",
                "ecc_policy": "--ecc-policy"}


def memory_layout(args: argparse.Namespace, chip_map: str | None = None) -> MemoryLayout:
    """The MemoryLayout of the flags `add_layout_arguments` added: the one place the CLI builds
    it (checked by the layout's own rule, naming the flags). chip_map: how this command's user
    gives a known chip map (e.g. "--profile"), when none was given; a bit placement or a DRAM
    mapping, which need one, is then refused."""
    from sramsim.inject.layout import MemoryLayout, check_fields
    fields = {k: getattr(args, k) for k in LAYOUT_FLAGS}
    check_fields(fields, LAYOUT_FLAGS)
    layout = MemoryLayout(**fields)
    if chip_map is not None and layout.bit_placement != "linear":
        raise InputError(f"--bit-placement {layout.bit_placement} needs a known chip map "
                         f"({chip_map})")
    if chip_map is not None and layout.dram:
        raise InputError(f"--mapping {layout.mapping} needs DRAM chip profiles ({chip_map})")
    return layout


def add_execution_arguments(p: argparse.ArgumentParser, what: str = "fault maps") -> None:
    """--executor, --workers, --threads, --ray-address and --no-progress: where the evaluations
    of a command run (`execution` turns them into one Execution)."""
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help=f"where the {what} are evaluated: local (this machine, default) or ray "
                        "(a Ray cluster; README: Sweeps on a Ray cluster)")
    p.add_argument("--workers", default=None, metavar="W",
                   help="parallel workers (default 1: in this process; with --executor ray: one "
                        "per --threads CPUs of the cluster)")
    p.add_argument("--threads", default="1", metavar="T",
                   help="torch and numba threads per worker (default 1; results are identical "
                        "for any --workers/--executor at the same --threads)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="the head (GCS) address of a Ray cluster to join, e.g. 127.0.0.1:6379 "
                        "(default: start a local Ray)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def execution(args: argparse.Namespace) -> Execution:
    """The Execution of the flags `add_execution_arguments` added (checked before any work)."""
    from sramsim.analysis.executors import Execution
    if args.ray_address and args.executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    count = workers(args.workers, executor=args.executor)
    if count is None and args.executor != "ray":
        count = 1
    if args.ray_address:
        from sramsim.analysis.executors import probe_ray_address
        try:            # HOST:PORT, and a cluster answering there, before any work
            probe_ray_address(args.ray_address)
        except InputError as exc:
            raise InputError(str(exc).replace("Ray address", "--ray-address", 1)) from None
    return Execution(args.executor, count, threads(args.threads), args.ray_address,
                     progress=not args.no_progress)


def load_quantized(path: str | os.PathLike, bits: str | None = None, scheme: str | None = None
                   ) -> tuple[QuantizedModel, dict]:
    """(QuantizedModel, meta) of a checkpoint, quantized as it was trained unless --bits /
    --scheme override it; a model that cannot be quantized is bad input naming the file."""
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.nn.models import load_checkpoint
    model, meta = load_checkpoint(path)
    n_bits = int(bits) if bits is not None else int(meta.get("bits") or 8)
    scheme = scheme or meta.get("scheme") or "symmetric"
    try:
        return QuantizedModel(model, bits=n_bits, scheme=scheme, clip=meta.get("clip")), meta
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def check_channels(path: str | os.PathLike, meta: dict, dataset: Dataset) -> None:
    """Refuse a dataset whose channel count differs from the checkpoint's."""
    in_ch = meta.get("in_channels")
    if in_ch is not None and int(in_ch) != dataset.in_channels:
        raise InputError(f"{path} expects {in_ch}-channel inputs but {dataset.name} has "
                         f"{dataset.in_channels}")


def torch_device(name: str) -> torch.device:
    """A --device value as a torch.device; unknown names and missing CUDA are bad input."""
    try:
        return check_device(name)
    except InputError as exc:
        reason = str(exc).split(": ", 1)[-1]           # without the library's "device 'x'"
        raise InputError(f"--device {name}: {reason}") from None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split())


def print_json(obj: object) -> None:
    """The one JSON object a `--json` command prints on stdout."""
    json.dump(obj, sys.stdout, indent=None, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o: object) -> Any:
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    """The `sramsim` console script."""
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
