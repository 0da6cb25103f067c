"""Base models by name, and the checkpoint file that `sweep`, `energy` and `fusion` load.

Checkpoint format (torch.save, loaded with weights_only=True; `sramsim.nn.torch_files`):
    {"format": "sramsim.model", "version": 1, "meta": {...}, "state_dict": {...}, "sha256": ...}
meta holds at least arch, in_channels, num_classes, norm (to rebuild the model) and bits, scheme,
clip, dataset (how it was trained and how it is meant to be quantized).
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, check_choice, check_device
from sramsim.memory.sizes import require_memory
from sramsim.nn.models.cnn import SmallCNN
from sramsim.nn.models.norm import NORMS, check_norm
from sramsim.nn.models.resnet import resnet18, resnet20, resnet50
from sramsim.nn.models.vgg import vgg
from sramsim.nn.snn_engine.encoding import INPUT_CODINGS
from sramsim.nn.torch_files import atomic_torch_save, read_torch_file  # noqa: F401 (re-exported)

ARCHS = ("cnn", "resnet20", "resnet18", "resnet50", "vgg11", "vgg16", "vgg19")
# Spiking families, sized by their neuron count N in the name (snn-fc400, diehl-cook400).
SNN_FAMILIES = ("snn-fc", "snn-conv", "diehl-cook")
SNN_PATTERN = re.compile(r"^(snn-fc|snn-conv|diehl-cook)([1-9][0-9]*)$")
MAX_NEURONS = 100_000
MAX_CHANNELS = 4096         # input channels of a model (images have 1 to a few)
MAX_IMAGE_SIDE = 65536      # pixels per image side
CHECKPOINT_FORMAT = "sramsim.model"
CHECKPOINT_VERSION = 1
REQUIRED_META = ("arch", "in_channels", "num_classes", "norm")
META_DEFAULTS = {"norm": "batch", "bits": 8, "scheme": "symmetric", "clip": None, "dataset": None}

__all__ = ["ARCHS", "NORMS", "SNN_FAMILIES", "arch_names", "check_arch", "build", "save_checkpoint",
           "load_checkpoint", "check_finite",
           "SmallCNN"]


def arch_names() -> str:
    """The architectures a user can name, for help texts and errors."""
    return ", ".join(ARCHS + tuple(f"{f}<N>" for f in SNN_FAMILIES))


def check_arch(name: str) -> tuple[str, int | None]:
    """(family, N) of an architecture name: (name, None) for the fixed ones, e.g. ("snn-fc", 400)
    for "snn-fc400"; a one-line InputError for anything else."""
    if name in ARCHS:
        return name, None
    m = SNN_PATTERN.match(str(name))
    if m is None:
        raise InputError(f"unknown model {name!r}; use one of {arch_names()}")
    n = int(m.group(2))
    if n > MAX_NEURONS:
        raise InputError(f"model {name!r}: at most {MAX_NEURONS} neurons, got {n}")
    return m.group(1), n


def build(name: str, in_channels: int = 1, num_classes: int = 10, norm: str = "batch",
          image_size: tuple[int, int] | list[int] | int | None = None) -> nn.Module:
    """A freshly initialised model (the caller seeds torch's RNG for reproducible weights).

    image_size: (height, width) of the inputs, or one int for square images; the spiking
    families need it for their input layer (default 28x28), the other models ignore it.
    A model whose weights cannot fit in this machine's memory (a checkpoint claiming 10^10
    classes) is refused before anything is allocated, with the size named.
    """
    family, n = check_arch(name)
    check_norm(norm)
    in_channels = whole_number(in_channels, "in_channels", 1, MAX_CHANNELS)
    num_classes = whole_number(num_classes, "num_classes", 2)
    size = check_image_size(image_size)
    if family not in SNN_FAMILIES:      # (the spiking families bound their synapses themselves)
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            shape = _construct(name, family, n, in_channels, num_classes, norm, size)
        count = sum(t.numel() for t in (*shape.parameters(), *shape.buffers()))
        require_memory(4 * count, f"model {name} with {in_channels} input channels and "
                                  f"{num_classes:,} classes ({count:,} weights)")
    return _construct(name, family, n, in_channels, num_classes, norm, size)


def _construct(name: str, family: str, n: int | None, in_channels: int, num_classes: int,
               norm: str, size: tuple[int, int]) -> nn.Module:
    if family == "cnn":
        return SmallCNN(in_channels, num_classes, norm)
    if family == "resnet20":
        return resnet20(in_channels, num_classes, norm)
    if family == "resnet18":
        return resnet18(in_channels, num_classes, norm)
    if family == "resnet50":
        return resnet50(in_channels, num_classes, norm)
    if family in ("snn-fc", "snn-conv"):
        from sramsim.nn.models.snn import build_snn
        assert n is not None                      # check_arch gives the spiking families an N
        return build_snn(family, n, in_channels, num_classes, size)
    if family == "diehl-cook":
        from sramsim.nn.models.diehl_cook import DiehlCook
        assert n is not None
        return DiehlCook(n, in_channels * size[0] * size[1], num_classes)
    return vgg(name, in_channels, num_classes, norm)


def whole_number(value: object, what: str, low: int, high: int | None = None) -> int:
    """`value` (an int, or a float/str holding one, as metadata may) as an int in [low, high],
    else a one-line InputError naming `what`."""
    try:
        number = (int(value) if isinstance(value, (int, np.integer))
                  else float(value))  # type: ignore[arg-type]  # what float() refuses is caught
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or number != number or number in (math.inf, -math.inf) \
            or int(number) != number:
        raise InputError(f"{what} must be a whole number, got {value!r}")
    number = int(number)
    if number < low or (high is not None and number > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{what} must be {span}, got {value!r}")
    return number


def check_image_size(value: object) -> tuple[int, int]:
    """(height, width) from [h, w], (h, w) or one int (square); (28, 28) for None."""
    if value is None:
        return (28, 28)
    pair = [value, value] if isinstance(value, (int, np.integer, float)) else value
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise InputError(f"image_size must be (height, width) or one int, got {value!r}")
    h, w = (whole_number(v, "image_size", 1, MAX_IMAGE_SIDE) for v in pair)
    return h, w


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Write `model`'s weights and `meta` atomically (a crash never leaves a half-written file)."""
    meta = {**META_DEFAULTS, **meta}
    if hasattr(model, "input_coding"):         # spiking models: how inputs become spikes
        meta["input_coding"] = model.input_coding
    recipe = getattr(model, "checkpoint_meta", None)     # what else drives them (Diehl & Cook)
    if callable(recipe):
        meta.update(recipe())
    missing = [k for k in REQUIRED_META if meta.get(k) is None]
    if missing:
        raise InputError(f"checkpoint meta lacks {', '.join(missing)}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "meta": meta,
           "state_dict": state}
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike,
                    device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """(model in eval mode, meta) from a file written by `save_checkpoint`."""
    obj = read_torch_file(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "sramsim model checkpoint")
    meta, state = obj.get("meta"), obj.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise InputError(f"{path}: checkpoint lacks meta or state_dict")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise InputError(f"{path}: checkpoint meta lacks {', '.join(missing)}")
    try:
        model = build(meta["arch"], meta["in_channels"], meta["num_classes"], meta["norm"],
                      meta.get("image_size"))
        meta = {**meta, "in_channels": whole_number(meta["in_channels"], "in_channels", 1),
                "num_classes": whole_number(meta["num_classes"], "num_classes", 2)}
        if meta.get("image_size") is not None:
            meta["image_size"] = list(check_image_size(meta["image_size"]))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    check_finite(state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{path}: weights do not fit a {meta['arch']} model "
                         f"({' '.join(' '.join(first[:2]).split())[:200]})") from None
    if hasattr(model, "input_coding"):
        # spiking checkpoints from before the field (issue 22) were trained with the clamp coding
        model.input_coding = check_choice(meta.get("input_coding", "clamp"), INPUT_CODINGS,
                                          f"{path}: input_coding")
    load_recipe = getattr(model, "load_checkpoint_meta", None)
    if callable(load_recipe):
        try:
            load_recipe(meta)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    if device is not None:
        model.to(check_device(device))
    return model.eval(), {**META_DEFAULTS, **meta}


def check_finite(state: dict, path: str | os.PathLike) -> None:
    """Refuse a state dict holding NaN or infinite values (a model that evaluates to nonsense),
    naming the file and the first such tensor."""
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"{path}: state_dict entry {name!r} is not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InputError(f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s) "
                             f"of {tensor.numel()}")
