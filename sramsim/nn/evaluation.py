"""Batched inference: predictions, accuracy and robust error, optionally with swapped-in weights.

`weights` is a {parameter name: tensor} dict (e.g. `QuantizedModel.perturbed(...)`) passed to
`torch.func.functional_call`, so the model's own parameters are never touched. `FaultyModel`
sets up a model under one fault map after another for these functions: faults written in place
into a copy of the model (O(faults) per map) where it can, else such a weights dict.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError
from sramsim.nn.data import Dataset
from sramsim.stats import mean_std


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
                out = model(xb) if weights is None else torch.func.functional_call(model, weights, (xb,))
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


class FaultyModel:
    """A quantized model to evaluate under one fault map after another.

    `model` (default: qm's) is copied once; the copy's quantized parameters hold qm's clean
    weights and each map's faults are written into them in place and restored afterwards
    (`QuantizedModel.faults_applied`, O(faults) per map). Where that cannot be done (parameters
    on a GPU or not float32) the map's weights are dequantized and swapped in with
    functional_call instead. Both give bit-identical weights, hence identical results.
    """

    def __init__(self, qm, model: nn.Module | None = None, device=None):
        model = qm.model if model is None else model
        self.qm = qm
        self.device = device
        self.inplace = qm.inplace_fits(model)
        # the copy keeps the caller's float weights intact
        self.model = copy.deepcopy(model) if self.inplace else model
        if self.inplace:
            qm.load_clean(self.model)

    @contextmanager
    def faults(self, source, voltage: float | None = None,
               offset: int = 0) -> Iterator[tuple[dict | None, bool]]:
        """Yields (weights, changed) for `evaluate(self.model, data, weights)` under one map
        (source: as `QuantizedModel.faults_applied`, a faulty image included); changed is False
        when no byte of the memory image reads back differently."""
        if self.inplace:
            with self.qm.faults_applied(self.model, source, voltage, offset) as applied:
                yield None, not applied.unchanged
            return
        image = source if isinstance(source, np.ndarray) else \
            self.qm.faulty_image(source, voltage, offset)
        changed = not np.array_equal(image, self.qm.image)
        yield self.qm.dequantize(image if changed else self.qm.image, self.device), changed
