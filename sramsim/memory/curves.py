"""Voltage -> bit error rate (BER) curves.

A curve answers "what fraction of SRAM cells fail at supply voltage V" and the inverse question.
Voltages are in the curve's own unit (normalised to the nominal Vmin = 1.0 for the built-ins).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from sramsim.errors import InputError, check_number

# 14 nm FinFET SRAM, normalised voltage -> BER. Published with NeuralFuse (Sun et al., NeurIPS
# 2024), measured by Chandramoorthy et al.; 1% BER at 0.833 is the operating point used there.
FINFET14 = (
    (1.000, 0.958, 0.917, 0.875, 0.833, 0.792, 0.750),
    (0.0, 1.907e-6, 6.866e-5, 1.29e-3, 1.115e-2, 5.573e-2, 0.2056),
)

BUILTINS = {"finfet14": FINFET14}


class BerCurve:
    """Bit error rate as a function of supply voltage; monotone: lower voltage, more errors.

    Table curves interpolate log10(BER) piecewise-linearly in V; a segment that touches a zero-BER
    point is interpolated linearly in BER (log10(0) has no line to draw).
    """

    def __init__(self, voltages: ArrayLike, bers: ArrayLike, name: str = "table",
                 mu: float | None = None, sigma: float | None = None):
        self.name = name
        self.mu = mu
        self.sigma = sigma
        self._v = np.asarray(voltages, dtype=np.float64)
        self._b = np.asarray(bers, dtype=np.float64)

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def builtin(cls, name: str) -> BerCurve:
        """A published curve by name (`finfet14`: 14 nm FinFET SRAM, normalised voltages)."""
        if name not in BUILTINS:
            raise InputError(f"unknown BER curve {name!r}; built-ins: "
                             f"{', '.join(sorted(BUILTINS))}")
        v, b = BUILTINS[name]
        curve = cls.from_table(v, b)
        curve.name = name
        return curve

    @classmethod
    def from_table(cls, voltages: ArrayLike, bers: ArrayLike, name: str = "table") -> BerCurve:
        """A curve from measured (voltage, BER) pairs; ValueError unless finite, in [0, 1] and
        monotone (lower voltage, no fewer errors)."""
        v = np.asarray(voltages, dtype=np.float64).ravel()
        b = np.asarray(bers, dtype=np.float64).ravel()
        if v.shape != b.shape or v.size < 2:
            raise InputError("BER table needs at least two (voltage, ber) pairs of equal length")
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(b))):
            raise InputError("BER table contains NaN or infinite values")
        if np.any(v <= 0):
            raise InputError(f"BER table voltages must be positive, got {v[v <= 0][0]:g}")
        if np.any(b < 0) or np.any(b > 1):
            raise InputError("BER values must lie in [0, 1]")
        order = np.argsort(v)
        v, b = v[order], b[order]
        if np.any(np.diff(v) == 0):
            raise InputError("BER table has repeated voltages")
        if np.any(np.diff(b) > 0):
            raise InputError("BER table is not monotone: BER must not increase with voltage")
        return cls(v, b, name=name)

    @classmethod
    def gaussian(cls, mu: float, sigma: float) -> BerCurve:
        """Each cell's minimum operating voltage ~ N(mu, sigma); BER(V) = P(Vmin > V)."""
        mu = check_number(mu, "gaussian curve mu")
        sigma = check_number(sigma, "gaussian curve sigma", positive=True)
        return cls(np.empty(0), np.empty(0), name=f"gaussian(mu={mu:g},sigma={sigma:g})",
                   mu=float(mu), sigma=float(sigma))

    # --- queries ------------------------------------------------------------------------------
    @property
    def v_min(self) -> float:
        """Lowest voltage the curve knows (-inf for the Gaussian model)."""
        return -np.inf if self.mu is not None else float(self._v[0])

    @property
    def v_max(self) -> float:
        """Highest tabulated voltage (+inf for the Gaussian model); above it the BER stays flat."""
        return np.inf if self.mu is not None else float(self._v[-1])

    def ber(self, v: ArrayLike) -> np.ndarray | float:
        """BER at voltage(s) v. Above the table: the top value; below the table: ValueError."""
        v_arr = np.asarray(v, dtype=np.float64)
        if np.any(np.isnan(v_arr)):
            raise InputError(f"voltage is NaN (curve {self.name!r} needs a number)")
        if self.mu is not None:
            assert self.sigma is not None                 # set together with mu
            out = ndtr((self.mu - v_arr) / self.sigma)
        else:
            if np.any(v_arr < self._v[0] - 1e-12):
                raise InputError(f"voltage below the lowest tabulated voltage {self._v[0]:g} "
                                 f"of curve {self.name!r}")
            out = self._interp_ber(np.minimum(v_arr, self._v[-1]))
        return float(out) if np.ndim(out) == 0 else out

    def voltage(self, ber: ArrayLike) -> np.ndarray | float:
        """Highest voltage at which the BER reaches `ber` (the inverse of `ber`)."""
        b = np.asarray(ber, dtype=np.float64)
        if np.any(np.isnan(b)) or np.any(b < 0) or np.any(b > 1):
            raise InputError("BER must lie in [0, 1]")
        if self.mu is not None:
            out = self.mu - self.sigma * ndtri(b)
        else:
            if np.any(b > self._b[0]):
                raise InputError(f"BER above {self._b[0]:g}, the highest of curve {self.name!r}")
            out = self._interp_voltage(b)
        return float(out) if np.ndim(out) == 0 else out

    def _interp_ber(self, v: np.ndarray) -> np.ndarray:
        vt, bt = self._v, self._b
        log_ok = (bt[:-1] > 0) & (bt[1:] > 0)
        i = np.clip(np.searchsorted(vt, v, side="right") - 1, 0, len(vt) - 2)
        t = (v - vt[i]) / (vt[i + 1] - vt[i])
        with np.errstate(divide="ignore", invalid="ignore"):
            lb = np.log10(bt)
            log_val = 10.0 ** (lb[i] + t * (lb[i + 1] - lb[i]))
        lin_val = bt[i] + t * (bt[i + 1] - bt[i])
        return np.where(log_ok[i], log_val, lin_val)

    def _interp_voltage(self, b: np.ndarray) -> np.ndarray:
        vt, bt = self._v, self._b                  # ascending voltage, non-increasing BER
        positive = bt > 0
        lb_table = np.log10(bt[positive][::-1])     # ascending
        v_table = vt[positive][::-1]
        with np.errstate(divide="ignore"):
            out = np.interp(np.log10(b), lb_table, v_table)
        if not positive.all():
            # Below the smallest positive BER the segment runs to a zero-BER point: linear in BER.
            b_min, v_at_min = bt[positive][-1], vt[positive][-1]
            v_zero = vt[~positive][0]
            low = np.flatnonzero(b < b_min)
            if low.size:
                out = np.array(out, dtype=np.float64, ndmin=1)
                flat = out.reshape(-1)
                flat[low] = v_zero + (v_at_min - v_zero) * (b.reshape(-1)[low] / b_min)
                out = out.reshape(np.shape(b))
        return out

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(voltages, bers) for storing alongside a profile; the Gaussian is sampled densely."""
        if self.mu is None:
            return self._v.copy(), self._b.copy()
        assert self.sigma is not None                     # set together with mu
        v = np.linspace(self.mu - 5 * self.sigma, self.mu + 6 * self.sigma, 45)
        return v, np.asarray(self.ber(v))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BerCurve):
            return NotImplemented
        return ((self.name, self.mu, self.sigma) == (other.name, other.mu, other.sigma)
                and np.array_equal(self._v, other._v) and np.array_equal(self._b, other._b))

    def __hash__(self) -> int:
        return hash((self.name, self.mu, self.sigma, self._v.tobytes(), self._b.tobytes()))

    def __repr__(self) -> str:
        return f"BerCurve({self.name})"
