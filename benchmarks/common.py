"""Shared helpers for the benchmarks: timing with medians, provenance, paths, JSON output.

Every results JSON goes through `write_result`, which records where the numbers came from (git
commit and whether the tree was dirty, the command line, the machine, the load average, the device
as detected) and refuses to write an absolute path of this checkout (name files with
`repo_path`). Readings in prose live in benchmarks/README.md, not in the JSON.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
_STARTED = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


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


def repo_path(path: str | Path) -> str:
    """A file named relative to the repository root (what a committed JSON may record).

    A path outside the checkout has no name that means anything on another machine: refused.
    """
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        raise ValueError(f"{path}: outside the repository {ROOT.name}/, so a results JSON cannot "
                         "name it (keep benchmark inputs and caches inside the checkout)") from None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> dict:
    """The commit the numbers came from, and whether the working tree differed from it, outside
    benchmarks/results/ (what benchmarks write: a study that plots before it writes its JSON, or
    writes two, would otherwise call its own output a change)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)benchmarks/results")
    return {"commit": commit.strip() if commit else None,
            "dirty": None if status is None else bool(status.strip()),
            "changed_files": None if status is None else len(status.splitlines())}


def command_line() -> str:
    """How this benchmark was started, with the script named relative to the repository."""
    argv = list(sys.argv)
    try:
        argv[0] = repo_path(argv[0])
    except ValueError:
        argv[0] = Path(argv[0]).name
    # arguments naming files of this checkout are recorded relative to it
    argv = [a.replace(str(ROOT) + "/", "").replace(str(ROOT), ".") for a in argv]
    return shlex.join(["python", *argv])


def _proc_field(path: str, key: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def machine() -> dict:
    """The CPU model, cores this process may use, memory and OS, read from the machine itself."""
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or None,
            "arch": platform.machine(), "cpu_count": os.cpu_count(), "usable_cpus": usable,
            "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
            "os": f"{platform.system()} {platform.release()}"}


def devices() -> dict:
    """Accelerators as torch detects them now (not a statement about what was lent)."""
    import torch
    cuda = torch.cuda.is_available()
    return {"cuda_available": cuda,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [],
            "torch_cuda_build": torch.version.cuda}


def environment(device_used: str = "cpu") -> dict:
    """Provenance of a result: code version, command, machine, load, devices, library versions."""
    import numba
    import numpy
    import torch
    return {
        "git": git_state(), "command": command_line(), "machine": machine(),
        "devices_detected": devices(), "device_used": device_used,
        "load_average_at_start": _STARTED["load_average"], "started": _STARTED["time"],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "numba_threads": numba.get_num_threads(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "numpy": numpy.__version__,
        "numba": numba.__version__, "torch": torch.__version__,
    }


def check_no_machine_paths(payload, where: str = "") -> None:
    """Raise ValueError if any string in `payload` names a file by this checkout's absolute path."""
    roots = {str(ROOT), str(Path.home())} - {"/"}
    if isinstance(payload, dict):
        for k, v in payload.items():
            check_no_machine_paths(v, f"{where}/{k}")
    elif isinstance(payload, (list, tuple)):
        for i, v in enumerate(payload):
            check_no_machine_paths(v, f"{where}[{i}]")
    elif isinstance(payload, str) and any(r in payload for r in roots):
        raise ValueError(f"results field {where or '/'} names a file by its absolute path on this "
                         f"machine ({payload!r}): use repo_path()")


def write_result(name: str, payload: dict, device_used: str = "cpu",
                 results: Path | None = None) -> Path:
    """Write results/<name> with the provenance in front; refuses machine-specific paths."""
    payload = {"environment": environment(device_used),
               "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    check_no_machine_paths(payload)
    results = RESULTS if results is None else Path(results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
