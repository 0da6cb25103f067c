"""fusion: NeuralFuse-style mitigation of low-voltage SRAM faults on top of sramsim.

- `fusion.generators`: the six input-transformation generators (ConvL/S, DeConvL/S, UNetL/S).
- `fusion.eopm`: EOPM training of a generator against sampled fault maps (base model frozen).
- `fusion.evaluation`: CA/PA without and with a generator, recovery, net energy saving.
- `fusion.pipeline`, `fusion.demo`, `fusion.cli`: whole jobs, the demo step, the `fusion` CLI.
fusion imports sramsim, never the reverse.
"""
from sramsim._version import __version__  # noqa: F401 (sramsim and fusion ship as one distribution)
