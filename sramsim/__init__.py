"""sramsim: bit-exact simulation of low-voltage memory faults in quantized DNN weights.

Layers, each importing only those below it: `commands` -> `analysis` -> `nn` -> `inject` -> `memory`.
"""
from sramsim._version import __version__
from sramsim.memory.chip import Chip, Faults, VoltageError
from sramsim.memory.curves import BerCurve
from sramsim.memory.dram import DramGeometry
from sramsim.memory.geometry import Geometry
from sramsim.memory.random_errors import RandomBitErrors

__all__ = ["BerCurve", "Chip", "DramGeometry", "Faults", "Geometry", "QuantizedModel", "RandomBitErrors",
           "TorchQuantizedModel", "VoltageError"]


def __getattr__(name: str):
    # QuantizedModel needs torch (~2-3 s to import); commands that only handle profiles skip it.
    if name == "QuantizedModel":
        from sramsim.inject.quantized_model import QuantizedModel
        return QuantizedModel
    if name == "TorchQuantizedModel":
        from sramsim.inject.torch_quantized import TorchQuantizedModel
        return TorchQuantizedModel
    raise AttributeError(f"module 'sramsim' has no attribute {name!r}")
