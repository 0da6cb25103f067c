"""The wheel is the product a pip user gets: it carries the shipped profiles, LICENSE and type
marker, declares every runtime dependency, and in a fresh virtual environment (no system site
packages, dependencies at the versions requirements.txt pins) runs the main job from an empty
directory: list the shipped chips, sweep one, train a spiking model (snntorch must come along)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sramsim import __version__
from sramsim.nn.data import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info",
                                       "__pycache__", ".hypothesis", "tests", "benchmarks",
                                       "demo-out")



def _env() -> dict:
    """The environment without this checkout on the path (the installed wheel must be used)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(cmd: list, cwd: Path, timeout: int = 600) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source tree (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src") / "sramsim"
    shutil.copytree(ROOT, src, ignore=SOURCE_IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src], cwd=out)
    wheels = sorted(out.glob("sramsim-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_profiles_license_and_types(wheel):
    assert wheel.name == f"sramsim-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    profiles = sorted(n for n in names if n.startswith("sramsim/data/profiles/"))
    assert profiles == ["sramsim/data/profiles/README.md"] + [
        f"sramsim/data/profiles/finfet14-8192x128-s{s}.h5" for s in range(5)]
    assert {"sramsim/py.typed", "fusion/py.typed",
            f"sramsim-{__version__}.dist-info/licenses/LICENSE"} <= names
    assert any(n.startswith("sramsim/memory/parts/") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(f"sramsim-{__version__}.dist-info/METADATA").decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    for dep in ("torch", "numba", "h5py", "snntorch", "matplotlib", "tqdm"):
        assert any(r.startswith(dep) and "extra ==" not in r for r in requires), dep
    for extra, dep in (("pt2", "torchao"), ("ray", "ray"), ("scalesim", "scalesim")):
        assert any(r.startswith(dep) and f'extra == "{extra}"' in r for r in requires), extra
    assert "License-File: LICENSE" in meta and "make test" not in meta


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fresh_venv_runs_the_main_job(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([py, "-m", "pip", "install", "-q", wheel, "-c", ROOT / "requirements.txt"], cwd=tmp_path)
    # the venv's own site-packages only: sramsim comes from the wheel, not this checkout
    where = _run([py, "-c", "import sramsim, snntorch; print(sramsim.__file__)"], cwd=tmp_path)
    assert where.strip().startswith(str(venv))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run([bin_dir / "sramsim", "--version"], empty).strip() == f"sramsim {__version__}"
    assert _run([bin_dir / "fusion", "--version"], empty).strip() == f"fusion {__version__}"
    listed = json.loads(_run([bin_dir / "sramsim", "profile", "list", "--json"], empty))
    assert len(listed["profiles"]) == 5

    _run([bin_dir / "sramsim", "train-base", "--model", "cnn", "--epochs", "1", "--limit", "200",
          "--out", "cnn.pt", "--no-progress"], empty)
    sweep = json.loads(_run([bin_dir / "sramsim", "sweep", "--model", "cnn.pt", "--profiles",
                             "shipped:finfet14-8192x128-s0", "--voltages", "0.9,0.8", "--limit",
                             "100", "--out", "sweep", "--no-progress", "--json"], empty))
    assert [p["voltage"] for p in sweep["points"]] == [0.9, 0.8]
    assert (empty / "sweep" / "summary.png").is_file()

    snn = json.loads(_run([bin_dir / "sramsim", "train-base", "--model", "snn-fc10", "--epochs",
                           "1", "--limit", "64", "--out", "snn.pt", "--no-progress", "--json"],
                          empty))
    assert snn["arch"] == "snn-fc10" and 0.0 <= snn["test_accuracy"] <= 1.0
