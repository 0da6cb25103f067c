"""Weight reads per inference on an output-stationary systolic array, counted as SCALE-Sim does.

NeuralFuse (Sun et al., NeurIPS 2024) sized its energy accounting with SCALE-Sim (Samajdar et al.,
ISPASS 2020): an output-stationary 32x32 array with a 256 KB weight SRAM. In that dataflow the
array holds a tile of 32 output pixels x 32 filters; every filter word streams in once per tile of
output pixels, so one layer reads

    filter_h * filter_w * channels * filters * ceil(ofmap_pixels / array_rows)

words from the weight SRAM, with SCALE-Sim's output size ceil((ifmap - filter + stride) / stride)
on the padded input. Weight reads therefore grow with the resolution a layer runs at, unlike the
plain "each weight read once" count in `sramsim.analysis.accesses`.

`topology` turns a torch model into SCALE-Sim's layer table (padding folded into the input size,
transposed convolutions as convolutions over the zero-inserted input, linear layers as 1x1
convolutions on a 1x1 input). `filter_sram_reads` is the closed form above (instant);
`run_scalesim` runs the `scalesim` package itself on the same table (seconds to minutes), and the
tests check that the two agree. NeuralFuse's published access counts are these SRAM filter reads
divided by 8 -- one 64-bit SRAM word carries eight 8-bit weights. `accesses` reproduces 4 of the 5
published counts (`PUBLISHED_ACCESSES` in `sramsim.analysis.energy`) exactly: ResNet18, VGG19,
ConvL and ConvS. UNetL is not reproduced: 173,952 here against 180,894 published (3.8% fewer;
the cause of the gap is not known).

`count_accesses` is the one entry point for every counting method; the plain "each weight read
once" count lives in `sramsim.analysis.accesses` (this module never imports `energy`).
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sramsim.analysis.accesses import weight_accesses
from sramsim.errors import InputError

ARRAY_ROWS = 32          # NeuralFuse's SCALE-Sim setup: 32x32 output-stationary array,
ARRAY_COLS = 32
FILTER_SRAM_KB = 256     # 256 KB weight SRAM
WORD_BITS = 64           # one SRAM read returns 64 bits (eight 8-bit weights)


@dataclass(frozen=True)
class ConvLayer:
    """One row of SCALE-Sim's topology table (the input size already includes padding)."""
    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    filters: int
    stride: int

    @property
    def ofmap_pixels(self) -> int:
        """Output pixels, by SCALE-Sim's own output size (not always torch's)."""
        # SCALE-Sim's own output size: one more row/column than torch for some strided layers.
        oh = math.ceil((self.ifmap_h - self.filter_h + self.stride) / self.stride)
        ow = math.ceil((self.ifmap_w - self.filter_w + self.stride) / self.stride)
        return oh * ow

    @property
    def weights(self) -> int:
        """Filter words of the layer: filter_h x filter_w x channels x filters."""
        return self.filter_h * self.filter_w * self.channels * self.filters


def _pair(v: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv_row(name: str, m: nn.Conv2d, x: torch.Tensor) -> ConvLayer:
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride)
    if _pair(m.dilation) != (1, 1) or sh != sw:
        raise InputError(f"layer {name}: SCALE-Sim counts need dilation 1 and equal strides, got "
                         f"dilation {m.dilation}, stride {m.stride}")
    # Total padding per axis: 'same' pads k - 1 in all (unevenly for even kernels).
    if isinstance(m.padding, str):
        th, tw = (0, 0) if m.padding == "valid" else (kh - 1, kw - 1)
    else:
        th, tw = (2 * p for p in _pair(m.padding))
    return ConvLayer(name, x.shape[2] + th, x.shape[3] + tw, kh, kw,
                     m.in_channels // m.groups, m.out_channels, sh)


def _transposed_row(name: str, m: nn.ConvTranspose2d, x: torch.Tensor) -> ConvLayer:
    # A transposed convolution is a stride-1 convolution over the input with (stride - 1) zeros
    # inserted between pixels and (kernel - 1 - padding) zeros around it.
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride)
    assert not isinstance(m.padding, str)       # a transposed convolution's padding is numeric
    ph, pw = _pair(m.padding)
    oph, opw = _pair(m.output_padding)
    if _pair(m.dilation) != (1, 1) or m.groups != 1:
        raise InputError(f"layer {name}: SCALE-Sim counts need dilation 1 and groups 1")
    h = (x.shape[2] - 1) * sh + 1 + 2 * (kh - 1 - ph) + oph
    w = (x.shape[3] - 1) * sw + 1 + 2 * (kw - 1 - pw) + opw
    return ConvLayer(name, h, w, kh, kw, m.in_channels, m.out_channels, 1)


def topology(model: nn.Module, input_shape: Sequence[int]) -> list[ConvLayer]:
    """SCALE-Sim's layer table for `model` on one input of shape [C, H, W], in execution order."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) <= 0:
        raise InputError(f"input shape must be [C, H, W], got {input_shape!r}")
    rows: list[ConvLayer] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        x, name = inputs[0], names[module] or type(module).__name__
        if isinstance(module, nn.Conv2d):
            rows.append(_conv_row(name, module, x))
        elif isinstance(module, nn.ConvTranspose2d):
            rows.append(_transposed_row(name, module, x))
        elif isinstance(module, nn.Linear):
            rows.append(ConvLayer(name, 1, 1, 1, 1, module.in_features, module.out_features, 1))

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    unsupported = [n for n, m in model.named_modules()
                   if isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose3d))]
    if unsupported:
        raise InputError(f"SCALE-Sim counts cover 2-d convolutions and linear layers; "
                         f"{unsupported[0]} is not one")
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device))
    except RuntimeError as exc:
        raise InputError(f"model does not run on input shape {list(shape)}: "
                         f"{str(exc).splitlines()[0]}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not rows:
        raise InputError("model has no conv/linear layers to count")
    return rows


def filter_sram_reads(layers: list[ConvLayer], array_rows: int = ARRAY_ROWS) -> list[int]:
    """Weight-SRAM word reads per layer, output-stationary dataflow (SCALE-Sim's count)."""
    return [layer.weights * math.ceil(layer.ofmap_pixels / array_rows) for layer in layers]


def accesses(sram_reads: int, weight_bits: int = 8, word_bits: int = WORD_BITS) -> int:
    """SRAM accesses when one access returns `word_bits` (NeuralFuse: 64-bit words, 8-bit
    weights)."""
    return math.ceil(int(sram_reads) * weight_bits / word_bits)


def write_topology(layers: list[ConvLayer], path: Path) -> None:
    """SCALE-Sim's topology CSV (its header; every row ends with a comma, as its parser expects)."""
    with open(path, "w") as f:
        f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                "Num Filter, Strides,\n")
        for i, layer in enumerate(layers):
            f.write(f"L{i}, {layer.ifmap_h}, {layer.ifmap_w}, {layer.filter_h}, {layer.filter_w}, "
                    f"{layer.channels}, {layer.filters}, {layer.stride},\n")


def _write_layout(n_layers: int, path: Path) -> None:
    # scalesim 3.0 reads a layout file even with custom layouts switched off; default orders.
    with open(path, "w") as f:
        f.write("Layer name," + ",".join(f"c{i}" for i in range(20)) + ",\n")
        for i in range(n_layers):
            f.write(f"L{i}, 1,1,1,1,1,1, 0,1,2, 0,1,2, 0,1,2,3, 0,1,2,3,\n")


def _write_config(path: Path, rows: int, cols: int, filter_sram_kb: int) -> None:
    path.write_text(f"""[general]
run_name = sramsim

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {filter_sram_kb}
FilterSramSzkB: {filter_sram_kb}
OfmapSramSzkB: {filter_sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: os
Bandwidth: 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
""")


def run_scalesim(layers: list[ConvLayer], array_rows: int = ARRAY_ROWS,
                 array_cols: int = ARRAY_COLS,
                 filter_sram_kb: int = FILTER_SRAM_KB, progress: bool = False) -> list[dict]:
    """Run the `scalesim` package on `layers`; per layer its SRAM and DRAM filter reads.

    Cycle-level, so slow for big models (CIFAR ResNet18: about 2 minutes on one core). SCALE-Sim
    simulates each layer on its own, so it runs one layer at a time here, which lets `progress`
    report per layer (stderr) with the same counts as one run over the whole table.
    """
    try:
        from scalesim.scale_sim import scalesim
    except ImportError:
        raise InputError("the SCALE-Sim count needs the scalesim package: "
                         "pip install scalesim==3.0.0") from None
    import numpy as np
    if np.lib.NumpyVersion(np.__version__) >= "2.4.0":
        raise InputError(f"scalesim 3.0.0 fails with numpy {np.__version__} (it converts 1-element "
                         f"arrays to int): install numpy<2.4, as requirements.txt pins")
    from sramsim.progress import progress as reporter
    out = []
    with reporter(layers, desc="scalesim", unit="layer", enabled=progress) as bar:
        for layer in bar:
            out.append(_scalesim_layer(scalesim, layer, array_rows, array_cols, filter_sram_kb))
    return out


def _scalesim_layer(scalesim: Callable[..., Any], layer: ConvLayer, array_rows: int,
                    array_cols: int, filter_sram_kb: int) -> dict:
    """One layer through scalesim: its SRAM and DRAM filter reads."""
    with tempfile.TemporaryDirectory(prefix="sramsim-scalesim-") as tmp_name:
        tmp = Path(tmp_name)
        _write_config(tmp / "os.cfg", array_rows, array_cols, filter_sram_kb)
        write_topology([layer], tmp / "topology.csv")
        _write_layout(1, tmp / "layout.csv")
        # It prints a banner per layer, and warns about its own int(array) (numpy 1.25+).
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            sim = scalesim(save_disk_space=True, verbose=False, config=str(tmp / "os.cfg"),
                           topology=str(tmp / "topology.csv"), layout=str(tmp / "layout.csv"))
            sim.run_scale(top_path=str(tmp))
        with open(tmp / "sramsim" / "DETAILED_ACCESS_REPORT.csv") as f:
            table = [[c.strip() for c in row] for row in csv.reader(f)]
    header = table[0]
    sram, dram = header.index("SRAM Filter Reads"), header.index("DRAM Filter Reads")
    return {"layer": layer.name, "sram_filter_reads": int(float(table[1][sram])),
            "dram_filter_reads": int(float(table[1][dram]))}


METHODS = ("weights", "systolic", "scalesim")


def count_accesses(model: nn.Module, input_shape: Sequence[int], method: str = "weights",
                   progress: bool = False) -> int:
    """Weight-memory accesses per inference by `method`.

    weights: every conv/linear weight read once (8-bit words); systolic: SCALE-Sim's
    output-stationary count in closed form, in 64-bit accesses; scalesim: the same from a
    `scalesim` run (`progress`: per-layer progress on stderr, the only slow method).
    """
    if method == "weights":
        return weight_accesses(model, input_shape)
    layers = topology(model, input_shape)
    if method == "systolic":
        return accesses(sum(filter_sram_reads(layers)))
    if method == "scalesim":
        return accesses(sum(r["sram_filter_reads"] for r in run_scalesim(layers,
                                                                         progress=progress)))
    raise InputError(f"unknown access-count method {method!r} (choose from {', '.join(METHODS)})")
