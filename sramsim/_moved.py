"""The flat module names of sramsim <= 0.1 (`sramsim.chip`, `sramsim.kernels`, ...) keep working.

The modules moved into the layer subpackages; scripts written against the old names import the new
modules under them (the same module object, not a copy), resolved only when first imported.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "sramsim.geometry": "sramsim.memory.geometry",
    "sramsim.curves": "sramsim.memory.curves",
    "sramsim.chip": "sramsim.memory.chip",
    "sramsim.random_errors": "sramsim.memory.random_errors",
    "sramsim.sampling": "sramsim.memory.sampling",
    "sramsim.profiles": "sramsim.memory.profiles",
    "sramsim.quantization": "sramsim.inject.quantization",
    "sramsim.quantized_model": "sramsim.inject.quantized_model",
    "sramsim.mapping": "sramsim.inject.mapping",
    "sramsim.models": "sramsim.nn.models",
    "sramsim.data": "sramsim.nn.data",
    "sramsim.training": "sramsim.nn.training",
    "sramsim.evaluate": "sramsim.nn.evaluation",
    "sramsim.sweep": "sramsim.analysis.sweep",
    "sramsim.sweep_store": "sramsim.analysis.store",
    "sramsim.executors": "sramsim.analysis.executors",
    "sramsim.vulnerability": "sramsim.analysis.vulnerability",
    "sramsim.energy": "sramsim.analysis.energy",
    "sramsim.systolic": "sramsim.analysis.systolic",
    "sramsim.plots": "sramsim.analysis.plots",
    "sramsim.cli": "sramsim.commands.main",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and hands back the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # already executed under its new name


def install() -> None:
    """Put the finder on sys.meta_path once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
