"""The planner's search over per-domain energy-accuracy curves (pure functions, no evaluation).

Curves are measured at an operating point, the best single voltage V* (every domain at V*, the
assignment that already passes): each domain d has options, the grid voltages it was moved to
alone (every other domain staying at V*), with
  E_d(V): its energy per inference at V, and
  L_d(V): the accuracy it costs there on the validation maps, acc(all at V*) minus the mean
          accuracy with d at V; 0 at V*, negative above it (raising a domain buys accuracy
          back), made monotone (a lower voltage never costs less: L_d(V) = max over V' >= V),
          since faults only add up as V falls (nesting).
Measuring at V* rather than with the other domains at nominal keeps the interactions between
domains that the budget is spent on (faults in one layer hurt more when the next is faulty too).
Treating the costs as additive, the cheapest assignment within the budget (the slack of V*
against the reference) is a multiple-choice knapsack; its Lagrangian relaxation,
min sum_d E_d(V_d) + lambda * L_d(V_d), separates per domain. Every lambda at which some
domain's choice changes (the breakpoints (E_d(V1) - E_d(V2)) / (L_d(V2) - L_d(V1))) gives one
candidate; `candidates` returns them all, cheapest first. Additivity is only a prediction: the
planner checks each candidate it takes jointly on the validation maps, and then lowers domains
one option at a time (`greedy_order`), each step again checked jointly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EPS_LOSS = 1e-4       # a step predicted to lose nothing still costs this much in the ratio
ACCEPT_RULES = ("every-map", "mean")    # the planner's pass tests (`judged`)


@dataclass(frozen=True)
class Curve:
    """One domain's options: voltages (descending), energy and cost (loss) at each."""

    name: str
    voltages: tuple
    energy: tuple
    loss: tuple

    def at(self, v: float) -> int:
        """Index of option voltage `v`."""
        return self.voltages.index(v)


def monotone_losses(voltages: Sequence[float], accuracies: Sequence[float],
                    base: float) -> list[float]:
    """Costs base - accuracy for voltages in descending order, each at least the cost of every
    higher voltage."""
    return running_max(voltages, [base - a for a in accuracies])


def running_max(voltages: Sequence[float], losses: Sequence[float]) -> list[float]:
    """Losses for voltages in descending order, each raised to the largest loss of any higher
    voltage (faults only add up as the voltage falls)."""
    out, worst = [], -float("inf")
    for _, x in zip(voltages, losses, strict=True):
        worst = max(worst, x)
        out.append(worst)
    return out


def judged(accuracies: Sequence[float], rule: str) -> float:
    """The accuracy a pass test reads from one accuracy per map: the worst map's ("every-map":
    each map must hold the budget) or their mean ("mean")."""
    return min(accuracies) if rule == "every-map" else sum(accuracies) / len(accuracies)


def map_loss(base: Sequence[float], moved: Sequence[float], rule: str) -> float:
    """The cost of a move measured on the same maps: `base` and `moved` hold one accuracy per
    map. "mean": the mean drop; "every-map": the largest drop on any map (an assignment must hold
    the budget on each map, and the sum of the domains' worst drops bounds the worst map's)."""
    drops = [b - m for b, m in zip(base, moved, strict=True)]
    return max(drops) if rule == "every-map" else sum(drops) / len(drops)


@dataclass(frozen=True)
class Candidate:
    """An assignment (one option voltage per domain, in domain order) with its predicted loss
    (sum of the domains' losses) and its energy."""

    voltages: tuple
    loss: float
    energy: float


def candidates(curves: list[Curve]) -> list[Candidate]:
    """The Lagrangian solutions for every breakpoint lambda (and lambda 0 and infinity), distinct,
    cheapest first (ties: smaller predicted loss first)."""
    lambdas = {0.0}
    for c in curves:
        for i in range(len(c.voltages)):
            for j in range(i + 1, len(c.voltages)):
                dl = c.loss[j] - c.loss[i]
                de = c.energy[i] - c.energy[j]
                if dl > 0 and de > 0:
                    lambdas.add(de / dl)
    points = sorted(lambdas)
    # probe just below and just above every breakpoint: ties at lambda resolve both ways
    probes = [0.0] + [x * f for x in points if x > 0 for f in (1 - 1e-9, 1 + 1e-9)] + [float("inf")]
    seen: dict = {}
    for lam in probes:
        choice = tuple(_best(c, lam) for c in curves)
        if choice not in seen:
            picked = list(zip(curves, choice, strict=True))
            seen[choice] = Candidate(tuple(c.voltages[i] for c, i in picked),
                                     sum(c.loss[i] for c, i in picked),
                                     sum(c.energy[i] for c, i in picked))
    return sorted(seen.values(), key=lambda k: (k.energy, k.loss))


def _best(c: Curve, lam: float) -> int:
    if lam == float("inf"):   # loss first, then energy
        return min(range(len(c.voltages)), key=lambda i: (c.loss[i], c.energy[i]))
    return min(range(len(c.voltages)), key=lambda i: (c.energy[i] + lam * c.loss[i], c.loss[i]))


def greedy_order(curves: list[Curve], voltages: tuple, frozen: set) -> list[tuple[int, float]]:
    """Moves (domain index, next lower option voltage) from the assignment `voltages`, best
    first: energy saved per unit of predicted extra loss. Frozen domains and domains at their
    lowest option make no move."""
    moves = []
    for d, (c, v) in enumerate(zip(curves, voltages, strict=True)):
        if d in frozen or v not in c.voltages or c.at(v) + 1 >= len(c.voltages):
            continue      # (a voltage off the domain's options: it was not measured there)
        i = c.at(v)
        gain = c.energy[i] - c.energy[i + 1]
        extra = c.loss[i + 1] - c.loss[i]
        moves.append((gain / (extra + EPS_LOSS), -d, d, c.voltages[i + 1]))
    moves.sort(reverse=True)
    return [(d, v) for _, _, d, v in moves]
