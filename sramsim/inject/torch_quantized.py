"""A model quantized by PyTorch itself, its int8 weights taken as they are for the memory image.

Two kinds of input (the quantized model keeps running on its own kernels; nothing is requantized):
- eager mode (kind "eager"): a `torch.ao.quantization.convert`ed model (or `quantize_dynamic`'s,
  or FX graph mode's `convert_fx`), whose quantized Conv/ConvTranspose/Linear modules (fused ReLU
  variants included) hold qint8 weights with per-tensor or per-channel scales; they run on
  torch's int8 (fbgemm / x86 / qnnpack) kernels. torch 2.13 warns that this API and quantized
  tensors are deprecated (in favour of torchao) but still runs them.
- PT2E (kind "pt2e"): the `torch.fx.GraphModule` that `convert_pt2e` (from
  `torchao.quantization.pt2e`) returns; its weights are int8 buffers read by
  `quantized_decomposed.dequantize_per_tensor / _per_channel` nodes. (torch 2.13 no longer ships
  `torch.ao.quantization.quantize_pt2e`: the flow lives in the `torchao` package.) A graph
  lowered to onednn kernels (`lower_pt2e_quantized_to_x86`) holds prepacked weights: refused.

Image layout: one byte per weight, the weight's int8 value in two's complement (`int_repr()`
viewed as uint8), each tensor in row-major (C) order of its logical shape, tensors concatenated
in module order (eager) or in the graph's order of first use (PT2E), zero-padded to a whole
number of `word_bits` words. Scales, zero points and biases stay in the model (they are not in
the image). Mapping onto a chip and the kernels are those of `QuantizedModel`
(`sramsim.inject.mapping.apply_faults`).
"""
from __future__ import annotations

import copy
import logging
import numbers
import os
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import torch
from torch import fx, nn

from sramsim.errors import InputError
from sramsim.inject.layout import PLAIN, MemoryLayout

if TYPE_CHECKING:
    from sramsim.inject.ecc import EccMemory
from sramsim.inject.mapping import FaultSource
from sramsim.inject.pt2_archive import checked_archive

# PT2E ops that read a quantized weight (their first argument) back as float
PT2E_DEQUANTIZE = ("quantized_decomposed.dequantize_per_tensor.",
                   "quantized_decomposed.dequantize_per_channel.")
PT2_SUFFIX = ".pt2"     # a PT2E program saved with torch.export.save (`load_exported`)
LOWERED = "onednn."     # ops of a PT2E graph lowered for x86: weights prepacked, not int8
PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)


@dataclass(frozen=True)
class Segment:
    """Where one int8 weight tensor sits in the image (bytes = weights: `start`, `count`)."""

    name: str           # module name (eager) or buffer name (PT2E)
    start: int
    count: int
    shape: tuple
    qscheme: str        # "per_tensor" or "per_channel"


class _EagerWeight:
    """The qint8 weight of one eager-mode quantized module: re-packed with its own qparams."""

    def __init__(self, name: str, module: Any) -> None:
        # module: a torch.ao quantized conv / linear (its _weight_bias and set_weight_bias are
        # not nn.Module's)
        weight, bias = module._weight_bias()
        if not isinstance(weight, torch.Tensor) or weight.dtype != torch.qint8:
            dtype = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise InputError(f"layer {name!r} ({type(module).__name__}) holds {dtype} weights, not "
                             f"qint8: only int8 weights form a memory image")
        if weight.qscheme() in PER_TENSOR:
            self.qscheme = "per_tensor"
        elif weight.qscheme() in PER_CHANNEL:
            self.qscheme = "per_channel"
        else:
            raise InputError(f"layer {name!r}: weight quantization scheme {weight.qscheme()} "
                             f"is not supported (per-tensor or per-channel affine/symmetric)")
        self.name, self.module, self.weight, self.bias = name, module, weight, bias
        # torch's quantized modules keep the prepacked weight in `_packed_params` (Linear: in
        # its LinearPackedParams child); every set_weight_bias replaces that object and never
        # changes it, so restoring the saved object restores the weight without a second repack
        packed = getattr(module, "_packed_params", None)
        self.holder = packed if isinstance(packed, nn.Module) else module
        self.packed = getattr(self.holder, "_packed_params", None)

    def codes(self) -> torch.Tensor:
        return self.weight.int_repr()

    def write(self, codes: torch.Tensor) -> None:
        w = self.weight
        if self.qscheme == "per_tensor":
            q = torch._make_per_tensor_quantized_tensor(codes, w.q_scale(), w.q_zero_point())
        else:
            q = torch._make_per_channel_quantized_tensor(
                codes, w.q_per_channel_scales(), w.q_per_channel_zero_points(),
                w.q_per_channel_axis())
        self.module.set_weight_bias(q, self.bias)

    def restore(self) -> None:
        if self.packed is None:
            self.module.set_weight_bias(self.weight, self.bias)
        else:
            self.holder._packed_params = self.packed


class _GraphWeight:
    """An int8 weight buffer of a PT2E-converted GraphModule: swapped for another tensor."""

    def __init__(self, gm: fx.GraphModule, target: str, qscheme: str) -> None:
        owner, _, attr = target.rpartition(".")
        self.owner = gm.get_submodule(owner) if owner else gm
        self.attr, self.name, self.qscheme = attr, target, qscheme
        self.weight = getattr(self.owner, attr)
        if not isinstance(self.weight, torch.Tensor) or self.weight.dtype != torch.int8:
            dtype = getattr(self.weight, "dtype", type(self.weight).__name__)
            raise InputError(f"weight {target!r} is {dtype}, not int8: only int8 weights form a "
                             f"memory image")

    def codes(self) -> torch.Tensor:
        return self.weight

    def write(self, codes: torch.Tensor) -> None:
        setattr(self.owner, self.attr, codes.to(self.weight.device))

    def restore(self) -> None:
        setattr(self.owner, self.attr, self.weight)


def _eager_weights(model: nn.Module) -> list[_EagerWeight]:
    return [_EagerWeight(name, m) for name, m in model.named_modules()
            if callable(getattr(m, "weight", None)) and hasattr(m, "set_weight_bias")
            and hasattr(m, "_weight_bias")]


def _pt2e_weights(gm: fx.GraphModule) -> list[_GraphWeight]:
    found: dict[str, _GraphWeight] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith(PT2E_DEQUANTIZE):
            continue
        src = node.args[0]
        if isinstance(src, fx.Node) and src.op == "get_attr" and isinstance(src.target, str) \
                and src.target not in found:
            qscheme = "per_channel" if "per_channel" in str(node.target) else "per_tensor"
            found[src.target] = _GraphWeight(gm, src.target, qscheme)
    return list(found.values())


class HarmlessTorchaoNotes(logging.Filter):
    """Drops two log lines that importing torchao 0.18 prints and that say nothing about the
    user's run: "Failed to load .../_C_*.so" (torchao's CUDA-only kernel libraries, on a torch
    without CUDA) and torch's note that registering an Enum as a pytree constant is deprecated
    (torchao's own call). Matched by logger and message; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if record.name == "torchao":
            return not (msg.startswith("Failed to load ") and ".so" in msg
                        and not torch.cuda.is_available())
        if record.name == "torch.utils._pytree":
            return not ("is an Enum subclass" in msg and "register_constant()" in msg)
        return True


def _silence_harmless_torchao_notes() -> None:
    """Put the filter on torchao's and torch's pytree logger once (also quiets a user's own
    `import torchao` after sramsim's PT2E support was imported)."""
    for name in ("torchao", "torch.utils._pytree"):
        log = logging.getLogger(name)
        if not any(isinstance(f, HarmlessTorchaoNotes) for f in log.filters):
            log.addFilter(HarmlessTorchaoNotes())


_silence_harmless_torchao_notes()


def torchao_module() -> ModuleType:
    """`import torchao`, or an InputError saying which extra to install."""
    try:
        import torchao
    except ModuleNotFoundError:
        raise InputError("PT2E (.pt2) models need torchao: pip install 'sramsim[pt2]'") from None
    return torchao


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Only errors from these loggers inside the block."""
    saved = [(log, log.level) for log in map(logging.getLogger, loggers)]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def is_exported_file(path: object) -> TypeGuard[str | os.PathLike[str]]:
    """Whether `path` names a `.pt2` file (a saved PT2E program), not a sramsim checkpoint."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(PT2_SUFFIX)


def load_exported(path: str | os.PathLike) -> fx.GraphModule:
    """A PT2E-quantized model saved with `torch.export.save` (a `.pt2` file), as the
    GraphModule `TorchQuantizedModel` takes, with `.eval()` allowed (sramsim's evaluation calls it).

    Save one with `torch.export.save(torch.export.export(convert_pt2e(...), example_inputs), path)`.
    The file is checked before torch reads it (`sramsim.inject.pt2_archive`): one that holds
    anything torch would unpickle (pickled weights or constants, legacy state files, non-tensor
    sample inputs) is refused, so loading an untrusted file runs none of its code.
    Loading needs `torchao`: it registers the quantize/dequantize ops the program calls.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    archive = checked_archive(path)     # before torch reads it: nothing in it may unpickle
    # torchao logs that its CUDA-only kernel libraries do not load on a CPU build of torch (and
    # torch a deprecation note on its import), torch.export a traceback before raising on a
    # foreign file: the one-line error below says it
    with _quiet("torch.export"):
        torchao_module()
        try:
            program = torch.export.load(archive)
        except Exception as exc:  # torch raises several kinds for a foreign or corrupt file
            raise InputError(f"{path}: not a torch.export program ({type(exc).__name__})") \
                from None
    gm = allow_train_eval(program.module())
    gm.eval()       # sramsim evaluates it: moved to eval mode once, here
    if not _pt2e_weights(gm):
        raise InputError(f"{path}: the program holds no int8 weights (save the model that "
                         f"convert_pt2e returns)")
    return gm


def refuse_options(path: str | os.PathLike[str], given: dict) -> None:
    """One line for the first option (`given`: {flag: whether it was set}) that cannot apply to
    a saved PyTorch-quantized program: its int8 weights are stored as they are."""
    for flag, is_set in given.items():
        if is_set:
            raise InputError(f"{flag} does not apply to {path}: a PT2E-quantized model keeps "
                             f"PyTorch's int8 weights as they are (one byte per weight)")


def check_runs(model: nn.Module, x: torch.Tensor, num_classes: int, batch_size: int,
               name: str, data: str) -> None:
    """Run `model` on the first batch of `x` (and the last, when it is smaller), so that a model
    that does not fit the data (input shape, a batch size fixed at export) fails in one line
    naming it (`name`) and the data before any evaluation, rather than in a worker."""
    model.eval()
    for n in sorted({min(batch_size, len(x)), len(x) % batch_size} - {0}):
        try:
            with torch.no_grad():
                out = model(x[:n])
        except Exception as exc:  # torch.export guards, shape errors: say which, in one line
            why = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            batch = "size()[0]" in why or "].shape[0]" in why     # torch's two guard wordings
            hint = "; export it with a dynamic batch dimension" if batch else ""
            raise InputError(f"{name}: the model does not run on {data}'s inputs "
                             f"{list(x.shape[1:])} in a batch of {n} ({type(exc).__name__}: "
                             f"{why}{hint})") from None
        if not (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == n
                and out.shape[1] >= num_classes):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"{name}: the model returns {got} for {n} inputs, not "
                             f"[{n}, {num_classes}] class scores for {data}")


def allow_train_eval(gm: fx.GraphModule) -> fx.GraphModule:
    """Let an exported (PT2E) GraphModule take train()/eval() as an nn.Module does: they return
    the model, set `training`, and cost nothing when the mode does not change. Returns `gm`.

    torchao's `allow_exported_model_train_eval` (applied here first) returns None from them and
    re-traces its dropout / batch-norm patterns with torch.export on every call: 1-2 s each on
    this machine, twice per `sramsim.nn.evaluation.evaluate` (eval, then back to the caller's
    mode), which made each sweep point cost seconds.
    """
    torchao_module()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    allow_exported_model_train_eval(gm)
    move = gm.train
    done: dict[str, bool | None] = {"mode": None}   # the mode torchao last moved the graph to

    def train(self: fx.GraphModule, mode: bool = True) -> fx.GraphModule:
        mode = bool(mode)
        if done["mode"] is not mode:
            move(mode)
            done["mode"] = mode
        self.training = mode
        return self

    # instance attributes, as nn.Module.__setattr__ stores a plain value (copy_model pops them)
    vars(gm)["train"] = types.MethodType(train, gm)
    vars(gm)["eval"] = types.MethodType(lambda self: self.train(False), gm)
    vars(gm)["_sramsim_train_eval"] = True
    return gm


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of `model` that owns its weights; an exported GraphModule patched by
    `allow_train_eval` is patched again, so its train()/eval() move the copy's graph (a copied
    bound method would still move the original's)."""
    twin = copy.deepcopy(model)
    if getattr(model, "_sramsim_train_eval", False) and isinstance(twin, fx.GraphModule):
        for name in ("train", "eval"):
            twin.__dict__.pop(name, None)
        allow_train_eval(twin)
    return twin


class TorchQuantizedModel:
    """The int8 weights of a PyTorch-quantized `model` as a uint8 memory image (layout: module
    docstring), with the fault API of `QuantizedModel`: `faulty_image` reads the image back
    through a fault source; `loaded` writes an image's int8 values into the model (with its own
    scales and zero points) for the duration of a `with` block and restores the original weights
    after it, also on an exception. (`sramsim.nn.evaluation.Evaluator` does this on a copy of the
    model it owns.)

    The image is a snapshot taken here; the clean image is never modified. Loading mutates the
    model, so one model serves one `with` block at a time (a nested one is refused).
    """

    bits = 8            # one int8 weight per byte (what image-level helpers read)
    clip = None         # PyTorch's observers chose the ranges; reports read it as QuantizedModel's

    def __init__(self, model: nn.Module, word_bits: int = 8) -> None:
        if isinstance(model, torch.export.ExportedProgram):
            raise InputError("model is an ExportedProgram: pass the GraphModule that "
                             "convert_pt2e returns (e.g. convert_pt2e(prepare_pt2e(ep.module(), "
                             "quantizer)))")
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(word_bits, bool) or not isinstance(word_bits, numbers.Integral) \
                or word_bits % 8 or word_bits <= 0:
            raise InputError(f"word_bits must be a positive multiple of 8, got {word_bits!r}")
        self.model: nn.Module = model
        self.word_bits: int = int(word_bits)
        # a GraphModule is PT2E's (int8 buffers) or FX graph mode's (quantized modules inside)
        self._weights: Sequence[_GraphWeight | _EagerWeight] = (
            _pt2e_weights(model) if isinstance(model, fx.GraphModule) else [])
        self.kind: str = "pt2e" if self._weights else "eager"
        if not self._weights:
            self._weights = _eager_weights(model)
        if not self._weights and isinstance(model, fx.GraphModule) and any(
                str(n.target).startswith(LOWERED) for n in model.graph.nodes):
            raise InputError("model is a PT2E model lowered to onednn kernels (prepacked weights): "
                             "pass the GraphModule that convert_pt2e returns, before lowering")
        if not self._weights:
            raise InputError("model holds no int8 weights quantized by PyTorch (a converted "
                             "torch.ao.quantization model, or a convert_pt2e GraphModule with "
                             "fold_quantize=True); for a float model use QuantizedModel")
        segments: list[Segment] = []
        parts: list[np.ndarray] = []
        start = 0
        for w in self._weights:
            codes = w.codes().detach().cpu().contiguous()
            parts.append(codes.reshape(-1).view(torch.uint8).numpy())
            segments.append(Segment(w.name, start, codes.numel(), tuple(codes.shape), w.qscheme))
            start += codes.numel()
        self.segments: list[Segment] = segments
        self.n_codes: int = start
        word_bytes = self.word_bits // 8
        self.image: np.ndarray = np.zeros(-(-start // word_bytes) * word_bytes, dtype=np.uint8)
        np.concatenate(parts, out=self.image[:start])
        self.image.setflags(write=False)
        self._active: bool = False

    @property
    def scheme(self) -> str:
        """Where the quantization came from ("eager" / "pt2e"), where reports name a scheme."""
        return self.kind

    @property
    def names(self) -> list[str]:
        """The int8 tensors' names, in image order."""
        return [s.name for s in self.segments]

    @property
    def n_bits(self) -> int:
        """Bits in the memory image (what a random fault source draws over)."""
        return self.image.size * 8

    @property
    def n_words(self) -> int:
        """Memory words of `word_bits` bits in the image."""
        return self.image.size * 8 // self.word_bits

    def faulty_image(self, source: FaultSource, voltage: float | None = None, offset: int = 0,
                     out: np.ndarray | None = None, layout: MemoryLayout | None = None
                     ) -> np.ndarray:
        """The image read back through `source` (a Chip at `voltage` placed at memory word
        `offset` or by the layout's DRAM mapping, RandomBitErrors, or Faults) under `layout`
        (no ECC: PyTorch's int8 codes have no zero-weight image to decode to); a new array
        unless `out` is given."""
        if layout is not None and layout.ecc is not None:
            self.ecc_memory(layout.ecc)
        return (layout or PLAIN).read(self, source, voltage, offset, out)[0]

    def ecc_memory(self, ecc: str) -> EccMemory:
        """Refused: ECC is not modelled for PyTorch's int8 codes (they have no zero-weight image
        to decode to). (`QuantizedModel.ecc_memory` builds the stored image.)"""
        raise InputError("ecc is not modelled for PyTorch-quantized (int8) models")

    def int8_weights(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """The int8 weights stored in `image` (clean or faulty), {segment name: new tensor}.

        For a PT2E model this dict also works with `torch.func.functional_call(model, weights, x)`.
        """
        self._check(image)
        return {s.name: self._codes(image, s) for s in self.segments}

    def _check(self, image: object) -> None:
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8
                and image.shape == self.image.shape):
            got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) \
                else type(image).__name__
            raise InputError(f"image must be a uint8 numpy array [{self.image.size}], got {got}")

    @staticmethod
    def _codes(image: np.ndarray, s: Segment) -> torch.Tensor:
        return torch.from_numpy(image[s.start:s.start + s.count].copy()).view(torch.int8) \
            .reshape(s.shape)

    @contextmanager
    def loaded(self, image: np.ndarray) -> Iterator[nn.Module]:
        """Inside the block the model computes with the int8 weights of `image`; yields the model.

        Only tensors whose bytes differ from the clean image are written (each write re-packs
        the tensor for torch's int8 kernels, which costs more than the faults themselves).
        """
        self._check(image)
        if self._active:
            raise RuntimeError("weights are already loaded into this model; leave that with-block "
                               "first")
        self._active = True
        written: list[_GraphWeight | _EagerWeight] = []
        try:
            for w, s in zip(self._weights, self.segments, strict=True):
                end = s.start + s.count
                if not np.array_equal(image[s.start:end], self.image[s.start:end]):
                    written.append(w)
                    w.write(self._codes(image, s))
            yield self.model
        finally:
            try:
                for w in written:
                    w.restore()
            finally:
                self._active = False

    def __repr__(self) -> str:
        return (f"TorchQuantizedModel({self.kind}, {len(self.segments)} tensors, {self.n_codes} "
                f"int8 weights, {self.image.size} bytes)")
