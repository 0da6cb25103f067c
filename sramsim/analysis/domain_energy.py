"""Memory energy of one inference under a voltage assignment: accesses per domain times the
energy of one access at the domain's voltage, summed over domains.

Unit: one byte access at nominal voltage (`sramsim.analysis.energy.energy_per_read`, dynamic
C*V^2 plus the optional leakage share). Accesses per inference:
- weights: every stored weight byte read once (`energy.weight_accesses`' count, 8-bit codes:
  one byte per weight), split over the weight domains by the bytes each holds
  (`WeightDomains.image_bytes`);
- activations: every stored activation byte written once and read once
  (`QuantizedActivations.accesses(writes, reads)`), at the activation buffer's voltage.
The weight memory and the activation buffer cost the same per byte access at nominal voltage
(both SRAM arrays); the saving is 1 - E(assignment) / E(every domain at nominal).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sramsim.analysis.energy import energy_per_read
from sramsim.errors import InputError
from sramsim.inject.domains import ACTIVATIONS, VoltageAssignment, WeightDomains

if TYPE_CHECKING:
    from sramsim.inject.activations import QuantizedActivations
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.memory.dram import DramGeometry
    from sramsim.memory.geometry import Geometry


@dataclass(frozen=True)
class DomainAccesses:
    """Byte accesses per inference of each voltage domain, in domain order."""

    names: tuple
    accesses: tuple
    nominal: float = 1.0
    leakage_share: float = 0.0

    def __post_init__(self) -> None:
        if len(self.names) != len(self.accesses) or not self.names:
            raise InputError("one access count per domain")
        if any(a < 0 for a in self.accesses) or sum(self.accesses) <= 0:
            raise InputError("domain accesses must be >= 0 and not all zero")

    @classmethod
    def of(cls, qm: QuantizedModel, domains: WeightDomains,
           geometry: Geometry | DramGeometry | None = None,
           activations: QuantizedActivations | None = None,
           activation_writes: int = 1, activation_reads: int = 1, nominal: float = 1.0,
           leakage_share: float = 0.0) -> DomainAccesses:
        """The weight domains' reads (one per stored byte) and, with `activations`
        (`QuantizedActivations`), the activation buffer's writes and reads."""
        names = list(domains.names)
        counts = [float(b) for b in domains.image_bytes(qm, geometry)]
        if activations is not None:
            names.append(ACTIVATIONS)
            counts.append(float(activations.accesses(activation_writes, activation_reads)))
        return cls(tuple(names), tuple(counts), float(nominal), float(leakage_share))

    def energies(self, assignment: VoltageAssignment) -> dict:
        """{domain: energy per inference} at the assignment's voltages."""
        a = assignment.check(self.names)
        return {n: c * energy_per_read(a[n], self.nominal, self.leakage_share)
                for n, c in zip(self.names, self.accesses, strict=True)}

    def energy(self, assignment: VoltageAssignment) -> float:
        """Energy per inference (byte accesses at nominal voltage = 1 each)."""
        return float(sum(self.energies(assignment).values()))

    @property
    def nominal_energy(self) -> float:
        """Energy per inference with every domain at nominal voltage."""
        return float(sum(self.accesses))

    def saving(self, assignment: VoltageAssignment) -> float:
        """Fraction of the nominal memory energy saved."""
        return 1.0 - self.energy(assignment) / self.nominal_energy

    def shares(self, assignment: VoltageAssignment) -> dict:
        """{domain: its share of the assignment's energy}."""
        e = self.energies(assignment)
        total = sum(e.values())
        return {n: v / total for n, v in e.items()}

    def describe(self) -> dict:
        """JSON: accesses per domain and the energy model's parameters."""
        return {"accesses": dict(zip(self.names, self.accesses, strict=True)),
                "nominal": self.nominal, "leakage_share": self.leakage_share,
                "unit": "one byte access at nominal voltage"}
