"""Figures (matplotlib, Agg, no pyplot state): each public function draws one kind of figure.

Profile figures: `fault_map_rgb` (where a chip's faults are, colored by kind) and
`save_profile_plot` (fault map per bank with its colour scale + BER-vs-voltage panel). Result
figures: `plot_sweep` (accuracy and saving vs voltage), `plot_tolerance` (accuracy vs BER of a
tolerance search), `plot_vulnerability` (accuracy drop per layer / bit position) and
`plot_training` (loss per epoch of a training run).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sramsim.memory.chip import Chip
from sramsim.memory.geometry import KIND_NAMES

# Fault kind -> RGB (flip, stuck0, stuck1), colour-blind-safe (Okabe-Ito).
KIND_COLORS = np.array([[0.835, 0.369, 0.0], [0.0, 0.447, 0.698], [0.0, 0.620, 0.451]])
MAX_BANKS_SHOWN = 8


def fault_map_rgb(chip: Chip, voltage: float, max_rows: int = 512, max_cols: int = 256,
                  banks: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB images [banks, R, C, 3] of the faults at `voltage` (the first `banks` banks, default
    all), and the block size in bits (`fault_map` also gives the colour scale's top)."""
    rgb, block, _ = fault_map(chip, voltage, max_rows, max_cols, banks)
    return rgb, block


def fault_map(chip: Chip, voltage: float, max_rows: int = 512, max_cols: int = 256,
              banks: int | None = None) -> tuple[np.ndarray, tuple[int, int], float]:
    """(RGB images [banks, R, C, 3], block size in bits, densest block's faulty share): the
    colour strength of a block is its faulty share divided by the densest block's.

    A bank larger than max_rows x max_cols is shown in blocks of (block_rows x block_cols) bits;
    a block's colour mixes the kind colours of its faults and its strength is its share of
    faulty bits relative to the densest block (white: no faults). At one bit per block this is
    the exact map. Work is O(#faults).
    """
    g = chip.geometry
    br, bc = -(-g.rows // max_rows), -(-g.cols // max_cols)
    nr, nc = -(-g.rows // br), -(-g.cols // bc)
    nb = g.banks if banks is None else min(banks, g.banks)
    faults = chip.faults(voltage)
    bank, row, col = (x.astype(np.int64) for x in g.split(faults.address))
    keep = bank < nb
    cell = (bank[keep] * nr + row[keep] // br) * nc + col[keep] // bc
    counts = np.bincount(cell * 3 + faults.kind[keep].astype(np.int64),
                         minlength=nb * nr * nc * 3).reshape(nb, nr, nc, 3)
    total = counts.sum(axis=-1, keepdims=True)
    share = counts / np.maximum(total, 1)
    color = share @ KIND_COLORS
    # Blocks at the image's edge can hold fewer bits than br*bc; density uses the real size.
    rows_in = np.minimum(br, g.rows - np.arange(nr) * br)
    cols_in = np.minimum(bc, g.cols - np.arange(nc) * bc)
    density = total[..., 0] / (rows_in[:, None] * cols_in[None, :])
    top = float(density.max()) if density.size else 0.0
    strength = (density / top if top > 0 else density)[..., None]
    return 1.0 - strength * (1.0 - color), (br, bc), top


def ber_vs_voltage(chip: Chip, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The chip's empirical BER on a voltage grid from v_floor up (measured voltages if any)."""
    if chip.measured_voltages is not None:
        v = np.sort(np.asarray(chip.measured_voltages, dtype=np.float64))
    else:
        top = max(float(chip.vfail[0]) if len(chip) else chip.v_floor, chip.v_floor)
        top = max(top, chip.nominal_voltage if chip.voltage_unit == "normalized" else top)
        v = np.linspace(chip.v_floor, top, points)
    return v, np.array([chip.ber(x) for x in v])


def save_profile_plot(chip: Chip, voltage: float, path: str | os.PathLike,
                      title: str | None = None) -> dict:
    """Write a PNG: the fault map at `voltage` (one panel per bank, up to 8) and BER vs voltage.

    Returns what was drawn (block size, banks shown, faults) for the caller's report.
    """
    voltage = chip.check_voltage(voltage)
    g = chip.geometry
    shown = min(g.banks, MAX_BANKS_SHOWN)
    images, (br, bc), top = fault_map(chip, voltage, banks=shown)
    fig = Figure(figsize=(5.5 + 1.8 * shown, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, shown + 3, width_ratios=[1.0] * shown + [0.12, 0.35, 3.0])
    faults = chip.faults(voltage)
    for b in range(shown):
        ax = fig.add_subplot(grid[0, b])
        ax.imshow(images[b], aspect="auto", interpolation="nearest",
                  extent=(0, g.cols, g.rows, 0))
        ax.set_title(f"bank {b}" if g.banks > 1 else "fault map", fontsize=9)
        ax.set_xlabel("column")
        if b == 0:
            ax.set_ylabel("row")
    kinds_here = sorted(set(np.unique(faults.kind).tolist()))
    _density_scale(fig, grid[0, shown], kinds_here, top, br * bc)
    handles = [Patch(color=KIND_COLORS[k], label=KIND_NAMES[k]) for k in kinds_here]
    if handles:
        fig.legend(handles=handles, loc="outside lower left", ncols=len(handles), fontsize=8)

    ax = fig.add_subplot(grid[0, -1])
    v, ber = ber_vs_voltage(chip)
    positive = ber > 0
    style = "o-" if chip.measured_voltages is not None else "-"
    ax.semilogy(v[positive], ber[positive], style, color="black", ms=4, label="this chip")
    if chip.curve is not None:
        lo = max(chip.v_floor, chip.curve.v_min)
        vc = np.linspace(lo, max(lo, float(v.max())), 200)
        bc_ = np.asarray(chip.curve.ber(vc), dtype=np.float64)
        ok = bc_ > 0
        ax.semilogy(vc[ok], bc_[ok], "--", color="tab:red", label=f"curve {chip.curve.name}")
    ax.axvline(voltage, color="tab:blue", lw=1, label=f"V = {voltage:g}")
    ax.set_xlabel(f"supply voltage ({'normalized' if chip.voltage_unit == 'normalized' else 'V'})")
    ax.set_ylabel("bit error rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{len(faults)} faulty bits at V = {voltage:g} (BER {chip.ber(voltage):.3g})",
                 fontsize=9)
    block = f"{br}x{bc}-bit blocks, strongest = densest" if br * bc > 1 else "1 pixel = 1 bit"
    more = f", banks 0-{shown - 1} of {g.banks}" if g.banks > shown else ""
    fig.suptitle(title or f"{chip.name}: {g.rows}x{g.cols}x{g.banks} bits ({block}{more})",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    return {"block": [br, bc], "banks_shown": shown, "faults": len(faults),
            "ber": chip.ber(voltage), "scale_max": top}


def _density_scale(fig: Figure, cell: Any, kinds: list[int], top: float,
                   block_bits: int) -> None:
    """The fault map's colour scale: white (no faulty bit) to full colour (the densest block's
    faulty share, `top`); one kind's colour when the map holds one kind, else black."""
    full = KIND_COLORS[kinds[0]] if len(kinds) == 1 else np.zeros(3)
    cmap = LinearSegmentedColormap.from_list("faults", [(1.0, 1.0, 1.0), tuple(full)])
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, top if top > 0 else 1.0), cmap),
                       cax=fig.add_subplot(cell))
    bar.set_label(f"faulty share of each {block_bits}-bit block" if block_bits > 1
                  else "faulty bit", fontsize=8)
    bar.ax.tick_params(labelsize=7)


# ---------------------------------------------------------------------------------------------
# Sweep figure (sramsim.analysis.sweep): accuracy vs voltage with its 95% CI band, energy saving
# on a second axis.

def plot_sweep(summary: dict, path: str | os.PathLike, title: str | None = None) -> str:
    """Write a PNG of a sweep summary: accuracy mean (95% CI band) and energy saving vs voltage."""
    return _save(sweep_figure(summary, title), path)


def sweep_figure(summary: dict, title: str | None = None) -> Figure:
    """The figure `plot_sweep` writes; the fault-free line is drawn above the accuracy curve."""
    pts = sorted((p for p in summary["points"] if p.get("accuracy_mean") is not None),
                 key=lambda p: p["voltage"])
    v = np.array([p["voltage"] for p in pts], dtype=np.float64)
    acc = np.array([p["accuracy_mean"] for p in pts], dtype=np.float64) * 100
    ci = np.array([p["ci95"] or 0.0 for p in pts], dtype=np.float64) * 100
    allv = np.array(sorted(p["voltage"] for p in summary["points"]), dtype=np.float64)
    saving = np.array([p["saving"] for p in sorted(summary["points"], key=lambda p: p["voltage"])],
                      dtype=np.float64) * 100
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(v, acc - ci, acc + ci, color="tab:blue", alpha=0.25, lw=0, label="95% CI",
                    zorder=1)
    ax.plot(v, acc, "o-", color="tab:blue", ms=4, label="accuracy (mean over chips)", zorder=2)
    clean = summary.get("clean_accuracy")
    if clean is not None:
        # drawn above the curve, black and dashed: at high voltage the curve lies on it
        ax.axhline(clean * 100, color="black", ls=(0, (5, 3)), lw=1.2, zorder=3,
                   label=f"fault-free {clean * 100:.1f}%")
    unit = "normalized" if summary.get("voltage_unit", "normalized") == "normalized" else "V"
    ax.set_xlabel(f"supply voltage ({unit})")
    ax.set_ylabel("accuracy (%)", color="tab:blue")
    ax.invert_xaxis()                    # left to right: lowering the voltage
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(allv, saving, "s--", color="tab:green", ms=3, label="energy saving")
    ax2.set_ylabel("weight-memory energy saving (%)", color="tab:green")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower left")
    n = max((p["n"] for p in pts), default=0)
    ax.set_title(title or f"{os.path.basename(str(summary.get('model', 'model')))} on "
                          f"{os.path.basename(str(summary.get('data', 'data')))}: "
                          f"{len(summary.get('chips', []))} chips x {summary.get('offsets', 1)} "
                          f"offsets (95% CI over n={n} chips)", fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------
# Result figures of the tolerance search, the vulnerability analysis and training runs.

def _save(fig: Figure, path: str | os.PathLike) -> str:
    from pathlib import Path
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return str(path)


def plot_tolerance(report: dict, path: str | os.PathLike) -> str:
    """Write a PNG of a tolerance search: mean accuracy (95% CI) at each BER tried, the margin
    below fault-free, and the tolerable BER found."""
    pts = sorted(report["points"], key=lambda p: p["ber"])
    ber = np.array([p["ber"] for p in pts], dtype=np.float64)
    acc = np.array([p["accuracy_mean"] for p in pts], dtype=np.float64) * 100
    ci = np.array([p["ci95"] or 0.0 for p in pts], dtype=np.float64) * 100
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ok = np.array([bool(p["passes"]) for p in pts])
    ax.errorbar(ber, acc, yerr=ci, fmt="-", color="tab:blue", lw=1, capsize=3, zorder=2)
    ax.plot(ber[ok], acc[ok], "o", color="tab:green", ms=5, label="within the margin", zorder=3)
    ax.plot(ber[~ok], acc[~ok], "x", color="tab:red", ms=6, label="below the margin", zorder=3)
    clean = report["clean_accuracy"] * 100
    ax.axhline(clean, color="black", ls=(0, (5, 3)), lw=1.2, label=f"fault-free {clean:.2f}%")
    ax.axhline(clean - report["margin"] * 100, color="gray", ls=":", lw=1.2,
               label=f"margin ({report['margin'] * 100:g} points)")
    if report.get("tolerable_ber") is not None:
        ax.axvline(report["tolerable_ber"], color="tab:green", lw=1,
                   label=f"tolerable BER {report['tolerable_ber']:.3g}"
                   + (f" ({report['voltage']:.3f} V)" if report.get("voltage") else ""))
    ax.set_xscale("log")
    ax.set_xlabel("bit error rate")
    ax.set_ylabel("accuracy (%), mean over maps with 95% CI")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{os.path.basename(str(report.get('model', 'model')))}: "
                 f"{report.get('maps', '?')} fault maps per BER", fontsize=9)
    return _save(fig, path)


def plot_vulnerability(report: dict, path: str | os.PathLike) -> str:
    """Write a PNG of a vulnerability report: accuracy drop (± std over maps) with the faults
    confined to each layer and to each bit position, largest first."""
    parts = [(t, rows) for t, rows in (("layer", report.get("layers") or []),
                                        ("bit position", report.get("bits") or [])) if rows]
    fig = Figure(figsize=(7.5, 1.2 + 0.3 * sum(len(r) for _, r in parts) + 0.6 * len(parts)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(parts), 1, squeeze=False,
                        height_ratios=[max(len(r), 1) for _, r in parts])[:, 0]
    for ax, (title, rows) in zip(axes, parts, strict=True):
        y = np.arange(len(rows))
        drop = np.array([r["drop_mean"] for r in rows]) * 100
        std = np.array([r["drop_std"] for r in rows]) * 100
        ax.barh(y, drop, xerr=std, color="tab:red", alpha=0.8, capsize=2)
        ax.set_yticks(y, [r["label"] for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(report["all"]["drop_mean"] * 100, color="black", ls=(0, (5, 3)), lw=1,
                   label=f"all faults: {report['all']['drop_mean'] * 100:.2f} points")
        ax.set_xlabel("accuracy drop (points), faults only in that " + title)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{report.get('dataset', '')}, {report.get('models', '?')} fault maps: "
                 f"clean {report['clean_accuracy'] * 100:.2f}%", fontsize=9)
    return _save(fig, path)


def plot_training(history: list[dict], path: str | os.PathLike, title: str = "training",
                  keys: tuple[str, ...] = ("loss", "ce_clean", "ce_perturbed"),
                  score: str | None = "val_score") -> str:
    """Write a PNG of a training run's per-epoch history: the `keys` curves (losses) and, on a
    second axis, the validation `score` where the records carry it."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key in keys:
        if history and all(key in h for h in history):
            ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over the epoch)")
    ax.grid(True, alpha=0.3)
    handles = ax.get_legend_handles_labels()
    if score and any(score in h for h in history):
        ax2 = ax.twinx()
        pts = [(h["epoch"], h[score]) for h in history if score in h]
        ax2.plot(*zip(*pts, strict=True), "s--", color="tab:green", ms=3,
                 label="validation accuracy")
        ax2.set_ylabel("validation accuracy", color="tab:green")
        more = ax2.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    if handles[0]:
        ax.legend(*handles, fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
