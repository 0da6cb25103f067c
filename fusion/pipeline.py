"""Whole jobs as Python calls (what `fusion train`, the demo and the benchmarks run):
train a generator into a directory, resumably, and write `DIR/generator.pt`."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fusion.eopm import CHECKPOINT, EopmConfig, EopmTrainer
from fusion.evaluation import FaultSpec, Validator, check_shapes
from fusion.store import save_generator
from sramsim import QuantizedModel
from sramsim.errors import InputError
from sramsim.nn.data import Dataset

if TYPE_CHECKING:
    import torch

GENERATOR_FILE = "generator.pt"


def hold_out(dataset: Dataset, n: int) -> tuple[Dataset, Dataset]:
    """(first len - n samples, last n samples): a validation split taken from the training set."""
    if not 0 < n < len(dataset):
        raise InputError(f"val_split must be between 1 and {len(dataset) - 1} "
                         f"(the training set has {len(dataset)} samples), got {n}")
    keep = len(dataset) - n
    return (Dataset(dataset.x[:keep], dataset.y[:keep], dataset.num_classes, dataset.name),
            Dataset(dataset.x[keep:], dataset.y[keep:], dataset.num_classes,
                    f"{dataset.name} (validation)"))


def train_generator(qm: QuantizedModel, base_info: dict, train_set: Dataset, faults: FaultSpec,
                    config: EopmConfig, epochs: int, out_dir: str | Path,
                    device: str | torch.device = "cpu",
                    progress: bool = True, budget_seconds: float | None = None,
                    val_set: Dataset | None = None, val_maps: int = 5,
                    val_faults: FaultSpec | None = None) -> dict:
    """Train G with EOPM into `out_dir` (checkpoint each epoch, resume when re-run) and write
    `out_dir/generator.pt`. budget_seconds bounds the wall time (stops after the step that
    passes it). val_set: held-out images; G is scored on them over `val_maps` fixed fault maps
    after every epoch and the best-scoring G is written; val_faults: the faults it is scored
    under (default `faults`; the deployed BER when training at a margin above it).
    Returns the meta stored with G: "steps" counts every epoch's steps (resumed ones
    included), "steps_this_run" only this call's."""
    check_shapes(train_set, base_info)
    validator = None
    if val_set is not None:
        check_shapes(val_set, base_info)
        validator = Validator(qm, val_set, val_faults or faults, val_maps, device=device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The fault sampler's seed is derived from the run's seed, kept apart from evaluation maps.
    sampler = faults.sampler(seed=1_000_003 + config.seed)
    trainer = EopmTrainer(qm, sampler, train_set.in_channels, config, device)
    deadline = None if budget_seconds is None else time.monotonic() + float(budget_seconds)
    history = trainer.fit(train_set.x, train_set.y, epochs, out_dir, progress, deadline, validator)
    complete = trainer.epoch >= epochs
    meta = {"generator": config.generator, "in_channels": train_set.in_channels,
            "width": config.width, "base": base_info, "fault_source": faults.describe(),
            "config": asdict(config), "epochs": epochs, "epochs_done": trainer.epoch,
            "complete": complete, "steps": sum(h["steps"] for h in history),
            "steps_this_run": trainer.steps_run,
            "train_samples": len(train_set), "dataset": train_set.name,
            "train_seconds": trainer.train_seconds, "history": history,
            "checkpoint": str(out_dir / CHECKPOINT),
            "validation": None if validator is None else {
                **validator.describe(),
                **{f"best_{k}": v for k, v in (trainer.best or {}).items() if k != "state"}}}
    save_generator(out_dir / GENERATOR_FILE, trainer.result, meta)
    return meta
