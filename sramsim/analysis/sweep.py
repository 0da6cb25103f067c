"""Voltage-vs-accuracy sweeps: a grid of voltages x chips x offsets, resumable, aggregated.

Each point quantizes nothing anew (the model is quantized once per worker), reads the weights
back through one chip at one voltage and placement, and evaluates the test set in batches.
Per voltage the summary gives accuracy mean / std / 95% t-interval over chips (each chip's
offsets averaged first: placements on one chip share its faults, so they are not independent
draws), the chips' bit error rate, the energy per weight read and the saving
(`sramsim.analysis.energy`).

Python entry point: `run_sweep(...)`; command line: `sramsim sweep`.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sramsim.analysis import energy as E
from sramsim.analysis.executors import Execution, SweepWorker, Task, Workload
from sramsim.analysis.operating_point import first_failure
from sramsim.analysis.store import ResultStore
from sramsim.errors import InputError, check_number
from sramsim.inject.layout import MemoryLayout
from sramsim.inject.torch_quantized import (
    check_runs,
    is_exported_file,
    load_exported,
    refuse_options,
)
from sramsim.memory.chip import Chip
from sramsim.memory.curves import BUILTINS, BerCurve
from sramsim.memory.geometry import Geometry, parse_kinds
from sramsim.stats import ci95_halfwidth, mean_std

if TYPE_CHECKING:
    from sramsim.nn.data import Dataset
    from sramsim.progress import Progress

MAX_VOLTAGES = 10_000
# points (voltages x chips x offsets) one sweep may hold: each is a test-set evaluation and a
# line of points.jsonl; a million is weeks of work even at a fraction of a second per point
MAX_POINTS = 1_000_000
DEFAULT_ROWS, DEFAULT_COLS = 1024, 2048     # 256 KB weight SRAM, as in NeuralFuse's setup


# ------------------------------------------------------------------------------ voltages

def parse_voltages(text: str, what: str = "voltages") -> list[float]:
    """"1.0:0.75:-0.025" (start:stop:step, stop included) or "1.0,0.9,0.8" -> descending list;
    bad text is an InputError naming `what` (the CLI passes its flag)."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not all(map(math.isfinite, parts)) or step == 0 or (stop - start) * step < 0:
                raise InputError(f"{what} {text}: start:stop:step needs a non-zero step that "
                                 "goes from start towards stop")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            if count > MAX_VOLTAGES:
                raise InputError(f"{what} {text}: {count} voltages (at most {MAX_VOLTAGES})")
            values = [start + i * step for i in range(count)]
        else:
            items = text.split(",")
            if len(items) > 1 and not all(p.strip() for p in items):
                raise InputError(f"{what} {text!r}: an empty entry in the comma list")
            values = [float(p) for p in items if p.strip()]
    except InputError:
        raise
    except ValueError:
        raise InputError(f"{what} {text!r}: use start:stop:step (e.g. 1.0:0.75:-0.025) or a "
                         "comma list of numbers") from None
    if not values:
        raise InputError(f"{what}: no voltages given")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise InputError(f"{what}: {bad[0]!r} is not a positive finite voltage")
    return sorted({round(v, 6) for v in values}, reverse=True)


# ------------------------------------------------------------------------------ chips

@dataclass(frozen=True)
class ChipSpec:
    """How to obtain one chip anywhere: a profile file, or a random chip's recipe (seeded)."""

    name: str
    path: str | None = None
    sha256: str | None = None
    curve: str | None = None
    rows: int = 0
    cols: int = 0
    banks: int = 1
    seed: int = 0
    v_floor: float = 0.0
    kinds: tuple = (("flip", 1.0),)

    def build(self) -> Chip:
        """The chip itself: the profile loaded, or the random chip drawn from its seed."""
        if self.path is not None:
            return Chip.load(self.path)
        assert self.curve is not None                   # a random chip's recipe names its curve
        return Chip.random(Geometry(self.rows, self.cols, self.banks), BerCurve.builtin(self.curve),
                           self.v_floor, self.seed, dict(self.kinds), name=self.name)

    def identity(self) -> dict:
        """What makes two specs the same chip (a profile's content, not its path)."""
        d = asdict(self)
        if self.path is not None:
            return {"name": self.name, "sha256": self.sha256}
        d.pop("path"), d.pop("sha256")
        d["kinds"] = [list(k) for k in self.kinds]
        return d


def random_chips(n: int, curve: str = "finfet14", rows: int = DEFAULT_ROWS,
                 cols: int = DEFAULT_COLS, banks: int = 1, seed: int = 0,
                 v_floor: float | None = None, kinds: dict | None = None) -> list[ChipSpec]:
    """`n` random chips with seeds seed, seed+1, ...; v_floor defaults to the curve's lowest
    voltage."""
    if int(n) != n or n < 1:
        raise InputError(f"number of chips must be a positive integer, got {n!r}")
    check_points(1, int(n), 1)                  # before a list of n chips is built
    if curve not in BUILTINS:
        raise InputError(f"curve {curve!r}: unknown; built-ins: {', '.join(sorted(BUILTINS))}")
    try:
        geometry = Geometry(rows, cols, banks)
        codes, _ = parse_kinds(kinds)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    c = BerCurve.builtin(curve)
    floor = c.v_min if v_floor is None else float(v_floor)
    if floor < c.v_min:
        raise InputError(f"v_floor {floor:g} is below curve {curve!r}'s lowest voltage {c.v_min:g}")
    Chip.check_random_fits(geometry, c, floor)          # before any work: refused in one line
    kinds_t = tuple(sorted((kinds or {"flip": 1.0}).items()))
    return [ChipSpec(f"{curve}-{geometry.rows}x{geometry.cols}x{geometry.banks}-s{seed + i}",
                     curve=curve, rows=geometry.rows, cols=geometry.cols, banks=geometry.banks,
                     seed=int(seed) + i, v_floor=floor, kinds=kinds_t) for i in range(int(n))]


def profile_chips(paths: Sequence[str | os.PathLike]) -> list[ChipSpec]:
    """One ChipSpec per profile file, named by the profile and fingerprinted by its content."""
    if not paths:
        raise InputError("no profile files given")
    return [ChipSpec(Chip.load(p).name, path=os.path.abspath(p), sha256=_file_sha256(p))
            for p in paths]


def _file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chip_facts(spec: ChipSpec) -> dict:
    """Floor, unit and nominal voltage of a chip, without building random chips."""
    if spec.path is not None:
        chip = Chip.load(spec.path)
        return {"name": spec.name, "v_floor": chip.v_floor, "unit": chip.voltage_unit,
                "nominal": chip.nominal_voltage, "source": chip.source}
    return {"name": spec.name, "v_floor": spec.v_floor, "unit": "normalized", "nominal": 1.0,
            "source": "synthetic"}


# ------------------------------------------------------------------------------ fingerprints

def tensor_sha256(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes: what a resumed sweep must find unchanged."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (keys sorted): the model a sweep's points belong to."""
    state = model.state_dict()
    return tensor_sha256(state[k] for k in sorted(state))


# ------------------------------------------------------------------------------ the sweep

@dataclass(frozen=True)
class SweepSettings:
    """What a sweep computes besides model, data, chips and voltages (all of it but
    `leakage_share` is part of the sweep's identity in its output folder).

    offsets: placements of the model per chip (evenly spaced memory words). limit: the first N
    test samples. bits / scheme / clip: override the checkpoint's quantization (None: the
    checkpoint's; 8-bit symmetric unclipped for an nn.Module). leakage_share: leakage share of a
    read's energy at nominal voltage. layout: how the weights are stored
    (`sramsim.inject.layout.MemoryLayout`: a bit placement is planned per point from its chip's
    map at the point's voltage and offset; with ECC the chips hold the stored image, data and
    check bits, and energy per read counts the code's extra reads and its decoder).
    """

    offsets: int = 1
    limit: int | None = None
    bits: int | None = None
    scheme: str | None = None
    clip: float | None = None
    batch_size: int = 1000
    leakage_share: float = 0.0
    layout: MemoryLayout = field(default_factory=MemoryLayout)

    def __post_init__(self) -> None:
        for name, low in (("offsets", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or int(self.limit) != self.limit
                                       or self.limit < 1):
            raise InputError(f"limit must be a positive integer, got {self.limit!r}")
        check_number(self.leakage_share, "leakage share", 0.0, 1.0)
        if not isinstance(self.layout, MemoryLayout):
            raise InputError(f"layout must be a MemoryLayout, got {type(self.layout).__name__}")


def run_sweep(model: str | os.PathLike | nn.Module, dataset: str | os.PathLike | Dataset,
              chips: Sequence[ChipSpec] | Sequence[str], voltages: Iterable[float] | str,
              out_dir: str | os.PathLike,
              settings: SweepSettings | None = None,
              execution: Execution | None = None) -> dict:
    """Run (or resume) a sweep and write DIR/points.jsonl, summary.json/.csv/.png.

    model: a checkpoint path (quantization settings from its meta unless `settings` overrides
    them) or an nn.Module, or a `.pt2` file holding a PT2E-quantized program (`load_exported`):
    its int8 weights are the image as they are (`TorchQuantizedModel`) and it runs on its own
    int8 kernels; settings that would requantize or re-encode it are refused, and it has no
    float accuracy (None). dataset: a `load_dataset` spec or a `Dataset`. chips: `ChipSpec`s
    (`random_chips`, `profile_chips`) or profile paths. voltages: a list or a `parse_voltages`
    string. settings: what to compute (`SweepSettings`); execution: where
    (`sramsim.analysis.executors.Execution`: a point's result does not depend on the executor or
    worker count at a fixed `threads`). Returns the summary dict.
    """
    t_start = time.perf_counter()
    settings = settings or SweepSettings()
    execution = execution or Execution()
    voltages, chips = _check_grid(voltages, chips)
    layout = settings.layout
    if is_exported_file(model):
        refuse_options(model, {f"bits {settings.bits}": settings.bits not in (None, 8),
                               f"scheme {settings.scheme}": settings.scheme is not None,
                               f"clip {settings.clip}": settings.clip is not None,
                               f"ecc {layout.ecc}": layout.ecc is not None})
    facts = [_chip_facts(c) for c in chips]
    _check_voltages(voltages, facts)
    check_points(len(voltages), len(chips), settings.offsets)
    nominal, unit = facts[0]["nominal"], facts[0]["unit"]

    workload, model_obj, arch, ds = load_workload(model, dataset, chips, settings)
    if layout.bit_placement == "skip-faulty-words":
        _check_skip_capacity(workload, model_obj, chips, min(voltages))
    config = _config(workload, model_obj, arch, ds, chips, settings)
    store = ResultStore(out_dir, config)
    tasks = _pending_tasks(store, voltages, len(chips), settings.offsets)
    _run_tasks(workload, tasks, store, execution)

    summary = summarize(store.records, voltages, len(chips), settings.offsets, nominal,
                        settings.leakage_share, layout.ecc)
    n_points = len(voltages) * len(chips) * settings.offsets
    computed = sum(t.size for t in tasks if t.chip_index >= 0)
    summary.update({
        "model": str(model) if isinstance(model, (str, os.PathLike)) else config["model"]["arch"],
        "data": str(dataset) if isinstance(dataset, (str, os.PathLike)) else ds.name,
        "n_samples": len(ds), "limit": settings.limit,
        "quantization": config["quantization"],
        "chips": [f["name"] for f in facts], "offsets": settings.offsets,
        "voltage_unit": unit, "nominal_voltage": nominal,
        "leakage_share": float(settings.leakage_share),
        "layout": layout.describe(),
        "ecc": None if layout.ecc is None else {
            **(layout.ecc_record() or {}), "read_overhead": layout.read_overhead,
            "decoder_energy": E.decoder_energy(layout.ecc)},
        "bit_placement": {"policy": layout.bit_placement, "planned_at": "each point's voltage",
                          "table_bits_per_word": layout.table_bits_per_word(workload.bits)},
        "computed_points": computed, "reused_points": n_points - computed,
        **execution.describe(),
        "elapsed_s": round(time.perf_counter() - t_start, 3),
        "out": str(store.dir),
    })
    summary["files"] = {"points": str(store.points_path),
                        "summary_json": str(store.dir / "summary.json"),
                        "summary_csv": str(store.dir / "summary.csv"),
                        "plot": _plot(summary, store.dir / "summary.png")}
    store.write_summary(summary)
    return summary


def _check_grid(voltages: Iterable[float] | str,
                chips: Sequence[ChipSpec] | Sequence[str]) -> tuple[list[float], list[ChipSpec]]:
    """Voltages as a descending list of distinct positive numbers, chips as ChipSpecs."""
    if isinstance(voltages, str):
        voltages = parse_voltages(voltages)
    try:
        grid = sorted({round(float(v), 6) for v in voltages}, reverse=True)
    except (TypeError, ValueError):
        raise InputError(f"voltages must be numbers, got {voltages!r}") from None
    if not grid or not all(math.isfinite(v) and v > 0 for v in grid):
        raise InputError("voltages must be positive finite numbers")
    specs = [c if isinstance(c, ChipSpec) else profile_chips([c])[0] for c in chips]
    if not specs:
        raise InputError("no chips to sweep")
    return grid, specs


def _config(workload: Workload, model_obj: nn.Module, arch: str, ds: Dataset,
            chips: list[ChipSpec], settings: SweepSettings) -> dict:
    """What the sweep's points belong to (its output folder refuses anything else)."""
    layout = settings.layout
    config = {
        "model": {"arch": arch, "sha256": model_sha256(model_obj)},
        "data": {"name": ds.name, "n": len(ds), "sha256": tensor_sha256([ds.x, ds.y])},
        "quantization": {"bits": workload.bits, "scheme": workload.scheme, "clip": workload.clip,
                         "include_bias": workload.include_bias},
        "chips": [c.identity() for c in chips],
        "offsets": settings.offsets,
    }
    # Only what differs from the plain layout: sweeps without it keep their old configuration.
    if layout.ecc is not None:
        config["ecc"] = layout.ecc_record()
    if layout.bit_placement != "linear":
        config["bit_placement"] = layout.bit_placement
    if layout.mapping != "linear":
        config["mapping"] = {k: v for k, v in layout.describe().items()
                             if k in ("mapping", "partition", "layer_tolerance")}
    return config


def _run_tasks(workload: Workload, tasks: list[Task], store: ResultStore,
               execution: Execution) -> None:
    """Evaluate the pending tasks, writing each task's points as it finishes."""
    bar = _progress_bar(sum(t.size for t in tasks), execution.progress)

    def on_result(records: list[dict]) -> None:
        store.append(records)
        bar.update(len(records))

    try:
        if tasks:
            with execution.open(functools.partial(SweepWorker, workload)) as ex:
                ex.run(tasks, on_result)
    finally:
        bar.close()
        store.close()


def check_points(voltages: int, chips: int, offsets: int) -> None:
    """Refuse, before any work, a grid that cannot finish: more than MAX_POINTS points."""
    points = (voltages * chips * offsets)
    if points > MAX_POINTS:
        raise InputError(f"a sweep of {points:,} points ({voltages:,} voltages x {chips:,} chips "
                         f"x {offsets:,} offsets) is more than the {MAX_POINTS:,} one sweep may "
                         f"hold (each point evaluates the whole test set)")


def _check_voltages(voltages: list[float], facts: list[dict]) -> None:
    """Refuse mixed voltage units, voltages above nominal and voltages below a chip's floor."""
    units = {(f["unit"], f["nominal"]) for f in facts}
    if len(units) > 1:
        raise InputError("chips use different voltage units or nominal voltages: "
                         + "; ".join(f"{f['name']}: {f['unit']}, nominal "
                                     f"{f['nominal']:g}" for f in facts))
    high, nominal = max(voltages), facts[0]["nominal"]
    if high > nominal * (1.0 + 1e-9):
        raise InputError(f"voltage {high:g} is above the chips' nominal voltage {nominal:g} "
                         "(sweeps lower the supply: faults and energy are modelled up to nominal)")
    low = min(voltages)
    for f in facts:
        if low < f["v_floor"] - 1e-9:
            what = "lowest measured voltage" if f["source"] == "measured" else "v_floor"
            raise InputError(f"voltage {low:g} is below chip {f['name']!r}'s "
                             f"{what} {f['v_floor']:g}")


def load_workload(model: str | os.PathLike | nn.Module, dataset: str | os.PathLike | Dataset,
                  chips: list[ChipSpec],
                  settings: SweepSettings) -> tuple[Workload, nn.Module, str, Dataset]:
    """Load (and check) model and data here, so bad input fails before any worker starts."""
    from sramsim.nn.data import Dataset, load_dataset
    meta: dict = {}
    limit = settings.limit
    model_path: str | None
    model_obj: nn.Module
    if is_exported_file(model):
        model_path, model_obj = str(model), load_exported(model)
    elif isinstance(model, (str, os.PathLike)):
        from sramsim.nn.models import load_checkpoint
        model_path = str(model)
        model_obj, meta = load_checkpoint(model_path)
    elif isinstance(model, nn.Module):
        model_path, model_obj = None, model
    else:
        raise InputError("model must be a checkpoint path or an nn.Module, "
                         f"got {type(model).__name__}")
    if isinstance(dataset, Dataset):
        spec, ds = None, dataset
        if limit is not None:
            ds = Dataset(ds.x[:limit], ds.y[:limit], ds.num_classes, ds.name)
    else:
        spec, ds = str(dataset), load_dataset(str(dataset), "test", limit)
    if is_exported_file(model):
        assert model_path is not None
        return _exported_workload(model_path, model_obj, chips, settings, spec, ds)
    bits = int(settings.bits if settings.bits is not None else meta.get("bits") or 8)
    scheme = settings.scheme if settings.scheme is not None else meta.get("scheme") or "symmetric"
    clip = settings.clip if settings.clip is not None else meta.get("clip")
    from sramsim.inject.quantization import check_scheme
    try:
        check_scheme(scheme, bits)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    in_ch = meta.get("in_channels")
    if in_ch is not None and int(in_ch) != ds.in_channels:
        raise InputError(f"model expects {in_ch}-channel inputs but {ds.name} has {ds.in_channels}")
    workload = Workload(list(chips), settings.offsets, bits, scheme,
                        None if clip is None else float(clip), model_path=model_path,
                        dataset_spec=spec, limit=limit, batch_size=settings.batch_size,
                        layout=settings.layout, model=model_obj, dataset=ds)
    return workload, model_obj, meta.get("arch") or type(model_obj).__name__, ds


def _check_skip_capacity(workload: Workload, model_obj: nn.Module, chips: list[ChipSpec],
                         v_low: float) -> None:
    """skip-faulty-words: refuse up front a chip whose fault-free words at the lowest voltage
    (the most faults) cannot hold the image (the InputError names both counts)."""
    from sramsim.inject.quantized_model import QuantizedModel
    qm = QuantizedModel(model_obj, workload.bits, workload.scheme, workload.clip,
                        include_bias=workload.include_bias)
    for spec in chips:
        workload.layout.plan_bits(qm, spec.build(), v_low)


def _exported_workload(path: str, gm: nn.Module, chips: list[ChipSpec], settings: SweepSettings,
                       spec: str | None,
                       ds: Dataset) -> tuple[Workload, nn.Module, str, Dataset]:
    """The workload of a PT2E program, checked here on the data's first (and last) batch: a
    program that does not fit the data fails in one line before any worker starts."""
    check_runs(gm, ds.x, ds.num_classes, settings.batch_size, path, ds.name)
    workload = Workload(list(chips), settings.offsets, 8, "pt2e", None, model_path=path,
                        dataset_spec=spec, limit=settings.limit,
                        batch_size=settings.batch_size, layout=settings.layout, model=gm,
                        dataset=ds, torch_quantized=True)
    return workload, gm, "pt2e", ds


def _pending_tasks(store: ResultStore, voltages: list[float], n_chips: int,
                   offsets: int) -> list[Task]:
    """What is left: the clean point first, then each chip's voltages from high to low."""
    tasks = [] if store.done(("clean",)) else [Task(-1)]
    for c in range(n_chips):
        for v in voltages:
            todo = tuple(k for k in range(offsets) if not store.done((round(v, 6), c, k)))
            if todo:
                tasks.append(Task(c, v, todo))
    return tasks


def _progress_bar(total: int, enabled: bool) -> Progress:
    from sramsim.progress import progress
    return progress(total=total, unit="pt", desc="sweep", enabled=enabled)


# ------------------------------------------------------------------------------ aggregation

def summarize(records: dict, voltages: Iterable[float], n_chips: int, offsets: int,
              nominal: float = 1.0,
              leakage_share: float = 0.0, ecc: str | None = None) -> dict:
    """Per-voltage statistics over chips (each chip's offsets averaged first), from stored records.

    With `ecc` the energy per read counts the code's extra reads and decoder, and each row gets
    the decoder's mean counts per point ("ecc": corrected / detected / miscorrected words)."""
    clean = records.get(("clean",))
    points = []
    for v in voltages:
        per_chip = [[records[(round(v, 6), c, k)] for k in range(offsets)
                     if (round(v, 6), c, k) in records] for c in range(n_chips)]
        points.append(_aggregate(v, [recs for recs in per_chip if recs], nominal, leakage_share,
                                 ecc))
    out: dict[str, Any] = {"points": points}
    if clean is not None:
        out.update({"clean_accuracy": clean["accuracy"], "clean_error": 1.0 - clean["accuracy"],
                    "clean_loss": clean["loss"], "float_accuracy": clean["float_accuracy"]})
        for p in points:
            p["accuracy_drop"] = (clean["accuracy"] - p["accuracy_mean"]
                                  if p["accuracy_mean"] is not None else None)
        out["drop_1pt"] = first_drop(out, 0.01)
    return out


def _aggregate(v: float, chips: list[list[dict]], nominal: float, leakage_share: float,
               ecc: str | None = None) -> dict:
    """One voltage's row. `chips`: per chip, its finished offsets' records.

    The chips are the independent draws; the placements of one chip share its faults, so each
    chip's offsets are averaged first and mean / std / 95% interval are taken over the chip means
    (n = chips). min / max are over single points.
    """
    e = E.ecc_energy_per_read(v, nominal, leakage_share, ecc)
    recs = [r for chip in chips for r in chip]
    p: dict[str, Any]
    p = {"voltage": v, "ber": None, "accuracy_mean": None, "accuracy_std": None, "ci95": None,
         "n": len(chips), "n_points": len(recs), "accuracy_min": None, "accuracy_max": None,
         "rerr_mean": None, "loss_mean": None, "energy_per_read": e, "saving": 1.0 - e}
    if not recs:
        return p
    acc = [float(np.mean([r["accuracy"] for r in chip])) for chip in chips]
    mean, std = mean_std(acc)
    p.update({
        "ber": float(np.mean([np.mean([r["ber"] for r in chip]) for chip in chips])),
        "accuracy_mean": mean,
        "accuracy_std": std,
        "ci95": ci95_halfwidth(acc),
        "accuracy_min": float(min(r["accuracy"] for r in recs)),
        "accuracy_max": float(max(r["accuracy"] for r in recs)),
        "rerr_mean": 1.0 - mean,
        "loss_mean": float(np.mean([np.mean([r["loss"] for r in chip]) for chip in chips])),
    })
    if ecc is not None and all("ecc" in r for r in recs):
        p["ecc"] = {k: float(np.mean([r["ecc"][k] for r in recs]))
                    for k in ("words", "faulty_words", "corrected", "detected", "miscorrected")}
    if all("bit_placement" in r for r in recs):
        p["bit_placement"] = {k: float(np.mean([r["bit_placement"][k] for r in recs]))
                              for k in recs[0]["bit_placement"]}
    return p


def first_drop(summary: dict, drop: float = 0.01) -> dict | None:
    """The highest voltage whose mean accuracy is more than `drop` below the model's own clean
    accuracy (`sramsim.analysis.operating_point.first_failure`)."""
    clean = summary.get("clean_accuracy")
    if clean is None:
        return None
    p = first_failure(summary["points"], clean, drop)
    return None if p is None else {k: p[k] for k in ("voltage", "accuracy_mean", "ber", "saving",
                                                      "energy_per_read")}


def _plot(summary: dict, path: str | os.PathLike) -> str | None:
    try:
        from sramsim.analysis.plots import plot_sweep
    except ImportError:
        return None
    plot_sweep(summary, path)
    return str(path)
