"""Whole jobs as Python calls (what `fusion train`, the demo and the benchmarks run):
train a generator into a directory, resumably, and write `DIR/generator.pt`."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from sramsim import QuantizedModel
from sramsim.data import Dataset

from .eopm import CHECKPOINT, EopmConfig, EopmTrainer
from .evaluation import FaultSpec, check_shapes
from .store import save_generator

GENERATOR_FILE = "generator.pt"


def train_generator(qm: QuantizedModel, base_info: dict, train_set: Dataset, faults: FaultSpec,
                    config: EopmConfig, epochs: int, out_dir: str | Path, device="cpu",
                    progress: bool = True, budget_seconds: float | None = None) -> dict:
    """Train G with EOPM into `out_dir` (checkpoint each epoch, resume when re-run) and write
    `out_dir/generator.pt`. budget_seconds bounds the wall time (stops after the step that
    passes it). Returns the meta stored with G."""
    check_shapes(train_set, base_info)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The fault sampler's seed is derived from the run's seed, kept apart from evaluation maps.
    sampler = faults.sampler(seed=1_000_003 + config.seed)
    trainer = EopmTrainer(qm, sampler, train_set.in_channels, config, device)
    deadline = None if budget_seconds is None else time.monotonic() + float(budget_seconds)
    history = trainer.fit(train_set.x, train_set.y, epochs, out_dir, progress, deadline)
    complete = trainer.epoch >= epochs
    meta = {"generator": config.generator, "in_channels": train_set.in_channels,
            "width": config.width, "base": base_info, "fault_source": faults.describe(),
            "config": asdict(config), "epochs": epochs, "epochs_done": trainer.epoch,
            "complete": complete, "steps": sum(h["steps"] for h in history),
            "train_samples": len(train_set), "dataset": train_set.name,
            "train_seconds": trainer.train_seconds, "history": history,
            "checkpoint": str(out_dir / CHECKPOINT)}
    save_generator(out_dir / GENERATOR_FILE, trainer.result, meta)
    return meta
