"""Weight-memory reads per inference when every conv/linear weight is read once.

The plain count, shared by `sramsim.analysis.systolic` (its "weights" method) and
`sramsim.analysis.energy` (which re-exports it); it imports neither, so the two never import each
other.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sramsim.errors import InputError
from sramsim.inject.quantized_model import quantized_parameter_names  # the memory image's tensors


def weight_accesses(model: nn.Module, input_shape: Sequence[int] | None = None,
                    include_bias: bool = False) -> int:
    """Weight-memory reads per inference: every conv/linear weight read once.

    `input_shape` ([C, H, W] or [N, C, H, W]) is checked against the first layer when given; the
    count itself does not depend on it (a tiling-aware count would).
    """
    names = quantized_parameter_names(model, include_bias)
    if not names:
        raise InputError("model has no conv/linear weights to count")
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) not in (3, 4) or min(shape) <= 0:
            raise InputError(f"input shape must be [C, H, W] or [N, C, H, W], got {input_shape!r}")
        first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if first is not None and first.in_channels != shape[-3]:
            raise InputError(f"input has {shape[-3]} channels but the model's first layer "
                             f"expects {first.in_channels}")
    params = dict(model.named_parameters())
    return int(sum(params[n].numel() for n in names))
