"""Fault-aware training (FAT): every training step runs on the weights as read back from faulty
memory, with a curriculum that raises the bit error rate over the epochs.

SparkXD (Putra et al., DAC 2021) and EDEN (Koppula et al., MICRO 2019, "curricular retraining")
retrain a network on weights corrupted by the approximate memory's errors, raising the error rate
stepwise; EDEN reports ~10x higher tolerable BER from it. Here:

- curriculum: the BER of epoch e of E goes from `start` to the target `ber`: "log" (log-spaced,
  the default), "linear", "constant" (the target from the first epoch; RandBET-like), or
  "log-uniform" (every step draws its BER log-uniformly from [start, target]: all BER values in
  every epoch, for budgets of one or two epochs). With E = 1 the only epoch of a ramp trains at
  the target.
- fault source, a fresh map every step (seed derived from (seed, epoch, step), so a resumed run
  sees the same maps):
    "random"          independent bit errors at the BER (`RandomBitErrors`);
    "dram:error-model=K"  EDEN error model K (0-3) of the default LPDDR3 part, the weights laid
                      into it by drmap placement (`sramsim.inject.dram_draws.DramBitErrors`): a
                      fresh chip (weak lines) and fresh faulty cells per step ("dram:modelK" is
                      the deprecated spelling of sramsim <= 0.1);
    "chips:P1[,P2..]" measured/profiled chips (HDF5 profiles): per step one chip of the pool at a
                      random offset, read at the voltage where that chip's BER is the step's BER.
- the loss (`fat_loss`): "faulty", the cross-entropy of the faulty forward pass alone (the
  network is trained for the memory it will run on), or "clean+faulty", RandBET's mean of the
  clean and the faulty pass (Stutz et al., MLSys 2021: with weight clipping, what moved ANN
  tolerance ~10x in this project), optionally with the faulty gradient clamped
  (`randbet_grad_clip`). Weights enter as w + (w_faulty - w).detach(), so the gradient reaches
  the float weights (straight-through), as in RandBET.
- error locations: every step draws a fresh map, so training covers BER values (the curriculum)
  *and* error locations, as EnforceSNN's fault-aware training does (Putra et al., Frontiers in
  Neuroscience 2022).
- STDP (`sramsim.nn.stdp`): the network integrates with the faulty weights and learns on the
  clean ones, its adaptive thresholds rising with the spikes the faulty weights cause; "clean+
  faulty" presents each batch twice, with the clean and the faulty weights, and applies the mean
  of the two STDP changes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, check_ber
from sramsim.memory.shipped import resolve_profiles

if TYPE_CHECKING:
    from sramsim.inject.dram_draws import DramBitErrors
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.memory.chip import Chip
    from sramsim.nn.training import TrainOptions

CURRICULA = ("log", "linear", "constant", "log-uniform")
LOSSES = ("faulty", "clean+faulty")
DEFAULT_START = 1e-5
SOURCE_HELP = ("random, dram:error-model=0..3 (EDEN error models), or "
               "chips:PROFILE.h5[,PROFILE2.h5...] (shipped:NAME or shipped for profiles that ship "
               "with sramsim)")
DRAM_SOURCE = "dram:error-model="


def curriculum_ber(target: float, epoch: int, epochs: int, kind: str = "log",
                   start: float = DEFAULT_START) -> float:
    """BER of 0-based `epoch` of `epochs` under curriculum `kind`, ending at `target` (for
    "log-uniform", whose BER is drawn per step by `step_ber`, the top of its range)."""
    if kind not in CURRICULA:
        raise InputError(f"fat_curriculum must be one of {', '.join(CURRICULA)}, got {kind!r}")
    if kind in ("constant", "log-uniform") or epochs <= 1:
        return float(target)
    t = epoch / (epochs - 1)
    if kind == "log":
        return float(10.0 ** (math.log10(start) + t * (math.log10(target) - math.log10(start))))
    return float(start + t * (target - start))


def step_ber(target: float, start: float, seed: int, epoch: int, step: int) -> float:
    """The "log-uniform" curriculum's BER of one step: log10(BER) uniform in [log10(start),
    log10(target)], from its own stream (seed, 3, epoch, step). Every epoch then covers the whole
    range of BER values (and every step fresh error locations), as EnforceSNN trains over BER
    values and locations; it needs no number of epochs to spread a ramp over."""
    u = np.random.default_rng(np.random.SeedSequence((int(seed), 3, int(epoch), int(step)))
                              ).random()
    lo, hi = math.log10(start), math.log10(target)
    return float(10.0 ** (lo + u * (hi - lo)))


def check_fat(ber: float, curriculum: str, source: str, start: float,
              loss: str = "faulty") -> None:
    """One-line InputErrors for FAT settings that cannot work (called by TrainOptions)."""
    if loss not in LOSSES:
        raise InputError(f"fat_loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not ber:
        return
    check_ber(ber, "fat_ber", allow_one=False)
    if curriculum not in CURRICULA:
        raise InputError(f"fat_curriculum must be one of {', '.join(CURRICULA)}, "
                         f"got {curriculum!r}")
    if curriculum != "constant":
        check_ber(start, "fat_start", allow_one=False)
        if not 0 < start < ber:
            raise InputError(f"fat_start must lie in (0, fat_ber = {ber:g}), got {start!r}")
    parse_source(source)


def parse_source(text: str) -> tuple[str, Any]:
    """("random", None) | ("dram", error model) | ("chips", [paths]) from a --fat-source value
    (the old spellings "dram:modelK" / "dram:K" are read too; `canonical_source` names them)."""
    text = str(text)
    if text == "random":
        return "random", None
    if text.startswith("dram:"):
        name = text[len("dram:"):]
        for prefix in ("error-model=", "model"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name not in ("0", "1", "2", "3"):
            raise InputError(f"fat_source {text!r}: the DRAM error model must be "
                             f"{DRAM_SOURCE}0..3")
        return "dram", int(name)
    if text.startswith("chips:"):
        paths = [p for p in text[len("chips:"):].split(",") if p]
        if not paths:
            raise InputError(f"fat_source {text!r}: name at least one profile file")
        try:
            paths = [str(p) for p in resolve_profiles(paths)]
        except InputError as exc:
            raise InputError(f"fat_source: {exc}") from None
        for p in paths:
            if not Path(p).is_file():
                raise InputError(f"fat_source: {p}: no such profile file")
        return "chips", paths
    raise InputError(f"fat_source must be {SOURCE_HELP}; got {text!r}")


def canonical_source(text: str, warn: bool = True) -> str:
    """A --fat-source value in its one spelling (`dram:error-model=K` for the DRAM sources);
    with `warn`, an old spelling raises a FutureWarning naming the new one."""
    kind, arg = parse_source(text)
    if kind != "dram":
        return str(text)
    new = f"{DRAM_SOURCE}{arg}"
    if warn and str(text) != new:
        import warnings
        warnings.warn(f"fault source {text!r} is deprecated: use {new!r}", FutureWarning,
                      stacklevel=3)
    return new


def fat_step_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of the fault map of one FAT step (a stream apart from batch order and RandBET)."""
    return int(np.random.SeedSequence((int(seed), 2, int(epoch), int(step))).generate_state(1)[0])


class FaultInjector:
    """The FAT fault source of one training run (built once: placement and profiles are reused).

    `weights(model, epoch, step)` gives the model's current stored weights as read back through
    a fresh fault map at the curriculum BER of `epoch`, with straight-through gradients.
    """

    def __init__(self, model: nn.Module, names: list[str], opts: TrainOptions):
        self.names, self.opts = list(names), opts
        self.active = bool(getattr(opts, "fat_ber", 0.0))
        self._arg: Any                  # parse_source's argument of the kind
        self.kind, self._arg = parse_source(opts.fat_source) if self.active else ("off", None)
        self._dram: DramBitErrors | None = None
        self._chips: list[Chip] | None = None
        self._out: np.ndarray | None = None
        if self.kind == "dram":
            self._dram = self._dram_source(model)
        elif self.kind == "chips":
            self._chips = self._load_chips(self._arg)

    def ber(self, epoch: int, step: int | None = None) -> float:
        """The curriculum BER of 0-based `epoch` (and `step`: "log-uniform" draws one per step;
        without a step, the top of its range); 0 when FAT is off."""
        if not self.active:
            return 0.0
        o = self.opts
        if o.fat_curriculum == "log-uniform" and step is not None:
            return step_ber(o.fat_ber, o.fat_start, o.seed, epoch, step)
        return curriculum_ber(o.fat_ber, epoch, o.epochs, o.fat_curriculum, o.fat_start)

    def weights(self, model: nn.Module, epoch: int, step: int) -> dict[str, torch.Tensor] | None:
        """Faulty weights for (epoch, step), straight-through to the float weights; None if off."""
        if not self.active:
            return None
        from sramsim.inject.quantized_model import QuantizedModel
        o = self.opts
        params = dict(model.named_parameters())
        qm = QuantizedModel(model, o.bits, o.scheme, o.clip)
        if self._out is None or self._out.shape != qm.image.shape:
            self._out = np.empty_like(qm.image)
        image = self.faulty_image(qm, self.ber(epoch, step), fat_step_seed(o.seed, epoch, step))
        faulty = qm.dequantize(image, params[self.names[0]].device)
        return {n: params[n] + (faulty[n].to(params[n].dtype) - params[n]).detach()
                for n in self.names}

    def faulty_image(self, qm: QuantizedModel, ber: float, seed: int) -> np.ndarray:
        """`qm`'s image read back through this source's map for `seed` at `ber` (into the buffer
        `weights` reuses, else a new array)."""
        from sramsim.inject.mapping import apply_bit_faults
        from sramsim.memory.random_errors import RandomBitErrors
        if self.kind == "random":
            return qm.faulty_image(RandomBitErrors(ber, seed=seed), out=self._out)
        if self._dram is not None:                          # kind "dram"
            if self._dram.n_bits != qm.n_bits:
                raise ValueError("the model's image changed size during training")
            out = self._out if self._out is not None else np.empty_like(qm.image)
            return apply_bit_faults(qm.image, self._dram.draw(ber, seed), out, checked=True)
        assert self._chips is not None                      # kind "chips"
        rng = np.random.default_rng(seed)
        chip = self._chips[int(rng.integers(len(self._chips)))]
        offset = int(rng.integers(chip.geometry.capacity_words))
        return qm.faulty_image(chip, chip_voltage(chip, ber), offset, out=self._out)

    def describe(self) -> dict:
        """The source as JSON, for logs and summaries."""
        if not self.active:
            return {"kind": "off"}
        d = {"kind": self.kind, "target_ber": self.opts.fat_ber,
             "curriculum": self.opts.fat_curriculum, "start": self.opts.fat_start}
        if self._dram is not None:
            d.update(self._dram.describe())
        if self._chips is not None:
            d["chips"] = [c.name for c in self._chips]
        return d

    def _dram_source(self, model: nn.Module) -> DramBitErrors:
        from sramsim.inject import dram_mapping as P
        from sramsim.inject.dram_draws import DramBitErrors
        from sramsim.inject.quantized_model import QuantizedModel
        from sramsim.memory.dram import DramGeometry
        o = self.opts
        geometry = DramGeometry.from_part()
        n_bytes = QuantizedModel(model, o.bits, o.scheme, o.clip).image.size
        return DramBitErrors(P.place(n_bytes, geometry, "drmap"), self._arg)

    def _load_chips(self, paths: list[str]) -> list[Chip]:
        from sramsim.memory.profiles import load_chip
        chips = [load_chip(p) for p in paths]
        top = self.opts.fat_ber
        for path, chip in zip(paths, chips, strict=True):
            if len(chip) < math.ceil(top * chip.geometry.capacity_bits):
                raise InputError(f"fat_source: {path}: chip {chip.name!r} reaches BER "
                                 f"{len(chip) / chip.geometry.capacity_bits:.3g} at its floor, "
                                 f"below fat_ber {top:g}")
        return chips


def chip_voltage(chip: Chip, ber: float) -> float:
    """The highest voltage at which `chip` has at least ceil(ber * bits) faulty bits (its vfail
    list is sorted descending, so that is the k-th largest vfail)."""
    k = max(1, math.ceil(ber * chip.geometry.capacity_bits))
    if k > len(chip):
        raise InputError(f"chip {chip.name!r} does not reach BER {ber:g} above its floor")
    return float(chip.vfail[k - 1])
