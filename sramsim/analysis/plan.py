"""The voltage planner: the minimum-energy assignment of supply voltages to a model's memory
domains whose accuracy stays within a margin of a reference (`sramsim plan`).

Memories (`Memories`): the weight memory (chips: random from a curve, or profiles) split into
domains (`sramsim.inject.domains.WeightDomains`: one, per layer, per bank, per DRAM partition,
per bit significance),
and optionally an activation buffer (chips of its own; `sramsim.inject.activations`), one more
domain. Energy: `sramsim.analysis.domain_energy`.

Fault maps and images (the rule that keeps the choice honest): every choice is made on
*validation* images (held out by the caller, e.g. the last training images) and *validation*
maps -- `sramsim.inject.draws.fixed_draws(..., purpose="validation")`: each chip at odd
placement offsets, never a test map; the activation buffer's maps with seed + 1. The chosen
assignment and the best single voltage are then evaluated on *test* images and fresh *test*
maps (purpose "test"), with 95% intervals over the maps. `val_maps` M and `check_maps` C: the
search uses validation maps 0..M-1, the confirmation (step 6) maps M..M+C-1. Map k is the same
whatever M, C and the number of test maps, so a re-run with more maps reuses the finished ones.

The pass test (`accept`): "every-map" (default): an assignment passes on a set of maps when its
accuracy on *each* map is within the margin of the reference -- every sampled chip meets the
budget, which is what a designer ships; "mean": the mean over the maps is. Few faults in a small
domain hurt rarely but badly (one flipped high bit in a first convolution), so a mean over a
couple of maps hides them; the every-map rule with more confirmation maps catches them.

Search (a Lagrangian over per-domain curves, then greedy lowering; each step validated):
1. clean: the fault-free accuracy as stored (quantized weights; quantized activations when the
   buffer is part of the memories) on validation and test images; the reference
   (`sramsim.analysis.operating_point.Reference`, default own clean) and the margin give the
   pass test (`accept`, above);
2. single voltage: every domain at V, for V down the grid until the first failure on the search
   maps; the best single voltage V* is the lowest of the passing ones that also passes on the
   confirmation maps (step 6's maps and images; tried from the lowest passing one up), so the
   search below starts from a voltage that holds on both;
3. per-domain sensitivity at V*: each domain moved alone to every grid voltage from
   `RAISE_STEPS` steps above V* down (the others staying at V*), on the same maps (one faulty
   read per map and voltage, combined per domain); a domain's cost is its drop below acc(V*)
   measured map by map (the mean drop, or under "every-map" the largest); a domain whose cost
   exceeds `drop_stop` is not lowered further;
4. candidates: the Lagrangian solutions over those curves (`sramsim.analysis.plan_search`), the
   ones cheaper than V*; bisection over them (cheapest first, starting at the cheapest
   predicted to fit the budget) with a joint validation of each probe finds the cheapest that
   passes;
5. greedy: from it (or from V* when none passed), lower one domain by one option at a time, best
   predicted energy per accuracy first; a step that fails joint validation freezes its domain;
   stops after `refine` joint validations;
6. confirmation: the search saw validation maps 0..M-1 and the validation images only; maps
   M..M+C-1 (also validation maps) on the check images (held-back validation images, when
   given) confirm the choices, against the winner's curse of picking the cheapest of many
   candidates on the same maps and images: the plan is the cheapest assignment that passed the
   search and passes there, cheaper than the single voltage V* (else V* itself); at
   most `CONFIRM_TRIES` assignments are tried there, cheapest first, since every further try is
   one more chance for a lucky one to pass;
6b. repair (`repairs` rounds): when none confirms, the cheapest one's failures are traced on the
   failing confirmation maps (which domain, raised back to the single voltage, recovers most),
   those domains are raised until each such map passes, and the repaired assignment must pass
   the search maps again and a fresh block of confirmation maps (`_repair`);
7. report: the plan and the single voltage on the test maps; the plan is never more expensive.

Every evaluation is one task of `sramsim.analysis.executors` (this process, a local pool, Ray),
written to DIR/points.jsonl as it finishes (`sramsim.analysis.store`): a re-run with the same
model, data, memories and maps resumes and reuses every finished evaluation, whatever margin,
reference or grid it asks for.
"""
from __future__ import annotations

import functools
import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sramsim.analysis.domain_energy import DomainAccesses
from sramsim.analysis.executors import Execution
from sramsim.analysis.operating_point import Reference, check_margin, passes
from sramsim.analysis.plan_search import (
    ACCEPT_RULES,
    Curve,
    candidates,
    greedy_order,
    judged,
    map_loss,
    running_max,
)
from sramsim.analysis.store import open_store, write_json
from sramsim.errors import InputError
from sramsim.inject.activations import QuantizedActivations, calibrate
from sramsim.inject.domains import (
    ACTIVATIONS,
    VoltageAssignment,
    WeightDomains,
    bit_mask,
    read_assigned,
    take_bits,
)
from sramsim.inject.draws import ChipDraw, fixed_draws
from sramsim.inject.layout import MemoryLayout
from sramsim.memory.chip import Chip
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import Evaluator
from sramsim.stats import ci95_halfwidth, mean_std

if TYPE_CHECKING:
    import os

    from sramsim.analysis.executors import InProcessExecutor, PoolExecutor, RayExecutor
    from sramsim.analysis.store import MemoryStore, ResultStore
    from sramsim.inject.quantized_model import QuantizedModel

PURPOSES = ("validation", "test")       # the maps' purposes (`fixed_draws`)
DATA = ("validation", "check", "test")  # the images: search, confirmation, report
MAPS_OF = {"validation": "validation", "check": "validation", "test": "test"}
RAISE_STEPS = 1               # grid steps above the best single voltage a domain may be raised
CONFIRM_TRIES = 3             # planned assignments tried on the confirmation maps, at most


@dataclass(frozen=True)
class Memories:
    """The memories a plan assigns voltages to.

    weights: the weight chips (`sramsim.analysis.sweep.ChipSpec`: random recipes or profiles);
    domains: how the weight memory is split ("memory", "layer", "bank", "partition", "bit");
    activations: the activation buffer's chips (empty: activations are not stored in a faulty
    buffer); layout: how the weights are stored (a DRAM mapping for partition domains).
    """

    weights: tuple
    domains: str = "memory"
    activations: tuple = ()
    layout: MemoryLayout = field(default_factory=MemoryLayout)

    def describe(self) -> dict:
        """JSON identity of the memories (chips by recipe or content)."""
        return {"weights": [c.identity() for c in self.weights], "domains": self.domains,
                "activations": [c.identity() for c in self.activations],
                "layout": self.layout.describe()}


@dataclass(frozen=True)
class PlanSettings:
    """What the search may use and how it judges (see the module docstring).

    voltages: the grid, descending, starting at the nominal voltage; margin and reference: the
    budget; accept: the pass test ("every-map" or "mean", see the module docstring); val_maps /
    check_maps / test_maps: fault maps of the search, the confirmation (None: as many as the
    search) and the report; repairs: rounds of repairing a confirmation failure (step 6b, each
    with fresh confirmation maps; 0: none); seed: of the maps; refine: joint
    validations the greedy step may spend (None: two per domain); drop_stop: a domain moved
    alone that drops more than this below acc(V*) is not lowered further (None: five margins,
    far beyond what the budget could pay for); activation_writes / activation_reads: per
    stored activation and inference; leakage_share: of the energy model.
    """

    voltages: tuple
    margin: float = 0.01
    reference: Reference = field(default_factory=Reference)
    val_maps: int = 4
    test_maps: int = 8
    seed: int = 0
    batch_size: int = 1000
    refine: int | None = None
    drop_stop: float | None = None
    activation_writes: int = 1
    activation_reads: int = 1
    leakage_share: float = 0.0
    check_maps: int | None = None
    accept: str = "every-map"
    repairs: int = 2

    def __post_init__(self) -> None:
        v = [float(x) for x in self.voltages]
        if len(v) < 2 or any(not (math.isfinite(x) and x > 0) for x in v) \
                or any(b >= a for a, b in zip(v, v[1:], strict=False)):
            raise InputError("voltages: at least two positive voltages, descending, the first "
                             "the nominal one")
        object.__setattr__(self, "voltages", tuple(round(x, 6) for x in v))
        object.__setattr__(self, "margin", check_margin(self.margin))
        check = self.val_maps if self.check_maps is None else self.check_maps
        object.__setattr__(self, "check_maps", check)
        for what, n in (("validation maps", self.val_maps), ("test maps", self.test_maps),
                        ("check maps", check), ("batch size", self.batch_size)):
            if isinstance(n, bool) or int(n) != n or n < 1:
                raise InputError(f"{what} must be a positive integer, got {n!r}")
        if isinstance(self.repairs, bool) or int(self.repairs) != self.repairs \
                or self.repairs < 0:
            raise InputError(f"repairs must be a whole number >= 0, got {self.repairs!r}")
        if self.accept not in ACCEPT_RULES:
            raise InputError(f"accept must be one of {', '.join(ACCEPT_RULES)}, "
                             f"got {self.accept!r}")
        if self.refine is not None and (int(self.refine) != self.refine or self.refine < 0):
            raise InputError(f"refine must be a whole number >= 0, got {self.refine!r}")
        stop = min(1.0, 5 * self.margin) if self.drop_stop is None else self.drop_stop
        if not 0 < stop <= 1:
            raise InputError(f"drop_stop must lie in (0, 1], got {stop!r}")
        object.__setattr__(self, "drop_stop", stop)


# ------------------------------------------------------------------------------ one evaluation

@dataclass
class PlanJob:
    """What every worker needs (travels to pool workers and Ray actors by pickle)."""

    qm: QuantizedModel
    activations: QuantizedActivations | None
    data: dict                    # purpose -> Dataset
    weight_chips: list
    activation_chips: list
    domains: WeightDomains
    layout: MemoryLayout
    maps: dict                    # purpose -> number of maps
    seed: int
    v_low: float
    batch_size: int


class PlanWorker:
    """Evaluates the planner's tasks (`run`); holds the evaluator, the data, the chips and the
    maps' placements.

    Tasks: ("clean", purpose); ("sens", base, voltage, map, names): on validation map `map`,
    each named domain moved alone to `voltage`, every other domain at `base`;
    ("eval", purpose, voltages, map): the assignment (one voltage per domain, weights' domains
    then activations) on map `map` of `purpose`.
    """

    def __init__(self, job: PlanJob) -> None:
        self.job = job
        self.qm = job.qm
        self.evaluator = Evaluator(job.qm, job.layout, activations=job.activations)
        self.names = list(job.domains.names)
        self.draws = {p: self._draws(p) for p in PURPOSES}
        self._labels: OrderedDict = OrderedDict()
        self._faulty = np.empty_like(job.qm.image)
        self._mixed = np.empty_like(job.qm.image)
        self._moved = np.empty_like(job.qm.image)

    def _draws(self, purpose: str) -> list:
        n, j = self.job.maps[purpose], self.job
        weights = list(fixed_draws(self.qm.n_bits, n, chips=j.weight_chips, voltage=j.v_low,
                                   seed=j.seed, purpose=purpose))
        acts = list(fixed_draws(self.qm.n_bits, n, chips=j.activation_chips, voltage=j.v_low,
                                seed=j.seed + 1, purpose=purpose)) \
            if j.activation_chips else [None] * n
        return list(zip(weights, acts, strict=True))

    def labels(self, draw: ChipDraw) -> np.ndarray:
        """Each image byte's weight domain for this placement (kept for the last few)."""
        key = (id(draw.chip), draw.offset) if self.job.domains.by in ("bank", "partition") else 0
        if key not in self._labels:
            self._labels[key] = self.job.domains.labels(self.qm, draw.chip, draw.offset,
                                                        self.job.layout)
            while len(self._labels) > 4:
                self._labels.popitem(last=False)
        return self._labels[key]

    def run(self, task: tuple) -> list[dict]:
        """The records of one task (see the class docstring)."""
        if task[0] == "clean":
            r = self.evaluator.clean(self.job.data[task[1]], self.job.batch_size)
            return [{"key": ["clean", task[1]], **r}]
        if task[0] == "sens":
            return self._sensitivity(*task[1:])
        _, purpose, volts, k = task
        wd, ad = self.draws[MAPS_OF[purpose]][k]
        nw = len(self.names)
        image = read_assigned(self.qm, wd.chip, volts[:nw], self.labels(wd), wd.offset,
                              self.job.layout, self._mixed)
        r = self._evaluate(purpose, image, self._act(ad, volts[nw]) if ad else None)
        return [{"key": ["eval", purpose, _volts_key(volts), int(k)], **r}]

    def _sensitivity(self, v_base: float, v: float, k: int, names: tuple) -> list[dict]:
        wd, ad = self.draws["validation"][k]
        read = self.job.layout.read
        base = read(self.qm, wd.chip, v_base, wd.offset, self._faulty)[0]
        moved = read(self.qm, wd.chip, v, wd.offset, self._moved)[0] \
            if any(n != ACTIVATIONS for n in names) else None
        labels = self.labels(wd)
        out = []
        for name in names:
            if name == ACTIVATIONS:
                r = self._evaluate("validation", base, self._act(ad, v))
            else:
                assert moved is not None          # read above: a weight domain is named
                np.copyto(self._mixed, base)
                take_bits(self._mixed, moved, bit_mask(labels, [self.names.index(name)]))
                r = self._evaluate("validation", self._mixed, self._act(ad, v_base))
            out.append({"key": ["sens", v_base, v, int(k), name], **r})
        return out

    @staticmethod
    def _act(draw: ChipDraw | None, v: float) -> ChipDraw | None:
        return None if draw is None else ChipDraw(draw.chip, v, draw.offset)

    def _evaluate(self, purpose: str, image: np.ndarray, act: ChipDraw | None) -> dict:
        r = self.evaluator.evaluate(self.job.data[purpose], image, activations=act,
                                    batch_size=self.job.batch_size)
        return {"accuracy": r["accuracy"], "loss": r["loss"], "changed": r["changed"]}


def _volts_key(volts: Sequence[float]) -> str:
    return ",".join(f"{float(v):.6f}" for v in volts)


def _task_keys(task: tuple) -> list[tuple]:
    if task[0] == "clean":
        return [("clean", task[1])]
    if task[0] == "sens":
        _, base, v, k, names = task
        return [("sens", base, v, k, n) for n in names]
    _, purpose, volts, k = task
    return [("eval", purpose, _volts_key(volts), k)]


# ------------------------------------------------------------------------------ running tasks

class _Runner:
    """Runs tasks on the executor, skipping those the store already holds."""

    def __init__(self, ex: InProcessExecutor | PoolExecutor | RayExecutor,
                 store: ResultStore | MemoryStore, on_done: Callable[[int], None] | None) -> None:
        self.ex, self.store, self.on_done = ex, store, on_done
        self.evaluations = 0

    def run(self, tasks: list[tuple]) -> dict:
        """{key: record} of every task's records (finished ones from the store)."""
        pending = [t for t in tasks if not all(self.store.done(k) for k in _task_keys(t))]
        if pending:
            def on_result(records: list[dict]) -> None:
                self.store.append(records)
                self.evaluations += len(records)
                if self.on_done is not None:
                    self.on_done(len(records))
            self.ex.run(pending, on_result)
        return {k: self.store.records[k] for t in tasks for k in _task_keys(t)}


def summary(accuracies: Sequence[float]) -> dict:
    """Mean, sample std and 95% t-interval half-width over maps."""
    m, s = mean_std(accuracies)
    return {"accuracy_mean": m, "accuracy_std": s, "ci95": ci95_halfwidth(accuracies),
            "n": len(accuracies), "accuracy": [float(a) for a in accuracies]}


# ------------------------------------------------------------------------------ the planner

def prepare(qm: QuantizedModel, memories: Memories, settings: PlanSettings,
            calibration: torch.Tensor | None, weight_chips: list[Chip],
            activation_chips: list[Chip]
            ) -> tuple[WeightDomains, QuantizedActivations | None, DomainAccesses]:
    """(weight domains, stored activations or None, accesses per domain), checked."""
    if not weight_chips:
        raise InputError("a plan needs at least one weight chip")
    geometry = weight_chips[0].geometry
    if any(c.geometry != geometry for c in weight_chips):
        raise InputError("the weight chips must share one geometry")
    domains = WeightDomains.build(qm, memories.domains, geometry, memories.layout)
    if memories.domains == "layer" and qm.image.size > geometry.capacity_bytes:
        raise InputError(f"layer domains need a weight memory of at least the image's "
                         f"{qm.image.size} bytes (chip {weight_chips[0].name!r} holds "
                         f"{geometry.capacity_bytes}: layers would share cells)")
    for chip in weight_chips + activation_chips:
        if abs(chip.nominal_voltage - settings.voltages[0]) > 1e-9:
            raise InputError(f"voltages must start at the nominal voltage of chip {chip.name!r}, "
                             f"{chip.nominal_voltage:g}; got {settings.voltages[0]:g}")
        for v in settings.voltages:
            chip.check_voltage(v)
    acts = None
    if activation_chips:
        if calibration is None:
            raise InputError("an activation buffer needs calibration images")
        acts = calibrate(qm.model, calibration, qm.clean_weights())
    accesses = DomainAccesses.of(qm, domains, geometry, acts, settings.activation_writes,
                                 settings.activation_reads, settings.voltages[0],
                                 settings.leakage_share)
    return domains, acts, accesses


def plan(qm: QuantizedModel, validation: Dataset, test: Dataset, memories: Memories,
         settings: PlanSettings,
         calibration: torch.Tensor | None = None, execution: Execution | None = None,
         out_dir: str | os.PathLike | None = None, on_done: Callable[[int], None] | None = None,
         assignment: VoltageAssignment | None = None, check: Dataset | None = None) -> dict:
    """Find (or, with `assignment`, only evaluate) the cheapest voltage assignment within the
    budget; returns the report (see the module docstring; `sramsim plan` prints it).

    calibration: training images for the activation scales (needed with an activation buffer).
    check: held-back validation images the choices are confirmed on (step 6; None: the
    validation images again, on other maps). on_done(n): n more evaluations finished.
    """
    for d in (validation, test) + (() if check is None else (check,)):
        if len(d) == 0:
            raise InputError(f"dataset {d.name!r} is empty")
    execution = execution or Execution()
    wchips = [c.build() for c in memories.weights]
    achips = [c.build() for c in memories.activations]
    domains, acts, accesses = prepare(qm, memories, settings, calibration, wchips, achips)
    names = accesses.names
    if assignment is not None:
        assignment = assignment.check(names, "--assignment")
        for v in assignment.as_dict().values():
            if round(v, 6) not in settings.voltages:
                for chip in wchips + achips:
                    chip.check_voltage(v)
    v_low = min(settings.voltages + (() if assignment is None else
                                     tuple(assignment.as_dict().values())))
    data = {"validation": validation, "check": validation if check is None else check,
            "test": test}
    job = PlanJob(qm, acts, data, wchips, achips, domains,
                  memories.layout, {"validation": settings.val_maps
                                    + n_check(settings) * (1 + settings.repairs),
                                    "test": settings.test_maps}, settings.seed, v_low,
                  settings.batch_size)
    config = {"kind": "plan", "image_sha256": hashlib.sha256(qm.image.tobytes()).hexdigest(),
              "quantization": {"bits": qm.bits, "scheme": qm.scheme, "clip": qm.clip},
              "data": {p: {"name": d.name, "n": len(d)} for p, d in job.data.items()},
              "memories": memories.describe(),
              "activations": None if acts is None else acts.describe(),
              "seed": settings.seed, "batch_size": settings.batch_size}
    store = open_store(out_dir, config, key=lambda r: tuple(r["key"]))
    try:
        with execution.open(functools.partial(PlanWorker, job)) as ex:
            runner = _Runner(ex, store, on_done)
            if assignment is not None:
                report = _evaluate_only(runner, settings, accesses, assignment, wchips, achips)
            else:
                report = _search(runner, settings, accesses, wchips, achips)
    finally:
        store.close()
    report.update({"memories": memories.describe(), "domains": domains.describe(),
                   "activations": None if acts is None else acts.describe(),
                   "energy_model": accesses.describe(), "margin": settings.margin,
                   "maps": {"validation": settings.val_maps, "validation_check":
                            n_check(settings), "test": settings.test_maps},
                   "accept": settings.accept, "seed": settings.seed,
                   "images": {p: {"name": d.name, "n": len(d)} for p, d in job.data.items()},
                   "evaluations": runner.evaluations})
    if store.dir is not None:
        write_json(store.dir / "plan.json", report)
    return report


def n_check(s: PlanSettings) -> int:
    """The number of confirmation maps (`check_maps`, set by `PlanSettings`)."""
    return int(s.check_maps or s.val_maps)


def accepted(accuracies: Sequence[float], reference: float, s: PlanSettings) -> bool:
    """The pass test `s.accept` on one accuracy per map (see the module docstring)."""
    return passes(judged(accuracies, s.accept), reference, s.margin)


def _clean(runner: _Runner) -> dict:
    recs = runner.run([("clean", p) for p in DATA])
    return {p: recs[("clean", p)]["accuracy"] for p in DATA}


def _joint(runner: _Runner, purpose: str, volts: tuple, maps: range) -> list[float]:
    """Accuracies of the assignment `volts` on maps `maps` of `purpose`."""
    recs = runner.run([("eval", purpose, tuple(volts), k) for k in maps])
    return [recs[("eval", purpose, _volts_key(volts), k)]["accuracy"] for k in maps]


def _search(runner: _Runner, s: PlanSettings, accesses: DomainAccesses, wchips: list[Chip],
            achips: list[Chip]) -> dict:
    clean = _clean(runner)
    ref_val = s.reference.value(clean["validation"])
    ref_check = s.reference.value(clean["check"])
    grid, names = s.voltages, accesses.names
    maps, check = range(s.val_maps), range(s.val_maps, s.val_maps + n_check(s))
    scores: dict[tuple, list[float]] = {}    # assignment -> accuracy per search map
    checks: dict[tuple, list[float]] = {}    # assignment -> accuracy per confirmation map

    def uniform_at(v: float) -> tuple:
        return (v,) * len(names)

    def ok(volts: tuple) -> bool:
        if volts not in scores:
            scores[volts] = _joint(runner, "validation", volts, maps)
        return accepted(scores[volts], ref_val, s)

    def confirmed(volts: tuple) -> bool:
        if volts not in checks:
            checks[volts] = _joint(runner, "check", volts, check)
        return accepted(checks[volts], ref_check, s)

    # 2. single voltage, down the grid to the first failure
    scan = []
    for v in grid:
        scan.append(v)
        if not ok(uniform_at(v)):
            break
    passed = [v for v in scan if ok(uniform_at(v))]     # the scan but a failing last voltage
    v_scan = passed[-1] if passed else grid[0]
    # the single voltage confirmed on the check maps (from the scan's lowest up): the search
    # works below what holds there, not below a voltage the confirmation already refused
    v_star = next((v for v in reversed(passed) if confirmed(uniform_at(v))), grid[0])
    uniform = chosen = uniform_at(v_star)
    curves, cands, tried = [], [], []
    if passed:
        # 3. sensitivity at the operating point: each domain moved alone from V*
        base = scores[chosen]
        i = grid.index(v_star)
        measured = {n: {v_star: base} for n in names}    # domain -> voltage -> accuracy per map

        def sens(v: float, which: list) -> None:
            recs = runner.run([("sens", v_star, v, k, tuple(which)) for k in maps])
            for n in which:
                measured[n][v] = [recs[("sens", v_star, v, k, n)]["accuracy"] for k in maps]

        def cost(n: str, v: float) -> float:
            return map_loss(base, measured[n][v], s.accept)

        for v in grid[max(0, i - RAISE_STEPS):i]:
            sens(v, list(names))
        alive = list(names)
        stop = float(s.drop_stop or 0.0)           # set by PlanSettings.__post_init__
        for v in grid[i + 1:]:
            if not alive:
                break
            sens(v, alive)
            alive = [n for n in alive if cost(n, v) <= stop]
        for n in names:
            vs = tuple(sorted(measured[n], reverse=True))
            energy = tuple(accesses.energies(VoltageAssignment.uniform(names, v))[n] for v in vs)
            curves.append(Curve(n, vs, energy, tuple(running_max(vs, [cost(n, v) for v in vs]))))
        # 4. Lagrangian candidates cheaper than V*, bisection with joint validation
        slack = judged(base, s.accept) - (ref_val - s.margin)
        e_single = accesses.energy(VoltageAssignment.uniform(names, v_star))
        cands = [c for c in candidates(curves) if c.energy < e_single * (1 - 1e-12)]
        lo, hi = 0, len(cands)
        probe = next((j for j, c in enumerate(cands) if c.loss <= slack), len(cands) - 1)
        while lo < hi:
            tried.append(cands[probe].voltages)
            if ok(cands[probe].voltages):
                chosen, hi = cands[probe].voltages, probe
            else:
                lo = probe + 1
            probe = (lo + hi) // 2
        # 5. greedy lowering, one option at a time, each validated
        frozen: set = set()
        for _ in range(2 * len(names) if s.refine is None else int(s.refine)):
            moves = greedy_order(curves, chosen, frozen)
            if not moves:
                break
            d, v = moves[0]
            trial = tuple(v if j == d else x for j, x in enumerate(chosen))
            tried.append(trial)
            if ok(trial):
                chosen = trial
            else:
                frozen.add(d)
    # 6. confirm on the check maps the cheapest passing assignments cheaper than the single
    # voltage (CONFIRM_TRIES at most)
    def energy_of(volts: tuple) -> float:
        return accesses.energy(VoltageAssignment(tuple(zip(names, volts, strict=True))))

    passing = sorted((v for v in dict.fromkeys(tried)
                      if ok(v) and energy_of(v) < energy_of(uniform)), key=energy_of)
    chosen = next((v for v in passing[:CONFIRM_TRIES] if confirmed(v)), uniform)
    repairs: list[dict] = []
    if chosen == uniform and passing and s.repairs:
        chosen, repairs = _repair(runner, s, names, passing[0], uniform, ok, ref_check, check,
                                  energy_of)
        tried.append(chosen)              # (judged on fresh confirmation maps: `repairs`)
    planned = VoltageAssignment(tuple(zip(names, chosen, strict=True)))
    report = _test_report(runner, s, accesses, clean, planned,
                          VoltageAssignment(tuple(zip(names, uniform, strict=True))), wchips,
                          achips)
    report["single"]["voltage"] = v_star

    def point(volts: tuple) -> dict:
        a = VoltageAssignment(tuple(zip(names, volts, strict=True)))
        got = checks.get(volts)
        return {"assignment": a.as_dict(), "energy": accesses.energy(a),
                "saving": accesses.saving(a), "accuracy_mean": float(np.mean(scores[volts])),
                "accuracy": scores[volts], "passes": accepted(scores[volts], ref_val, s),
                "check_accuracy_mean": None if got is None else float(np.mean(got)),
                "check_accuracy": got,
                "confirmed": None if got is None else accepted(got, ref_check, s)}

    for key, volts in (("planned", chosen), ("single", uniform)):
        report[key]["validation"] = point(volts)
    report.update({
        "single_curve": [{"voltage": v, **point(uniform_at(v))} for v in scan],
        "curves": {c.name: {"voltages": list(c.voltages), "loss": list(c.loss),
                            "energy": list(c.energy)} for c in curves},
        "candidates": [point(v) for v in dict.fromkeys(tried)],
        "search": {"method": "single-voltage scan; per-domain sensitivity at the best single "
                             "voltage; Lagrangian candidates bisected with joint validation; "
                             "greedy lowering with joint validation; both choices confirmed "
                             "on held-back validation maps",
                   "accept": s.accept, "grid": list(grid), "scan_voltage": v_scan,
                   "lagrangian_candidates": len(cands), "joint_validations": len(scores),
                   "confirmations": len(checks), "confirm_tries": CONFIRM_TRIES,
                   "repairs": repairs,
                   "search_maps": [maps.start, maps.stop],
                   "check_maps": [check.start, check.stop], "feasible": bool(passed)}})
    return report


def _repair(runner: _Runner, s: PlanSettings, names: Sequence[str], volts: tuple,
            uniform: tuple, ok: Callable[[tuple], bool], ref_check: float, check: range,
            energy_of: Callable[[tuple], float]) -> tuple[tuple, list[dict]]:
    """Step 6b: the cheapest assignment that passed the search but failed confirmation, repaired
    (at most `s.repairs` rounds); returns (the assignment, else `uniform`; the rounds' log).

    A round: on each confirmation map where it fails, each lowered domain is raised alone to the
    single voltage and the domains go back up in order of what they recover there, until that
    map passes (under either pass test: a map is the unit a repair can trace). Those maps chose
    something now, so they no longer confirm: the repaired assignment must still pass the search
    maps and then pass a fresh block of confirmation maps (the next `check_maps` validation
    maps), which it is judged on -- else the next round repairs its failures there."""
    log: list[dict] = []
    block = check
    for r in range(s.repairs):
        accs = _joint(runner, "check", volts, block)
        failing = [k for k, a in zip(block, accs, strict=True)
                   if not passes(a, ref_check, s.margin)]
        raised: list[str] = []
        for k in failing:
            one = range(k, k + 1)
            lowered = [d for d, (v, u) in enumerate(zip(volts, uniform, strict=True)) if v < u]
            gain = {d: _joint(runner, "check", _raised(volts, d, uniform), one)[0]
                    for d in lowered}
            for d in sorted(lowered, key=lambda d: (-gain[d], d)):
                if passes(_joint(runner, "check", volts, one)[0], ref_check, s.margin):
                    break
                volts = _raised(volts, d, uniform)
                raised.append(names[d])
        entry = {"round": r + 1, "confirmation_maps": [block.start, block.stop],
                 "failing_maps": failing, "raised": raised,
                 "energy": energy_of(volts), "passes_search": None, "confirmed": None}
        log.append(entry)
        if energy_of(volts) >= energy_of(uniform) * (1 - 1e-12):
            break
        entry["passes_search"] = ok(volts)
        if not entry["passes_search"]:
            break
        block = range(block.stop, block.stop + len(check))
        entry["confirmed"] = accepted(_joint(runner, "check", volts, block), ref_check, s)
        entry["next_confirmation_maps"] = [block.start, block.stop]
        if entry["confirmed"]:
            return volts, log
    return uniform, log


def _raised(volts: tuple, d: int, uniform: tuple) -> tuple:
    """`volts` with domain `d` back at the single voltage."""
    return tuple(uniform[j] if j == d else v for j, v in enumerate(volts))


def _evaluate_only(runner: _Runner, s: PlanSettings, accesses: DomainAccesses,
                   assignment: VoltageAssignment, wchips: list[Chip],
                   achips: list[Chip]) -> dict:
    clean = _clean(runner)
    volts = tuple(assignment.as_dict().values())
    report = {"clean": clean,
              "reference": {p: s.reference.describe(clean[p]) for p in DATA},
              "planned": _assignment_report(runner, s, accesses, assignment, wchips, achips,
                                            s.reference.value(clean["test"]))}
    report["planned"]["validation"] = summary(_joint(runner, "validation", volts,
                                                     range(s.val_maps + n_check(s))))
    return report


def _assignment_report(runner: _Runner, s: PlanSettings, accesses: DomainAccesses,
                       a: VoltageAssignment, wchips: list[Chip], achips: list[Chip],
                       ref_test: float) -> dict:
    test = summary(_joint(runner, "test", tuple(a.as_dict().values()), range(s.test_maps)))
    shares = accesses.shares(a)
    table = []
    for n, c in zip(accesses.names, accesses.accesses, strict=True):
        chips = achips if n == ACTIVATIONS else wchips
        table.append({"domain": n, "voltage": a[n], "accesses": c,
                      "ber": float(np.mean([ch.ber(a[n]) for ch in chips])),
                      "energy_share": shares[n]})
    within = sum(passes(x, ref_test, s.margin) for x in test["accuracy"])
    return {"assignment": a.as_dict(), "energy": accesses.energy(a),
            "saving": accesses.saving(a), "table": table, "test": test,
            "passes_test": passes(test["accuracy_mean"], ref_test, s.margin),
            "test_maps_within_budget": [int(within), len(test["accuracy"])]}


def _test_report(runner: _Runner, s: PlanSettings, accesses: DomainAccesses, clean: dict,
                 planned: VoltageAssignment, single: VoltageAssignment, wchips: list[Chip],
                 achips: list[Chip]) -> dict:
    ref_test = s.reference.value(clean["test"])
    p = _assignment_report(runner, s, accesses, planned, wchips, achips, ref_test)
    u = _assignment_report(runner, s, accesses, single, wchips, achips, ref_test)
    return {"clean": clean,
            "reference": {p: s.reference.describe(clean[p]) for p in DATA},
            "planned": p, "single": u, "saving_planned": p["saving"],
            "saving_single": u["saving"], "gain": p["saving"] - u["saving"]}


# ------------------------------------------------------------------------------ plot

def plot_plan(report: dict, path: str | Path) -> str:
    """Energy (fraction of nominal) vs accuracy: the single-voltage scan and the jointly
    validated assignments (validation), and the chosen two on the test maps with 95% intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    sc = report.get("single_curve", [])
    ax.plot([1 - p["saving"] for p in sc], [100 * p["accuracy_mean"] for p in sc], "o-",
            color="tab:blue", label="single voltage (validation)")
    for p in sc:
        ax.annotate(f"{p['voltage']:g}", (1 - p["saving"], 100 * p["accuracy_mean"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    c = report.get("candidates", [])
    if c:
        ax.scatter([1 - x["saving"] for x in c], [100 * x["accuracy_mean"] for x in c],
                   marker="x", color="tab:orange", label="planned, tried (validation)")
    for key, color in (("single", "tab:blue"), ("planned", "tab:red")):
        r = report[key]
        ax.errorbar([1 - r["saving"]], [100 * r["test"]["accuracy_mean"]],
                    yerr=[100 * r["test"]["ci95"]], fmt="s", color=color, capsize=4,
                    label=f"{key}, chosen (test, 95% CI)")
    ref = report["reference"]["validation"]["accuracy"]
    ax.axhline(100 * (ref - report["margin"]), color="grey", ls="--", lw=1,
               label="budget (validation)")
    ax.set_xlabel("memory energy per inference (fraction of nominal)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
