"""Tolerable-BER search (sramsim.analysis.tolerance): the grid, the bisection on a known pass/fail
rule, the interval, resume from the store, the DRAM fault source through a placement, the energy
per policy, and the same result for 1 and 2 workers and threads."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sramsim.analysis import tolerance as T
from sramsim.errors import InputError
from sramsim.analysis.executors import Execution
from sramsim.inject import dram_mapping as P
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_curves import dram_curve
from sramsim.memory.dram_errors import dram_chip
from sramsim.nn.data import Dataset
from sramsim.stats import ci95_halfwidth, mean_std

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"rows": 1024}          # the default part with 2 subarrays per bank: 32 MB, cheap maps


def linear_world(n: int = 400, seed: int = 0):
    """A 16-input, 4-class linear model and data it classifies perfectly (labels = its argmax)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(4, 16, generator=g))
    x = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
    with torch.no_grad():
        y = model(x).argmax(1)
    return model.eval(), Dataset(x, y, 4, "linear")


def test_ber_grid_is_log_spaced_with_both_ends():
    assert T.ber_grid(1e-6, 1e-1) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    grid = T.ber_grid(1e-4, 1e-2, per_decade=2)
    assert grid == pytest.approx([1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2])
    for bad in ((0.0, 1e-2), (1e-2, 1e-3), (1e-3, 1.0)):
        with pytest.raises(InputError):
            T.ber_grid(*bad)


def fake_run(threshold: float, calls: list):
    """ToleranceWorker.run replacement: full accuracy up to `threshold`, 0 above (a known rule)."""
    def run(self, ber, k):
        calls.append((ber, k))
        v = float(self.curve.voltage(ber))
        acc = 1.0 if ber <= threshold else 0.0
        return {"voltage": round(v, 6), "chip_index": k, "offset_index": 0, "ber": ber, "map": k,
                "wrong_bits": 0, "image_ber": 0.0, "accuracy": acc, "loss": 0.0, "n_samples": 1}
    return run


def test_grid_then_bisection_finds_the_known_threshold(monkeypatch):
    model, data = linear_world(50)
    calls = []
    monkeypatch.setattr(T.ToleranceWorker, "run", fake_run(3e-4, calls))
    r = T.search(model, data, maps=2, bisect_steps=4)
    # grid: 1e-6 .. 1e-4 pass, 1e-3 fails (the scan stops there); bisection in log10 BER:
    # 10^-3.5 fails, 10^-3.75, 10^-3.625, 10^-3.5625 pass
    assert [p["ber"] for p in r["points"] if p["phase"] == "grid"] == \
        pytest.approx([1e-6, 1e-5, 1e-4, 1e-3])
    assert r["tolerable_ber"] == pytest.approx(10 ** -3.5625)
    assert r["first_failing_ber"] == pytest.approx(10 ** -3.5)
    assert r["voltage"] == pytest.approx(dram_curve().voltage(10 ** -3.5625), abs=1e-6)
    assert r["clean_accuracy"] == 1.0 and r["bound"] is None
    assert len(calls) == 2 * 8 and 0.1 not in [b for b, _ in calls]


def test_bounds_when_everything_passes_or_nothing_does(monkeypatch):
    model, data = linear_world(50)
    monkeypatch.setattr(T.ToleranceWorker, "run", fake_run(1.0, []))
    r = T.search(model, data, maps=1, low=1e-4, high=1e-2, geometry=SMALL)
    assert r["tolerable_ber"] == pytest.approx(1e-2) and "highest" in r["bound"]
    monkeypatch.setattr(T.ToleranceWorker, "run", fake_run(1e-9, []))
    r = T.search(model, data, maps=1, low=1e-4, high=1e-2)
    assert r["tolerable_ber"] is None and r["voltage"] is None and "lowest" in r["bound"]
    assert "skipped" in r["energy"]["error-aware"]
    assert "energy_J" not in r["energy"]["drmap"]


def test_real_search_interval_and_resume(tmp_path):
    model, data = linear_world(300)
    out = tmp_path / "tol"
    r = T.search(model, data, maps=3, low=1e-4, high=1e-1, bisect_steps=2, out_dir=out)
    assert r["clean_accuracy"] >= 0.99
    best = next(p for p in r["points"] if p["ber"] == r["tolerable_ber"])
    assert best["passes"] and best["accuracy_mean"] >= r["clean_accuracy"] - 0.01
    failing = next(p for p in r["points"] if p["ber"] == r["first_failing_ber"])
    assert not failing["passes"]
    # mean and interval over the maps are sramsim.stats' numbers from the stored records
    import json
    recs = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    accs = [x["accuracy"] for x in recs if not x.get("clean") and x["ber"] == best["ber"]]
    assert len(accs) == 3
    assert best["accuracy_mean"] == pytest.approx(mean_std(accs)[0])
    assert best["ci95"] == pytest.approx(ci95_halfwidth(accs))
    # a re-run computes nothing and finds the same; another margin reuses the maps
    again = T.search(model, data, maps=3, low=1e-4, high=1e-1, bisect_steps=2, out_dir=out)
    assert again["computed_maps"] == 0 and again["reused_maps"] == r["computed_maps"]
    assert again["tolerable_ber"] == r["tolerable_ber"] and again["points"] == r["points"]
    assert (out / "tolerance.json").exists()
    # another model in the same folder is refused, not mixed
    other, _ = linear_world(300, seed=1)
    with pytest.raises(InputError, match="different configuration"):
        T.search(other, data, maps=3, low=1e-4, high=1e-1, out_dir=out)


def test_random_maps_are_the_fixed_draws_rule():
    from sramsim.inject.draws import apply_numpy, fixed_draws
    from sramsim.analysis.sweep import SweepSettings, load_workload
    model, data = linear_world(20)
    workload = load_workload(model, data, [], SweepSettings(limit=None, batch_size=1000))[0]
    w = T.ToleranceWorker(workload, T.FaultSpec("random", seed=7))
    draws = list(fixed_draws(w.qm.n_bits, 3, ber=0.05, seed=7))
    expected = apply_numpy(w.qm.image, draws[2], np.empty_like(w.qm.image)).copy()
    assert np.array_equal(w.faulty_image(0.05, 0.0, 2), expected)


def test_dram_source_reads_the_placed_chip_faults():
    from sramsim.analysis.sweep import SweepSettings, load_workload
    model, data = linear_world(20)
    workload = load_workload(model, data, [], SweepSettings(limit=None, batch_size=1000))[0]
    spec = T.FaultSpec("dram", seed=3, error_model=1, mapping="drmap", geometry=SMALL)
    w = T.ToleranceWorker(workload, spec)
    ber = 0.02
    v = float(dram_curve().voltage(ber))
    rec = w.run(ber, 1)
    geometry = DramGeometry.from_part(**SMALL)
    chip = dram_chip(geometry, dram_curve(), v_floor=v, seed=4, error_model=1)
    placement = P.place(w.qm.image.size, geometry, "drmap")
    faults = P.placed_faults(chip, v, placement)
    assert rec["wrong_bits"] == len(faults) > 0          # flips: every fault changes its bit
    assert np.array_equal(w.faulty_image(ber, v, 1),
                          P.apply_placed(w.qm.image, chip, v, placement))


def test_energy_per_policy_and_saving():
    geometry = DramGeometry.from_part()
    from sramsim.analysis.dram_energy import DramEnergy
    energy = DramEnergy.from_part()
    v = 1.0
    rows = T.mapping_energies(40_000, [10_000, 30_000], geometry, energy, v, tolerable_ber=1e-5,
                              curve=dram_curve(), seed=0)
    assert set(rows) == set(P.POLICIES)
    for policy, row in rows.items():
        assert row["counts"]["bursts"] == math.ceil(40_000 / 32)
        assert row["energy_J"] < row["energy_nominal_J"]
        assert row["saving"] == pytest.approx(1 - row["energy_J"] / row["energy_nominal_J"])
        # only VDD2 is lowered: the saving is below the (V/Vnom)^2 bound of an all-VDD2 access
        assert 0 < row["saving"] < 1 - (v / 1.2) ** 2
    direct = P.inference_energy(P.place(40_000, geometry, "naive"), energy, v)["energy_j"]
    assert rows["naive"]["energy_J"] == pytest.approx(direct)


def test_bad_input_is_refused():
    model, data = linear_world(20)
    for margin in (0, 1, 1.5, -0.1, float("nan"), "x"):
        with pytest.raises(InputError, match="margin"):
            T.search(model, data, margin=margin)
    with pytest.raises(InputError, match="maps"):
        T.search(model, data, maps=0)
    with pytest.raises(InputError, match="source"):
        T.search(model, data, source="sram")
    with pytest.raises(InputError, match="mapping"):
        T.search(model, data, source="dram", mapping="diagonal")
    with pytest.raises(InputError, match="do not fit"):
        T.require_fits(10 ** 9, DramGeometry.from_part(), "p")


@pytest.mark.parametrize("workers,threads", [(2, 1), (1, 2)])
def test_same_result_for_workers_and_threads(workers, threads):
    model, data = linear_world(200)
    kw = {"maps": 2, "low": 1e-3, "high": 1e-1, "bisect_steps": 1}
    one = T.search(model, data, **kw)
    other = T.search(model, data, execution=Execution(workers=workers, threads=threads), **kw)
    assert other["points"] == one["points"] and other["tolerable_ber"] == one["tolerable_ber"]


def noisy_run(threshold: float, calls: list):
    """ToleranceWorker.run replacement: accuracy 0.99 + 0.02 * (-1)^k below `threshold` (map k;
    an interval that holds 0.99), 0.5 above."""
    def run(self, ber, k):
        calls.append((ber, k))
        v = float(self.curve.voltage(ber))
        acc = (0.99 + 0.02 * (-1) ** k) if ber <= threshold else 0.5
        return {"voltage": round(v, 6), "chip_index": k, "offset_index": 0, "ber": ber, "map": k,
                "wrong_bits": 0, "image_ber": 0.0, "accuracy": acc, "loss": 0.0, "n_samples": 1}
    return run


def test_sequential_maps_add_maps_only_where_the_interval_holds_the_threshold(monkeypatch):
    """With maps_max, a point whose 95% interval contains reference - margin gets more maps (up
    to the cap, then the mean decides); a point far from it stays at `maps`."""
    model, data = linear_world(50)
    calls = []
    monkeypatch.setattr(T.ToleranceWorker, "run", noisy_run(3e-4, calls))
    # reference 1.0 (clean), margin 0.01: threshold 0.99 = the noisy points' mean
    r = T.search(model, data, maps=2, maps_max=6, low=1e-4, high=1e-2, bisect_steps=0)
    near, far = (next(p for p in r["points"] if p["ber"] == pytest.approx(b))
                 for b in (1e-4, 1e-3))
    assert near["n"] == 6 and near["decided_by"] == "maps_max" and near["passes"]
    assert far["n"] == 2 and far["decided_by"] == "interval" and not far["passes"]
    assert sorted(k for b, k in calls if b == pytest.approx(1e-4)) == list(range(6))
    assert "sequential" in r["maps_rule"] and r["maps_max"] == 6
    assert r["next_grid_point"]["ber"] == pytest.approx(1e-3)
    fixed = T.search(model, data, maps=2, low=1e-4, high=1e-2, bisect_steps=0)
    assert all(p["decided_by"] == "fixed" and p["n"] == 2 for p in fixed["points"])
    with pytest.raises(InputError, match="maps_max"):
        T.search(model, data, maps=3, maps_max=2)
    with pytest.raises(InputError, match="maps must be >= 2"):
        T.search(model, data, maps=1, maps_max=4)


def test_given_reference_moves_the_pass_line(monkeypatch):
    """A given reference (a control's clean accuracy) is what the margin counts from."""
    from sramsim.analysis.operating_point import Reference
    model, data = linear_world(50)
    monkeypatch.setattr(T.ToleranceWorker, "run", noisy_run(3e-4, []))
    own = T.search(model, data, maps=2, low=1e-4, high=1e-2, bisect_steps=0)
    assert own["tolerable_ber"] == pytest.approx(1e-4)
    low = T.search(model, data, maps=2, low=1e-4, high=1e-2, bisect_steps=0,
                   reference=Reference.given(0.5, "control"))
    assert low["tolerable_ber"] == pytest.approx(1e-2) and low["reference"]["accuracy"] == 0.5
    high = T.search(model, data, maps=2, low=1e-4, high=1e-2, bisect_steps=0,
                    reference=Reference.given(1.0, "control"), margin=0.001)
    assert high["tolerable_ber"] is None and high["next_grid_point"]["ber"] == pytest.approx(1e-4)
