"""Add-ons that packages built on sramsim register with it (NeuralFuse generators from `fusion`).

An add-on is a model that runs beside the base model at nominal voltage (its reads cost energy
back). A package offers add-ons through the entry-point group `sramsim.addons`: each entry point
is named after one add-on and points at a callable `build(name, in_channels) -> nn.Module`.
sramsim finds them with `importlib.metadata`, so it never imports the packages that sit on top of
it (fusion registers its generators in setup.cfg; `pip install -e .` writes the registration).
"""
from __future__ import annotations

from importlib.metadata import entry_points

from torch import nn

from sramsim.errors import InputError, InputTypeError

GROUP = "sramsim.addons"


def names() -> list[str]:
    """Names of the add-ons registered in the `sramsim.addons` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def build(name: str, in_channels: int) -> nn.Module:
    """Add-on `name` for `in_channels`-channel inputs, built by the package that registered it."""
    found = {ep.value: ep for ep in entry_points(group=GROUP) if ep.name == name}
    if not found:
        known = ", ".join(names()) or "none; `pip install -e .` registers fusion's generators"
        raise InputError(f"addon {name}: no add-on of that name is registered "
                         f"(entry-point group {GROUP}: {known})")
    if len(found) > 1:
        raise InputError(f"addon {name}: registered by more than one package "
                         f"({', '.join(sorted(found))})")
    model = next(iter(found.values())).load()(name, int(in_channels))
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"add-on builder for {name!r} returned {type(model).__name__}, not an "
                             "nn.Module")
    return model
