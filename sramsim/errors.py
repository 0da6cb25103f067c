"""Errors that mean "bad input" (the CLI prints them as one line and exits with status 2), the one
runtime failure the CLI reports the same way (exit status 1), and the range checks every layer
shares."""
from __future__ import annotations

import math
import os
from collections.abc import Collection
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:
    import torch

_T = TypeVar("_T")


class InputError(ValueError):
    """Bad input from the user: a wrong path, shape, voltage, option or file."""


class InputTypeError(InputError, TypeError):
    """Bad input of the wrong type (a str where a model is expected): an InputError for the CLI,
    and still a TypeError for Python callers that catch that."""


class RunError(RuntimeError):
    """A run that failed for a reason outside its input (every worker lost, the disk full): the
    CLI prints it as one line and exits with status 1; finished results are kept."""


class ProfileError(InputError):
    """A chip profile file that is missing, corrupt, foreign or inconsistent (message names it)."""


class DataError(InputError):
    """A dataset that is missing or malformed (the message says where it was looked for and how
    to get it)."""


NAME_MAX = 255          # bytes in one file or folder name (ext4, xfs, btrfs, tmpfs, APFS)
# torch and numba threads of one process: far above any CPU's hardware threads, far below a
# crash (torch's OpenMP runtime segfaults at 100000; 1024 runs)
MAX_THREADS = 1024


def check_threads(value: object, what: str = "threads") -> int:
    """`value` as a thread count in [1, MAX_THREADS], else an InputError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        raise InputError(f"{what} must be a whole number in [1, {MAX_THREADS}], got {value!r}")
    return value


def check_choice(value: _T, choices: Collection[str], what: str) -> _T:
    """`value` if it is one of `choices`, else an InputError naming `what` and the choices."""
    if value not in choices:
        raise InputError(f"{what} {value!r}: use one of {', '.join(choices)}")
    return value


def check_number(value: object, what: str, low: float = -math.inf, high: float = math.inf,
                 positive: bool = False) -> float:
    """`value` as a finite float in [low, high] (> 0 with `positive`), else an InputError naming
    `what`: the one range check for numbers read from files, specs and parameters."""
    if positive:
        span = "a positive number"
    elif high == math.inf:
        span = f"a finite number >= {low:g}" if low > -math.inf else "a finite number"
    else:
        span = f"a finite number in [{low:g}, {high:g}]"
    try:
        x = float(value)  # type: ignore[arg-type]  # anything float() takes; the rest refused
    except (TypeError, ValueError):
        raise InputError(f"{what} must be {span}, got {value!r}") from None
    ok = math.isfinite(x) and low <= x <= high and (x > 0 or not positive)
    if isinstance(value, bool) or not ok:
        raise InputError(f"{what} must be {span}, got {value!r}")
    return x


def check_ber(value: object, what: str = "bit error rate", allow_one: bool = True) -> float:
    """`value` as a float in [0, 1] ([0, 1) with allow_one=False), else an InputError naming `what`.

    The one BER range check: the library, the CLI (`what` = the flag) and file readers call it.
    """
    try:
        ber = float(value)  # type: ignore[arg-type]  # anything float() takes; the rest refused
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number in [0, 1], got {value!r}") from None
    top_ok = ber <= 1.0 if allow_one else ber < 1.0
    if math.isnan(ber) or ber < 0.0 or not top_ok:
        raise InputError(f"{what} must lie in [0, 1{']' if allow_one else ')'}, got {value!r}")
    return ber


def check_writable(path: str | os.PathLike[str], what: str, folder: bool = False) -> None:
    """Refuse, before any work, an output `path` that cannot be written: InputError naming `what`.

    The nearest existing ancestor must be a folder we can create files in (probed with a
    temporary file, so a read-only mount or a path under a regular file fails even for root);
    folders in between are created later by the writer. An existing `path` must be a folder
    when `folder`, and must not be one otherwise.
    """
    import tempfile
    from pathlib import Path

    if not str(path).strip():
        raise InputError(f"{what}: empty path (name a {'folder' if folder else 'file'})")
    path = Path(path)
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise InputError(f"{what} {long[0][:40]}...: name of {len(os.fsencode(long[0]))} bytes, "
                         f"longer than the {NAME_MAX} a file system allows")
    if path.exists() and path.is_dir() != folder:
        raise InputError(f"{what} {path}: exists and is {'not ' if folder else ''}a directory")
    parent = path if folder and path.is_dir() else path.parent
    parent = parent if str(parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {path}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write in {parent} "
                         f"({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: cannot write in {parent} (permission denied)")


@overload
def check_device(device: None) -> None: ...
@overload
def check_device(device: str | torch.device) -> torch.device: ...
def check_device(device: str | torch.device | None) -> torch.device | None:
    """`device` as a torch.device (None stays None), else an InputError: an unknown name, or a
    CUDA device on a machine without one (torch would raise a bare AssertionError later)."""
    if device is None:
        return None
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r}: no CUDA device available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {str(device)!r}: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return dev
