"""Stacks of faulty weight sets of a quantized base model, ready for one batched forward pass.

The N perturbed models of an EOPM step are never N copies of the model: they are N faulty memory
images (numba kernels on CPU, torch ops on other devices), decoded together into tensors with a
leading model axis, and run with `torch.func.functional_call` (vmapped over that axis).
"""
from __future__ import annotations

import numpy as np
import torch

from sramsim.errors import InputError, check_device
from sramsim.inject.draws import ChipDraw, Sampler, apply_numpy
from sramsim.inject.quantized_model import QuantizedModel
from sramsim.inject.torch_backend import TorchApplier
from sramsim.memory.chip import Faults


def dequantize_stack(qm: QuantizedModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """[K, nbytes] uint8 images -> {name: [K, *shape]} weights (`qm.dequantize`, K at once)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 2:
        raise InputError("images must be a [K, nbytes] tensor, got "
                         f"{getattr(images, 'shape', images)!r}")
    return qm.dequantize(images)


class WeightSets:
    """Builds stacked weight sets of `qm` on `device` from fault draws.

    path "numpy": numba kernels into a reused host buffer, then one copy to the device;
    path "torch": the image lives on the device and faults are applied there (default off CPU).
    """

    def __init__(self, qm: QuantizedModel, device: str | torch.device = "cpu",
                 path: str | None = None) -> None:
        self.qm = qm
        self.device = check_device(device)
        self.path = path or ("numpy" if self.device.type == "cpu" else "torch")
        if self.path not in ("numpy", "torch"):
            raise InputError(f"path must be 'numpy' or 'torch', got {path!r}")
        self.nbits = qm.image.size * 8
        self._buffer = np.empty((0, qm.image.size), dtype=np.uint8)
        self._applier: TorchApplier | None = None
        if self.path == "torch":
            self._applier = TorchApplier(torch.from_numpy(qm.image.copy()).to(self.device))
        self._clean = {k: v.to(self.device) for k, v in qm.clean_weights().items()}

    @property
    def clean(self) -> dict[str, torch.Tensor]:
        """Fault-free quantized weights (the model at nominal voltage)."""
        return self._clean

    def images(self, draws: list[ChipDraw | Faults]) -> torch.Tensor:
        """[len(draws), nbytes] faulty images on the device."""
        if self._applier is not None:                   # the torch path
            return torch.stack([self._applier(d) for d in draws])
        if self._buffer.shape[0] < len(draws):
            self._buffer = np.empty((len(draws), self.qm.image.size), dtype=np.uint8)
        buf = self._buffer[:len(draws)]
        for i, d in enumerate(draws):
            apply_numpy(self.qm.image, d, buf[i])
        return torch.from_numpy(buf).to(self.device, copy=True)

    def sample(self, sampler: Sampler, n: int, with_clean: bool = False) -> dict[str, torch.Tensor]:
        """n fresh faulty weight sets stacked on axis 0 (the clean set first when asked)."""
        draws = [sampler.draw(self.nbits) for _ in range(n)]
        stack = dequantize_stack(self.qm, self.images(draws))
        if with_clean:
            stack = {k: torch.cat([self._clean[k][None], v]) for k, v in stack.items()}
        return stack
