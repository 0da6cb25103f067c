"""DRAM organisation: channels x ranks x banks x rows x columns of `device_width`-bit column
accesses, and the one function pair between a chip bit address and a DRAM location.

Bit address layout (a DRAM chip is a `Chip` over this address space, so all fault machinery is
shared with SRAM):

    address = (((((channel * ranks + rank) * banks + bank) * rows + row) * columns + column)
               * device_width + bit)

with subarray = row // subarray_rows. Consecutive bits of one column access are consecutive
addresses, a DRAM row (the row buffer: columns x device_width bits) is a contiguous run, and a
bank is `rows` such runs. The SRAM-shaped view (`rows`, `cols` = bits per row, `split`) agrees with
`sramsim.Geometry`'s rule ((bank * rows) + row) * cols + col, with bank = the flat bank index.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from sramsim.errors import InputError
from sramsim.memory.geometry import Sizes

PARTS_DIR = Path(__file__).resolve().parent / "parts"
DEFAULT_PART = "MICRON_4Gb_LPDDR3-1600_32bit_A"
LOCATION_FIELDS = ("channel", "rank", "bank", "subarray", "row", "column", "bit")


@dataclass(frozen=True)
class DramGeometry(Sizes):
    """A DRAM part's organisation. Defaults: LPDDR3-1600 4 Gb x32 (DRAMPower memspec
    MICRON_4Gb_LPDDR3-1600_32bit_A: 1 rank, 8 banks, 16384 rows, 1024 columns, x32, BL8) with
    512-row subarrays (the subarray size EDEN and SALP assume; the memspec does not give one)."""

    channels: int = 1
    ranks: int = 1
    banks: int = 8
    rows: int = 16384
    columns: int = 1024
    device_width: int = 32
    subarray_rows: int = 512
    burst_length: int = 8
    word_bits: int = 8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                    or value <= 0:
                raise InputError(f"DRAM geometry {f.name} must be a positive integer, got "
                                 f"{value!r}")
            object.__setattr__(self, f.name, int(value))
        self.check_capacity("channels*ranks*banks*rows*columns*device_width")
        if self.rows % self.subarray_rows:
            raise InputError(f"rows ({self.rows}) must be a multiple of subarray_rows "
                             f"({self.subarray_rows})")
        if self.word_bits % 8 or (self.columns * self.device_width) % self.word_bits:
            raise InputError(f"word_bits must be a multiple of 8 that divides a row "
                             f"({self.columns * self.device_width} bits), got {self.word_bits}")

    technology = "dram"

    # --- sizes ------------------------------------------------------------------------------
    @property
    def total_banks(self) -> int:
        """Banks over all channels and ranks (the flat bank index runs over these)."""
        return self.channels * self.ranks * self.banks

    @property
    def cols(self) -> int:
        """Bits per row (the row buffer), the SRAM-shaped `cols`."""
        return self.columns * self.device_width

    @property
    def subarrays_per_bank(self) -> int:
        """Subarrays in one bank."""
        return self.rows // self.subarray_rows

    @property
    def capacity_bits(self) -> int:
        """Bits in the whole part."""
        return self.total_banks * self.rows * self.cols


    @property
    def row_bytes(self) -> int:
        """Bytes of one row buffer."""
        return self.cols // 8

    @property
    def burst_bits(self) -> int:
        """Bits moved by one read/write burst (device_width x burst_length)."""
        return self.device_width * self.burst_length

    def as_dict(self) -> dict:
        """The constructor arguments (what a profile stores in /geometry)."""
        return asdict(self)

    # --- addresses --------------------------------------------------------------------------
    def decompose(self, address: ArrayLike) -> dict[str, np.ndarray]:
        """Bit addresses -> {channel, rank, bank, subarray, row, column, bit} (uint64 arrays)."""
        a = np.asarray(address, dtype=np.uint64)
        if a.size and int(a.max()) >= self.capacity_bits:
            raise InputError(f"bit address {int(a.max())} is beyond the part's capacity "
                             f"{self.capacity_bits}")
        out: dict[str, np.ndarray] = {}
        for name, size in (("bit", self.device_width), ("column", self.columns),
                           ("row", self.rows), ("bank", self.banks), ("rank", self.ranks)):
            out[name] = a % np.uint64(size)
            a = a // np.uint64(size)
        out["channel"] = a
        out["subarray"] = out["row"] // np.uint64(self.subarray_rows)
        return {k: out[k] for k in LOCATION_FIELDS}

    def compose(self, channel: ArrayLike = 0, rank: ArrayLike = 0, bank: ArrayLike = 0,
                row: ArrayLike = 0, column: ArrayLike = 0, bit: ArrayLike = 0) -> np.ndarray:
        """DRAM locations -> bit addresses (inverse of `decompose`; `row` is the row in the
        bank)."""
        parts = {"channel": (channel, self.channels), "rank": (rank, self.ranks),
                 "bank": (bank, self.banks), "row": (row, self.rows),
                 "column": (column, self.columns), "bit": (bit, self.device_width)}
        arrays = {}
        for name, (value, size) in parts.items():
            v = np.asarray(value)
            if v.size and (np.any(v < 0) or np.any(v >= size)):
                raise InputError(f"{name} must lie in [0, {size}), got {v.min()}..{v.max()}")
            arrays[name] = v.astype(np.uint64)
        a = arrays["channel"]
        for name, size in (("rank", self.ranks), ("bank", self.banks), ("row", self.rows),
                           ("column", self.columns), ("bit", self.device_width)):
            a = a * np.uint64(size) + arrays[name]
        return np.asarray(a, dtype=np.uint64)

    def split(self, address: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bit addresses -> (flat bank, row, bit in row): the SRAM-shaped view of
        `Geometry.split`."""
        a = np.asarray(address, dtype=np.uint64)
        col = a % np.uint64(self.cols)
        rest = a // np.uint64(self.cols)
        return rest // np.uint64(self.rows), rest % np.uint64(self.rows), col

    def partition_index(self, address: ArrayLike, by: str = "bank") -> np.ndarray:
        """Flat partition index of each bit: by "bank" (over channels and ranks) or "subarray"."""
        _, row, _ = self.split(address)
        bank = np.asarray(address, dtype=np.uint64) // np.uint64(self.rows * self.cols)
        if by == "bank":
            return bank
        if by == "subarray":
            return bank * np.uint64(self.subarrays_per_bank) + row // np.uint64(self.subarray_rows)
        raise InputError(f"partition must be 'bank' or 'subarray', got {by!r}")

    def n_partitions(self, by: str = "bank") -> int:
        """Number of partitions of the part by "bank" or "subarray"."""
        if by == "bank":
            return self.total_banks
        if by == "subarray":
            return self.total_banks * self.subarrays_per_bank
        raise InputError(f"partition must be 'bank' or 'subarray', got {by!r}")

    @classmethod
    def from_part(cls, name: str = DEFAULT_PART, **overrides: int) -> DramGeometry:
        """The geometry of a bundled part (sramsim/memory/parts/NAME.json), with overrides."""
        spec = load_part(name)
        arch = spec["architecture"]
        kw = {k: arch[k] for k in ("channels", "ranks", "banks", "rows", "columns",
                                    "device_width", "subarray_rows", "burst_length")}
        kw.update(overrides)
        return cls(**kw)


def part_names() -> list[str]:
    """Names of the bundled DRAM parts."""
    return sorted(p.stem for p in PARTS_DIR.glob("*.json"))


def load_part(name: str) -> dict:
    """A bundled DRAM part (architecture, timings, currents, voltages), a JSON file of the same
    shape, or a DRAMPower memspec JSON file (`sramsim.memory.memspec`), given by path; an unknown
    name is an InputError listing the bundled ones."""
    path = Path(name)
    if path.suffix != ".json" or not path.exists():
        path = PARTS_DIR / f"{name}.json"
    if not path.exists():
        raise InputError(f"unknown DRAM part {name!r}; bundled parts: {', '.join(part_names())} "
                         f"(or a part / DRAMPower memspec .json file)")
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable DRAM part file ({exc})") from None
    from sramsim.memory.memspec import from_memspec, is_memspec
    if is_memspec(spec):
        spec = from_memspec(spec, str(path))
    if not isinstance(spec, dict):
        raise InputError(f"{path}: a DRAM part file must hold a JSON object")
    for key in ("architecture", "timing", "power"):
        if key not in spec:
            raise InputError(f"{path}: DRAM part file lacks the {key!r} section")
    return spec
