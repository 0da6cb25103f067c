"""The equal-energy benchmark's operating-point rules (benchmarks/equal_energy.py), exact cases."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import equal_energy as ee  # noqa: E402


def points(accs, savings=None):
    volts = [0.9, 0.85, 0.8, 0.75]
    savings = savings or [1 - v * v for v in volts]
    return [{"voltage": v, "accuracy_mean": a, "saving": s}
            for v, a, s in zip(volts, accs, savings)]


def test_lowest_within_stops_at_the_first_failure_from_the_top():
    pts = points([0.90, 0.895, 0.85, 0.899])      # 0.75 passes again but 0.8 failed above it
    assert ee.lowest_within(pts, 0.90)["voltage"] == 0.85
    assert ee.lowest_within(pts, 0.95) is None
    assert ee.lowest_within(pts, 0.86)["voltage"] == 0.75
    assert ee.lowest_within(points([0.9, 0.89, 0.9, 0.9]), 0.90)["voltage"] == 0.75  # exactly 1 pt


def test_costs_and_both_references():
    r = ee.with_costs({"clean_accuracy": 0.88, "points": points([0.88, 0.875, 0.86, 0.5])}, 0.25)
    assert [p["net_saving"] for p in r["points"]] == [p["saving"] - 0.25 for p in r["points"]]
    op = ee.operating_points(r, unprotected_clean=0.89)
    assert op["within_own_clean"]["voltage"] == 0.85
    assert op["within_unprotected_clean"]["voltage"] == 0.9
    assert op["within_both"]["voltage"] == 0.9        # max(own, unprotected) is the bar
    assert ee.val_score(r, 0.89, 0.25)[0] == round(1 - 0.81 - 0.25, 6)
    assert ee.val_score(r, 0.99, 0.25)[0] == -0.25     # none qualifies: the cost at nominal
