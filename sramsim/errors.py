"""Errors that mean "bad input" (the CLI prints them as one line and exits with status 2), and the
range checks every layer shares."""
from __future__ import annotations

import math


class InputError(ValueError):
    """Bad input from the user: a wrong path, shape, voltage, option or file."""


class ProfileError(InputError):
    """A chip profile file that is missing, corrupt, foreign or inconsistent (message names it)."""


class DataError(InputError):
    """A dataset that is missing or malformed (message says where it was looked for and how to get it)."""


def check_ber(value, what: str = "bit error rate", allow_one: bool = True) -> float:
    """`value` as a float in [0, 1] ([0, 1) with allow_one=False), else an InputError naming `what`.

    The one BER range check: the library, the CLI (`what` = the flag) and file readers call it.
    """
    try:
        ber = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number in [0, 1], got {value!r}") from None
    top_ok = ber <= 1.0 if allow_one else ber < 1.0
    if math.isnan(ber) or ber < 0.0 or not top_ok:
        raise InputError(f"{what} must lie in [0, 1{']' if allow_one else ')'}, got {value!r}")
    return ber
