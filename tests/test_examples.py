"""Every script in examples/ runs, at a small size, as a user would run it (a fresh folder, the
checkout on the path), and prints what it promises."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sramsim.nn.data import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SMALL = ["--train-limit", "200", "--limit", "200"]
# script -> (arguments at small size, a line fragment its output must contain)
RUNS = {
    "sweep_shipped_chips.py": (SMALL, "lowest voltage within 1 point"),
    "energy_estimate.py": (["--count", "systolic"], "reads per inference (systolic)"),
    "measured_chip.py": (SMALL, "measured-chip: 19011 faulty bits, 12 non-nested"),
    "protect_with_layout.py": (SMALL, "secded72           0.800 V"),
    "evaluate_under_faults.py": (SMALL + ["--maps", "2"], "your model's weights are untouched"),
}
NEEDS_DATA = {name for name, (args, _) in RUNS.items() if "--limit" in args}


def test_every_example_is_run():
    scripts = [p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")]
    assert sorted(scripts) == sorted(RUNS)      # _common.py: what they share, run with them


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A folder for the CNN the examples share: the first one that needs it trains it."""
    return tmp_path_factory.mktemp("examples-model")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs(name, tmp_path, shared):
    if name in NEEDS_DATA and not os.environ.get("SRAMSIM_DATA") and \
            not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    args, expect = RUNS[name]
    if "--train-limit" in args:
        args = [*args, "--model", str(shared / "cnn.pt")]
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert expect in done.stdout, done.stdout[-4000:]
