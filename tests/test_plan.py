"""The planner: its search on hand curves, a whole plan on a tiny model (never worse than the best
single voltage, chosen on validation maps only, resumable, the same through the evaluate-only
path), and `sramsim plan` on the command line."""
import json

import numpy as np
import pytest

from sramsim import QuantizedModel
from sramsim.analysis import plan as P
from sramsim.analysis.operating_point import lowest_within
from sramsim.analysis.plan_search import Curve, candidates, greedy_order, monotone_losses
from sramsim.analysis.sweep import random_chips
from sramsim.commands.main import main
from sramsim.inject.domains import VoltageAssignment
from sramsim.nn.data import Dataset

from conftest import quadrant_world, write_quadrants

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ the search

def test_monotone_losses_never_fall_with_voltage():
    assert monotone_losses([0.9, 0.85, 0.8, 0.75], [0.91, 0.90, 0.905, 0.7], 0.90) == \
        pytest.approx([-0.01, 0.0, 0.0, 0.2])


def test_candidates_are_the_lagrangian_hull_cheapest_first():
    a = Curve("a", (1.0, 0.9, 0.8), (10.0, 8.0, 6.0), (0.0, 0.01, 0.05))
    b = Curve("b", (1.0, 0.9, 0.8), (100.0, 80.0, 60.0), (0.0, 0.0, 0.02))
    got = candidates([a, b])
    assert [c.energy for c in got] == sorted(c.energy for c in got)
    assert got[0].voltages == (0.8, 0.8) and got[-1].voltages == (1.0, 0.9)
    assert (0.9, 0.8) in [c.voltages for c in got]          # b's cheap step before a's
    # every candidate is optimal for its predicted loss among all 9 assignments
    import itertools
    for c in got:
        best = min(ea + eb for (ea, la), (eb, lb) in itertools.product(
            zip(a.energy, a.loss), zip(b.energy, b.loss)) if la + lb <= c.loss + 1e-12)
        assert c.energy == pytest.approx(best)


def test_greedy_order_best_ratio_first_and_frozen_domains_skipped():
    a = Curve("a", (0.9, 0.8), (10.0, 5.0), (0.0, 0.05))
    b = Curve("b", (0.9, 0.8), (10.0, 9.0), (0.0, 0.0))
    assert greedy_order([a, b], (0.9, 0.9), set()) == [(1, 0.8), (0, 0.8)]
    assert greedy_order([a, b], (0.9, 0.9), {1}) == [(0, 0.8)]
    assert greedy_order([a, b], (0.8, 0.8), set()) == []


# ------------------------------------------------------------------------------ a whole plan

def world():
    model, data = quadrant_world(600)
    qm = QuantizedModel(model)
    val = Dataset(data.x[:300], data.y[:300], 4, "quadrants (validation)")
    test = Dataset(data.x[300:], data.y[300:], 4, "quadrants (test)")
    return qm, val, test, data.x[:64]


def check_set() -> Dataset:
    _, data = quadrant_world(800)
    return Dataset(data.x[600:], data.y[600:], 4, "quadrants (check)")


def memories(domains="layer", acts=True) -> P.Memories:
    return P.Memories(tuple(random_chips(2, rows=32, cols=512, seed=0, v_floor=0.75)), domains,
                      tuple(random_chips(2, rows=4, cols=16, seed=100, v_floor=0.75))
                      if acts else ())


SETTINGS = P.PlanSettings(tuple(np.round(np.arange(1.0, 0.7499, -0.025), 6)), margin=0.02,
                          val_maps=3, test_maps=3, seed=0)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    qm, val, test, calib = world()
    return out, P.plan(qm, val, test, memories(), SETTINGS, calib, out_dir=out,
                       check=check_set())


def test_plan_is_never_worse_than_the_best_single_voltage(planned):
    out, r = planned
    assert r["saving_planned"] >= r["saving_single"]
    assert r["planned"]["energy"] <= r["single"]["energy"]
    ref = r["reference"]["validation"]["accuracy"]
    best = lowest_within(r["single_curve"], ref, SETTINGS.margin)
    assert best["voltage"] == r["search"]["scan_voltage"] <= r["single"]["voltage"]
    assert r["single"]["validation"]["confirmed"]          # on held-back images and maps
    assert r["images"]["check"]["name"] == "quadrants (check)"
    names = ("1.weight", "2.weight", "activations")
    assert tuple(r["planned"]["assignment"]) == names
    if r["planned"]["assignment"] != r["single"]["assignment"]:
        chosen = [c for c in r["candidates"] if c["assignment"] == r["planned"]["assignment"]]
        assert chosen and chosen[0]["passes"] and chosen[0]["confirmed"]
    table = r["planned"]["table"]
    assert [t["domain"] for t in table] == list(names)
    assert sum(t["energy_share"] for t in table) == pytest.approx(1.0)
    assert r["gain"] == pytest.approx(r["saving_planned"] - r["saving_single"])
    assert json.loads((out / "plan.json").read_text())["saving_planned"] == r["saving_planned"]


def test_a_rerun_resumes_everything(planned):
    out, r = planned
    qm, val, test, calib = world()
    again = P.plan(qm, val, test, memories(), SETTINGS, calib, out_dir=out, check=check_set())
    assert again["evaluations"] == 0
    assert {k: v for k, v in again.items() if k != "evaluations"} == \
        {k: v for k, v in r.items() if k != "evaluations"}


def test_validation_maps_are_never_test_maps():
    qm, val, test, calib = world()
    m = memories()
    wchips = [c.build() for c in m.weights]
    achips = [c.build() for c in m.activations]
    domains, acts, _ = P.prepare(qm, m, SETTINGS, calib, wchips, achips)
    job = P.PlanJob(qm, acts, {"validation": val, "test": test}, wchips, achips, domains,
                    m.layout, {"validation": 5, "test": 5}, 0, 0.75, 1000)
    w = P.PlanWorker(job)
    for which in (0, 1):                                 # weight chips, buffer chips
        v = {(d[which].chip.name, d[which].offset) for d in w.draws["validation"]}
        t = {(d[which].chip.name, d[which].offset) for d in w.draws["test"]}
        assert not v & t
        assert all(d[which].offset % 2 == 1 for d in w.draws["validation"])


def test_evaluating_the_planned_assignment_gives_the_reported_test_accuracy(planned, tmp_path):
    _, r = planned
    qm, val, test, calib = world()
    a = VoltageAssignment.of(r["planned"]["assignment"])
    got = P.plan(qm, val, test, memories(), SETTINGS, calib, out_dir=tmp_path, assignment=a,
                 check=check_set())
    assert got["planned"]["test"] == r["planned"]["test"]
    assert got["planned"]["saving"] == r["planned"]["saving"]


def test_weights_only_and_bank_domains_plan():
    qm, val, test, _ = world()
    m = P.Memories(tuple(random_chips(2, rows=16, cols=256, banks=4, seed=0, v_floor=0.75)),
                   "bank")
    r = P.plan(qm, val, test, m, SETTINGS)
    assert tuple(r["planned"]["assignment"]) == ("bank0", "bank1", "bank2", "bank3")
    assert r["saving_planned"] >= r["saving_single"]
    assert r["activations"] is None


# ------------------------------------------------------------------------------ the command

def test_help_ends_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and out.rstrip().endswith("--out plan-2pt")


@pytest.mark.parametrize("extra, message", [
    (["--margin", "0"], "--margin"),
    (["--voltages", "0.9:0.75:-0.05"], "nominal voltage of chip"),
    (["--act-chips", "2"], "need --activations"),
    (["--domains", "partition"], "partition domains need a DRAM chip"),
    (["--val-images", "1000"], "--val-images 1000"),
    (["--reference", "1.5"], "--reference"),
])
def test_bad_input_is_one_line_exit_2(cnn_checkpoint, tmp_path, capsys, extra, message):
    (tmp_path / "data").mkdir()
    data = write_quadrants(tmp_path / "data", 60, 20)
    path, _ = cnn_checkpoint
    rc = main(["plan", "--model", str(path), "--data", str(data), "--chips", "1", "--rows",
               "512", "--cols", "2048", "--out", str(tmp_path / "o"), "--val-images", "30",
               "--no-progress"] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_plans_and_evaluates_an_assignment(cnn_checkpoint, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data = write_quadrants(tmp_path / "data", 80, 24)
    path, _ = cnn_checkpoint
    common = ["--model", str(path), "--data", str(data), "--chips", "1", "--rows", "512",
              "--cols", "2048", "--val-images", "30", "--calib-images", "16",
              "--val-maps", "2", "--test-maps", "2", "--voltages", "1.0:0.8:-0.05",
              "--activations", "--act-rows", "128", "--act-cols", "512", "--no-progress"]
    assert main(["plan"] + common + ["--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "planned assignment" in out and "activations" in out and "single" in out
    report = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert (tmp_path / "p" / "plan.png").exists()
    assert report["saving_planned"] >= report["saving_single"]
    assert main(["plan"] + common + ["--assignment", str(tmp_path / "p" / "plan.json"),
                                     "--out", str(tmp_path / "q"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["planned"]["test"] == report["planned"]["test"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope": 0.9}))
    assert main(["plan"] + common + ["--assignment", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown domain(s) nope" in capsys.readouterr().err


def test_a_process_pool_gives_the_same_plan(planned, tmp_path):
    from sramsim.analysis.executors import Execution
    _, r = planned
    qm, val, test, calib = world()
    pooled = P.plan(qm, val, test, memories(), SETTINGS, calib, Execution(workers=2),
                    out_dir=tmp_path, check=check_set())
    assert {k: v for k, v in pooled.items() if k != "evaluations"} == \
        {k: v for k, v in r.items() if k != "evaluations"}
