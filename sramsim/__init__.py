"""sramsim: bit-exact simulation of low-voltage SRAM faults in quantized DNN weights."""
from .chip import Chip, Faults, VoltageError
from .curves import BerCurve
from .geometry import Geometry
from .random_errors import RandomBitErrors

__all__ = ["BerCurve", "Chip", "Faults", "Geometry", "QuantizedModel", "RandomBitErrors",
           "VoltageError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # QuantizedModel needs torch (~2-3 s to import); commands that only handle profiles skip it.
    if name == "QuantizedModel":
        from .quantized_model import QuantizedModel
        return QuantizedModel
    raise AttributeError(f"module 'sramsim' has no attribute {name!r}")
