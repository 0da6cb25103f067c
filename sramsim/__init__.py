"""sramsim: bit-exact simulation of low-voltage memory faults in quantized DNN weights.

The public surface is `__all__` below: the concepts a user composes (a BER curve, a chip's
failure map, a quantized model and how its weights are stored, the evaluator that runs it under
faults, the reference an operating point is judged against) and the one error type bad input
raises. Deeper use goes through the documented subpackages, one layer each, every one importing
only those below it: `sramsim.commands` -> `analysis` -> `nn` -> `inject` -> `memory`
(e.g. `sramsim.nn.build` for the model registry, `sramsim.analysis.sweep.run_sweep`).
"""
from typing import Any

from sramsim._version import __version__ as __version__
from sramsim.analysis.operating_point import Reference
from sramsim.errors import InputError, ProfileError
from sramsim.inject.layout import MemoryLayout
from sramsim.memory.chip import Chip, Faults, VoltageError
from sramsim.memory.curves import BerCurve
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_errors import dram_chip
from sramsim.memory.geometry import Geometry
from sramsim.memory.random_errors import RandomBitErrors

__all__ = ["BerCurve", "Chip", "DramGeometry", "Evaluator", "Faults", "Geometry", "InputError",
           "MemoryLayout", "ProfileError", "QuantizedModel", "RandomBitErrors", "Reference",
           "TorchQuantizedModel", "VoltageError", "dram_chip"]

# These need torch (~2-3 s to import): resolved on first use, so commands that only handle
# profiles start fast.
_LAZY = {"QuantizedModel": "sramsim.inject.quantized_model",
         "TorchQuantizedModel": "sramsim.inject.torch_quantized",
         "Evaluator": "sramsim.nn.evaluation"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sramsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
