"""The SparkXD study end to end: baseline, its tolerance curve, fault-aware training (FAT), the
FAT model's curve, and the DRAM energy each tolerable voltage buys.

SparkXD (Putra, Hanif, Shafique, DAC 2021, arXiv 2103.00421) runs spiking networks with their
weights in reduced-voltage DRAM: FAT with approximate-DRAM bit errors, an error-tolerance analysis
(the largest BER keeping accuracy within 1 point of the error-free network), and an
energy-efficient mapping of the weights; it reports ~40% DRAM energy saving on average across
network sizes, accuracy within 1%. Stages, in DIR (each resumes on a re-run):

1. pretrain: `train_base` for `epochs` clean epochs into DIR/pretrained.pt (or the given --base
   checkpoint, used as it is);
2. baseline: the equal-budget control. FAT retrains the pretrained model for `fat_epochs` more
   epochs; a baseline that stopped at the pretrained model would have had fewer epochs, and a less
   trained network loses less accuracy in absolute points when faults hit it, so the comparison
   would credit (or blame) FAT for training time. The baseline therefore continues the pretrained
   model for the same `fat_epochs`, same seed, batch order and learning-rate schedule, without
   faults, into DIR/baseline.pt. `control=False` (CLI `--no-control`) compares against the
   pretrained model itself instead, and the summary says so;
3. its tolerance curve: `tolerance.search` with DRAM error-model chips (K maps per BER, the
   weights placed by drmap), points in DIR/tolerance-baseline;
4. FAT: `train_base` into DIR/fat.pt starting from the pretrained model, the BER raised by the
   curriculum to a FIXED target (DEFAULT_FAT_BER = 1e-2 unless given). The target is not chosen
   from the tolerance curves: those are measured on the test split, and picking a training
   setting from them would be selection on test data;
5. the FAT model's curve, DIR/tolerance-fat, exactly as in 3;
6. the report: both tolerable BERs and voltages, DRAM energy of one inference per placement
   policy at nominal, baseline-tolerable and FAT-tolerable voltage, and the headline saving of
   (FAT model, its tolerable voltage, drmap) against (baseline, nominal voltage, naive), the
   FAT/baseline tolerable-BER ratio, and the published figures beside them.

The reference (issue 22): SparkXD's rule is "a target accuracy within 1% of the baseline design,
i.e. the SNN without DRAM errors", so the headline tolerable BER of *both* arms is judged against
the control's clean accuracy (`Reference.given`, the common reference): for the control that is
its own clean accuracy, the FAT model must stay within the margin of the control's. Each arm's
own-clean tolerable BER (`Reference.own_clean`) is a second column (stage 5b, sharing stage 5's
maps). Every tolerable BER comes with the accuracy interval at it and at the next grid point.

FAT's recipe (`fat_loss`, `clip`, curriculum) is given, or chosen among `candidates` on held-out
training images (the last `val_images` of the training split, never trained on here) and
validation maps (seed `seed + VALIDATION_SEED_OFFSET`), never on the test set or test maps: each
candidate is trained like the FAT arm, its tolerance searched on the validation images against
the control's validation clean accuracy, and the candidate with the highest validation tolerable
BER whose validation clean accuracy is within the margin of the control's is the FAT arm
(`select_recipe`; its record says how it was chosen).

DIR/summary.json (strict JSON) is rewritten as every stage finishes; DIR/sparkxd.png draws it.
Both searches use the error model of FAT's DRAM source (`dram:error-model=K` -> K) unless told
otherwise.
FAT draws its faults over the default part's full geometry (`sramsim.nn.fat`); `geometry`
overrides (e.g. fewer rows: cheaper whole-part maps at high BER) apply to the searches only.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sramsim.errors import InputError, check_ber, check_writable

if TYPE_CHECKING:                   # heavy modules load where a stage needs them
    from sramsim.analysis.executors import Execution
    from sramsim.analysis.operating_point import Reference
    from sramsim.nn.data import Dataset
    from sramsim.nn.training import TrainOptions

DEFAULT_MODEL = "snn-fc400"
DEFAULT_FAT_BER = 1e-2          # fixed before any measurement (see the module docstring)
DEFAULT_FAT_SOURCE = "dram:error-model=0"
POLICIES = ("naive", "drmap", "error-aware")
STAGES = ("pretrain", "baseline", "tolerance_baseline", "fat", "tolerance_fat",
          "tolerance_fat_own")
VALIDATION_SEED_OFFSET = 1_000_003     # validation maps: a seed apart from the test maps'
RECIPE_KEYS = ("fat_loss", "clip", "fat_curriculum", "fat_start", "fat_ber")

# Published figures, quoted for comparison (nothing here is computed from them).
PAPER = {
    "sparkxd": {"citation": "Putra, Hanif, Shafique, SparkXD, DAC 2021, arXiv 2103.00421",
                "dram_energy_saving_mean": 0.40,
                "accuracy_margin": 0.01,
                "networks": "Diehl & Cook SNNs, N400 ... N3600 excitatory neurons, "
                            "MNIST and Fashion-MNIST"},
    "eden": {"citation": "Koppula et al., EDEN, MICRO 2019",
             "tolerable_ber_gain_from_curricular_retraining": 10.0,
             "dram_energy_saving_cpu": 0.21, "dram_energy_saving_gpu": 0.37},
    "enforcesnn": {"citation": "Putra, Hanif, Shafique, EnforceSNN, Frontiers in Neuroscience "
                               "2022, doi 10.3389/fnins.2022.937782",
                   "no_accuracy_loss_up_to_ber": 1e-3, "dram_energy_saving_max": 0.849},
}


@dataclass
class StudyOptions:
    """Settings of one study; everything here is recorded in summary.json."""

    out: str
    model: str = DEFAULT_MODEL
    data: str = "fashion-mnist"
    base: str | None = None          # an existing pretrained checkpoint (else trained into DIR)
    margin: float = 0.01
    epochs: int = 2                  # clean pretraining epochs
    fat_epochs: int = 4              # log curriculum 1e-5 -> 1e-2: one epoch per decade
    fat_ber: float = DEFAULT_FAT_BER
    fat_curriculum: str = "log"
    fat_start: float = 1e-5
    fat_source: str = DEFAULT_FAT_SOURCE
    error_model: int | None = None   # None: FAT's dram:error-model=K, else 0
    maps: int = 5
    limit: int | None = None         # first N train and N test samples (training)
    eval_limit: int | None = None    # first N test samples for the searches (default: limit)
    seed: int = 0
    low: float = 1e-6
    high: float = 1e-1
    per_decade: int = 1
    bisect_steps: int = 4
    geometry: dict | None = field(default=None)   # DramGeometry overrides for the searches
    control: bool = True             # baseline = pretrained + fat_epochs clean epochs
    fat_loss: str = "faulty"         # "faulty" | "clean+faulty" (sramsim.nn.fat)
    clip: float | None = None        # FAT arm's weight clipping (the control is not clipped)
    maps_max: int | None = None      # sequential maps per BER up to this (None: `maps` fixed)
    candidates: list[dict] | None = None   # FAT recipes to choose among (RECIPE_KEYS each)
    val_images: int = 0              # held-out training images (the split's last) for choosing
    workers: int | None = 1
    threads: int = 1
    executor: str = "local"
    ray_address: str | None = None
    batch_size: int = 128

    def execution(self) -> Execution:
        """Where the searches' fault maps run (`sramsim.analysis.executors.Execution`)."""
        from sramsim.analysis.executors import Execution
        return Execution(self.executor, self.workers, self.threads, self.ray_address,
                         progress=False)

    def search_error_model(self) -> int:
        """The EDEN error model of the searches' chips."""
        if self.error_model is not None:
            return int(self.error_model)
        from sramsim.nn.fat import parse_source
        kind, arg = parse_source(self.fat_source)
        return int(arg) if kind == "dram" else 0

    def search_limit(self) -> int | None:
        """Test samples the searches use."""
        return self.eval_limit if self.eval_limit is not None else self.limit


def check(opts: StudyOptions) -> dict | None:
    """Every setting checked before any work (one-line InputErrors); returns the base's meta
    (or None) so the baseline is read once."""
    from sramsim.analysis.tolerance import ber_grid
    from sramsim.nn.fat import canonical_source
    from sramsim.nn.models import check_arch, load_checkpoint
    try:
        check_arch(opts.model)
    except InputError as exc:
        raise InputError(f"model: {exc}") from None
    m = opts.margin
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not (math.isfinite(m)
                                                                       and 0 < m < 1):
        raise InputError(f"margin must lie strictly between 0 and 1, got {m!r}")
    for name, value, low in (("maps", opts.maps, 1), ("epochs", opts.epochs, 1),
                             ("fat_epochs", opts.fat_epochs, 1),
                             ("bisect_steps", opts.bisect_steps, 0), ("workers", opts.workers, 1),
                             ("threads", opts.threads, 1), ("batch_size", opts.batch_size, 1),
                             ("seed", opts.seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be a whole number >= {low}, got {value!r}")
    for name, value in (("limit", opts.limit), ("eval_limit", opts.eval_limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 2):
            raise InputError(f"{name} must be a whole number >= 2, got {value!r}")
    if opts.error_model is not None and opts.error_model not in (0, 1, 2, 3):
        raise InputError(f"error_model must be 0, 1, 2 or 3, got {opts.error_model!r}")
    if opts.maps_max is not None and (isinstance(opts.maps_max, bool)
                                      or not isinstance(opts.maps_max, int)
                                      or opts.maps_max < max(opts.maps, 2)):
        raise InputError(f"maps_max must be a whole number >= maps and >= 2, got "
                         f"{opts.maps_max!r}")
    for recipe in [recipe_of(opts), *(opts.candidates or [])]:
        _check_recipe(opts, recipe)
    _check_validation(opts)
    opts.fat_source = canonical_source(opts.fat_source)
    ber_grid(opts.low, opts.high, opts.per_decade)
    check_writable(opts.out, "out", folder=True)
    if opts.base is None:
        return None
    if not Path(opts.base).is_file():
        raise InputError(f"base {opts.base}: no such checkpoint file")
    try:
        _, meta = load_checkpoint(opts.base)
    except InputError as exc:
        raise InputError(f"base: {exc}") from None
    if meta["arch"] != opts.model:
        raise InputError(f"base {opts.base}: holds a {meta['arch']} model, not the "
                         f"{opts.model} asked for")
    if meta.get("dataset") != dataset_spec(opts.data):
        raise InputError(f"base {opts.base}: trained on {meta.get('dataset')!r}, not the data "
                         f"{opts.data!r} asked for")
    if meta.get("fat"):
        raise InputError(f"base {opts.base}: is itself fault-aware trained; the study needs "
                         "a baseline without FAT")
    return meta


def recipe_of(opts: StudyOptions) -> dict:
    """The FAT recipe the options name (used when no candidates are given)."""
    return {k: getattr(opts, k) for k in RECIPE_KEYS}


def _check_recipe(opts: StudyOptions, recipe: dict) -> None:
    """One FAT recipe (a dict of RECIPE_KEYS; missing keys take the options' values)."""
    from sramsim.nn.fat import check_fat
    unknown = set(recipe) - set(RECIPE_KEYS)
    if unknown:
        raise InputError(f"candidates: unknown recipe keys {sorted(unknown)} (use "
                         f"{', '.join(RECIPE_KEYS)})")
    r = {**recipe_of(opts), **recipe}
    check_ber(r["fat_ber"], "fat_ber", allow_one=False)
    if not r["fat_ber"]:
        raise InputError("fat_ber must be above 0 (the study compares a FAT model)")
    check_fat(r["fat_ber"], r["fat_curriculum"], opts.fat_source, r["fat_start"], r["fat_loss"])
    c = r["clip"]
    if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float))
                          or not (math.isfinite(c) and c > 0)):
        raise InputError(f"clip must be a positive number, got {c!r}")


def _check_validation(opts: StudyOptions) -> None:
    """Candidates need held-out training images the training does not see."""
    v = opts.val_images
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InputError(f"val_images must be a whole number >= 0, got {v!r}")
    if opts.candidates and v < 2:
        raise InputError("candidates are chosen on held-out training images: give val_images "
                         ">= 2")
    if v and opts.limit is None:
        raise InputError("val_images holds out the training split's last images: give limit "
                         "(training images) so the two do not overlap")


def dataset_spec(data: str) -> str:
    """The data name as train_base records it (a folder by its resolved path)."""
    return str(Path(data).resolve()) if Path(data).is_dir() else str(data)


# ------------------------------------------------------------------------------ the study

class _Summary:
    """DIR/summary.json, rewritten atomically after every stage."""

    def __init__(self, out: Path, opts: StudyOptions):
        self.path = out / "summary.json"
        self.data: dict[str, Any] = {"study": "sparkxd", "settings": asdict(opts),
                     "search_error_model": opts.search_error_model(), "stages": {},
                     "complete": False}

    def stage(self, name: str, record: dict) -> None:
        """Record a finished stage and write the file."""
        self.data["stages"][name] = record
        self.write()

    def write(self) -> None:
        """Write summary.json (strict JSON: no NaN or infinity)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, self.path)


def run_study(opts: StudyOptions, progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) every stage of the study in opts.out; returns the summary dict."""
    from sramsim.nn.training import train_base
    from sramsim.progress import progress as reporter
    base_meta = check(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    say: Callable[[str], None] = log or (lambda text: None)
    t_start = time.perf_counter()
    summary = _Summary(out, opts)
    bar = reporter(total=len(STAGES), desc="sparkxd", unit="stage", enabled=progress)

    def note(text: str) -> None:
        if log is not None:
            bar.write(text, file=sys.stderr) if progress else say(text)

    try:
        # 1. the pretrained model both arms start from
        bar.set_description("sparkxd: pretraining")
        t0 = time.perf_counter()
        if opts.base is not None:
            assert base_meta is not None            # check read the base checkpoint's meta
            pre_path = Path(opts.base)
            rec = {"checkpoint": str(pre_path), "given": True, "skipped": True,
                   "test_accuracy": base_meta.get("test_accuracy"),
                   "train_seconds": base_meta.get("train_seconds")}
        else:
            pre_path = out / "pretrained.pt"
            meta = train_base(opts.model, opts.data, pre_path, _train_options(opts, opts.epochs),
                              limit=opts.limit, progress=progress, log=note if log else None)
            rec = {"checkpoint": str(pre_path), "given": False, "skipped": meta["skipped"],
                   "test_accuracy": meta.get("test_accuracy"),
                   "train_seconds": meta.get("train_seconds")}
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        summary.stage("pretrain", rec)
        bar.update()

        # 2. the baseline: the equal-budget clean control (or the pretrained model itself)
        bar.set_description("sparkxd: baseline (clean control)")
        t0 = time.perf_counter()
        if opts.control:
            base_path = out / "baseline.pt"
            meta = train_base(opts.model, opts.data, base_path,
                              _train_options(opts, opts.fat_epochs), limit=opts.limit,
                              init=pre_path, progress=progress, log=note if log else None)
            rec = {"checkpoint": str(base_path), "control": True, "init": str(pre_path),
                   "epochs": opts.fat_epochs, "skipped": meta["skipped"],
                   "test_accuracy": meta.get("test_accuracy"),
                   "train_seconds": meta.get("train_seconds")}
        else:
            base_path = pre_path
            rec = {"checkpoint": str(base_path), "control": False, "skipped": True,
                   "test_accuracy": summary.data["stages"]["pretrain"]["test_accuracy"],
                   "note": "baseline = the pretrained model; FAT had fat_epochs more epochs"}
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        summary.stage("baseline", rec)
        bar.update()

        # 3. baseline tolerance (its own clean accuracy is the common reference)
        bar.set_description("sparkxd: tolerance of the baseline")
        base_tol = _tolerance(opts, base_path, out / "tolerance-baseline", note)
        summary.stage("tolerance_baseline", base_tol)
        bar.update()
        common = common_reference(opts.model, base_tol["clean_accuracy"])

        # 4. FAT from the pretrained model (the recipe given, or chosen on validation)
        bar.set_description("sparkxd: fault-aware training")
        t0 = time.perf_counter()

        def train_fat(recipe: dict, path: Path) -> dict:
            return train_base(opts.model, opts.data, path,
                              _train_options(opts, opts.fat_epochs, recipe=recipe),
                              limit=opts.limit, init=pre_path, progress=progress,
                              log=note if log else None)

        selection = None
        if opts.candidates:
            selection = select_recipe(opts, base_path, train_fat, out, note)
            fat_path = Path(selection["chosen_checkpoint"])
            meta = selection.pop("chosen_meta")
        else:
            fat_path = out / "fat.pt"
            meta = train_fat(recipe_of(opts), fat_path)
        summary.stage("fat", {"checkpoint": str(fat_path), "skipped": meta["skipped"],
                              "init": str(pre_path), "fat": meta.get("fat"),
                              "clip": meta.get("clip"),
                              "test_accuracy": meta.get("test_accuracy"),
                              "train_seconds": meta.get("train_seconds"),
                              "history": meta.get("history"), "selection": selection,
                              "seconds": round(time.perf_counter() - t0, 3)})
        bar.update()

        # 5. FAT tolerance under the common reference, then (5b) under its own clean accuracy
        # (same folder: the maps of BERs both scans visit are measured once)
        bar.set_description("sparkxd: tolerance of the FAT model")
        summary.stage("tolerance_fat", _tolerance(opts, fat_path, out / "tolerance-fat", note,
                                                  reference=common))
        bar.update()
        summary.stage("tolerance_fat_own",
                      _tolerance(opts, fat_path, out / "tolerance-fat", note))
        bar.update()
    finally:
        bar.close()

    summary.data["results"] = results(summary.data["stages"])
    summary.data["paper"] = PAPER
    summary.data["elapsed_s"] = round(time.perf_counter() - t_start, 3)
    summary.data["complete"] = True
    summary.write()
    png = out / "sparkxd.png"
    plot(summary.data, png)
    summary.data["png"] = str(png)
    summary.write()
    return summary.data


def _train_options(opts: StudyOptions, epochs: int,
                   recipe: dict[str, Any] | None = None) -> TrainOptions:
    """TrainOptions of one training stage; the clean control and FAT differ only in the FAT
    recipe (faults, loss, clipping)."""
    from sramsim.nn.training import TrainOptions
    extra: dict[str, Any] = {}
    if recipe is not None:
        r = {**recipe_of(opts), **recipe}
        extra = dict(fat_ber=r["fat_ber"], fat_curriculum=r["fat_curriculum"],
                     fat_start=r["fat_start"], fat_source=opts.fat_source,
                     fat_loss=r["fat_loss"], clip=r["clip"])
    return TrainOptions(epochs=epochs, seed=opts.seed, batch_size=opts.batch_size, **extra)


def common_reference(model: str, control_clean: float) -> Reference:
    """SparkXD's reference: the control's (the SNN without DRAM errors) clean accuracy."""
    from sramsim.analysis.operating_point import Reference
    return Reference.given(control_clean, f"control {model} clean accuracy")


def confirm(opts: StudyOptions, stages: dict, folder: str | os.PathLike[str], seed: int,
            log: Callable[[str], None] | None = None) -> dict:
    """The study's three searches again, on the whole test split and with fresh test maps
    (`seed`, not the study's `opts.seed`), of the control and FAT models its stages trained: do
    its figures, searched on `eval_limit` test images and the study's maps, hold there? Each
    search resumes from its subfolder of `folder`. Returns `results` of these searches (the
    common reference is the control's clean accuracy on the whole split)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed == opts.seed:
        raise InputError(f"seed must be an integer other than the study's test-map seed "
                         f"{opts.seed} (fresh maps), got {seed!r}")
    missing = [k for k in ("baseline", "fat") if "checkpoint" not in stages.get(k, {})]
    if missing:
        raise InputError(f"the study has not trained its {' and '.join(missing)} model yet: "
                         "run it first")
    out = Path(folder)
    note = log or (lambda text: None)
    base = _tolerance(opts, Path(stages["baseline"]["checkpoint"]), out / "tolerance-baseline",
                      note, seed=seed, whole_test=True)
    common = common_reference(opts.model, base["clean_accuracy"])
    fat_path = Path(stages["fat"]["checkpoint"])
    fat = _tolerance(opts, fat_path, out / "tolerance-fat", note, reference=common, seed=seed,
                     whole_test=True)
    fat_own = _tolerance(opts, fat_path, out / "tolerance-fat", note, seed=seed,
                         whole_test=True)
    return results({"baseline": stages["baseline"], "tolerance_baseline": base,
                    "tolerance_fat": fat, "tolerance_fat_own": fat_own})


def _tolerance(opts: StudyOptions, model_path: Path, folder: Path,
               note: Callable[[str], None], reference: Reference | None = None,
               dataset: Dataset | None = None, seed: int | None = None,
               whole_test: bool = False) -> dict:
    """One search (resumes from `folder`), kept compact for the summary. reference: default the
    model's own clean accuracy; dataset / seed: default the test split and the test maps;
    whole_test: every test sample (else the study's `search_limit`)."""
    from sramsim.analysis.tolerance import search
    t0 = time.perf_counter()
    r = search(str(model_path), opts.data if dataset is None else dataset, margin=opts.margin,
               reference=reference, maps=opts.maps, maps_max=opts.maps_max, low=opts.low,
               high=opts.high, per_decade=opts.per_decade, bisect_steps=opts.bisect_steps,
               source="dram", error_model=opts.search_error_model(), mapping="drmap",
               geometry=opts.geometry, seed=opts.seed if seed is None else seed,
               limit=opts.search_limit() if dataset is None and not whole_test else None,
               out_dir=folder, execution=opts.execution(), log=note)
    keep = ("tolerable_ber", "voltage", "accuracy_mean", "ci95", "first_failing_ber",
            "first_failing", "next_grid_point", "bound", "reference", "clean_accuracy",
            "float_accuracy", "margin", "maps", "maps_max", "maps_rule", "points", "faults",
            "nominal_voltage", "n_samples", "weight_bytes", "energy", "computed_maps",
            "reused_maps", "out")
    rec = {k: r[k] for k in keep}
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    rec["skipped"] = r["computed_maps"] == 0
    return rec


def validation_set(opts: StudyOptions) -> Dataset:
    """The held-out training images: the last `val_images` of the training split (the training
    stages use the first `limit`, so the two never overlap)."""
    from sramsim.nn.data import Dataset, load_dataset
    full = load_dataset(opts.data, "train")
    n = len(full)
    if opts.limit is None or opts.limit + opts.val_images > n:
        raise InputError(f"limit {opts.limit} + val_images {opts.val_images} exceed the "
                         f"{n} training images: they would overlap")
    return Dataset(full.x[n - opts.val_images:], full.y[n - opts.val_images:],
                   full.num_classes, f"{full.name} train[{n - opts.val_images}:{n}]")


def _clean_accuracy(opts: StudyOptions, model_path: Path, folder: Path, dataset: Dataset,
                    seed: int) -> float:
    """A model's fault-free quantized accuracy on `dataset`, from a one-map scan of the first
    grid point into `folder` (the later full search reuses both)."""
    from sramsim.analysis.tolerance import search
    r = search(str(model_path), dataset, margin=opts.margin, maps=1, low=opts.low,
               high=opts.low * 1.0001, bisect_steps=0, source="dram",
               error_model=opts.search_error_model(), mapping="drmap", geometry=opts.geometry,
               seed=seed, out_dir=folder, execution=opts.execution())
    return float(r["clean_accuracy"])


def choose(control_clean: float, margin: float, rows: list[dict]) -> tuple[int, str]:
    """The index of the chosen candidate and why: the highest validation tolerable BER (under
    the control's validation clean accuracy) among candidates whose validation clean accuracy
    is within `margin` of the control's; ties go to the higher clean accuracy. If none is, the
    highest tolerable BER anyway (said so)."""
    from sramsim.analysis.operating_point import passes

    def key(i: int) -> tuple[float, float]:
        return (rows[i]["tolerable_ber"] or 0.0, rows[i]["clean_accuracy"])

    ok = [i for i, r in enumerate(rows) if passes(r["clean_accuracy"], control_clean, margin)]
    if ok:
        return max(ok, key=key), ("highest validation tolerable BER (common reference) among "
                                  "the candidates within the margin of the control when clean")
    return max(range(len(rows)), key=key), ("no candidate within the margin of the control "
                                            "when clean: the highest validation tolerable BER")


def select_recipe(opts: StudyOptions, control_path: Path,
                  train_fat: Callable[[dict, Path], dict], out: Path,
                  note: Callable[[str], None]) -> dict:
    """Train every candidate recipe and choose one on validation images and maps only (module
    docstring); the record of how it was chosen, with the chosen checkpoint and its meta."""
    from sramsim.analysis.operating_point import passes
    val = validation_set(opts)
    seed = opts.seed + VALIDATION_SEED_OFFSET
    folder = out / "validation"
    ctl = _tolerance(opts, control_path, folder / "control", note, dataset=val, seed=seed)
    ref = common_reference(opts.model, ctl["clean_accuracy"])
    rows: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    for i, cand in enumerate(opts.candidates or []):
        path = out / f"fat-{i}.pt"
        metas.append(train_fat(cand, path))
        rows.append({"recipe": {**recipe_of(opts), **cand}, "checkpoint": str(path),
                     "clean_accuracy": _clean_accuracy(opts, path, folder / f"fat-{i}", val,
                                                       seed),
                     "tolerable_ber": None, "searched": False,
                     "train_seconds": metas[-1].get("train_seconds")})
    # A candidate more than the margin below the control when clean cannot be chosen while
    # another is within it (`choose`): only those are searched (all, if none is).
    gate = [passes(r["clean_accuracy"], ctl["clean_accuracy"], opts.margin) for r in rows]
    for i, row in enumerate(rows):
        if any(gate) and not gate[i]:
            row["skipped"] = "clean accuracy more than the margin below the control's"
            continue
        tol = _tolerance(opts, Path(row["checkpoint"]), folder / f"fat-{i}", note,
                         reference=ref, dataset=val, seed=seed)
        row.update({k: tol[k] for k in ("tolerable_ber", "ci95", "accuracy_mean", "bound")},
                   searched=True)
    best, why = choose(ctl["clean_accuracy"], opts.margin, rows)
    return {"data": val.name, "n_images": len(val), "maps_seed": seed,
            "control": {k: ctl[k] for k in ("clean_accuracy", "tolerable_ber", "ci95",
                                             "accuracy_mean")},
            "reference": ref.describe(), "candidates": rows, "chosen": best, "rule": why,
            "chosen_checkpoint": rows[best]["checkpoint"], "chosen_meta": metas[best]}


def operating_point(search: dict) -> dict:
    """One arm's answer under one reference: the tolerable BER and voltage, the accuracy
    interval there and at the next grid point (and the first failing point), the bound."""
    keep = ("tolerable_ber", "voltage", "accuracy_mean", "ci95", "first_failing_ber",
            "first_failing", "next_grid_point", "bound", "reference")
    out = {k: search.get(k) for k in keep}
    at = [p for p in search["points"] if p["ber"] == search["tolerable_ber"]]
    out["n_at_tolerable"] = at[0]["n"] if at else None
    return out


def _ratio(fat: float | None, control: float | None) -> float | None:
    """FAT's tolerable BER over the control's (0 when FAT has none; None when the control has
    none: the ratio is then undefined)."""
    if not control:
        return None
    return (fat or 0.0) / control


def results(stages: dict) -> dict:
    """The report of finished stages: tolerable BERs and voltages under the common reference
    (the headline) and each arm's own clean accuracy, energy per policy at the voltages, the
    savings, and the FAT/control tolerable-BER ratios."""
    b, f, fo = stages["tolerance_baseline"], stages["tolerance_fat"], stages["tolerance_fat_own"]
    energy = {}
    for policy in POLICIES:
        eb, ef, eo = (s["energy"].get(policy, {}) for s in (b, f, fo))
        nominal = eb.get("energy_nominal_J", ef.get("energy_nominal_J"))
        energy[policy] = {"nominal_J": nominal, "baseline_tolerable_J": eb.get("energy_J"),
                          "fat_tolerable_J": ef.get("energy_J"),
                          "fat_tolerable_own_J": eo.get("energy_J")}
    ref = energy["naive"]["nominal_J"]

    def saving(joules: float | None) -> float | None:
        return None if joules is None or not ref else 1.0 - joules / ref

    low = energy["drmap"]["fat_tolerable_J"]
    headline = {"saving": saving(low), "fat_drmap_at_fat_tolerable_J": low,
                "baseline_naive_at_nominal_J": ref,
                "against": "baseline model at nominal voltage with naive placement",
                "reference": "common (the control's clean accuracy)",
                "control_saving": saving(energy["drmap"]["baseline_tolerable_J"]),
                "fat_saving_own_reference": saving(energy["drmap"]["fat_tolerable_own_J"])}
    bounds = [f"{n}: {s['bound']}" for n, s in (("baseline", b), ("fat", f), ("fat own", fo))
              if s["bound"]]
    common = _ratio(f["tolerable_ber"], b["tolerable_ber"])
    own = _ratio(fo["tolerable_ber"], b["tolerable_ber"])

    def arm(search: dict, own_search: dict) -> dict:
        return {"clean_accuracy": search["clean_accuracy"], "n_samples": search["n_samples"],
                **{k: search[k] for k in ("tolerable_ber", "voltage", "accuracy_mean",
                                          "first_failing_ber", "bound")},
                "common": operating_point(search), "own": operating_point(own_search)}

    return {
        "reference": {**b["reference"], "kind": "given",
                      "label": f"the control's clean accuracy ({b['reference']['label']} of "
                               "the baseline; SparkXD: within 1% of the SNN without DRAM errors)",
                      "margin": b["margin"]},
        "baseline": arm(b, b),
        "fat": arm(f, fo),
        "baseline_is_control": bool(stages["baseline"].get("control")),
        "nominal_voltage": b["nominal_voltage"],
        "fat_over_control_common": common,
        "fat_over_control_own": own,
        "tolerable_ber_ratio": common,
        "clean_gap": f["clean_accuracy"] - b["clean_accuracy"],
        "ratio_bounds": bounds or None,
        "energy_per_inference": energy,
        "headline": headline,
    }


# ------------------------------------------------------------------------------ the report

def _interval(point: dict | None) -> str:
    """'78.10 ± 0.42 (6)': mean ± 95% half-width over n maps, in points; '-' if none."""
    if not point or point.get("accuracy_mean") is None:
        return "-"
    n = point.get("n")
    maps = "" if n is None else f" ({n})"
    return f"{100 * point['accuracy_mean']:.2f} ± {100 * point['ci95']:.2f}{maps}"


def table(summary: dict) -> str:
    """The study as text (what `sramsim sparkxd` prints)."""
    r, st = summary["results"], summary["stages"]
    ref = r["reference"]
    lines = [f"reference (headline): {ref['label']} = {100 * ref['accuracy']:.2f}%, margin "
             f"{100 * ref['margin']:g} point(s); own-clean column: each arm against itself",
             f"{'model':<9} {'clean acc':>9} {'tol. BER':>9} {'voltage':>8} "
             f"{'acc at tol. (maps)':>20} {'next grid point':>26} {'own-clean BER':>13}  note"]
    for name in ("baseline", "fat"):
        x = r[name]
        c, o = x["common"], x["own"]
        ber = "none" if c["tolerable_ber"] is None else f"{c['tolerable_ber']:.3g}"
        v = "-" if c["voltage"] is None else f"{c['voltage']:.4f}"
        at = _interval({"accuracy_mean": c["accuracy_mean"], "ci95": c["ci95"],
                        "n": c["n_at_tolerable"]})
        ng = c["next_grid_point"]
        nxt = "-" if ng is None else f"{ng['ber']:.0e}: {_interval(ng)}"
        own = "none" if o["tolerable_ber"] is None else f"{o['tolerable_ber']:.3g}"
        lines.append(f"{name:<9} {100 * x['clean_accuracy']:>8.2f}% {ber:>9} {v:>8} {at:>20} "
                     f"{nxt:>26} {own:>13}  {c['bound'] or ''}")
    if r.get("baseline_is_control"):
        lines.append(f"baseline: the pretrained model + {st['baseline']['epochs']} clean epochs "
                     "(the same budget as FAT)")
    else:
        lines.append("baseline: the pretrained model itself (FAT had more training epochs)")
    def fmt(ratio: float | None) -> str:
        return "-" if ratio is None else f"{ratio:.3g}x"

    lines.append(f"FAT / baseline tolerable BER: {fmt(r['fat_over_control_common'])} under the "
                 f"common reference, {fmt(r['fat_over_control_own'])} own-clean (EDEN reports "
                 "~10x from curricular retraining)")
    lines.append(f"DRAM energy per inference (uJ), nominal {r['nominal_voltage']:g} V:")
    lines.append(f"  {'mapping':<12} {'nominal':>9} {'base tol.':>9} {'FAT tol.':>9}")
    for policy, e in r["energy_per_inference"].items():
        cells = ["-" if e[k] is None else f"{e[k] * 1e6:.4f}"
                 for k in ("nominal_J", "baseline_tolerable_J", "fat_tolerable_J")]
        lines.append(f"  {policy:<12} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9}")
    sel = st["fat"].get("selection")
    if sel:
        chosen = sel["candidates"][sel["chosen"]]
        lines.append(f"FAT recipe chosen on {sel['n_images']} held-out training images and "
                     f"validation maps: {chosen['recipe']} ({sel['rule']})")
    h = r["headline"]
    saving = "-" if h["saving"] is None else f"{100 * h['saving']:.1f}%"
    lines.append(f"saving at the common reference (FAT model, its tolerable voltage, drmap) vs "
                 f"(baseline, nominal, naive): {saving}  (SparkXD reports ~40%, "
                 f"{PAPER['sparkxd']['citation']})")
    cs = h.get("control_saving")
    lines.append(f"  the control alone at its tolerable voltage: "
                 f"{'-' if cs is None else f'{100 * cs:.1f}%'}")
    times = ", ".join(f"{k} {st[k]['seconds']:.1f} s{' (reused)' if st[k]['skipped'] else ''}"
                      for k in STAGES)
    lines.append(f"stages: {times}; total {summary['elapsed_s']:.1f} s")
    return "\n".join(lines)


def plot(summary: dict, path: str | os.PathLike) -> None:
    """DIR/sparkxd.png: both tolerance curves (accuracy vs BER, 95% interval over the K maps,
    margin lines) and DRAM energy per inference per policy at the three voltages."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    st, r = summary["stages"], summary["results"]
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, key, color in (("baseline", "tolerance_baseline", "tab:blue"),
                             ("FAT", "tolerance_fat", "tab:orange")):
        s = st[key]
        pts = sorted(s["points"], key=lambda p: p["ber"])
        tolerable = "none" if s["tolerable_ber"] is None else format(s["tolerable_ber"], ".2g")
        ax.errorbar([p["ber"] for p in pts], [100 * p["accuracy_mean"] for p in pts],
                    yerr=[100 * p["ci95"] for p in pts], marker="o", ms=3, capsize=2,
                    color=color, label=f"{name} (tolerable BER {tolerable})")
        if key == "tolerance_baseline":     # the common reference: the control's clean - margin
            ax.axhline(100 * (s["clean_accuracy"] - s["margin"]), color="k", ls="--", lw=0.8)
        if s["tolerable_ber"] is not None:
            ax.axvline(s["tolerable_ber"], color=color, ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("bit error rate (DRAM error model, weights placed by drmap)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"tolerance, {st['tolerance_baseline']['maps']} maps per BER (95% CI); "
                 "dashed: control clean - margin (the common reference)", fontsize=9)
    ax.legend(fontsize=8)
    cols = (("nominal_J", f"nominal {r['nominal_voltage']:g} V"),
            ("baseline_tolerable_J", "baseline tolerable V"),
            ("fat_tolerable_J", "FAT tolerable V"))
    policies = list(r["energy_per_inference"])
    x = np.arange(len(policies))
    for i, (k, label) in enumerate(cols):
        vals = [r["energy_per_inference"][p][k] for p in policies]
        bx.bar(x + (i - 1) * 0.27, [0 if v is None else v * 1e6 for v in vals], 0.27, label=label)
    bx.set_xticks(x, policies)
    bx.set_ylabel("DRAM energy per inference (uJ)")
    h = r["headline"]["saving"]
    bx.set_title("saving FAT/drmap vs baseline/nominal/naive: "
                 f"{'-' if h is None else f'{100 * h:.1f}%'} (SparkXD: ~40%)", fontsize=9)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
