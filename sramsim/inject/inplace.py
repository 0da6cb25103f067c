"""Faulty weights written into a model in place, O(faults) per fault map, and restored exactly.

`QuantizedModel.perturbed` dequantizes every weight again for each fault map, although only the
codes a fault changed differ from the clean ones. Here the model's quantized parameters hold the
*clean dequantized* weights; for a fault map only the codes in the bytes a fault reaches are
decoded (numba, the float32 arithmetic of `quantization.dequantize`, so every value is
bit-identical to `perturbed`) and written into the parameters, and exactly those elements are
restored from a saved copy afterwards. An 8-bit code is read off the clean weight the kernel
saves anyway (its segment's affine inverse, accepted only where that code decodes back to
exactly the weight; else the image byte): one cache line per fault instead of two.

Chain: fault source -> bit faults in ascending image order (`image_faults`) -> kernel that
decodes and writes the codes of faulty bytes (`kernels.write_faulty_codes`) -> restore
(`kernels.restore_codes`). Autograd: both the write and the restore bump the parameters'
version counters, so a backward pass that needs weights of the other state fails loudly instead
of using the wrong values.
"""
from __future__ import annotations

import numbers
import threading
import weakref
from dataclasses import dataclass, field
from operator import attrgetter, is_
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, InputTypeError
from sramsim.inject import weight_kernels as kernels
from sramsim.inject.layout import PLAIN, MemoryLayout
from sramsim.inject.mapping import check_offset, sorted_bit_faults
from sramsim.inject.quantization import SCHEMES, LayerQuant, dequantize, unpack
from sramsim.memory.chip import ByteFaults, Chip, Faults

if TYPE_CHECKING:
    from sramsim.inject.mapping import FaultSource
    from sramsim.inject.quantized_model import QuantizedModel


@dataclass(frozen=True)
class Applied:
    """What one fault map changed: image bytes that read back differently, weights whose value
    changed."""

    changed_bytes: int
    changed_weights: int
    record: dict = field(default_factory=dict)     # what the memory layout did (ECC counts, ...)

    @property
    def unchanged(self) -> bool:
        """No byte of the image reads back differently: the model is the clean quantized one."""
        return self.changed_bytes == 0


class ImageFaults(NamedTuple):
    """Faulty bytes (ascending) and where they land on the image: faulty byte i sits on image
    byte (byte[i] - offset_bytes) mod cap_bytes, repeated every cap_bytes; `first` is the first
    at or after the offset (see `kernels.write_faulty_codes`)."""

    faults: ByteFaults
    first: int
    offset_bytes: int
    cap_bytes: int


def image_faults(qm: QuantizedModel, source: FaultSource | np.ndarray,
                 voltage: float | None = None, offset: int = 0,
                 layout: MemoryLayout | None = None) -> tuple[ImageFaults, dict]:
    """The faults `layout.read(qm, source, voltage, offset)` leaves on the data image, as faulty
    bytes in image order, without touching a byte of the image; and the layout's record (ECC
    counts, bit placement table; {} for the plain layout).

    source: a Chip (at `voltage`, at word `offset` or by the layout's DRAM mapping), a
    RandomBitErrors (draws from it exactly as `read` would), a Faults record of image bit
    addresses, or a faulty data image (uint8, image-sized: the bytes where it differs from the
    clean image; no voltage, offset or layout applies to it). With ECC every codeword must be
    decoded, so the decoded image is built (O(image)) and the bytes where it differs are used.
    """
    if (layout is None or layout is PLAIN) and isinstance(source, Chip) and voltage is not None:
        return _on_chip(source, voltage, check_offset(offset)), {}      # the common case first
    layout = layout or PLAIN
    nbytes = qm.image.size
    offset = check_offset(offset)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.shape != qm.image.shape:
            raise InputError(f"a faulty image must be uint8 [{nbytes}], got {source.dtype} "
                             f"{list(source.shape)}")
        if voltage is not None or offset or not layout.is_plain:
            raise InputError("a faulty image takes no voltage, offset or memory layout (it was "
                             "read back already)")
        return _in_image(ByteFaults(*kernels.diff_bytes(qm.image, source)), nbytes), {}
    layout.check_source(source, voltage)
    if layout.ecc is not None:
        image, stats = layout.read(qm, source, voltage, offset)
        return _in_image(ByteFaults(*kernels.diff_bytes(qm.image, image)), nbytes), stats
    if layout.bit_placement != "linear":
        from sramsim.inject import bit_placement as BP
        from sramsim.inject.layout import bit_stats
        assert isinstance(source, Chip) and voltage is not None     # check_source made sure
        plan = layout.plan_bits(qm, source, voltage, offset)
        faults = BP.logical_faults(plan, source, voltage)
        keep = faults.address < np.uint64(nbytes * 8)         # a partial last word
        located = _bits_in_image(Faults(faults.address[keep], faults.kind[keep]), nbytes)
        return located, {"bit_placement": bit_stats(plan)}
    if layout.dram:
        from sramsim.inject.dram_mapping import placed_faults
        assert isinstance(source, Chip) and voltage is not None     # check_source made sure
        mapping = layout.dram_mapping(qm, source, voltage, offset)
        return _bits_in_image(placed_faults(source, voltage, mapping), nbytes), {}
    if isinstance(source, Chip):
        assert voltage is not None                                  # check_source made sure
        return _on_chip(source, voltage, offset), {}
    if isinstance(source, Faults):
        return _bits_in_image(sorted_bit_faults(source, nbytes * 8), nbytes), {}
    return _bits_in_image(source.draw(nbytes * 8), nbytes), {}       # a BitErrorSource


def _on_chip(chip: Chip, voltage: float, offset: int) -> ImageFaults:
    """The chip's faulty bytes at `voltage`, its word `offset` on image byte 0."""
    chip_faults = chip.byte_faults(voltage)
    g = chip.geometry
    offset_bytes = (offset % g.capacity_words) * (g.word_bits // 8)
    first = int(chip_faults.byte.searchsorted(offset_bytes)) if offset_bytes else 0
    return ImageFaults(chip_faults, first, offset_bytes, g.capacity_bytes)


def _bits_in_image(faults: Faults, nbytes: int) -> ImageFaults:
    """Bit faults at image bit addresses (distinct, ascending, inside the image), by byte."""
    return _in_image(ByteFaults.from_sorted(faults.address, faults.kind), nbytes)


def _in_image(faults: ByteFaults, nbytes: int) -> ImageFaults:
    """Faulty bytes already at image byte indices (ascending, inside the image)."""
    return ImageFaults(faults, 0, 0, nbytes)


class _Slot:
    """One model's in-place state under one QuantizedModel."""

    def __init__(self) -> None:
        self.active = False
        # the parameters' data_ptr, _version, shape and stride (`_stamp`), last known clean
        self.clean_stamp: Stamp | None = None
        # the checked quantized parameters, and the entries dicts[i][keys[i]] is values[i] of the
        # module tree that lead to them: while every entry holds, they are still the model's
        self.params: list[torch.Tensor] | None = None
        self.dicts: list[dict] = []
        self.keys: list[str] = []
        self.values: list[Any] = []
        self.weights: np.ndarray | None = None  # the flat float32 buffer the parameters view
        self.pos = np.empty(0, dtype=np.int32)
        self.old = np.empty(0, dtype=np.float32)


class InplaceState:
    """Per-QuantizedModel bookkeeping: segment tables for the kernel, one slot per model.

    Models are held weakly (a model that is dropped takes its slot with it): slots maps
    id(model) to (weak reference, slot). A pickled copy keeps the tables and no slots: each model
    loads the clean weights on its first use there.
    """

    def __init__(self, qm: QuantizedModel) -> None:
        segs = qm.segments
        self.seg_end = np.array([s.start + s.count for s in segs], dtype=np.int64)
        self.scheme = np.array([SCHEMES.index(s.quant.scheme) for s in segs], dtype=np.int64)
        self.delta = np.array([s.quant.delta for s in segs], dtype=np.float32)
        self.lo = np.array([s.quant.lo for s in segs], dtype=np.float32)
        self.hi = np.array([s.quant.hi for s in segs], dtype=np.float32)
        inverse = [code_inverse(s.quant, qm.image[s.start:s.start + s.count] if qm.bits == 8
                                else qm.image[:0]) for s in segs]
        self.ga, self.gb = (np.array([g[k] for g in inverse], dtype=np.float64) for k in (0, 1))
        self.umin, self.umax = (np.array([g[k] for g in inverse], dtype=np.int64) for k in (2, 3))
        self.lock = threading.Lock()
        self.slots: dict[int, tuple[weakref.ref, _Slot]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["lock"], state["slots"]       # a copy starts with no models
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self.slots = {}

    def slot(self, model: nn.Module) -> _Slot:
        """The model's slot, made on first use; caller holds the lock. (A dict by id with a weak
        reference: a WeakKeyDictionary lookup makes a weak reference per call.)"""
        entry = self.slots.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry[1]
        key = id(model)

        def forget(ref: weakref.ref, slots: dict = self.slots) -> None:
            if slots.get(key, (None,))[0] is ref:       # not a newer model with the same id
                del slots[key]

        slot = _Slot()
        self.slots[key] = (weakref.ref(model, forget), slot)
        return slot

    def acquire(self, model: nn.Module) -> _Slot:
        """The model's slot, marked active; a second concurrent or nested use is refused."""
        with self.lock:
            slot = self.slot(model)
            if slot.active:
                raise InputError("faults are already applied to this model (nested or concurrent "
                                 "faults_applied on one model); use one model per thread")
            slot.active = True
            return slot


def code_inverse(quant: LayerQuant, stored: np.ndarray) -> tuple[float, float, int, int]:
    """(ga, gb, umin, umax) by which the in-place kernel reads a segment's 8-bit code off its
    clean weight v: u = rint(ga * v + gb), the code in the order of the values (signed for the
    symmetric schemes; code = u mod 256), accepted where umin <= u <= umax and the code decodes
    back to exactly v, else read off the image. `stored`: the segment's clean codes (uint8).
    umin..umax spans the stored codes, and decoding must be strictly increasing over it (every
    value there one code's), so an accepted code of a clean weight is its stored code; where it
    is not (a clamp that merges codes, float32 values that coincide) and for 4- and 2-bit codes
    the span is empty (1, 0): every code is read off the image. ga, gb: the least-squares affine
    inverse over the stored codes (a clamped code it misses is read off the image)."""
    nothing = (0.0, 0.0, 1, 0)
    if quant.bits != 8 or stored.size == 0:
        return nothing
    codes = np.arange(256)
    # the codes in the order of their values: two's complement for the symmetric schemes
    u = codes - 256 * (codes >= 128) if quant.scheme in ("symmetric", "stutz-symmetric") else codes
    present = np.bincount(stored, minlength=256) > 0
    umin, umax = int(u[present].min()), int(u[present].max())
    span = np.arange(umin, umax + 1)
    values = dequantize(torch.from_numpy((span & 255).astype(np.uint8)), quant).numpy()
    if not np.all(np.diff(values) > 0):
        return nothing
    if umin == umax:
        return 0.0, float(umin), umin, umax
    ga, gb = np.polyfit(values[u[present] - umin].astype(np.float64),
                        u[present].astype(np.float64), 1)
    if not (np.isfinite(ga) and np.isfinite(gb)):
        return nothing
    return float(ga), float(gb), umin, umax


def state(qm: QuantizedModel) -> InplaceState:
    """qm's InplaceState, made on first use (dict.setdefault is atomic: one per qm)."""
    st = qm.__dict__.get("_inplace")
    return st if st is not None else qm.__dict__.setdefault("_inplace", InplaceState(qm))


def quantized_parameters(qm: QuantizedModel, model: nn.Module) -> list[torch.Tensor]:
    """`model`'s parameters named by qm's segments; refused (InputError naming the parameter)
    unless each is a contiguous float32 CPU tensor of the segment's shape."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    out: list[torch.Tensor] = []
    for s in qm.segments:
        p = params.get(s.name)
        if p is None:
            raise InputError(f"model has no parameter {s.name!r}: not the model this "
                             "QuantizedModel quantized")
        if tuple(p.shape) != s.shape:
            raise InputError(f"parameter {s.name!r} has shape {list(p.shape)}, quantized as "
                             f"{list(s.shape)}")
        if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
            raise InputError(f"parameter {s.name!r} is {p.dtype} on {p.device}: weights are "
                             "written in place as contiguous float32 on the CPU; use perturbed()")
        out.append(p)
    return out


def _parameters(qm: QuantizedModel, model: nn.Module, slot: _Slot) -> list[torch.Tensor]:
    """`quantized_parameters(qm, model)`, checked again only when the module tree no longer
    leads to the parameters last checked (a submodule or parameter replaced): walking ~50 dict
    entries costs a tenth of `named_parameters` per fault map."""
    if slot.params is not None and all(map(is_, map(dict.get, slot.dicts, slot.keys),
                                           slot.values)):
        return slot.params
    params = quantized_parameters(qm, model)
    refs: dict[tuple[int, str], tuple[dict, str, Any]] = {}
    for s in qm.segments:
        *path, name = s.name.split(".")
        module = model
        for key in path:
            child = module._modules[key]
            assert child is not None            # named_parameters led through it
            refs[id(module._modules), key] = (module._modules, key, child)
            module = child
        refs[id(module._parameters), name] = (module._parameters, name, module._parameters[name])
    slot.params = params
    slot.dicts = [d for d, _, _ in refs.values()]
    slot.keys = [k for _, k, _ in refs.values()]
    slot.values = [v for _, _, v in refs.values()]
    return params


def inplace_fits(qm: QuantizedModel, model: nn.Module) -> bool:
    """Whether `faults_applied` can write into `model` (else use the functional `perturbed`)."""
    try:
        quantized_parameters(qm, model)
    except InputError:
        return False
    return True


# Codes decoded at once by load_clean: 256 KB of float32 stays in the L2 cache (on a 33.5 M-weight
# layer, 8-bit: 1.8 ns per weight against 2.9 with quantization.CHUNK and 4.9 decoding it whole).
LOAD_CHUNK = 1 << 16


def load_clean(qm: QuantizedModel, model: nn.Module, chunk: int = LOAD_CHUNK) -> np.ndarray:
    """Write the clean dequantized weights into `model`'s quantized parameters (no grad) and
    return the flat float32 buffer that holds them, in image order (code k is element k: the
    in-place kernels write there).

    A model whose quantized parameters are not yet views of one such buffer is packed first:
    each parameter's storage moves to its slice of a new numpy buffer (allocated on transparent
    huge pages where the kernel allows it, so the sparse writes of a fault map miss the TLB
    less; the old storage is freed as each moves). So `model` is rewritten: use a model you own
    (`sramsim.nn.evaluation.Evaluator` passes its private copy). Segment by segment, `chunk`
    codes at a time, each piece decoded by `quantization.dequantize` (so every value is
    bit-identical to `qm.clean_weights()`) straight into the buffer: the temporaries stay
    chunk-sized, never a float copy of the whole model (which doubled a billion-weight model's
    resident memory: benchmarks/bench_scale.py).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise InputError(f"chunk must be a positive number of codes, got {chunk!r}")
    params = quantized_parameters(qm, model)
    st = state(qm)
    with st.lock:
        slot = st.slot(model)
    weights = slot.weights if _packed(qm, params, slot.weights) else _pack(qm, params)
    for s in qm.segments:
        for i in range(0, s.count, chunk):
            n = min(chunk, s.count - i)
            codes = clean_codes(qm.image, qm.bits, s.start + i, n)
            weights[s.start + i:s.start + i + n] = dequantize(codes, s.quant).numpy()
    torch.autograd.graph.increment_version(params)
    slot.weights = weights
    slot.clean_stamp = _stamp(params)
    return weights


def _packed(qm: QuantizedModel, params: list[torch.Tensor], weights: np.ndarray | None) -> bool:
    """Whether every quantized parameter is the view of its slice of `weights`."""
    if weights is None:
        return False
    base = weights.ctypes.data
    return all(p.data_ptr() == base + 4 * s.start
               for s, p in zip(qm.segments, params, strict=True))


def _pack(qm: QuantizedModel, params: list[torch.Tensor]) -> np.ndarray:
    """A new flat buffer with each parameter's storage moved to its slice (contents not kept:
    `load_clean` writes them)."""
    weights = np.empty(qm.n_codes, dtype=np.float32)
    with torch.no_grad():
        for s, p in zip(qm.segments, params, strict=True):
            p.data = torch.from_numpy(weights[s.start:s.start + s.count]).view(p.shape)
    return weights


def clean_codes(image: np.ndarray, bits: int, start: int, n: int) -> torch.Tensor:
    """Codes start .. start+n-1 of a packed image, as a new uint8 tensor (copies only the bytes
    holding them: the image itself may be read-only, which torch cannot wrap)."""
    per = 8 // bits
    first = start // per
    raw = torch.from_numpy(image[first:-(-(start + n) // per)].copy())
    head = start - first * per              # codes of the first byte that precede `start`
    return unpack(raw, bits, raw.numel() * per)[head:head + n]


class Stamp(NamedTuple):
    """What tells that parameters still hold what they held: _version counts in-place changes
    through torch (optimizer steps, copy_, load_state_dict); address, shape and strides change
    with `p.data = ...`."""

    ptrs: list[int]
    versions: list[int]
    shapes: list[torch.Size]
    strides: list[tuple[int, ...]]


_data_ptr = torch.Tensor.data_ptr
_version = attrgetter("_version")
_shape = attrgetter("shape")
_stride = torch.Tensor.stride


# What torch.autograd.graph.increment_version calls for a list, without its isinstance check:
# per fault map, with caches cold, half the time (the public function where torch lacks it).
_increment_version = getattr(torch._C, "_increment_version",
                             torch.autograd.graph.increment_version)


def _stamp(params: list[torch.Tensor]) -> Stamp:
    # map: the loops run in C (per fault map, with cold caches, half the time of a Python loop)
    return Stamp(list(map(_data_ptr, params)), list(map(_version, params)),
                 list(map(_shape, params)), list(map(_stride, params)))


def _scratch(slot: _Slot, n: int, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """The slot's buffers for `n` code slots, grown when needed, never allocated per call
    (int32 positions where they fit: less memory traffic per fault)."""
    if slot.pos.shape[0] < n:
        slot.pos = np.empty(n, dtype=np.int32 if n_codes < 2 ** 31 else np.int64)
        slot.old = np.empty(n, dtype=np.float32)
    return slot.pos, slot.old


def _write(qm: QuantizedModel, st: InplaceState, slot: _Slot, located: ImageFaults,
           ) -> tuple[int, int, np.ndarray, np.ndarray, bool]:
    """Write the located faults into slot.weights, saving what they held in slot.pos/old.
    Returns (image bytes changed, codes changed, out, written, parallel) for the restore."""
    f, weights = located.faults, slot.weights
    assert weights is not None                  # the caller loaded the clean weights
    none = f.xor[:0]
    clear = none if f.clear is None else f.clear
    set_ = none if f.set is None else f.set
    # the parallel kernels only with threads and enough faulty bytes to share among them (the
    # chip's, times the image's share of a chip: an estimate); else plan and write in one call
    cap = located.cap_bytes
    if (f.byte.shape[0] * qm.image.size >= kernels.PARALLEL_MIN_FAULTS * cap
            and numba.get_num_threads() > 1):
        lo, hi, base, out, slots = kernels.plan_pieces(
            f.byte, located.first, located.offset_bytes, cap, qm.image.size, qm.bits)
        pos, old = _scratch(slot, slots, qm.n_codes)
        written = np.empty(lo.shape[0], dtype=np.int64)
        changed, codes = kernels.write_faulty_codes(
            qm.image, f.byte, f.xor, clear, set_, lo, hi, base, out, qm.bits, st.seg_end,
            st.scheme, st.delta, st.lo, st.hi, st.ga, st.gb, st.umin, st.umax, weights, pos, old,
            written)
        return changed, codes, out, written, True
    while True:
        changed, codes, out, written, slots = kernels.write_planned_serial(
            qm.image, f.byte, f.xor, clear, set_, located.first, located.offset_bytes, cap,
            qm.bits, st.seg_end, st.scheme, st.delta, st.lo, st.hi, st.ga, st.gb, st.umin,
            st.umax, weights, slot.pos, slot.old)
        if slots <= slot.pos.shape[0]:
            return changed, codes, out, written, False
        _scratch(slot, slots, qm.n_codes)       # too few slots: nothing was written


def faults_applied(qm: QuantizedModel, model: nn.Module, source: FaultSource | np.ndarray,
                   voltage: float | None = None, offset: int = 0,
                   layout: MemoryLayout | None = None) -> FaultsApplied:
    """A context manager: inside the block `model`'s quantized parameters hold the faulty
    weights of `source` read through `layout` (bit-identical to `qm.perturbed(...)` with the
    same arguments); on leaving it, also when the block raises, exactly the rewritten elements
    get their clean *dequantized* values back. `with` gives `Applied` (changed_bytes,
    changed_weights, unchanged, record).

    `model` must be a model whose quantized parameters may hold qm's clean dequantized weights
    outside the block (`load_clean`, made on first use and whenever torch changed a parameter
    since): `sramsim.nn.evaluation.Evaluator` passes a copy it owns, never a user's model.
    Work is O(faults): only the codes of faulty bytes are decoded and written. Parameters must
    be contiguous float32 on the CPU (`inplace_fits`). One block at a time per model (nested or
    concurrent use is refused).
    """
    return FaultsApplied(qm, model, source, voltage, offset, layout)


class FaultsApplied:
    """`faults_applied`'s context manager. A class, not a generator: per fault map, with caches
    cold, a generator-based context manager costs three times as much to enter."""

    __slots__ = ("qm", "model", "source", "voltage", "offset", "layout", "_slot", "_undo")

    def __init__(self, qm: QuantizedModel, model: nn.Module, source: FaultSource | np.ndarray,
                 voltage: float | None, offset: int, layout: MemoryLayout | None) -> None:
        self.qm, self.model, self.source = qm, model, source
        self.voltage, self.offset, self.layout = voltage, offset, layout
        self._slot: _Slot | None = None
        self._undo: tuple | None = None

    def __enter__(self) -> Applied:
        qm, model = self.qm, self.model
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if self._slot is not None:
            raise InputError("this faults_applied block is already entered (make one per block)")
        st = state(qm)
        slot = st.acquire(model)
        try:
            params = _parameters(qm, model, slot)
            located, record = image_faults(qm, self.source, self.voltage, self.offset,
                                           self.layout)
            stamp = _stamp(params)
            if slot.clean_stamp != stamp:
                load_clean(qm, model)
                stamp = _stamp(params)
            weights = slot.weights
            assert weights is not None              # load_clean set it with the clean stamp
            changed, codes, out, written, many = _write(qm, st, slot, located)
            _increment_version(params)
        except BaseException:
            slot.active = False
            raise
        self._slot, self._undo = slot, (params, stamp, weights, out, written, many)
        return Applied(changed, codes, record)

    def __exit__(self, *exc: object) -> None:
        slot, undo = self._slot, self._undo
        if slot is None or undo is None:
            return
        self._slot = self._undo = None
        params, stamp, weights, out, written, many = undo
        try:
            (kernels.restore_codes if many else kernels.restore_codes_serial)(
                weights, slot.pos, slot.old, out, written)
            _increment_version(params)
            # clean if nothing but the write and the restore (one version bump each) changed a
            # parameter inside the block: the next block compares the parameters with this
            # stamp, and loads the clean weights where any differs (a change torch made, new
            # storage, a new shape)
            slot.clean_stamp = Stamp(stamp.ptrs, [v + 2 for v in stamp.versions], stamp.shapes,
                                     stamp.strides)
        finally:
            slot.active = False
