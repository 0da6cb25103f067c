"""The operating-point rule: the lowest supply voltage (or highest bit error rate) whose accuracy
stays within a margin of a **reference** accuracy, with the reference always named.

"Tolerable" means nothing without saying tolerable *with respect to what*. A `Reference` is one
of:

- own clean (`Reference.own_clean()`): the fault-free quantized accuracy of the model being
  judged (each model against itself);
- a given accuracy (`Reference.given(acc, label)`): e.g. a control model's clean accuracy, which
  is SparkXD's rule ("a target accuracy within 1% of the baseline design, i.e. the SNN without
  DRAM errors"), or the stricter of several (`Reference.strictest`), e.g. within 1 point of both
  the model's own and the unprotected model's clean accuracy.

Comparing methods is only fair against the same reference; studies state which one they use.
The pass test is `passes`; sweeps (voltages from nominal down) use `lowest_within` /
`first_failure`, the tolerance search (`sramsim.analysis.tolerance`) applies `passes` per point.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sramsim.errors import InputError

# Float noise allowance of the pass test: a mean that equals reference - margin up to rounding
# passes (accuracies are sums of 0/1 over the same samples, margins decimal fractions).
TOLERANCE = 1e-12


@dataclass(frozen=True)
class Reference:
    """The accuracy a model must stay within the margin of (see the module docstring)."""

    kind: str = "own-clean"            # "own-clean" | "given"
    accuracy: float | None = None      # the given accuracy (kind "given")
    label: str = "own clean accuracy"

    def __post_init__(self) -> None:
        if self.kind not in ("own-clean", "given"):
            raise InputError(f"reference kind must be 'own-clean' or 'given', got {self.kind!r}")
        if self.kind == "given":
            a = self.accuracy
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) \
                    or not 0.0 <= a <= 1.0:
                raise InputError(f"reference accuracy must be a number in [0, 1], got {a!r}")
            object.__setattr__(self, "accuracy", float(a))
        elif self.accuracy is not None:
            raise InputError("the own-clean reference takes no accuracy")

    @classmethod
    def own_clean(cls) -> Reference:
        """Each model's own fault-free quantized accuracy."""
        return cls()

    @classmethod
    def given(cls, accuracy: float, label: str) -> Reference:
        """A fixed accuracy, named by `label` (e.g. "control snn-fc400 clean accuracy")."""
        return cls("given", accuracy, label)

    @classmethod
    def strictest(cls, accuracies: dict[str, float]) -> Reference:
        """The highest of several named accuracies: within the margin of every one of them."""
        if not accuracies:
            raise InputError("strictest reference needs at least one accuracy")
        label, value = max(accuracies.items(), key=lambda kv: kv[1])
        names = " and ".join(accuracies)
        return cls("given", value, f"max({names}) = {label}")

    def value(self, own_clean: float) -> float:
        """The reference accuracy for a model whose own clean accuracy is `own_clean`."""
        if self.kind == "own-clean":
            return float(own_clean)
        assert self.accuracy is not None            # a "given" reference holds its accuracy
        return float(self.accuracy)

    def describe(self, own_clean: float | None = None) -> dict:
        """JSON: kind, label and (where known) the accuracy it stands for."""
        value = self.accuracy if own_clean is None and self.kind == "given" else \
            None if own_clean is None else self.value(own_clean)
        return {"kind": self.kind, "label": self.label, "accuracy": value}


def check_margin(margin: object) -> float:
    """`margin` as a float in (0, 1), else an InputError."""
    try:
        m = float(margin)  # type: ignore[arg-type]  # what float() refuses is caught
    except (TypeError, ValueError):
        raise InputError(f"margin must be a number in (0, 1), got {margin!r}") from None
    if not (math.isfinite(m) and 0.0 < m < 1.0):
        raise InputError(f"margin must lie in (0, 1), got {margin!r}")
    return m


def passes(accuracy: float, reference_accuracy: float, margin: float) -> bool:
    """Whether `accuracy` is within `margin` of `reference_accuracy` (at least it minus margin)."""
    return bool(accuracy >= reference_accuracy - margin - TOLERANCE)


def lowest_within(points: Iterable[dict], reference_accuracy: float, margin: float,
                  key: str = "accuracy_mean") -> dict | None:
    """Of sweep points (dicts with "voltage" and `key`), the lowest voltage whose accuracy, and
    that of every voltage above it, passes; None if the highest voltage already fails. Points
    without an accuracy (None) are skipped."""
    best = None
    for p in sorted(points, key=lambda q: -q["voltage"]):
        if p.get(key) is None:
            continue
        if not passes(p[key], reference_accuracy, margin):
            break
        best = p
    return best


def first_failure(points: Iterable[dict], reference_accuracy: float, margin: float,
                  key: str = "accuracy_mean") -> dict | None:
    """The highest voltage whose accuracy fails (more than `margin` below the reference)."""
    for p in sorted(points, key=lambda q: -q["voltage"]):
        if p.get(key) is not None and not passes(p[key], reference_accuracy, margin):
            return p
    return None
