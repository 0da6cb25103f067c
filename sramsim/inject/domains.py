"""Voltage domains of the weight memory, and an assignment of a voltage to each domain.

A memory split into domains runs each at its own supply voltage. Which weights a domain holds
decides which faults reach them, so the split lives here, beside the mapping:

- ``memory``: one domain, "weights" (the whole weight memory at one voltage);
- ``layer``: each quantized tensor's words in their own domain (its own bank group), named by
  the tensor; a memory word shared by two tensors (sub-byte codes) belongs to the first;
- ``bank``: each bank of the weight chip (SRAM `Geometry.banks`), "bank0", "bank1", ...; which
  image bytes a bank holds follows from the placement offset (the weight mapping's rule);
- ``partition``: each partition of a DRAM part under a naive/drmap DRAM mapping (the layout's
  partition: "bank" -> "bank3", "subarray" -> "bank3.sub12"), EDEN's unit for layers of
  different tolerance;
- ``bit``: each bit significance of the weight codes in its own column group, "bit7" (the
  most significant of 8-bit codes) ... "bit0": byte bit j holds bit j mod `bits` of its code
  (codes are packed from bit 0 up), so with 4-bit codes "bit3" is byte bits 7 and 3. The
  significance-driven SRAM of Srinivasan et al. (DATE 2016: MSBs in robust 8T cells, LSBs in 6T
  cells at a scaled voltage) is this split with two domains; a domain here is one significance.

Labels (`WeightDomains.labels`): the domain of every image byte, shape (n,), or for ``bit``
domains the domain of each byte bit 0..7, shape (1, 8) (the same for every byte); `bit_mask`
turns either into the bits of each byte that a set of domains holds.

Reading under an assignment (`read_assigned`): each stored bit reads back as the chip reads it
at the voltage of its domain. The chip's faults at each distinct voltage are read through the
layout once and the bits of that voltage's domains are taken from it; each cell's fault at
its own voltage is exactly what the byte rule gives, because the rule acts on each bit alone.
Nesting carries over per domain: lowering one domain's voltage only adds faults to its bits.
Domains other than ``memory`` need a layout without ECC or bit placement (their stored image is
not the data image); the error-aware DRAM mapping is refused (it places by voltage).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sramsim.errors import InputError, check_choice, check_number
from sramsim.inject.layout import MemoryLayout
from sramsim.inject.mapping import check_offset
from sramsim.memory.chip import Chip
from sramsim.memory.dram import DramGeometry
from sramsim.memory.geometry import Geometry

if TYPE_CHECKING:
    from sramsim.inject.quantized_model import QuantizedModel

BY = ("memory", "layer", "bank", "partition", "bit")
ACTIVATIONS = "activations"      # the activation buffer's domain in an assignment


@dataclass(frozen=True)
class WeightDomains:
    """How the weight memory is split (`by`, see the module docstring) and the domain names."""

    by: str
    names: tuple

    @classmethod
    def build(cls, qm: QuantizedModel, by: str = "memory",
              geometry: Geometry | DramGeometry | None = None,
              layout: MemoryLayout | None = None) -> WeightDomains:
        """The domains of `qm`'s weights split `by`; `geometry` is the weight chip's (bank,
        partition); `layout` how the weights are stored."""
        check_choice(by, BY, "domains")
        layout = layout or MemoryLayout()
        if by != "memory" and (layout.ecc is not None or layout.bit_placement != "linear"):
            raise InputError(f"{by} domains need weights stored without ecc or bit placement "
                             "(one domain: --domains memory)")
        if by == "memory":
            return cls(by, ("weights",))
        if by == "layer":
            return cls(by, tuple(s.name for s in qm.segments))
        if by == "bit":
            return cls(by, tuple(f"bit{b}" for b in reversed(range(qm.bits))))
        if by == "bank":
            if geometry is None or isinstance(geometry, DramGeometry):
                raise InputError("bank domains need an SRAM chip geometry (for DRAM: partition)")
            return cls(by, tuple(f"bank{b}" for b in range(geometry.banks)))
        if not isinstance(geometry, DramGeometry) or layout.mapping not in ("naive", "drmap"):
            raise InputError("partition domains need a DRAM chip and the naive or drmap mapping")
        n, per = geometry.n_partitions(layout.partition), geometry.subarrays_per_bank
        return cls(by, tuple(f"bank{p}" if layout.partition == "bank" else
                             f"bank{p // per}.sub{p % per}" for p in range(n)))

    def labels(self, qm: QuantizedModel, chip: Chip | None = None, offset: int = 0,
               layout: MemoryLayout | None = None) -> np.ndarray:
        """The domain index of every image byte (int32, shape (n,)), for the weights placed on
        `chip` at word `offset` (bank, partition) under `layout`; for ``bit`` domains the index
        of each byte bit 0..7, shape (1, 8) (module docstring)."""
        n = qm.image.size
        if self.by == "bit":
            return np.array([[qm.bits - 1 - j % qm.bits for j in range(8)]], dtype=np.int32)
        if self.by == "memory":
            return np.zeros(n, dtype=np.int32)
        if self.by == "layer":
            word = qm.word_bits // 8
            first_code = (np.arange(n, dtype=np.int64) // word) * word * 8 // qm.bits
            starts = np.array([s.start for s in qm.segments], dtype=np.int64)
            return (np.searchsorted(starts, first_code, side="right") - 1).astype(np.int32)
        if chip is None:
            raise InputError(f"{self.by} domains need the chip the weights are placed on")
        g = chip.geometry
        if self.by == "bank":
            shift = (check_offset(offset) % g.capacity_words) * (g.word_bits // 8)
            chip_byte = (np.arange(n, dtype=np.int64) + shift) % g.capacity_bytes
            return (chip_byte * 8 // (g.rows * g.cols)).astype(np.int32)
        if not isinstance(g, DramGeometry):
            raise InputError("partition domains need a DRAM chip")
        layout = layout or MemoryLayout()
        # placed by order only
        mapping = layout.dram_mapping(qm, chip, chip.nominal_voltage, offset)
        loc = mapping.locations()
        part = loc["bank"] if layout.partition == "bank" else \
            loc["bank"] * g.subarrays_per_bank + loc["subarray"]
        return np.repeat(part.astype(np.int32), mapping.unit_bytes)[:n]

    def image_bytes(self, qm: QuantizedModel,
                    geometry: Geometry | DramGeometry | None = None) -> list[float]:
        """Bytes of qm's image each domain holds: exact for ``memory`` and ``layer``; for the
        placement-dependent ``bank`` / ``partition`` the mean over a uniformly random placement
        (every image byte then lands on a uniformly random chip byte, so a domain holds the
        image's bytes times its share of the capacity)."""
        n = qm.image.size
        if self.by == "bit":                      # every byte holds 8 / bits of each
            return [n / qm.bits] * len(self.names)
        if self.by in ("memory", "layer"):
            return [float(c) for c in np.bincount(self.labels(qm), minlength=len(self.names))]
        if geometry is None:
            raise InputError(f"{self.by} domains need the chip geometry")
        return [n / len(self.names)] * len(self.names)     # equal banks / partitions

    def describe(self) -> dict:
        """JSON: how the memory is split and the domain names."""
        return {"by": self.by, "names": list(self.names)}


@dataclass(frozen=True)
class VoltageAssignment:
    """A supply voltage for each domain: (name, voltage) pairs in domain order."""

    pairs: tuple

    def __post_init__(self) -> None:
        seen = set()
        pairs = []
        for name, v in self.pairs:
            if not isinstance(name, str) or not name:
                raise InputError(f"a domain name must be a non-empty string, got {name!r}")
            if name in seen:
                raise InputError(f"domain {name!r} is given twice")
            seen.add(name)
            pairs.append((name, check_number(v, f"voltage of domain {name!r}", positive=True)))
        if not pairs:
            raise InputError("a voltage assignment needs at least one domain")
        object.__setattr__(self, "pairs", tuple(pairs))

    @classmethod
    def of(cls, voltages: Mapping[str, float]) -> VoltageAssignment:
        """From a {domain: voltage} mapping (in its order)."""
        if not isinstance(voltages, Mapping):
            raise InputError("a voltage assignment is a JSON object {domain: voltage}")
        return cls(tuple(voltages.items()))

    @classmethod
    def uniform(cls, names: Sequence[str], voltage: float) -> VoltageAssignment:
        """Every domain at one voltage."""
        return cls(tuple((n, voltage) for n in names))

    @classmethod
    def load(cls, path: str | os.PathLike) -> VoltageAssignment:
        """From a JSON file: {domain: voltage}, or a plan.json's {"assignment": {...}}."""
        try:
            with open(path) as f:
                obj = json.load(f)
        except ValueError as exc:
            raise InputError(f"{path}: not a JSON voltage assignment ({exc})") from None
        if isinstance(obj, dict) and isinstance(obj.get("planned"), dict):
            obj = obj["planned"].get("assignment")
        return cls.of(obj)

    @property
    def names(self) -> tuple:
        """The domains, in order."""
        return tuple(n for n, _ in self.pairs)

    def __getitem__(self, name: str) -> float:
        for n, v in self.pairs:
            if n == name:
                return v
        raise KeyError(name)

    def as_dict(self) -> dict:
        """{domain: voltage}."""
        return dict(self.pairs)

    def key(self) -> str:
        """A stable text identity (voltages rounded to 1 uV), for result stores."""
        return ",".join(f"{n}={v:.6f}" for n, v in self.pairs)

    def check(self, names: Sequence[str], what: str = "assignment") -> VoltageAssignment:
        """This assignment if it names exactly `names`, reordered to their order."""
        missing = [n for n in names if n not in self.names]
        extra = [n for n in self.names if n not in names]
        if missing or extra:
            raise InputError(f"{what}: " + "; ".join(
                p for p in (f"no voltage for domain(s) {', '.join(missing)}" if missing else "",
                            f"unknown domain(s) {', '.join(extra)} (have {', '.join(names)})"
                            if extra else "") if p))
        return VoltageAssignment(tuple((n, self[n]) for n in names))

    def replace(self, name: str, voltage: float) -> VoltageAssignment:
        """A copy with domain `name` at `voltage`."""
        self[name]
        return VoltageAssignment(tuple((n, voltage if n == name else v) for n, v in self.pairs))


def bit_mask(labels: np.ndarray, domains: Sequence[int]) -> np.ndarray:
    """The bits of each image byte that `domains` hold (uint8; labels from
    `WeightDomains.labels`): per byte for byte labels, one pattern (shape (1,)) for bit labels."""
    inside = np.isin(labels, list(domains))
    if labels.ndim == 2:
        return np.packbits(inside[0], bitorder="little")       # byte bit j <- inside[0, j]
    return np.where(inside, np.uint8(0xFF), np.uint8(0))


def take_bits(out: np.ndarray, source: np.ndarray, mask: np.ndarray) -> None:
    """out's bits under `mask` replaced by source's, in place."""
    np.bitwise_xor(out, (out ^ source) & mask, out=out)


def read_assigned(qm: QuantizedModel, chip: Chip, voltages: Sequence[float], labels: np.ndarray,
                  offset: int = 0, layout: MemoryLayout | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
    """qm's data image read back from `chip` with domain d at `voltages[d]` (`labels`: each
    image byte's or byte bit's domain, from `WeightDomains.labels` for this chip and offset);
    into `out` when given. The clean image is never modified (see the module docstring)."""
    layout = layout or MemoryLayout()
    if labels.shape not in (qm.image.shape, (1, 8)):
        raise InputError("domain labels must give one domain per image byte or per byte bit")
    volts = [float(v) for v in voltages]
    if any(not math.isfinite(v) for v in volts):
        raise InputError("domain voltages must be finite")
    distinct = sorted(set(volts), reverse=True)
    if len(distinct) == 1:
        return layout.read(qm, chip, distinct[0], offset, out)[0]
    out = np.empty_like(qm.image) if out is None else out
    np.copyto(out, qm.image)
    buf = np.empty_like(qm.image)
    for v in distinct:
        mask = bit_mask(labels, [d for d, x in enumerate(volts) if x == v])
        if not mask.any():
            continue
        take_bits(out, layout.read(qm, chip, v, offset, buf)[0], mask)
    return out
