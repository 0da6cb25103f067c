"""Batched inference: predictions, accuracy and robust error, optionally with swapped-in weights.

`weights` is a {parameter name: tensor} dict (e.g. `QuantizedModel.perturbed(...)`) passed to
`torch.func.functional_call`, so the model's own parameters are never touched. `Evaluator` runs
a quantized model under one fault map after another: faults written in place into a copy of the
model it owns (O(faults) per map) where it can, else such a weights dict.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError
from sramsim.inject import inplace
from sramsim.inject.activations import QuantizedActivations
from sramsim.inject.draws import ChipDraw
from sramsim.inject.layout import MemoryLayout
from sramsim.inject.mapping import FaultSource
from sramsim.inject.quantized_model import QuantizedModel
from sramsim.memory.chip import Chip
from sramsim.nn.data import Dataset
from sramsim.stats import mean_std

if TYPE_CHECKING:
    from sramsim.inject.activations import ActivationFaults
    from sramsim.inject.layout import ImageModel


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def logits(model: nn.Module, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None,
           batch_size: int = 1000) -> torch.Tensor:
    """Model outputs for all of `x` (eval mode, no grad), on the CPU."""
    if batch_size < 1:
        raise InputError("batch_size must be >= 1")
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = []
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size].to(device, non_blocking=True)
                out = model(xb) if weights is None else torch.func.functional_call(model, weights,
                                                                                   (xb,))
                outs.append(out.float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def predict(model: nn.Module, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None,
            batch_size: int = 1000) -> torch.Tensor:
    """Predicted class of every row of `x` (int64 [N])."""
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64)
    return logits(model, x, weights, batch_size).argmax(1)


def accuracy(model: nn.Module, dataset: Dataset, weights: dict[str, torch.Tensor] | None = None,
             batch_size: int = 1000) -> float:
    """Fraction of `dataset` classified correctly, in [0, 1]."""
    if len(dataset) == 0:
        raise InputError(f"dataset {dataset.name!r} is empty")
    pred = predict(model, dataset.x, weights, batch_size)
    return float((pred == dataset.y).double().mean())


def evaluate(model: nn.Module, dataset: Dataset, weights: dict[str, torch.Tensor] | None = None,
             batch_size: int = 1000) -> dict[str, float]:
    """{"accuracy", "loss"} (mean cross-entropy) on `dataset` in one pass."""
    if len(dataset) == 0:
        raise InputError(f"dataset {dataset.name!r} is empty")
    out = logits(model, dataset.x, weights, batch_size)
    return {"accuracy": float((out.argmax(1) == dataset.y).double().mean()),
            "loss": float(nn.functional.cross_entropy(out, dataset.y))}


def robust_error_summary(clean_accuracy: float, accuracies: Iterable[float]) -> dict:
    """Clean and robust error (RErr, Stutz et al. MLSys 2021) from accuracies already measured.

    The one RErr computation: an example counts as wrong when the model under bit errors gets it
    wrong, so RErr over one fault map is 1 - its accuracy; mean and sample std over the maps.
    Returns {"clean_error", "robust_error", "robust_error_std", "n"}.
    """
    errors = [1.0 - float(a) for a in accuracies]
    if not errors:
        raise InputError("robust error needs at least one perturbed accuracy")
    mean, std = mean_std(errors)
    return {"clean_error": 1.0 - float(clean_accuracy), "robust_error": mean,
            "robust_error_std": std, "n": len(errors)}


def robust_error(model: nn.Module, dataset: Dataset,
                 perturbed: Iterable[dict[str, torch.Tensor]],
                 clean: dict[str, torch.Tensor] | None = None, batch_size: int = 1000) -> dict:
    """Robust error of `model` on `dataset`, averaged over the given perturbed weight sets.

    Returns `robust_error_summary`'s record; the clean error uses `clean` (e.g.
    `QuantizedModel.clean_weights()`), or the model's own weights.
    """
    accuracies = [accuracy(model, dataset, w, batch_size) for w in perturbed]
    if not accuracies:
        raise InputError("robust_error needs at least one set of perturbed weights")
    return robust_error_summary(accuracy(model, dataset, clean, batch_size), accuracies)


@dataclass(frozen=True)
class Faulted:
    """A model that holds one fault map's weights, inside an `Evaluator.faults` block.

    Run it as `model(x)` when `weights` is None, else as `functional_call(model, weights, x)`;
    `logits` and `evaluate` do the right one. `changed` is False when no byte of the memory image
    reads back differently (the model is the clean quantized one); `record` is what the memory
    layout did (ECC decoder counts, the bit placement's table; {} for the plain layout).
    """

    model: nn.Module
    weights: dict[str, torch.Tensor] | None
    changed: bool
    record: dict = field(default_factory=dict)

    def logits(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Outputs for all of `x` (eval mode, no grad), on the CPU."""
        return logits(self.model, x, self.weights, batch_size)

    def evaluate(self, dataset: Dataset, batch_size: int = 1000) -> dict[str, float]:
        """{"accuracy", "loss"} on `dataset` (see `evaluate`)."""
        return evaluate(self.model, dataset, self.weights, batch_size)


class Evaluator:
    """Runs a quantized model under one fault map after another: the one way `sramsim sweep`,
    `vuln`, `dram tolerance`, `sparkxd` and `fusion eval` put faults into a model.

    qm: a `QuantizedModel` or a `TorchQuantizedModel`; layout: how its weights are stored
    (`sramsim.inject.layout.MemoryLayout`, default linear and unprotected); device: where the
    functional path puts the weights.

    The evaluator owns the model it runs, so the caller's model is never changed. A
    QuantizedModel whose weights are contiguous float32 on the CPU runs on a private copy whose
    quantized parameters hold the clean dequantized weights; each map's faults are written into
    it in place and restored (`sramsim.inject.inplace`, O(faults) per map). Otherwise each map's
    image is dequantized and swapped in with functional_call (the caller's model is only read).
    Both give bit-identical weights. A TorchQuantizedModel's int8 weights are loaded into a
    private copy of its model. One block at a time per evaluator (use one per thread).

    activations: layer outputs stored in an activation buffer
    (`sramsim.inject.activations.QuantizedActivations`): every run of this evaluator then
    quantizes them to 8 bits, and `faults(..., activations=...)` reads them back through the
    buffer's faults (forward hooks on the model it runs, removed after each block).
    """

    def __init__(self, qm: ImageModel, layout: MemoryLayout | None = None,
                 device: str | torch.device | None = None,
                 activations: QuantizedActivations | None = None,
                 activation_backend: str = "auto") -> None:
        from sramsim.inject.torch_quantized import TorchQuantizedModel, copy_model
        self.qm = qm
        self.layout = layout or MemoryLayout()
        self.device = device
        self.activations = activations
        self.activation_backend = activation_backend
        self.torch_quantized = isinstance(qm, TorchQuantizedModel)
        if isinstance(qm, TorchQuantizedModel):
            if self.layout.ecc is not None:
                raise InputError("ecc is not modelled for PyTorch-quantized (int8) models")
            self._own = TorchQuantizedModel(copy_model(qm.model), qm.word_bits)
            self.model = self._own.model
            self.inplace = False
        else:
            self.inplace = inplace.inplace_fits(qm, qm.model)
            self.model = copy.deepcopy(qm.model) if self.inplace else qm.model
            if self.inplace:           # its quantized weights move to one flat buffer
                inplace.load_clean(qm, self.model)
        self._clean: dict = {}

    @property
    def _quantized(self) -> QuantizedModel:
        """The QuantizedModel of a float model (the paths other than a TorchQuantizedModel's)."""
        assert isinstance(self.qm, QuantizedModel)
        return self.qm

    @contextmanager
    def faults(self, source: FaultSource | ChipDraw | np.ndarray | None = None,
               voltage: float | None = None, offset: int = 0,
               activations: ChipDraw | ActivationFaults | None = None) -> Iterator[Faulted]:
        """Yields the model under one fault map (a `Faulted`), restored on leaving the block.

        source: a Chip (at `voltage`, at memory word `offset` or by the layout's DRAM mapping),
        RandomBitErrors, Faults, a `sramsim.inject.draws.ChipDraw`, a faulty data image (uint8,
        already read back: no voltage, offset or layout applies), or None for the clean
        quantized model. activations (only with the evaluator's `activations`): the activation
        buffer's map, a ChipDraw of the buffer chip or its `ActivationFaults`; None: stored
        without faults. `changed` then also says whether a stored activation sits on a faulty
        cell.
        """
        if self.activations is None:
            if activations is not None:
                raise InputError("activation faults need an evaluator with stored activations")
            with self._weight_faults(source, voltage, offset) as run:
                yield run
            return
        from sramsim.inject.activations import ActivationFaults, attached
        if not isinstance(activations, ActivationFaults):
            chip, v, off = _unpack_draw(activations, None, 0)
            if chip is not None and not isinstance(chip, Chip):
                raise InputError(f"an activation buffer is a Chip, got {type(chip).__name__}")
            activations = self.activations.masks(chip, v, off)
        with self._weight_faults(source, voltage, offset) as run, \
                attached(run.model, self.activations, activations, self.activation_backend):
            yield Faulted(run.model, run.weights, run.changed or activations.any, run.record)

    @contextmanager
    def _weight_faults(self, source: FaultSource | ChipDraw | np.ndarray | None,
                       voltage: float | None,
                       offset: int) -> Iterator[Faulted]:
        """`faults` for the weights alone."""
        source, voltage, offset = _unpack_draw(source, voltage, offset)
        if self.torch_quantized:
            image, record = self._read(source, voltage, offset)
            with self._own.loaded(image):
                yield Faulted(self.model, None, not np.array_equal(image, self.qm.image), record)
        elif source is None:
            yield Faulted(self.model,
                          None if self.inplace else self._quantized.clean_weights(self.device),
                          False)
        elif self.inplace:
            with inplace.faults_applied(self._quantized, self.model, source, voltage, offset,
                                        None if isinstance(source, np.ndarray) else self.layout
                                        ) as applied:
                yield Faulted(self.model, None, not applied.unchanged, applied.record)
        else:
            image, record = self._read(source, voltage, offset)
            changed = not np.array_equal(image, self.qm.image)
            yield Faulted(self.model, self._quantized.dequantize(
                image if changed else self.qm.image, self.device), changed, record)

    def _read(self, source: FaultSource | np.ndarray | None, voltage: float | None,
              offset: int) -> tuple[np.ndarray, dict]:
        if source is None:
            return self.qm.image, {}
        if isinstance(source, np.ndarray):
            self._check_image(source)
            return source, {}
        return self.layout.read(self.qm, source, voltage, offset)

    def _check_image(self, image: np.ndarray) -> None:
        """Refuse a faulty image that is not shaped like the clean one."""
        if image.dtype != np.uint8 or image.shape != self.qm.image.shape:
            raise InputError(f"a faulty image must be uint8 [{self.qm.image.size}], got "
                             f"{image.dtype} {list(image.shape)}")

    def clean(self, dataset: Dataset, batch_size: int = 1000) -> dict[str, float]:
        """{"accuracy", "loss"} of the fault-free quantized model on `dataset` (computed once
        per dataset object)."""
        key = (id(dataset), batch_size)
        if key not in self._clean:
            with self.faults(None) as run:
                self._clean[key] = (dataset, run.evaluate(dataset, batch_size))
        return dict(self._clean[key][1])

    def evaluate(self, dataset: Dataset, source: FaultSource | ChipDraw | np.ndarray | None = None,
                 voltage: float | None = None, offset: int = 0, batch_size: int = 1000,
                 activations: ChipDraw | ActivationFaults | None = None) -> dict:
        """{"accuracy", "loss", "changed", **record} of the model under one fault map (see
        `faults`); a map that changes no byte of the image is the clean evaluation, not
        evaluated again."""
        with self.faults(source, voltage, offset, activations) as run:
            r = run.evaluate(dataset, batch_size) if run.changed else \
                self.clean(dataset, batch_size)
            return {**r, "changed": run.changed, **run.record}


def _unpack_draw(source: FaultSource | ChipDraw | np.ndarray | None, voltage: float | None,
                 offset: int) -> tuple[FaultSource | np.ndarray | None, float | None, int]:
    """A ChipDraw as (chip, voltage, offset); anything else as given."""
    from sramsim.inject.draws import ChipDraw, as_source
    if isinstance(source, ChipDraw):
        if voltage is not None or offset:
            raise InputError("a chip draw carries its own voltage and offset")
        return as_source(source)
    return source, voltage, offset
