"""Clean and perturbed accuracy of a base model without and with a generator, and the net energy.

CA: accuracy with the clean quantized weights. PA: accuracy over M fault maps (mean and sample
std, ddof=1). The same maps are used without and with G (paired), so recovery = PA(G) - PA
measures G and not the luck of the draw. G runs at nominal voltage: its own weights are exact,
and its weight reads are charged at nominal energy in the net saving
    saving = [E_nom(base) - (E_V(base) + E_nom(G))] / E_nom(base).
Transfer (restricted access): G may come from training on another (surrogate) base model; only
the input shape has to agree.

Each evaluation map runs through `sramsim.nn.evaluation.Evaluator` (on the CPU written into a
copy of the base model in place, O(faults) per map). Two paths stay functional (dequantized
weight stacks): `Validator`, whose maps are fixed for a whole training run, so its stacks are
decoded once and reused every epoch; and EOPM training (`fusion.eopm`), which runs N perturbed
copies in one batched forward pass
(one weight tensor [N, ...] per layer), where one in-place model holds one map at a time.
"""
from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sramsim import BerCurve, Chip, QuantizedModel, RandomBitErrors
from sramsim.analysis import energy as E
from sramsim.analysis.executors import Execution, run_maps
from sramsim.analysis.store import map_key, open_store, write_json
from sramsim.errors import InputError, check_ber
from sramsim.inject.draws import ChipDraw, ChipPool, RandomSampler, Sampler, fixed_draws
from sramsim.inject.layout import MemoryLayout
from sramsim.inject.weight_sets import WeightSets, dequantize_stack
from sramsim.memory.chip import Faults
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import Evaluator, accuracy, robust_error_summary
from sramsim.stats import ci95_halfwidth, mean_std

if TYPE_CHECKING:
    from fusion.generators import Generator

CURVE = "finfet14"
EVAL_SEED = 2024   # fault maps of evaluation; training samplers use other seeds
VAL_SEED = 4099    # fault maps of validation during training (apart from both)


@dataclass
class FaultSpec:
    """What faults to simulate: random errors at `ber`, or `chips` at `voltage`.

    For random errors the voltage (for the energy model) is read off the BER curve, and a
    `voltage` alone means random errors at the curve's BER for it.
    """

    ber: float | None = None
    voltage: float | None = None
    chips: list[Chip] | None = None
    curve: str = CURVE

    def __post_init__(self) -> None:
        if self.chips:
            if self.voltage is None:
                raise InputError("chips need a voltage")
            if self.ber is not None:
                raise InputError("give either a ber or chips with a voltage, not both")
            for chip in self.chips:
                chip.check_voltage(self.voltage)
            return
        curve = BerCurve.builtin(self.curve)
        if self.ber is None and self.voltage is None:
            raise InputError("give a ber, or chips with a voltage (or a voltage alone: random "
                             "errors at the curve's ber there)")
        if self.ber is not None and self.voltage is not None:
            raise InputError("give either a ber or a voltage for random errors, not both")
        if self.ber is None:
            assert self.voltage is not None                 # one of the two was given
            if not (np.isfinite(self.voltage) and self.voltage > 0):
                raise InputError(f"voltage must be a positive number, got {self.voltage!r}")
            self.ber = float(curve.ber(self.voltage))
        else:
            self.ber = check_ber(self.ber, "ber", allow_one=False)
            self.voltage = float(curve.voltage(self.ber))

    @property
    def nominal(self) -> float:
        """Nominal supply voltage (the chips', or 1 on the normalised curve)."""
        return float(self.chips[0].nominal_voltage) if self.chips else 1.0

    def sampler(self, seed: int) -> Sampler:
        """A training sampler: fresh random errors, or the chip pool at random offsets."""
        if self.chips:
            assert self.voltage is not None                 # chips need one (__post_init__)
            return ChipPool(self.chips, self.voltage, seed=seed)
        assert self.ber is not None                         # random errors: set or read off
        return RandomSampler(self.ber, seed=seed)

    @property
    def read_voltage(self) -> float:
        """The voltage the faults are read at: the chips', or the curve's at the BER (always
        set once constructed)."""
        assert self.voltage is not None
        return self.voltage

    def eval_draws(self, nbits: int, n_models: int | None, seed: int = EVAL_SEED,
                   purpose: str = "test") -> list:
        """The fixed fault maps of an evaluation (`purpose="test"`) or a validation set.

        `n_models` defaults to 10 random maps, or one map per chip; which maps is
        `sramsim.inject.draws.fixed_draws`'s rule (validation maps are never evaluation maps).
        """
        return list(self._draws(nbits, n_models, seed, purpose))

    def n_maps(self, n_models: int | None) -> int:
        """How many maps an evaluation of `n_models` has (10 random maps or one per chip by
        default)."""
        return n_models if n_models is not None else len(self.chips) if self.chips else 10

    def _draws(self, nbits: int, n_models: int | None, seed: int,
               purpose: str = "test") -> Iterator[Faults | ChipDraw]:
        return fixed_draws(nbits, self.n_maps(n_models), ber=None if self.chips else self.ber,
                           chips=self.chips,
                           voltage=self.voltage if self.chips else None, seed=seed,
                           purpose=purpose)

    def eval_draw(self, nbits: int, n_models: int | None, k: int,
                  seed: int = EVAL_SEED) -> Faults | ChipDraw:
        """Draw k of `eval_draws(nbits, n_models, seed)` alone (the same stream)."""
        return next(itertools.islice(self._draws(nbits, n_models, seed), k, None))

    def describe(self) -> dict:
        """The fault source as JSON (reports, generator meta, checkpoints)."""
        if self.chips:
            return {"kind": "chips", "voltage": self.voltage,
                    "chips": [c.name for c in self.chips],
                    "ber": float(np.mean([c.ber(self.read_voltage) for c in self.chips]))}
        return {"kind": "random", "ber": self.ber, "voltage": self.voltage, "curve": self.curve}


def check_shapes(dataset: Dataset, base_meta: dict | None, generator: Generator | None = None,
                 where: str = "") -> None:
    """Input channels of data, base model and generator must agree (transfer needs only that)."""
    c = dataset.in_channels
    if base_meta and int(base_meta.get("in_channels", c)) != c:
        raise InputError(f"{where or 'base model'} expects {base_meta['in_channels']}-channel "
                         f"images but {dataset.name} has {c}")
    if generator is not None and generator.in_channels != c:
        raise InputError(f"generator {generator.name} was built for "
                         f"{generator.in_channels}-channel images but {dataset.name} has {c}")


@torch.no_grad()
def transform(generator: nn.Module, x: torch.Tensor, batch_size: int = 1000,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """G(x) for a whole dataset, in eval mode, on the CPU."""
    generator.eval()
    return torch.cat([generator(x[i:i + batch_size].to(device)).cpu()
                      for i in range(0, x.shape[0], batch_size)])


def transformed(generator: nn.Module, dataset: Dataset, batch_size: int = 1000,
                device: str | torch.device = "cpu") -> Dataset:
    """The dataset as the base model sees it behind G: G(x), same labels."""
    return Dataset(transform(generator, dataset.x, batch_size, device), dataset.y,
                   dataset.num_classes, dataset.name)


def _errors(ca: float, pa: list[float], suffix: str = "") -> dict:
    """`robust_error_summary` under this report's key names."""
    r = robust_error_summary(ca, pa)
    return {f"clean_error{suffix}": r["clean_error"], f"rerr{suffix}_mean": r["robust_error"],
            f"rerr{suffix}_std": r["robust_error_std"]}


class Validator:
    """Scores a generator during training: its mean accuracy over `n_models` fixed validation
    fault maps on held-out images (not the test set, not the evaluation maps).

    EOPM trains against fresh random maps, so the last epoch's G is not always the most robust
    one and runs with different seeds differ by more than their epochs; keeping the G that
    scores best here is early stopping that never looks at the maps it is finally judged on.
    Its maps are drawn with `purpose="validation"`: with chip profiles, the chips at odd
    placement offsets (evaluation uses offset 0 and even ones), with random errors a seed of
    their own; so no validation map is ever one of the maps G is finally judged on.
    """

    def __init__(self, qm: QuantizedModel, dataset: Dataset, faults: FaultSpec, n_models: int = 5,
                 batch_size: int = 1000, device: str | torch.device = "cpu",
                 seed: int = VAL_SEED):
        if n_models < 1:
            raise InputError(f"validation needs at least one fault map, got {n_models}")
        if len(dataset) == 0:
            raise InputError(f"validation set {dataset.name!r} is empty")
        if seed == EVAL_SEED:
            raise InputError(f"validation seed {seed} is the evaluation seed; use another")
        self.device = torch.device(device)
        self.base = qm.model.to(self.device).eval()
        self.dataset = dataset
        self.batch_size = batch_size
        ws = WeightSets(qm, self.device)
        draws = faults.eval_draws(qm.n_bits, n_models, seed, purpose="validation")
        self.draws = draws          # the validation fault maps (Faults or ChipDraw records)
        stack = dequantize_stack(qm, ws.images(draws))
        self.weights = [{n: w[i] for n, w in stack.items()} for i in range(len(draws))]
        self.seed = seed
        self.faults = faults

    def __call__(self, generator: nn.Module) -> float:
        """Mean accuracy of base(G(x)) over the validation maps (G is left in eval mode)."""
        gx = transformed(generator, self.dataset, self.batch_size, self.device)
        return float(np.mean([accuracy(self.base, gx, w, self.batch_size) for w in self.weights]))

    def describe(self) -> dict:
        """What the scores are measured on (a resumed run must validate on the same)."""
        d = {"samples": len(self.dataset), "maps": len(self.weights), "seed": self.seed,
             "fault_source": self.faults.describe()}
        if self.faults.chips:
            d["placements"] = "odd offsets"      # chip validation maps before this were others
        return d


class EvalWorker:
    """Evaluates the base model under one fault map, without and with the generator (a task of
    `evaluate`'s executor): the same map for both, so their difference is paired."""

    def __init__(self, qm: QuantizedModel, inputs: dict, faults: FaultSpec, n_models: int | None,
                 seed: int, batch_size: int, layout: MemoryLayout,
                 device: str | torch.device | None = None):
        self.inputs, self.batch_size = inputs, batch_size
        self.evaluator = Evaluator(qm, layout, device)
        self.nbits = layout.stored_image(qm).size * 8
        self.faults, self.n_models, self.seed = faults, n_models, seed

    def run(self, k: int) -> list[dict]:
        """Map k's record: PA of each input ("plain", "nf") and what the layout did."""
        draw = self.faults.eval_draw(self.nbits, self.n_models, k, self.seed)
        with self.evaluator.faults(draw) as run:
            pa = {name: accuracy(run.model, d, run.weights, self.batch_size)
                  for name, d in self.inputs.items()}
            return [{"map": int(k), "pa": pa, **run.record}]


def evaluate(qm: QuantizedModel, dataset: Dataset, faults: FaultSpec,
             generator: Generator | None = None, n_models: int | None = None,
             batch_size: int = 1000, device: str | torch.device = "cpu",
             seed: int = EVAL_SEED, count: str = "weights", layout: MemoryLayout | None = None,
             execution: Execution | None = None, out_dir: str | os.PathLike | None = None,
             on_map: Callable[[int], None] | None = None) -> dict:
    """CA / PA without and with `generator`, recovery and the net energy saving, as fractions.

    `count` is how weight reads are counted for the energy (`sramsim.analysis.systolic.METHODS`).
    layout: how the base model's weights are stored (`sramsim.inject.layout.MemoryLayout`): with
    ECC the fault maps fall on the stored image and each map is decoded, and the energy counts
    the code's extra reads and its decoder (`sramsim.analysis.energy.ecc_energy_per_read`); a
    bit placement (chip profiles only) is planned from each chip's map at the voltage and the
    map's offset (energy not changed). execution: where the maps run (results are identical for
    any executor and worker count at the same threads); out_dir: a folder each map's result is
    written to as it finishes (a re-run with the same settings resumes). on_map(k): progress.
    """
    layout = layout or MemoryLayout()
    execution = execution or Execution()
    if not faults.chips:
        layout.check_source(RandomBitErrors(0.0), None)       # a chip map needed?
    elif layout.bit_placement == "skip-faulty-words":         # too few good words: refused now
        for chip in faults.chips:
            layout.plan_bits(qm, chip, faults.read_voltage)
    device = torch.device(device)
    base = qm.model.to(device).eval()
    nbits = layout.stored_image(qm).size * 8
    n = faults.n_maps(n_models)
    faults.eval_draw(nbits, n_models, 0, seed)          # checks the maps before any work
    inputs = {"plain": dataset}
    if generator is not None:
        generator = generator.to(device)
        inputs["nf"] = transformed(generator, dataset, batch_size, device)
    evaluator = Evaluator(qm, layout, device)
    ca = {k: evaluator.clean(d, batch_size)["accuracy"] for k, d in inputs.items()}
    config = {"kind": "fusion-eval", "image_sha256": image_fingerprint_of(qm),
              "data": {"name": dataset.name, "n": len(dataset)},
              "generator": None if generator is None else _module_sha256(generator),
              "faults": faults.describe(), "maps": n, "seed": int(seed),
              "layout": layout.describe()}
    store = open_store(out_dir, config, map_key)
    maps = run_maps(execution, functools.partial(EvalWorker, qm, inputs, faults, n_models, seed,
                                                 batch_size, layout, device), store, n, on_map)
    pa = {k: [m["pa"][k] for m in maps] for k in inputs}
    report = _report(qm, base, dataset, faults, generator, ca, pa, maps, count, layout)
    if store.dir is not None:
        write_json(store.dir / "eval.json", report)
    return report


def _report(qm: QuantizedModel, base: nn.Module, dataset: Dataset, faults: FaultSpec,
            generator: Generator | None, ca: dict, pa: dict, maps: list[dict], count: str,
            layout: MemoryLayout) -> dict:
    """CA / PA / recovery / energy from the maps' records."""
    shape = tuple(dataset.x.shape[1:])
    base_acc = E.count_accesses(base, shape, count)
    ecc = layout.ecc
    e = E.ecc_energy_per_read(faults.read_voltage, faults.nominal, ecc=ecc)
    pa_mean, pa_std = mean_std(pa["plain"])
    ecc_report = layout.ecc_record()
    if ecc_report is not None:
        ecc_report.update({"read_overhead": layout.read_overhead,
                           "decoder_energy": E.decoder_energy(ecc),
                           **{k: float(np.mean([m["ecc"][k] for m in maps]))
                              for k in maps[0]["ecc"]}})
    report = {"ca": ca["plain"], "pa_mean": pa_mean, "pa_std": pa_std,
              "pa_ci95": ci95_halfwidth(pa["plain"]), "pa_nf_ci95": None,
              "ca_nf": None, "pa_nf_mean": None, "pa_nf_std": None, "recovery": None,
              "energy_saving": E.addon_saving(base_acc, 0, faults.read_voltage, faults.nominal,
                                              ecc=ecc),
              "energy_saving_base": 1.0 - e, "base_accesses": base_acc, "generator": None,
              "generator_accesses": 0, "access_count": count, "pa": pa["plain"],
              "n_models": len(maps), "samples": len(dataset), "dataset": dataset.name,
              "faults": faults.describe(), "layout": layout.describe(),
              "bit_placement": layout.bit_placement, "ecc": ecc_report}
    report.update(_errors(ca["plain"], pa["plain"]))
    if generator is not None:
        g_acc = E.count_accesses(generator, shape, count)
        nf_mean, nf_std = mean_std(pa["nf"])
        lost = report["ca"] - report["pa_mean"]
        report.update({"ca_nf": ca["nf"], "pa_nf_mean": nf_mean, "pa_nf_std": nf_std,
                       "pa_nf_ci95": ci95_halfwidth(pa["nf"]),
                       "recovery": nf_mean - report["pa_mean"],
                       "recovered_fraction": ((nf_mean - report["pa_mean"]) / lost
                                              if lost > 0 else None),
                       "energy_saving": E.addon_saving(base_acc, g_acc, faults.read_voltage,
                                                       faults.nominal, ecc=ecc),
                       "generator": generator.name, "generator_width": generator.width,
                       "generator_accesses": g_acc, "pa_nf": pa["nf"]})
        report.update(_errors(ca["nf"], pa["nf"], "_nf"))
    return report


def image_fingerprint_of(qm: QuantizedModel) -> str:
    """SHA-256 of a quantized model's memory image (which base model an evaluation belongs to)."""
    import hashlib
    return hashlib.sha256(qm.image.tobytes()).hexdigest()


def _module_sha256(module: nn.Module) -> str:
    from sramsim.analysis.sweep import model_sha256
    return model_sha256(module)
