"""The figures issue 23 asked for: a colour scale on the fault map, the fault-free line visible
above the sweep curve, and plots for the tolerance search, vulnerability and training runs."""
from __future__ import annotations

import matplotlib.image as mpimg
import pytest

from sramsim import Chip
from sramsim.analysis import plots


def _png_ok(path) -> None:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01          # something was drawn


def test_fault_map_has_a_colour_scale(tmp_path):
    chip = Chip.load("shipped:finfet14-8192x128-s0")
    drawn = plots.save_profile_plot(chip, 0.8, tmp_path / "chip.png")
    _png_ok(tmp_path / "chip.png")
    _, _, top = plots.fault_map(chip, 0.8)
    assert drawn["scale_max"] == pytest.approx(top) and 0 < top <= 1


def test_sweep_fault_free_line_is_drawn_above_the_curve():
    points = [{"voltage": v, "accuracy_mean": a, "ci95": 0.0, "saving": s, "n": 3, "ber": b}
              for v, a, s, b in ((1.0, 0.86, 0.0, 0.0), (0.9, 0.86, 0.19, 2e-4),
                                 (0.8, 0.6, 0.36, 4e-2))]
    fig = plots.sweep_figure({"points": points, "clean_accuracy": 0.86, "chips": ["a"]})
    ax = fig.axes[0]
    curve = next(line for line in ax.get_lines() if line.get_label().startswith("accuracy"))
    clean = next(line for line in ax.get_lines() if line.get_label().startswith("fault-free"))
    assert clean.get_zorder() > curve.get_zorder()
    assert clean.get_color() != curve.get_color() and clean.get_linestyle() != "-"


def test_tolerance_vulnerability_and_training_plots(tmp_path):
    report = {"model": "cnn.pt", "maps": 3, "clean_accuracy": 0.86, "margin": 0.01,
              "tolerable_ber": 1e-3, "voltage": 0.93,
              "points": [{"ber": b, "accuracy_mean": a, "ci95": 0.004, "passes": a >= 0.85}
                         for b, a in ((1e-5, 0.86), (1e-4, 0.858), (1e-3, 0.852), (1e-2, 0.7))]}
    _png_ok(plots.plot_tolerance(report, tmp_path / "tol.png"))
    row = lambda label, d: {"label": label, "drop_mean": d, "drop_std": d / 4, "share": 0.5}  # noqa: E731
    vuln = {"dataset": "fashion-mnist", "models": 5, "clean_accuracy": 0.86,
            "all": {"drop_mean": 0.05}, "layers": [row("conv1.weight", 0.04), row("fc.weight", 0.01)],
            "bits": [row(f"bit {k}", 0.01 * k) for k in range(8)]}
    _png_ok(plots.plot_vulnerability(vuln, tmp_path / "sub" / "vuln.png"))
    history = [{"epoch": e, "loss": 2.0 / e, "ce_clean": 1.0 / e, "ce_perturbed": 1.5 / e,
                "val_score": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    _png_ok(plots.plot_training(history, tmp_path / "train.png"))
