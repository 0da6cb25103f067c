"""How a model's weights are stored in a memory: one validated value that every read path takes.

A `MemoryLayout` says where each word of the memory image sits and how it is protected:

- **mapping**: where image words go in the memory. ``"linear"`` (any chip, the default):
  image word k at memory word (k + offset) mod capacity (`sramsim.inject.mapping`). A DRAM
  chip can instead take one of the DRAM mapping policies ``"naive"``, ``"drmap"`` or
  ``"error-aware"`` (`sramsim.inject.dram_mapping`), planned for the image and the chip.
- **bit_placement**: fault-aware placement of the bits of each word when the chip's map is known
  (ReSpawn; `sramsim.inject.bit_placement`): ``"linear"`` (none, the default), ``"shuffle"`` or
  ``"skip-faulty-words"``, planned from the chip's map at the read voltage and offset.
- **ecc** and **ecc_policy**: the image stored under a SECDED code (``"secded72"``,
  ``"secded13"``; `sramsim.inject.ecc`) whose check bits sit in the same faulty memory; each
  codeword is decoded on reading, and ``ecc_policy`` ("keep" / "zero") is what a detected
  uncorrectable word reads as.

What the hardware model composes: ECC over a linear or naive/drmap DRAM mapping (the stored image,
check bits included, is what gets mapped). What it does not model is refused here, in one place:
a bit placement together with ECC or with a DRAM mapping, ECC with the error-aware mapping (its
per-layer partitions are defined on the data image), a policy for uncorrectable words without ECC.
Rules that depend on the fault source (a bit placement or a DRAM mapping needs a known chip map;
a chip needs a voltage; a source without voltages takes none) are checked by `check_source`.

The read path is `read` (the faulty data image, and what the protection did) and, for the
in-place evaluator, `sramsim.inject.inplace.image_faults` with the same layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from sramsim.errors import InputError, check_choice, check_number
from sramsim.inject import bit_placement as BP
from sramsim.inject import ecc as ECC
from sramsim.inject.mapping import BitErrorSource, FaultSource, apply_faults, check_offset
from sramsim.memory.chip import Chip, Faults
from sramsim.memory.dram import DramGeometry

if TYPE_CHECKING:
    from sramsim.inject.dram_mapping import DramMapping
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.inject.torch_quantized import TorchQuantizedModel

    # A model whose weights form one memory image (what a layout reads back).
    ImageModel: TypeAlias = QuantizedModel | TorchQuantizedModel

DRAM_MAPPINGS = ("naive", "drmap", "error-aware")
MAPPINGS = ("linear",) + DRAM_MAPPINGS
PARTITIONS = ("bank", "subarray")


@dataclass(frozen=True)
class MemoryLayout:
    """How weights are stored: mapping, bit placement and ECC (see the module docstring).

    Immutable and checked on construction; `MemoryLayout()` is the plain linear layout.
    partition: the unit the error-aware DRAM mapping ranks ("subarray" or "bank").
    layer_tolerance: error-aware only, the tolerable BER of each quantized tensor (image order);
    None gives every layer the same tolerance, so the image fills the most reliable partitions
    first. planning_voltage: the voltage a bit placement's table is planned at (fixed data, like
    a hardware remap table: reads at other voltages go through the same table); None plans it
    from the chip's map at each read's own voltage.
    """

    mapping: str = "linear"
    bit_placement: str = "linear"
    ecc: str | None = None
    ecc_policy: str = "keep"
    partition: str = "subarray"
    layer_tolerance: tuple[float, ...] | None = field(default=None)
    planning_voltage: float | None = None

    def __post_init__(self) -> None:
        check_fields(self.__dict__)
        if self.ecc is not None:
            object.__setattr__(self, "ecc", ECC.get_code(self.ecc).name)
        if self.planning_voltage is not None:
            object.__setattr__(self, "planning_voltage", float(self.planning_voltage))
        if self.layer_tolerance is not None:
            object.__setattr__(self, "layer_tolerance", tuple(float(t) for t in
                                                              self.layer_tolerance))

    # --- what it is ------------------------------------------------------------------------
    @property
    def is_plain(self) -> bool:
        """The default layout: linear mapping, no bit placement, no ECC."""
        return self == MemoryLayout()

    @property
    def dram(self) -> bool:
        """Whether the mapping is a DRAM mapping policy."""
        return self.mapping in DRAM_MAPPINGS

    @property
    def read_overhead(self) -> float:
        """Stored bits read per data bit (n / k with ECC, else 1): what the energy charges."""
        return 1.0 if self.ecc is None else ECC.get_code(self.ecc).overhead

    def table_bits_per_word(self, bits: int) -> int:
        """Bits of remapping metadata per memory word (the shuffle table: ceil(log2 m))."""
        return math.ceil(math.log2(bits)) if self.bit_placement == "shuffle" else 0

    def ecc_record(self) -> dict | None:
        """The ECC as configs and reports name it: {"code", "policy"}; None without ECC."""
        return None if self.ecc is None else {"code": self.ecc, "policy": self.ecc_policy}

    def describe(self) -> dict:
        """JSON of the layout (configs, reports); only what differs from the default."""
        plain = MemoryLayout()
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if v != getattr(plain, k)}

    # --- reading ----------------------------------------------------------------------------
    def check_source(self, source: FaultSource | np.ndarray, voltage: float | None) -> None:
        """Refuse a fault source this layout cannot read through (InputError naming why)."""
        if isinstance(source, Chip):
            if voltage is None:
                raise InputError(f"chip {source.name!r} needs a voltage")
            if self.dram and not isinstance(source.geometry, DramGeometry):
                raise InputError(f"the DRAM mapping {self.mapping!r} needs a DRAM chip; chip "
                                 f"{source.name!r} is not one")
            return
        if voltage is not None:
            raise InputError(f"a voltage was given with a {type(source).__name__} fault source, "
                             "which has none (only a Chip is read at a voltage)")
        if self.bit_placement != "linear":
            raise InputError(f"bit placement {self.bit_placement!r} needs a known chip map (a "
                             f"Chip source), got {type(source).__name__}")
        if self.dram:
            raise InputError(f"the DRAM mapping {self.mapping!r} needs a DRAM chip, got "
                             f"{type(source).__name__}")
        if not isinstance(source, (Faults, BitErrorSource, np.ndarray)):
            raise InputError(f"unknown fault source {type(source).__name__}; use a Chip, "
                             "RandomBitErrors or Faults")

    def stored_image(self, qm: ImageModel) -> np.ndarray:
        """What sits in the memory: qm's image, or its image with check bits under ECC."""
        return qm.image if self.ecc is None else qm.ecc_memory(self.ecc).stored

    def plan_bits(self, qm: ImageModel, chip: Chip, voltage: float,
                  offset: int = 0) -> BP.BitPlacement:
        """This layout's bit placement of qm's image at `offset` on `chip`, planned from the
        chip's map at the planning voltage, or at `voltage` (the read's) when none is set
        (`sramsim.inject.bit_placement.plan`)."""
        at = voltage if self.planning_voltage is None else self.planning_voltage
        return BP.plan(chip, at, self.bit_placement, qm.bits,
                       -(-qm.n_bits // chip.geometry.word_bits), offset)

    def dram_mapping(self, qm: ImageModel, chip: Chip, voltage: float,
                     offset: int = 0) -> DramMapping:
        """The DRAM mapping of the stored image on `chip` (`sramsim.inject.dram_mapping`):
        naive / drmap from burst `offset`; error-aware ranked by the chip's partitions' BER at
        `voltage` (offset 0 only)."""
        from sramsim.inject import dram_mapping as DM
        n_bytes = self.stored_image(qm).size
        geometry = chip.geometry
        if not isinstance(geometry, DramGeometry):
            raise InputError(f"the DRAM mapping {self.mapping!r} needs a DRAM chip; chip "
                             f"{chip.name!r} is not one")
        if self.mapping != "error-aware":
            return DM.cached_mapping(n_bytes, geometry, self.mapping, check_offset(offset))
        if check_offset(offset):
            raise InputError("the error-aware DRAM mapping places by partition BER: offset "
                             "must be 0")
        layers = DM.image_layer_bytes(qm)
        tolerance = self.layer_tolerance or (1.0,) * len(layers)
        if len(tolerance) != len(layers):
            raise InputError(f"layer_tolerance has {len(tolerance)} values for the image's "
                             f"{len(layers)} quantized tensors")
        return DM.place(n_bytes, geometry, "error-aware", layer_bytes=layers,
                        partition_ber=DM.partition_bers(chip, voltage, self.partition),
                        layer_tolerance=list(tolerance), partition=self.partition)

    def read(self, qm: ImageModel, source: FaultSource, voltage: float | None = None,
             offset: int = 0,
             out: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """(qm's data image read back through `source` under this layout, what the layout did).

        source: a Chip at `voltage` (placed at memory word `offset`, or by the DRAM mapping),
        RandomBitErrors (fresh errors over the stored bits) or Faults (addresses into the stored
        image). The second value is {} for the plain layout; with ECC the decoder's counts
        ("ecc"), with a bit placement its table ("bit_placement"). Into `out` when given; the
        clean image is never modified.
        """
        self.check_source(source, voltage)
        if self.bit_placement != "linear":
            assert isinstance(source, Chip) and voltage is not None     # check_source made sure
            plan = self.plan_bits(qm, source, voltage, offset)
            image = BP.apply_placed_bits(qm.image, source, voltage, plan, out)
            return image, {"bit_placement": bit_stats(plan)}
        if self.ecc is None:
            return self._mapped(qm, qm.image, source, voltage, offset, out), {}
        memory = qm.ecc_memory(self.ecc)
        stored = self._mapped(qm, memory.stored, source, voltage, offset, None)
        image, stats = memory.decode(stored, self.ecc_policy, out)
        return image, {"ecc": stats.as_dict()}

    def _mapped(self, qm: ImageModel, stored: np.ndarray, source: FaultSource,
                voltage: float | None, offset: int, out: np.ndarray | None) -> np.ndarray:
        """`stored` read back through `source` under the mapping (no protection)."""
        if not self.dram:
            return apply_faults(stored, source, voltage, offset, out)
        from sramsim.inject import dram_mapping as DM
        assert isinstance(source, Chip) and voltage is not None         # check_source made sure
        return DM.apply_placed(stored, source, voltage,
                               self.dram_mapping(qm, source, voltage, offset), out)



def bit_stats(plan: BP.BitPlacement) -> dict:
    """A planned bit placement's table size as a JSON record (per fault map)."""
    return {k: v for k, v in plan.overhead().items() if k not in ("policy", "planning_voltage")}


# How the checks name each field: in Python by its meaning; the CLI passes its flags instead.
NAMES = {"mapping": "mapping", "bit_placement": "bit placement", "ecc": "ecc",
         "ecc_policy": "ecc policy", "partition": "partition",
         "layer_tolerance": "layer_tolerance", "planning_voltage": "planning_voltage"}


def check_fields(fields: dict, names: dict | None = None) -> None:
    """The one check of a layout's fields and how they combine (see the module docstring):
    InputError naming the fields by `names` (default `NAMES`; the CLI passes its flags)."""
    n = {**NAMES, **(names or {})}
    get = lambda key: fields.get(key, getattr(MemoryLayout, key))  # noqa: E731 (defaults)
    mapping, bits, ecc, policy = get("mapping"), get("bit_placement"), get("ecc"), get("ecc_policy")
    check_choice(mapping, MAPPINGS, n["mapping"])
    check_choice(bits, BP.POLICIES, n["bit_placement"])
    if ecc is not None:
        ECC.get_code(ecc, n["ecc"])
    check_choice(policy, ECC.POLICIES, n["ecc_policy"])
    check_choice(get("partition"), PARTITIONS, n["partition"])
    if ecc is None and policy != "keep":
        raise InputError(f"{n['ecc_policy']} needs {n['ecc']} (got {policy!r} without a code)")
    if bits != "linear" and ecc is not None:
        raise InputError(f"{n['bit_placement']} {bits} with {n['ecc']} is not modelled (use "
                         "one of the two)")
    if bits != "linear" and mapping != "linear":
        raise InputError(f"{n['bit_placement']} {bits} with the DRAM {n['mapping']} {mapping} "
                         "is not modelled (use one of the two)")
    if ecc is not None and mapping == "error-aware":
        raise InputError(f"{n['ecc']} with the error-aware DRAM {n['mapping']} is not modelled "
                         "(its layer partitions are defined on the data image; use naive or "
                         "drmap)")
    if get("planning_voltage") is not None:
        if bits == "linear":
            raise InputError(f"{n['planning_voltage']} applies to a {n['bit_placement']} only")
        check_number(get("planning_voltage"), n["planning_voltage"], positive=True)
    tolerance = get("layer_tolerance")
    if tolerance is not None:
        if mapping != "error-aware":
            raise InputError(f"{n['layer_tolerance']} applies to the error-aware mapping only")
        for i, t in enumerate(tolerance):
            check_number(t, f"{n['layer_tolerance']}[{i}]", 0.0, 1.0, positive=True)


PLAIN = MemoryLayout()
