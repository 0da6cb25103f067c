"""sramsim: bit-exact simulation of low-voltage SRAM faults in quantized DNN weights."""
from .chip import Chip, Faults, VoltageError
from .curves import BerCurve
from .geometry import Geometry
from .quantized_model import QuantizedModel
from .random_errors import RandomBitErrors

__all__ = ["BerCurve", "Chip", "Faults", "Geometry", "QuantizedModel", "RandomBitErrors",
           "VoltageError"]
__version__ = "0.1.0"
