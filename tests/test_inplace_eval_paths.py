"""`dram tolerance` / `sparkxd` maps and `fusion eval` run on the in-place path (faults written into
a copy of the model, O(faults)); their accuracies and losses equal the old functional path's
(every weight dequantized from the faulty image) map for map, for CNN and spiking models, random
and DRAM sources, each placement policy, ECC and bit placement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sramsim import BerCurve, Chip, Geometry, QuantizedModel
from sramsim.analysis import tolerance as T
from sramsim.analysis.sweep import SweepSettings, load_workload
from sramsim.inject import inplace
from sramsim.inject.layout import MemoryLayout
from sramsim.memory.dram_curves import dram_curve
from sramsim.memory.chip import Faults
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import evaluate
from sramsim.nn.models import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"rows": 1024}          # the default part with 2 subarrays per bank: 32 MB, cheap maps


def data16(n: int = 60, classes: int = 4, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g)
    return Dataset(x, torch.randint(0, classes, (n,), generator=g), classes, "rand16")


def model(arch: str) -> torch.nn.Module:
    torch.manual_seed(1)
    return build(arch, 1, 4, image_size=(16, 16)).eval()


def old_path(worker: T.ToleranceWorker, ber: float, k: int) -> dict:
    """The functional path the search used before: dequantize the whole faulty image."""
    v = float(worker.curve.voltage(ber))
    image = worker.faulty_image(ber, v, k).copy()
    r = evaluate(worker.model, worker.dataset, worker.qm.dequantize(image),
                 worker.workload.batch_size)
    return {**r, "wrong_bits": int(np.bitwise_count(image ^ worker.qm.image).sum())}


@pytest.mark.parametrize("arch,spec", [
    ("cnn", T.FaultSpec("random", seed=5)),
    ("snn-fc16", T.FaultSpec("random", seed=2)),
    ("diehl-cook8", T.FaultSpec("random", seed=6)),
    ("cnn", T.FaultSpec("dram", seed=3, error_model=1, mapping="drmap", geometry=SMALL)),
    ("snn-fc16", T.FaultSpec("dram", seed=1, error_model=3, mapping="naive", geometry=SMALL)),
    ("cnn", T.FaultSpec("dram", seed=4, error_model=0, mapping="error-aware", geometry=SMALL)),
])
def test_tolerance_maps_in_place_equal_the_functional_path(arch, spec):
    net, data = model(arch), data16()
    workload = load_workload(net, data, [], SweepSettings(limit=None, batch_size=32))[0]
    w = T.ToleranceWorker(workload, spec)
    hit = 0
    for ber in (1e-3, 3e-2):
        for k in range(2):
            new, old = w.run(ber, k), old_path(w, ber, k)
            assert (new["accuracy"], new["loss"], new["wrong_bits"]) == \
                (old["accuracy"], old["loss"], old["wrong_bits"])
            hit += old["wrong_bits"] > 0
    assert hit == 4                                  # every map changed the image
    # the copy it faults is restored: the clean evaluation is unchanged
    assert w.clean()["loss"] == evaluate(w.model, data, w.qm.clean_weights(), 32)["loss"]


def test_changed_bits_counts_flips_and_stuck_bits_that_differ():
    image = np.array([0b1010_0101, 0xFF, 0x00], dtype=np.uint8)
    faults = Faults(np.array([0, 1, 2, 8, 9, 16, 17, 23], dtype=np.uint64),
                    np.array([0, 1, 2, 1, 2, 1, 2, 0], dtype=np.uint8))
    # byte 0: bit 0 (1) flip -> change, bit 1 (0) stuck0 -> none, bit 2 (1) stuck1 -> none;
    # byte 1: bit 0 (1) stuck0 -> change, bit 1 (1) stuck1 -> none;
    # byte 2: bit 0 (0) stuck0 -> none, bit 1 (0) stuck1 -> change, bit 7 flip -> change
    assert T.changed_bits(image, faults) == 4
    from sramsim.inject.mapping import apply_bit_faults
    out = apply_bit_faults(image, faults, np.empty_like(image), checked=True)
    assert int(np.bitwise_count(out ^ image).sum()) == 4


def test_unchanged_map_is_the_clean_evaluation():
    net, data = model("cnn"), data16()
    workload = load_workload(net, data, [], SweepSettings(limit=None, batch_size=32))[0]
    w = T.ToleranceWorker(workload, T.FaultSpec("random", seed=0))
    r = w.run(1e-9, 0)                                # no fault on ~20 k bits
    clean = w.clean()
    assert r["wrong_bits"] == 0 and (r["accuracy"], r["loss"]) == (clean["accuracy"],
                                                                    clean["loss"])


# --- fusion eval ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fusion_world():
    torch.manual_seed(0)
    base = build("cnn", 1, 4).eval()
    qm = QuantizedModel(base, 8)
    chips = [Chip.random(Geometry(256, 256), BerCurve.builtin("finfet14"), 0.78, s)
             for s in (1, 2)]
    g = torch.Generator().manual_seed(3)
    data = Dataset(torch.rand(48, 1, 16, 16, generator=g) * 2 - 1,
                   torch.randint(0, 4, (48,), generator=g), 4, "rand16")
    return qm, chips, data


@pytest.mark.parametrize("case", ["random", "chips", "ecc", "shuffle", "chips+generator"])
def test_fusion_eval_in_place_equals_the_functional_path(case, fusion_world, monkeypatch):
    from fusion import evaluation as FE
    from fusion.generators import build as build_generator
    qm, chips, data = fusion_world
    kw = {"n_models": 3, "batch_size": 16}
    if case == "random":
        faults = FE.FaultSpec(ber=0.01)
    else:
        faults = FE.FaultSpec(voltage=0.8, chips=chips)
    if case == "ecc":
        faults = FE.FaultSpec(ber=0.01)
        kw["layout"] = MemoryLayout(ecc="secded13", ecc_policy="keep")
    if case == "shuffle":
        kw["layout"] = MemoryLayout(bit_placement="shuffle")
    if case == "chips+generator":
        torch.manual_seed(4)
        kw["generator"] = build_generator("ConvS", 1, width=0.25)
    new = FE.evaluate(qm, data, faults, **kw)
    # the functional path: what evaluate did for every map before (and still does on a GPU)
    monkeypatch.setattr(inplace, "inplace_fits", lambda qm, m: False)
    old = FE.evaluate(qm, data, faults, **kw)
    assert new["pa"] == old["pa"] and new.get("pa_nf") == old.get("pa_nf")
    assert new == old
    if case != "shuffle":                              # (shuffle keeps this model's accuracy)
        assert new["pa"] != [new["ca"]] * 3            # the maps did change the model
