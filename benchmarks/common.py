"""Shared helpers for the benchmarks: timing with medians, environment facts, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn, repeat: int = 7, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds (after warm-up calls that pay JIT/caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def environment() -> dict:
    import numba
    import numpy
    import torch
    return {
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "numpy": numpy.__version__, "numba": numba.__version__, "torch": torch.__version__,
        "device": "CPU only (no GPU lent to this task)",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    payload = {"environment": environment(), "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
