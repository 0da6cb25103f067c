"""The generator part of `make demo`: train G for a bounded time, then CA/PA without and with it.

`fusion demo` (the second half of `make demo`) calls `run_generator_demo` with the base model
`sramsim demo` trained, at the voltage where the finfet14 bit error rate is 2%; everything here is
also usable on its own from Python.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from fusion.commands.common import base_info, load_base
from fusion.eopm import EopmConfig
from fusion.evaluation import FaultSpec, evaluate
from fusion.pipeline import GENERATOR_FILE, train_generator
from sramsim.nn.data import load_dataset

# A quick recipe for a few CPU minutes: the benchmark's settings (N=2, batch 64, lr 2e-3 halved
# every 2 epochs of 20,000 samples) with ConvS at width 1/4 (7,065 weights), small enough to keep
# the net energy saving positive on the ~87k-weight default CNN (the paper-width ConvS has
# 111,177).
DEMO_CONFIG = dict(generator="ConvS", width=0.25, n_perturbed=2, lam=5.0, batch_size=64, lr=2e-3,
                   lr_step=2)


def run_generator_demo(base_ckpt: str | Path, data: str = "fashion-mnist", ber: float | None = None,
                       voltage: float | None = None, budget_seconds: float = 240.0,
                       out_dir: str | Path = "demo-out/generator", *,
                       train_limit: int | None = 20000,
                       eval_limit: int | None = 2000, n_models: int = 10, progress: bool = True,
                       config: dict | None = None,
                       log: Callable[[str], None] | None = None) -> dict:
    """Train a generator with EOPM for about `budget_seconds`, evaluate it, return the numbers.

    Give `ber` (random bit errors) or `voltage` (random errors at the finfet14 BER of that
    voltage). Returns {"ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "pa_nf_std", "recovery",
    "recovered_fraction", "energy_saving", "energy_saving_base", "ber", "voltage", "generator",
    "train_seconds", "eval_seconds", "steps", "generator_file"} (accuracies as fractions).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    faults = FaultSpec(ber=ber, voltage=voltage)
    qm, meta = load_base(base_ckpt)
    train_set = load_dataset(data, "train", train_limit)
    test_set = load_dataset(data, "test", eval_limit)
    cfg = EopmConfig(**{**DEMO_CONFIG, **(config or {})})
    log(f"training {cfg.generator} (EOPM, N={cfg.n_perturbed}, lam={cfg.lam:g}) for "
        f"~{budget_seconds:.0f} s at BER {faults.ber:.3g} (V={faults.voltage:.3f})")
    trained = train_generator(qm, base_info(str(base_ckpt), meta, qm), train_set, faults, cfg,
                              epochs=1000, out_dir=out_dir, progress=progress,
                              budget_seconds=budget_seconds)
    generator_file = Path(out_dir) / GENERATOR_FILE
    from fusion.store import load_generator
    generator, _ = load_generator(generator_file)
    t0 = time.perf_counter()
    r = evaluate(qm, test_set, faults, generator, n_models)
    keys = ("ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "pa_nf_std", "recovery",
            "recovered_fraction", "energy_saving", "energy_saving_base", "base_accesses",
            "generator_accesses", "n_models", "samples")
    return {**{k: r[k] for k in keys}, "ber": faults.ber, "voltage": faults.voltage,
            "generator": cfg.generator, "width": cfg.width, "steps": trained["steps"],
            "train_seconds": trained["train_seconds"], "eval_seconds": time.perf_counter() - t0,
            "generator_file": str(generator_file)}
