"""Summary statistics of accuracies over fault maps: mean, sample std and a Student-t 95% interval.

One place for them, so every report (sweep, vulnerability, fusion evaluation, benchmarks) computes
the same numbers the same way. Values are per independent unit (a chip, a random map); averaging
dependent repeats first (e.g. placements of one chip) is the caller's job.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats

from sramsim.errors import InputError


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        raise InputError("no values to summarise")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def ci95_halfwidth(values: Iterable[float]) -> float:
    """Half-width of the two-sided 95% Student-t interval of the mean (0.0 for a single value)."""
    a = np.asarray(list(values), dtype=np.float64)
    n = a.size
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * a.std(ddof=1) / math.sqrt(n))
