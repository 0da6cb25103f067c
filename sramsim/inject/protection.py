"""The two protections of a weight memory, ECC and fault-aware bit placement, checked together.

Every command that faults weights (`sramsim sweep`, `sramsim vuln`, `fusion eval`) takes the same
three options; this is the one place that knows how they combine: a policy for uncorrectable
words needs a code, and bit placement needs a known chip map and is not modelled on top of ECC.
"""
from __future__ import annotations

from sramsim.errors import InputError
from sramsim.inject import bit_placement as BP
from sramsim.inject.ecc import check_policy, get_code


def check_protection(ecc: str | None, ecc_policy: str = "keep", bit_placement: str = "linear",
                     map_hint: str | None = None) -> str | None:
    """The ECC code's canonical name (None without ECC) once the three options fit together.

    map_hint: how the caller's user gives a known chip map (e.g. "--profile"), named when
    `bit_placement` needs one; None when a chip map is there (the check is then skipped).
    Bad values or combinations raise a one-line InputError naming the flags.
    """
    code = None if ecc is None else get_code(ecc).name
    if code is None and ecc_policy != "keep":
        raise InputError("--ecc-policy needs --ecc")
    check_policy(ecc_policy)
    BP.check_policy(bit_placement)
    if bit_placement != "linear":
        if code is not None:
            raise InputError(f"--placement {bit_placement} with --ecc is not modelled "
                             "(use one of the two)")
        if map_hint is not None:
            raise InputError(f"--placement {bit_placement} needs a known chip map ({map_hint})")
    return code
