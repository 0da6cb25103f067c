"""Same seed -> bit-identical fault maps, faulty images and faulty weights with 1, 2 and 3 threads.

Every parallel numba kernel (and the seeded draws around them) runs in a fresh process whose
numba pool holds exactly n threads (NUMBA_NUM_THREADS=n, so 3 threads are real even on a 2-core
machine, where numba's pool defaults to 2 and `numba.set_num_threads(3)` would be refused), with
torch at n threads too. Each part prints its own hash, so a failure names what differs. The fast
in-process 1-vs-2 checks (test_inplace, test_ecc, test_placement, test_dram_errors) look at the
same kernels in more detail.
"""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, json, sys
import numba, numpy as np, torch
from torch import nn

n = int(sys.argv[1])
torch.set_num_threads(n)
numba.set_num_threads(n)
from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.inject import ecc, inplace, weight_kernels as kernels
from sramsim.inject.mapping import apply_faults
from sramsim.inject.dram_mapping import apply_placed, place
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_errors import dram_chip

out = {}
def digest(name, *arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    out[name] = h.hexdigest()

# SRAM chip map, faulty images through the parallel streaming kernels (3 MB > 1 MiB), random errors
curve = BerCurve.builtin("finfet14")
chip = Chip.random(Geometry(2048, 512), curve, 0.75, seed=5, kinds={"flip": 2, "stuck0": 1, "stuck1": 1})
digest("chip map", chip.address, chip.vfail, chip.kind)
image = np.random.default_rng(0).integers(0, 256, 3_000_000).astype(np.uint8)
digest("chip images", *[apply_faults(image, chip, v, offset=12345) for v in (0.9, 0.8, 0.75)])
rbe = RandomBitErrors(0.01, kinds={"flip": 1, "stuck1": 1}, seed=3)
digest("random-error images", *[apply_faults(image, rbe) for _ in range(2)])

# DRAM error models 0-3, and a DRAM placement applied to a 1.5 MB image (parallel path)
g = DramGeometry(banks=2, rows=256, columns=64, device_width=8, subarray_rows=64)
chips = [dram_chip(g, v_floor=0.87, seed=21, error_model=m) for m in range(4)]
digest("dram maps", *[a for c in chips for a in (c.address, c.vfail, c.kind)])
big = DramGeometry(banks=2, rows=256, columns=1024, device_width=32, subarray_rows=64)
dchip = dram_chip(big, v_floor=0.95, seed=10, error_model=1)         # 22,635 faults
dimage = np.random.default_rng(11).integers(0, 256, 1_500_000, dtype=np.uint8)
digest("dram placed image", apply_placed(dimage, dchip, 0.95, place(dimage.size, big, "drmap", start=7)))

# ECC decoding of a 1 MiB image (parallel decoder)
data = np.random.default_rng(4).integers(0, 256, 1 << 20, dtype=np.uint8)
mem = ecc.EccMemory(data, "secded72")
read, stats = mem.read(RandomBitErrors(0.003, seed=9).draw(mem.n_bits), policy="zero")
digest("ecc read", read, np.array([stats.faulty_words, stats.corrected, stats.detected,
                                   stats.miscorrected]))

# in-place faulty weights: 3 faulty bytes per work item, so many items run in parallel
kernels.PIECE, kernels.PARALLEL_MIN_FAULTS = 3, 6
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(35, 7), nn.Linear(7, 1))
weights = []
for bits, scheme in ((8, "symmetric"), (8, "stutz-symmetric"), (4, "rquant"), (2, "stutz-rquant")):
    qm = QuantizedModel(model, bits=bits, scheme=scheme, include_bias=True)
    small = Chip.random(Geometry(8, 32), curve, 0.75, seed=1, kinds={"flip": 2, "stuck0": 1, "stuck1": 1})
    for source, v, offset in ((small, 0.75, 3), (small, 0.8, -77), (RandomBitErrors(0.05, seed=4), None, 0)):
        with inplace.faults_applied(qm, model, source, v, offset) as applied:
            weights += [p.detach().clone().numpy() for p in model.parameters()]
            weights.append(np.array([applied.changed_bytes, applied.changed_weights]))
digest("in-place weights", *weights)
print(json.dumps({"threads": [torch.get_num_threads(), numba.get_num_threads(),
                              numba.config.NUMBA_NUM_THREADS], "hashes": out}))
"""


def run_with_threads(n: int) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n))
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(n)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def by_threads() -> dict:
    return {n: run_with_threads(n) for n in (1, 2, 3)}


def test_each_run_had_the_threads_it_asked_for(by_threads):
    for n, r in by_threads.items():
        assert r["threads"] == [n, n, n]


@pytest.mark.parametrize("part", ["chip map", "chip images", "random-error images", "dram maps",
                                  "dram placed image", "ecc read", "in-place weights"])
def test_identical_with_one_two_and_three_threads(by_threads, part):
    assert by_threads[1]["hashes"][part] == by_threads[2]["hashes"][part] \
        == by_threads[3]["hashes"][part]
