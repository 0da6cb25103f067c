"""Base models by name, and the checkpoint file that `sweep`, `energy` and `fusion` load.

Checkpoint format (torch.save, loaded with weights_only=True):
    {"format": "sramsim.model", "version": 1, "meta": {...}, "state_dict": {...}}
meta holds at least arch, in_channels, num_classes, norm (to rebuild the model) and bits, scheme,
clip, dataset (how it was trained and how it is meant to be quantized).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from sramsim.errors import InputError, check_choice
from sramsim.nn.models.cnn import SmallCNN
from sramsim.nn.models.norm import NORMS, check_norm
from sramsim.nn.models.resnet import resnet18, resnet20, resnet50
from sramsim.nn.models.vgg import vgg
from sramsim.nn.snn_engine.encoding import INPUT_CODINGS

ARCHS = ("cnn", "resnet20", "resnet18", "resnet50", "vgg11", "vgg16", "vgg19")
# Spiking families, sized by their neuron count N in the name (snn-fc400, diehl-cook400).
SNN_FAMILIES = ("snn-fc", "snn-conv", "diehl-cook")
SNN_PATTERN = re.compile(r"^(snn-fc|snn-conv|diehl-cook)([1-9][0-9]*)$")
MAX_NEURONS = 100_000
CHECKPOINT_FORMAT = "sramsim.model"
CHECKPOINT_VERSION = 1
REQUIRED_META = ("arch", "in_channels", "num_classes", "norm")
META_DEFAULTS = {"norm": "batch", "bits": 8, "scheme": "symmetric", "clip": None, "dataset": None}

__all__ = ["ARCHS", "NORMS", "SNN_FAMILIES", "arch_names", "check_arch", "build", "save_checkpoint", "load_checkpoint", "check_finite",
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
          image_size: tuple[int, int] | list[int] | None = None) -> nn.Module:
    """A freshly initialised model (the caller seeds torch's RNG for reproducible weights).

    image_size: (height, width) of the inputs; the spiking fully connected families need it for
    their input layer (default 28x28), the other models ignore it.
    """
    family, n = check_arch(name)
    check_norm(norm)
    if int(in_channels) < 1 or int(num_classes) < 2:
        raise InputError(f"in_channels must be >= 1 and num_classes >= 2, got "
                         f"{in_channels} and {num_classes}")
    size = tuple(int(v) for v in (image_size or (28, 28)))
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
        return build_snn(family, n, in_channels, num_classes, size)
    if family == "diehl-cook":
        from sramsim.nn.models.diehl_cook import DiehlCook
        return DiehlCook(n, in_channels * size[0] * size[1], num_classes)
    return vgg(name, in_channels, num_classes, norm)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Write `model`'s weights and `meta` atomically (a crash never leaves a half-written file)."""
    meta = {**META_DEFAULTS, **meta}
    if hasattr(model, "input_coding"):         # spiking models: how inputs become spikes
        meta["input_coding"] = model.input_coding
    missing = [k for k in REQUIRED_META if meta.get(k) is None]
    if missing:
        raise ValueError(f"checkpoint meta lacks {', '.join(missing)}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "meta": meta,
           "state_dict": state}
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike, device=None) -> tuple[nn.Module, dict]:
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
    if device is not None:
        model.to(device)
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


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, then rename over it."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_torch_file(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict:
    """A torch.save'd dict tagged with `format`/`version`, loaded safely (weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a {what} file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails on junk with many exception types
        reason = " ".join(str(exc).split())[:160]
        raise InputError(f"{path}: not a readable {what} ({reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise InputError(f"{path}: not a {what} (format tag is not {fmt!r})")
    if obj.get("version") != version:
        raise InputError(f"{path}: {what} version {obj.get('version')!r} is not supported "
                         f"(expected {version})")
    return obj
