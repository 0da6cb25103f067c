"""The planner: its search on hand curves, a whole plan on a tiny model (never worse than the best
single voltage, chosen on validation maps only, resumable, the same through the evaluate-only
path), and `sramsim plan` on the command line."""
import json

import numpy as np
import pytest

from sramsim import QuantizedModel
from sramsim.analysis import plan as P
from sramsim.analysis.operating_point import lowest_within
from sramsim.analysis.plan_search import (Curve, candidates, greedy_order, map_loss,
                                          monotone_losses, running_max)
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


def test_map_loss_is_the_mean_drop_or_the_worst_map():
    base, moved = [0.90, 0.88, 0.86], [0.89, 0.80, 0.86]
    assert map_loss(base, moved, "mean") == pytest.approx(0.03)
    assert map_loss(base, moved, "every-map") == pytest.approx(0.08)
    assert running_max([0.9, 0.8, 0.7], [0.02, 0.01, 0.03]) == [0.02, 0.02, 0.03]


def test_every_map_rule_refuses_what_the_mean_lets_through():
    every = P.PlanSettings((1.0, 0.9), margin=0.01)
    mean = P.PlanSettings((1.0, 0.9), margin=0.01, accept="mean")
    accs = [0.90, 0.90, 0.85]                     # one bad chip among three
    assert P.accepted(accs, 0.885, mean) and not P.accepted(accs, 0.885, every)
    assert P.accepted([0.88, 0.876], 0.885, every)
    with pytest.raises(ValueError, match="accept must be one of"):
        P.PlanSettings((1.0, 0.9), accept="median")
    with pytest.raises(ValueError, match="check maps"):
        P.PlanSettings((1.0, 0.9), check_maps=0)
    assert P.PlanSettings((1.0, 0.9), val_maps=3).check_maps == 3


class FakeRunner:
    """Evaluates ("eval", purpose, volts, map) with `accuracy(purpose, volts, map)`."""

    def __init__(self, accuracy):
        self.accuracy, self.calls = accuracy, 0

    def run(self, tasks):
        self.calls += len(tasks)
        return {("eval", p, P._volts_key(v), k): {"accuracy": self.accuracy(p, v, k)}
                for _, p, v, k in tasks}


def test_a_confirmation_failure_is_repaired_and_judged_on_fresh_maps():
    # domain 1 below 0.9 V breaks chip 5 (a rare bad chip); the others cost 0.2 points a step
    def accuracy(purpose, volts, k):
        bad = 0.3 if k == 5 and volts[1] < 0.9 else 0.0
        return 0.9 - bad - sum(0.002 * round((0.9 - v) / 0.05) for v in volts)

    s = P.PlanSettings((1.0, 0.9, 0.85, 0.8), margin=0.01, val_maps=2, check_maps=4)
    runner = FakeRunner(accuracy)
    energy = sum                                  # a lower voltage costs less
    got, log = P._repair(runner, s, ["a", "b", "c"], (0.85, 0.8, 0.85), (0.9,) * 3,
                         lambda v: True, 0.9, range(2, 6), energy)
    assert got == (0.85, 0.9, 0.85)               # only the culprit went back up
    assert log[0]["failing_maps"] == [5] and log[0]["raised"] == ["b"]
    assert log[0]["confirmed"] and log[0]["next_confirmation_maps"] == [6, 10]
    # a bad chip at every voltage below nominal: nothing cheaper survives, the single voltage
    got, log = P._repair(FakeRunner(lambda p, v, k: 0.5 if k == 3 and min(v) < 0.9 else 0.9),
                         s, ["a", "b", "c"], (0.85, 0.8, 0.85), (0.9,) * 3, lambda v: True,
                         0.9, range(2, 6), energy)
    assert got == (0.9,) * 3 and log[-1]["confirmed"] is None
    with pytest.raises(ValueError, match="repairs"):
        P.PlanSettings((1.0, 0.9), repairs=-1)


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
    assert r["accept"] == r["search"]["accept"] == "every-map"
    scan = r["single_curve"]                     # down to the first voltage that fails
    assert all(p["passes"] for p in scan[:-1]) and (not scan[-1]["passes"] or len(scan) == 13)
    best = max((p for p in scan if p["passes"]), key=lambda p: -p["voltage"])
    assert best["voltage"] == r["search"]["scan_voltage"] <= r["single"]["voltage"]
    for p in scan:                               # passes = every map within the margin
        assert p["passes"] == all(a >= ref - SETTINGS.margin - 1e-9 for a in p["accuracy"])
    assert lowest_within(scan, ref, SETTINGS.margin)["voltage"] <= best["voltage"]
    assert r["single"]["validation"]["confirmed"]          # on held-back images and maps
    assert r["images"]["check"]["name"] == "quadrants (check)"
    names = ("1.weight", "2.weight", "activations")
    assert tuple(r["planned"]["assignment"]) == names
    if r["planned"]["assignment"] != r["single"]["assignment"]:
        chosen = [c for c in r["candidates"] if c["assignment"] == r["planned"]["assignment"]]
        assert chosen and chosen[0]["passes"]
        repaired = [e for e in r["search"]["repairs"] if e["confirmed"]]
        if repaired:                              # confirmed on a fresh block of maps
            assert repaired[-1]["energy"] == r["planned"]["energy"]
            assert repaired[-1]["next_confirmation_maps"][0] >= 2 * SETTINGS.val_maps
        else:
            assert chosen[0]["confirmed"]
            budget = r["reference"]["check"]["accuracy"] - SETTINGS.margin - 1e-9
            assert len(chosen[0]["check_accuracy"]) == SETTINGS.val_maps
            assert all(a >= budget for a in chosen[0]["check_accuracy"])
    within, n = r["planned"]["test_maps_within_budget"]
    assert n == SETTINGS.test_maps and 0 <= within <= n
    table = r["planned"]["table"]
    assert [t["domain"] for t in table] == list(names)
    assert sum(t["energy_share"] for t in table) == pytest.approx(1.0)
    assert r["gain"] == pytest.approx(r["saving_planned"] - r["saving_single"])
    assert json.loads((out / "plan.json").read_text())["saving_planned"] == r["saving_planned"]


def test_the_search_starts_from_the_confirmed_single_voltage(planned):
    """Each domain's sensitivity is measured from V*, the single voltage that also passed the
    confirmation maps, never from a lower scan voltage the confirmation refused."""
    out, r = planned
    recs = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    bases = {rec["key"][1] for rec in recs if rec["key"][0] == "sens"}
    assert bases == {r["single"]["voltage"]}
    assert r["single"]["validation"]["confirmed"]
    assert r["search"]["scan_voltage"] <= r["single"]["voltage"]


def test_a_rerun_resumes_everything(planned):
    out, r = planned
    qm, val, test, calib = world()
    again = P.plan(qm, val, test, memories(), SETTINGS, calib, out_dir=out, check=check_set())
    assert again["evaluations"] == 0
    assert {k: v for k, v in again.items() if k != "evaluations"} == \
        {k: v for k, v in r.items() if k != "evaluations"}


def test_more_maps_reuse_the_finished_ones(planned, tmp_path):
    import dataclasses
    import shutil
    out, r = planned
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    qm, val, test, calib = world()
    more = dataclasses.replace(SETTINGS, test_maps=4, check_maps=4)
    again = P.plan(qm, val, test, memories(), more, calib, out_dir=copy, check=check_set())
    assert again["search"]["check_maps"] == [3, 7] and again["maps"]["test"] == 4
    assert 0 < again["evaluations"] <= 2 + 4 * len(again["candidates"]) + 4 * 13
    for key in ("planned", "single"):
        if again[key]["assignment"] == r[key]["assignment"]:
            assert again[key]["test"]["accuracy"][:3] == r[key]["test"]["accuracy"]


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


def test_bit_domains_run_the_low_bits_lower():
    """Significance domains: a flipped low bit barely moves a weight, so the plan lowers the
    low bits past the best single voltage and keeps the sign bit at or above it."""
    qm, val, test, _ = world()
    m = P.Memories(tuple(random_chips(2, rows=32, cols=512, seed=0, v_floor=0.75)), "bit")
    r = P.plan(qm, val, test, m, SETTINGS)
    a = r["planned"]["assignment"]
    assert tuple(a) == tuple(f"bit{b}" for b in range(7, -1, -1))
    assert r["saving_planned"] > r["saving_single"]
    assert a["bit0"] < r["single"]["voltage"] <= a["bit7"]
    shares = {t["domain"]: t["energy_share"] for t in r["single"]["table"]}
    assert shares["bit0"] == pytest.approx(1 / 8)


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
    (["--check-maps", "0"], "--check-maps"),
    (["--repairs", "-1"], "--repairs"),
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


def test_an_unknown_pass_test_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--model", "m.pt", "--accept", "median"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--accept" in err and len(err.strip().splitlines()) == 1


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
