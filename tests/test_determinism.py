"""Same seed -> bit-identical fault maps and faulty images, whatever the thread count."""
import os
import subprocess
import sys

SCRIPT = r"""
import hashlib, numpy as np, numba
from sramsim import BerCurve, Chip, Geometry, RandomBitErrors
from sramsim.inject.mapping import apply_faults
h = hashlib.sha256()
curve = BerCurve.builtin("finfet14")
chip = Chip.random(Geometry(2048, 512), curve, 0.75, seed=5, kinds={"flip": 2, "stuck0": 1, "stuck1": 1})
for a in (chip.address, chip.vfail, chip.kind):
    h.update(a.tobytes())
image = np.random.default_rng(0).integers(0, 256, 3_000_000).astype(np.uint8)
for v in (0.9, 0.8, 0.75):
    h.update(apply_faults(image, chip, v, offset=12345).tobytes())
rbe = RandomBitErrors(0.01, kinds={"flip": 1, "stuck1": 1}, seed=3)
for _ in range(2):
    h.update(apply_faults(image, rbe).tobytes())
print(numba.get_num_threads(), h.hexdigest())
"""


def run_with_threads(n: int) -> tuple[str, str]:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(n))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], out[1]


def test_identical_across_thread_counts():
    (t1, h1), (t2, h2) = run_with_threads(1), run_with_threads(2)
    assert (t1, t2) == ("1", "2")
    assert h1 == h2
