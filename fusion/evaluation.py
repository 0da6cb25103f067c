"""Clean and perturbed accuracy of a base model without and with a generator, and the net energy.

CA: accuracy with the clean quantized weights. PA: accuracy over M fault maps (mean and sample
std, ddof=1). The same maps are used without and with G (paired), so recovery = PA(G) - PA
measures G and not the luck of the draw. G runs at nominal voltage: its own weights are exact,
and its weight reads are charged at nominal energy in the net saving
    saving = [E_nom(base) - (E_V(base) + E_nom(G))] / E_nom(base).
Transfer (restricted access): G may come from training on another (surrogate) base model; only
the input shape has to agree.

Each evaluation map is written into a copy of the base model in place (`FaultyModel`, O(faults)
per map) on the CPU. Two paths stay functional (dequantized weight stacks): `Validator`, whose
maps are fixed for a whole training run, so its stacks are decoded once and reused every epoch;
and EOPM training (`fusion.eopm`), which runs N perturbed copies in one batched forward pass
(one weight tensor [N, ...] per layer), where one in-place model holds one map at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sramsim import BerCurve, Chip, QuantizedModel
from sramsim.analysis import energy as E
from sramsim.nn.data import Dataset
from sramsim.errors import InputError, check_ber
from sramsim.inject.draws import ChipDraw, ChipPool, RandomSampler, fixed_draws, read_decoded
from sramsim.inject.bit_placement import check_policy as check_bit_policy
from sramsim.inject.ecc import check_policy
from sramsim.inject.weight_sets import WeightSets, dequantize_stack
from sramsim.nn.evaluation import FaultyModel, accuracy, robust_error_summary
from sramsim.stats import ci95_halfwidth, mean_std

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

    def __post_init__(self):
        if self.chips:
            if self.voltage is None:
                raise InputError("chip profiles need --voltage")
            if self.ber is not None:
                raise InputError("give either --ber or --profile ... --voltage, not both")
            for chip in self.chips:
                chip.check_voltage(self.voltage)
            return
        curve = BerCurve.builtin(self.curve)
        if self.ber is None and self.voltage is None:
            raise InputError("give --ber P or --profile A.h5 ... --voltage V")
        if self.ber is not None and self.voltage is not None:
            raise InputError("give either --ber or --voltage for random errors, not both")
        if self.ber is None:
            if not (np.isfinite(self.voltage) and self.voltage > 0):
                raise InputError(f"--voltage must be a positive number, got {self.voltage!r}")
            self.ber = float(curve.ber(self.voltage))
        else:
            self.ber = check_ber(self.ber, "--ber", allow_one=False)
            self.voltage = float(curve.voltage(self.ber))

    @property
    def nominal(self) -> float:
        """Nominal supply voltage (the chips', or 1 on the normalised curve)."""
        return float(self.chips[0].nominal_voltage) if self.chips else 1.0

    def sampler(self, seed: int):
        """A training sampler: fresh random errors, or the chip pool at random offsets."""
        if self.chips:
            return ChipPool(self.chips, self.voltage, seed=seed)
        return RandomSampler(self.ber, seed=seed)

    def eval_draws(self, nbits: int, n_models: int | None, seed: int = EVAL_SEED,
                   purpose: str = "test") -> list:
        """The fixed fault maps of an evaluation (`purpose="test"`) or a validation set.

        `n_models` defaults to 10 random maps, or one map per chip; which maps is
        `sramsim.inject.draws.fixed_draws`'s rule (validation maps are never evaluation maps).
        """
        n = n_models if n_models is not None else len(self.chips) if self.chips else 10
        return list(fixed_draws(nbits, n, ber=None if self.chips else self.ber, chips=self.chips,
                                voltage=self.voltage if self.chips else None, seed=seed,
                                purpose=purpose))

    def describe(self) -> dict:
        """The fault source as JSON (reports, generator meta, checkpoints)."""
        if self.chips:
            return {"kind": "chips", "voltage": self.voltage,
                    "chips": [c.name for c in self.chips],
                    "ber": float(np.mean([c.ber(self.voltage) for c in self.chips]))}
        return {"kind": "random", "ber": self.ber, "voltage": self.voltage, "curve": self.curve}


def check_shapes(dataset: Dataset, base_meta: dict | None, generator=None, where: str = "") -> None:
    """Input channels of data, base model and generator must agree (transfer needs only that)."""
    c = dataset.in_channels
    if base_meta and int(base_meta.get("in_channels", c)) != c:
        raise InputError(f"{where or 'base model'} expects {base_meta['in_channels']}-channel "
                         f"images but {dataset.name} has {c}")
    if generator is not None and generator.in_channels != c:
        raise InputError(f"generator {generator.name} was built for {generator.in_channels}-channel "
                         f"images but {dataset.name} has {c}")


@torch.no_grad()
def transform(generator, x: torch.Tensor, batch_size: int = 1000, device="cpu") -> torch.Tensor:
    """G(x) for a whole dataset, in eval mode, on the CPU."""
    generator.eval()
    return torch.cat([generator(x[i:i + batch_size].to(device)).cpu()
                      for i in range(0, x.shape[0], batch_size)])


def transformed(generator, dataset: Dataset, batch_size: int = 1000, device="cpu") -> Dataset:
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
                 batch_size: int = 1000, device="cpu", seed: int = VAL_SEED):
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

    def __call__(self, generator) -> float:
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


def evaluate(qm: QuantizedModel, dataset: Dataset, faults: FaultSpec, generator=None,
             n_models: int | None = None, batch_size: int = 1000, device="cpu",
             seed: int = EVAL_SEED, count: str = "weights", ecc: str | None = None,
             ecc_policy: str = "keep", bit_placement: str = "linear",
             progress: bool = False) -> dict:
    """CA / PA without and with `generator`, recovery and the net energy saving, as fractions.

    `count` is how weight reads are counted for the energy (`sramsim.analysis.systolic.METHODS`).
    `ecc` ("secded72" / "secded13"): the base model's weights are stored with SECDED check bits
    in the same faulty memory; the fault maps fall on that stored image and each map is decoded
    with `ecc_policy` (on the CPU by the numba decoder, then moved to `device`); the energy counts
    the code's extra reads and its decoder (`sramsim.analysis.energy.ecc_energy_per_read`).
    `bit_placement` ("shuffle" / "skip-faulty-words", chip profiles only, not with ecc): each
    chip's fault-aware bit placement (`sramsim.inject.bit_placement`) planned at the voltage and
    the map's offset; the base model's weights are read back through it. Energy is not changed.
    `progress`: one step per fault map on stderr (`sramsim.progress`).
    """
    check_bit_policy(bit_placement)
    if bit_placement != "linear" and (ecc is not None or not faults.chips):
        raise InputError(f"--placement {bit_placement} " + (
            "with --ecc is not modelled (use one of the two)" if ecc is not None
            else "needs a known chip map (--profile ... --voltage)"))
    if bit_placement == "skip-faulty-words":          # too few good words: refused up front
        for chip in faults.chips:
            qm.plan_bits(chip, faults.voltage, bit_placement)
    device = torch.device(device)
    base = qm.model.to(device).eval()
    ws = WeightSets(qm, device)
    if ecc is None and ecc_policy != "keep":
        raise InputError("--ecc-policy needs --ecc")
    memory = None if ecc is None else qm.ecc_memory(ecc)
    check_policy(ecc_policy)
    draws = faults.eval_draws(qm.n_bits if memory is None else memory.n_bits, n_models, seed)
    inputs = {"plain": dataset}
    if generator is not None:
        generator = generator.to(device)
        inputs["nf"] = transformed(generator, dataset, batch_size, device)
    ca = {k: accuracy(base, d, ws.clean, batch_size) for k, d in inputs.items()}
    pa = {k: [] for k in inputs}
    ecc_counts, buf = [], np.empty_like(qm.image)
    # On the CPU each map's faults are written into a copy of the base model in place
    # (O(faults), bit-identical weights); elsewhere (a GPU) each map is dequantized on the device.
    faulty = FaultyModel(qm, base, device) if qm.inplace_fits(base) else None
    from sramsim.progress import progress as reporter
    bar = reporter(draws, desc="fusion eval", unit="map", enabled=progress)
    for draw in bar:
        if bit_placement != "linear":
            fault_map = (qm.faulty_image(draw.chip, draw.voltage, draw.offset, out=buf,
                                         bit_placement=bit_placement),)
        elif memory is not None:
            fault_map = (_ecc_read(memory, draw, ecc_policy, buf, ecc_counts),)
        elif isinstance(draw, ChipDraw):
            fault_map = (draw.chip, draw.voltage, draw.offset)
        else:
            fault_map = (draw,)
        if faulty is not None:
            with faulty.faults(*fault_map) as (weights, _):
                for k, d in inputs.items():
                    pa[k].append(accuracy(faulty.model, d, weights, batch_size))
            continue
        if len(fault_map) == 1 and isinstance(fault_map[0], np.ndarray):
            weights = qm.dequantize(fault_map[0], device)
        else:
            weights = {n: w[0] for n, w in dequantize_stack(qm, ws.images([draw])).items()}
        for k, d in inputs.items():
            pa[k].append(accuracy(base, d, weights, batch_size))
    bar.close()
    shape = tuple(dataset.x.shape[1:])
    base_acc = E.count_accesses(base, shape, count)
    e = E.ecc_energy_per_read(faults.voltage, faults.nominal, ecc=ecc)
    pa_mean, pa_std = mean_std(pa["plain"])
    report = {"ca": ca["plain"], "pa_mean": pa_mean, "pa_std": pa_std,
              "pa_ci95": ci95_halfwidth(pa["plain"]), "pa_nf_ci95": None,
              "ca_nf": None, "pa_nf_mean": None, "pa_nf_std": None, "recovery": None,
              "energy_saving": E.addon_saving(base_acc, 0, faults.voltage, faults.nominal, ecc=ecc),
              "energy_saving_base": 1.0 - e, "base_accesses": base_acc, "generator": None,
              "generator_accesses": 0, "access_count": count, "pa": pa["plain"], "n_models": len(draws),
              "samples": len(dataset), "dataset": dataset.name, "faults": faults.describe(),
              "bit_placement": bit_placement,
              "ecc": None if memory is None else {
                  "code": memory.code.name, "policy": ecc_policy,
                  "read_overhead": memory.code.overhead, "decoder_energy": E.decoder_energy(ecc),
                  **{k: float(np.mean([c[k] for c in ecc_counts])) for k in ecc_counts[0]}}}
    report.update(_errors(ca["plain"], pa["plain"]))
    if generator is not None:
        g_acc = E.count_accesses(generator, shape, count)
        nf_mean, nf_std = mean_std(pa["nf"])
        lost = report["ca"] - report["pa_mean"]
        report.update({"ca_nf": ca["nf"], "pa_nf_mean": nf_mean, "pa_nf_std": nf_std,
                       "pa_nf_ci95": ci95_halfwidth(pa["nf"]),
                       "recovery": nf_mean - report["pa_mean"],
                       "recovered_fraction": (nf_mean - report["pa_mean"]) / lost if lost > 0 else None,
                       "energy_saving": E.addon_saving(base_acc, g_acc, faults.voltage,
                                                       faults.nominal, ecc=ecc),
                       "generator": generator.name, "generator_width": generator.width,
                       "generator_accesses": g_acc, "pa_nf": pa["nf"]})
        report.update(_errors(ca["nf"], pa["nf"], "_nf"))
    return report


def _ecc_read(memory, draw, policy: str, out: np.ndarray, counts: list) -> np.ndarray:
    """The decoded data image of one fault map (a ChipDraw or Faults over the stored image)."""
    image, stats = read_decoded(memory, draw, policy, out)
    counts.append(stats.as_dict())
    return image
