"""The trained-generator file (`DIR/generator.pt`): weights plus what rebuilds and judges G.

Format (torch.save, read with weights_only=True):
    {"format": "fusion.generator", "version": 1, "name": "ConvS", "in_channels": 1, "width": 1.0,
     "state_dict": {...}, "meta": {"base": {...}, "fault_source": {...}, "config": {...}, ...}}
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fusion import generators
from sramsim.errors import InputError, check_device
from sramsim.nn.models import atomic_torch_save, read_torch_file

if TYPE_CHECKING:
    import torch

FORMAT = "fusion.generator"
VERSION = 1


def save_generator(path: str | os.PathLike, generator: generators.Generator, meta: dict) -> None:
    """Write G atomically (a crash never leaves half a file)."""
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    atomic_torch_save({"format": FORMAT, "version": VERSION, "name": generator.name,
                       "in_channels": generator.in_channels, "width": generator.width,
                       "state_dict": state, "meta": meta}, path)


def load_generator(path: str | os.PathLike,
                   device: str | torch.device | None = None) -> tuple[generators.Generator, dict]:
    """(G in eval mode, meta); a missing, corrupt or foreign file raises InputError naming it."""
    obj = read_torch_file(path, FORMAT, VERSION, "fusion generator")
    try:
        g = generators.build(obj["name"], int(obj["in_channels"]), float(obj.get("width", 1.0)))
        g.load_state_dict(obj["state_dict"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise InputError(f"{path}: generator file is inconsistent ({reason})") from None
    if device is not None:
        g.to(check_device(device))
    return g.eval(), dict(obj.get("meta") or {})
