"""The normalisation layer the base models use: BatchNorm, or GroupNorm for bit-error robustness.

Stutz et al. (MLSys 2021) found BatchNorm hurts robustness to weight bit errors (its running
statistics amplify perturbed activations); GroupNorm has no statistics and avoids that.
"""
from __future__ import annotations

from torch import nn

from sramsim.errors import InputError

NORMS = ("batch", "group")


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise InputError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def groups_for(channels: int, target: int = 32, min_per_group: int = 4) -> int:
    """Largest divisor of `channels` not above min(target, channels // min_per_group)."""
    limit = max(1, min(target, channels // min_per_group))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def norm2d(norm: str, channels: int) -> nn.Module:
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(groups_for(channels), channels)
