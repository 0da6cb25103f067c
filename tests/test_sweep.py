"""Sweeps: voltage parsing, aggregation, resume after a kill, config guard, executors, CLI."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import alive
from sramsim import Chip, Geometry
from sramsim.analysis import sweep as S
from sramsim.analysis.executors import Execution
from sramsim.commands.main import main
from sramsim.memory.curves import BerCurve
from sramsim.errors import InputError

N_SAMPLES = 48
ROWS, COLS = 128, 256          # 4 KB chips: the 87 KB CNN image is tiled over them
VOLTAGES = [1.0, 0.9, 0.8]


def _write_idx(directory, images: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with open(directory / "t10k-images-idx3-ubyte", "wb") as f:
        f.write((0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, h, w)))
        f.write(images.astype(np.uint8).tobytes())
    with open(directory / "t10k-labels-idx1-ubyte", "wb") as f:
        f.write((0x0801).to_bytes(4, "big") + n.to_bytes(4, "big"))
        f.write(labels.astype(np.uint8).tobytes())


def min_norm_readout(feats: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The minimum-norm W with feats @ W = target (48 samples, 3136 features: underdetermined),
    in closed form: W = F^T (F F^T)^-1 T in float64, then float32.

    Not torch.linalg.lstsq: its default CPU driver, gelsy, takes a pivot array (JPVT) whose
    nonzero entries pin columns, and torch 2.13 passes it uninitialized (pytorch/pytorch#187411),
    so the solution depended on stale memory: most runs returned a W that does not fit (residual
    up to 49 where the exact fit leaves 1e-4), with 8-bit clean accuracies from 0.29 to 1.0 run
    to run. The closed form runs on one thread (no reduction order varies) and checks its fit;
    it gives the same bytes in every process and under any thread count outside it.
    """
    from sramsim.analysis.executors import pinned_threads
    with pinned_threads(1):
        f = feats.double()
        w = f.T @ torch.linalg.solve(f @ f.T, target.double())
    assert float((f @ w - target.double()).abs().max()) < 1e-6     # an exact fit: F has full row rank
    return w.float()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny IDX test set and a CNN checkpoint whose last layer is fitted to it."""
    from sramsim.nn.models import build, save_checkpoint
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N_SAMPLES)
    # Class-dependent bright square, so a model can be better than chance and faults can hurt.
    images = rng.integers(0, 60, (N_SAMPLES, 28, 28))
    for i, c in enumerate(labels):
        images[i, 2 * c:2 * c + 8, 2 * c:2 * c + 8] = 255
    data = root / "data"
    _write_idx(data, images, labels)
    torch.manual_seed(0)
    model = build("cnn").eval()
    from sramsim.nn.data import load_dataset
    ds = load_dataset(str(data))
    with torch.no_grad():   # least-squares readout on random features: far above chance
        feats = model.features(ds.x).flatten(1)
        target = torch.nn.functional.one_hot(ds.y, 10).float() * 10 - 5
        model.classifier.weight.copy_(min_norm_readout(feats, target).T)
        model.classifier.bias.zero_()
    ckpt = root / "cnn.pt"
    save_checkpoint(ckpt, model, {"arch": "cnn", "in_channels": 1, "num_classes": 10,
                                  "norm": "batch", "bits": 8, "scheme": "symmetric", "clip": None,
                                  "dataset": str(data)})
    return {"root": root, "data": str(data), "ckpt": str(ckpt)}


def _chips(n=2, **kw):
    return S.random_chips(n, "finfet14", ROWS, COLS, seed=3, **kw)


def _points(out):
    with open(os.path.join(out, "points.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- parsing

def test_parse_voltages_range_list_and_errors():
    assert S.parse_voltages("1.0:0.75:-0.025") == [round(1.0 - 0.025 * i, 6) for i in range(11)]
    assert S.parse_voltages("0.8:1.0:0.1") == [1.0, 0.9, 0.8]
    assert S.parse_voltages("0.9, 1.0,0.9,0.85") == [1.0, 0.9, 0.85]
    for bad in ["", "abc", "1:0.5", "1.0:0.75:0.025", "1:0.5:0", "0.9,-1", "nan", "1:0:-1e-9"]:
        with pytest.raises(InputError):
            S.parse_voltages(bad)


# ----------------------------------------------------------------------------- aggregation

def test_summarize_exact_statistics():
    accs = [0.5, 0.7, 0.6, 0.8]                  # chip 0: 0.5, 0.7; chip 1: 0.6, 0.8
    records = {("clean",): {"clean": True, "accuracy": 0.9, "loss": 0.1, "float_accuracy": 0.91}}
    for i, a in enumerate(accs):
        records[(0.8, i // 2, i % 2)] = {"accuracy": a, "loss": 1.0 - a, "ber": 0.01 * (i + 1)}
    records[(0.9, 0, 0)] = {"accuracy": 0.9, "loss": 0.1, "ber": 0.0}
    s = S.summarize(records, [0.9, 0.8, 0.7], n_chips=2, offsets=2)
    p9, p8, p7 = s["points"]
    assert p8["n"] == 2 and p8["n_points"] == 4 and p8["accuracy_mean"] == pytest.approx(0.65)
    sd = np.std([0.6, 0.7], ddof=1)               # over the two chip means
    assert p8["accuracy_std"] == pytest.approx(sd)
    assert p8["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * sd / math.sqrt(2))
    assert (p8["accuracy_min"], p8["accuracy_max"]) == (0.5, 0.8)   # single points
    assert p8["ber"] == pytest.approx(0.025)
    assert p8["saving"] == pytest.approx(1 - 0.64) and p8["energy_per_read"] == pytest.approx(0.64)
    assert p9["n"] == 1 and p9["ci95"] == 0.0 and p9["accuracy_std"] == 0.0
    assert p7["n"] == 0 and p7["accuracy_mean"] is None
    assert s["clean_accuracy"] == 0.9
    assert s["drop_1pt"]["voltage"] == 0.8 and s["drop_1pt"]["saving"] == pytest.approx(0.36)


def test_ci_is_over_chips_not_over_chip_offset_points():
    """Offsets of one chip share its faults: with 3 chips x 4 offsets the interval has 2 degrees of
    freedom (3 chip means), not 11, and is wider than the one over 12 "independent" points."""
    chip_accs = [[0.60, 0.62, 0.61, 0.63], [0.70, 0.71, 0.69, 0.70], [0.50, 0.52, 0.51, 0.49]]
    records = {(0.8, c, k): {"accuracy": a, "loss": 1.0 - a, "ber": 0.01}
               for c, accs in enumerate(chip_accs) for k, a in enumerate(accs)}
    (p,) = S.summarize(records, [0.8], n_chips=3, offsets=4)["points"]
    means = [np.mean(a) for a in chip_accs]
    assert p["n"] == 3 and p["n_points"] == 12
    assert p["accuracy_mean"] == pytest.approx(np.mean(means))
    assert p["accuracy_std"] == pytest.approx(np.std(means, ddof=1))
    assert p["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * np.std(means, ddof=1) / math.sqrt(3))
    flat = np.concatenate(chip_accs)
    naive = stats.t.ppf(0.975, 11) * flat.std(ddof=1) / math.sqrt(12)
    assert p["ci95"] > 3 * naive
    # a chip with only some offsets finished counts once, with the mean of what it has
    del records[(0.8, 2, 2)], records[(0.8, 2, 3)]
    (q,) = S.summarize(records, [0.8], n_chips=3, offsets=4)["points"]
    assert q["n"] == 3 and q["n_points"] == 10
    assert q["accuracy_mean"] == pytest.approx(np.mean(means[:2] + [0.51]))


# ----------------------------------------------------------------------------- sweeps

def test_fixture_readout_is_the_same_bytes_whatever_memory_and_threads_held(setup):
    """The readout the fixture fitted, fitted again after dirtying freed memory (what gelsy's
    uninitialized pivot array picked up) and under 1, 2 and 3 threads outside it: same bytes."""
    from sramsim.analysis.executors import pinned_threads
    from sramsim.nn.data import load_dataset
    from sramsim.nn.models import load_checkpoint
    model, _ = load_checkpoint(setup["ckpt"])
    ds = load_dataset(setup["data"])
    with torch.no_grad():
        feats = model.features(ds.x).flatten(1)
    target = torch.nn.functional.one_hot(ds.y, 10).float() * 10 - 5
    for threads in (1, 2, 3):
        del_me = torch.randint(-2 ** 31, 2 ** 31 - 1, (1 << 16,), dtype=torch.int32)
        del del_me
        with pinned_threads(threads):
            w = min_norm_readout(feats, target)
        assert torch.equal(w.T, model.classifier.weight), threads


def test_sweep_grid_statistics_and_files(setup, tmp_path):
    out = tmp_path / "out"
    s = S.run_sweep(setup["ckpt"], setup["data"], _chips(2), VOLTAGES, out, settings=S.SweepSettings(offsets=2), execution=Execution(progress=False))
    pts = _points(out)
    assert len(pts) == 1 + 3 * 2 * 2
    assert s["computed_points"] == 12 and s["reused_points"] == 0
    by_v = {p["voltage"]: p for p in s["points"]}
    assert [p["voltage"] for p in s["points"]] == VOLTAGES
    assert all(p["n"] == 2 and p["n_points"] == 4 for p in s["points"])
    # finfet14 has no errors at nominal voltage: every placement reads the clean weights
    assert by_v[1.0]["ber"] == 0.0
    assert by_v[1.0]["accuracy_mean"] == s["clean_accuracy"] and by_v[1.0]["accuracy_std"] == 0.0
    assert s["clean_accuracy"] > 0.5           # the fitted readout works
    # BER follows the curve (binomial bounds: 4 KB chips are small) and grows as V drops
    assert by_v[0.9]["ber"] < by_v[0.8]["ber"]
    nbits = ROWS * COLS
    for v in (0.9, 0.8):
        p = BerCurve.builtin("finfet14").ber(v)
        assert abs(by_v[v]["ber"] - p) < 6 * math.sqrt(p / nbits / 2) + 1e-12
    assert by_v[0.8]["energy_per_read"] == pytest.approx(0.64)
    # the placements differ: offset k sits at k * capacity_words // K
    assert {p["offset"] for p in pts if not p.get("clean")} == {0, ROWS * COLS // 8 // 2}
    # at V=1.0 no fault reaches the image: those points reuse the fault-free evaluation
    assert all(p["unchanged"] and p["t_eval"] is None for p in pts if p.get("voltage") == 1.0)
    assert not any(p["unchanged"] for p in pts if p.get("voltage") == 0.8)
    # one point recomputed by hand through the public API gives the stored numbers
    from sramsim import QuantizedModel
    from sramsim.nn.data import load_dataset
    from sramsim.nn.evaluation import evaluate
    from sramsim.nn.models import load_checkpoint
    model, _ = load_checkpoint(setup["ckpt"])
    qm = QuantizedModel(model, 8, "symmetric")
    chip = _chips(2)[1].build()
    rec = next(p for p in pts if p.get("voltage") == 0.8 and p["chip_index"] == 1
               and p["offset_index"] == 1)
    from sramsim.analysis.executors import pinned_threads
    with pinned_threads(1):                        # the sweep's default thread count
        r = evaluate(model, load_dataset(setup["data"]), qm.perturbed(chip, 0.8, rec["offset"]))
    assert (r["accuracy"], r["loss"]) == (rec["accuracy"], rec["loss"])
    assert rec["faults"] == chip.count(0.8) and rec["ber"] == chip.ber(0.8)
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("voltage,ber,accuracy_mean") and len(csv) == 4
    assert json.loads((out / "summary.json").read_text())["points"][2]["n_points"] == 4
    assert (out / "summary.png").stat().st_size > 1000


def test_sweep_resumes_without_recomputing(setup, tmp_path):
    out = tmp_path / "out"
    chips = _chips(2)
    full = S.run_sweep(setup["ckpt"], setup["data"], chips, VOLTAGES, out, execution=Execution(progress=False))
    lines = (out / "points.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 7
    # A killed run: 4 points written, the 5th torn mid-line.
    (out / "points.jsonl").write_text("".join(lines[:4]) + lines[4][:20])
    again = S.run_sweep(setup["ckpt"], setup["data"], chips, VOLTAGES, out, execution=Execution(progress=False))
    assert again["computed_points"] == 3 and again["reused_points"] == 3
    pts = _points(out)
    assert len(pts) == 7
    assert (out / "points.jsonl").read_text().splitlines(keepends=True)[:4] == lines[:4]
    # recomputed points are identical to the first run's (deterministic)
    strip = lambda ps: sorted((p.get("voltage", 0), p.get("chip_index", -1), p["accuracy"], p["loss"])
                              for p in ps)
    assert strip(pts) == strip([json.loads(l) for l in lines])
    assert [p["accuracy_mean"] for p in again["points"]] == [p["accuracy_mean"] for p in full["points"]]
    # Nothing left: a third run computes nothing; adding a voltage computes only that one.
    assert S.run_sweep(setup["ckpt"], setup["data"], chips, VOLTAGES, out, execution=Execution(progress=False))["computed_points"] == 0
    more = S.run_sweep(setup["ckpt"], setup["data"], chips, VOLTAGES + [0.85], out, execution=Execution(progress=False))
    assert more["computed_points"] == 2 and [p["n"] for p in more["points"]] == [2, 2, 2, 2]


def test_sweep_refuses_a_different_configuration(setup, tmp_path):
    out = tmp_path / "out"
    S.run_sweep(setup["ckpt"], setup["data"], _chips(1), [1.0], out, execution=Execution(progress=False))
    with pytest.raises(InputError, match="offsets"):
        S.run_sweep(setup["ckpt"], setup["data"], _chips(1), [1.0], out, settings=S.SweepSettings(offsets=2), execution=Execution(progress=False))
    with pytest.raises(InputError, match="chips"):
        S.run_sweep(setup["ckpt"], setup["data"], _chips(2), [1.0], out, execution=Execution(progress=False))
    with pytest.raises(InputError, match="quantization"):
        S.run_sweep(setup["ckpt"], setup["data"], _chips(1), [1.0], out, settings=S.SweepSettings(bits=4), execution=Execution(progress=False))
    with pytest.raises(InputError, match="data"):
        S.run_sweep(setup["ckpt"], setup["data"], _chips(1), [1.0], out, settings=S.SweepSettings(limit=10), execution=Execution(progress=False))
    assert len(_points(out)) == 2                    # nothing was mixed in


def test_voltage_below_floor_fails_before_any_work(setup, tmp_path):
    with pytest.raises(InputError, match="below chip"):
        S.run_sweep(setup["ckpt"], setup["data"], _chips(1), [0.9, 0.7], tmp_path / "a", execution=Execution(progress=False))
    assert not (tmp_path / "a").exists()
    chip = Chip.random(Geometry(ROWS, COLS), BerCurve.builtin("finfet14"), 0.85, seed=1)
    chip.save(tmp_path / "c.h5")
    with pytest.raises(InputError, match="0.85"):
        S.run_sweep(setup["ckpt"], setup["data"], [str(tmp_path / "c.h5")], [0.9, 0.8], tmp_path / "b", execution=Execution(progress=False))
    assert not (tmp_path / "b").exists()


def test_voltage_above_nominal_is_refused_before_any_work(setup, tmp_path):
    with pytest.raises(InputError, match="above the chips' nominal voltage 1"):
        S.run_sweep(setup["ckpt"], setup["data"], _chips(1), [1.5, 1.0], tmp_path / "a", execution=Execution(progress=False))
    assert not (tmp_path / "a").exists()


class _Overflow(torch.nn.Module):
    """Finite weights, infinite logits: every loss is NaN."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("inf")


def test_store_never_writes_invalid_json(tmp_path):
    from sramsim.analysis.store import ResultStore
    store = ResultStore(tmp_path / "o", {"x": 1})
    good = {"voltage": 0.9, "chip_index": 0, "offset_index": 0, "accuracy": 0.5, "loss": 1.0}
    bad = {"voltage": 0.8, "chip_index": 1, "offset_index": 2, "accuracy": 0.1, "loss": float("nan")}
    store.append([good])
    with pytest.raises(InputError, match=r"voltage 0.8, chip 1, offset 2: loss=nan is not finite"):
        store.append([dict(good, voltage=0.85), bad])       # nothing of the batch is written
    store.close()
    lines = (tmp_path / "o" / "points.jsonl").read_text().splitlines()
    assert [json.loads(l, parse_constant=lambda c: pytest.fail(c)) for l in lines] == [good]


def test_sweep_with_non_finite_loss_names_the_point(setup, tmp_path):
    from sramsim.nn.data import load_dataset
    with pytest.raises(InputError, match="fault-free point: .*loss=nan is not finite"):
        S.run_sweep(_Overflow(), load_dataset(setup["data"]), _chips(1), [1.0, 0.9], tmp_path / "o", execution=Execution(progress=False))
    points = tmp_path / "o" / "points.jsonl"
    assert not points.exists() or points.read_text() == ""


def test_profiles_sweep_matches_the_same_random_chips(setup, tmp_path):
    """A chip saved as a profile gives the same points as the recipe it was drawn from."""
    spec = _chips(1)[0]
    spec.build().save(tmp_path / "chip.h5")
    a = S.run_sweep(setup["ckpt"], setup["data"], [spec], VOLTAGES, tmp_path / "a", execution=Execution(progress=False))
    b = S.run_sweep(setup["ckpt"], setup["data"], S.profile_chips([tmp_path / "chip.h5"]), VOLTAGES, tmp_path / "b", execution=Execution(progress=False))
    assert [p["accuracy_mean"] for p in a["points"]] == [p["accuracy_mean"] for p in b["points"]]
    assert [p["ber"] for p in a["points"]] == [p["ber"] for p in b["points"]]


def test_pool_workers_give_the_same_points(setup, tmp_path):
    chips = _chips(2)
    one = S.run_sweep(setup["ckpt"], setup["data"], chips, VOLTAGES, tmp_path / "one", execution=Execution(progress=False))
    two = S.run_sweep(setup["ckpt"], setup["data"], chips, VOLTAGES, tmp_path / "two", execution=Execution(workers=2, progress=False))
    key = lambda p: (p.get("voltage", 0), p.get("chip_index", -1), p.get("offset_index", -1))
    pick = lambda ps: sorted((key(p), p["accuracy"], p["loss"]) for p in ps)
    assert pick(_points(tmp_path / "one")) == pick(_points(tmp_path / "two"))
    assert [p["accuracy_mean"] for p in one["points"]] == [p["accuracy_mean"] for p in two["points"]]


def _isolated_network() -> list[str]:
    """A command prefix that runs a program in a network namespace with only loopback, up."""
    import shutil
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip to keep the local Ray instance off the network")
    prefix = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    if subprocess.run(prefix + ["true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rn is not permitted here (no user/network namespaces)")
    return prefix


def test_ray_threads_above_workers_schedules_and_matches(setup, tmp_path):
    """--workers 1 --threads 2: a local Ray sized for workers x threads CPUs places the actor
    (it asked for 2 CPUs of a 1-CPU Ray before, and hung); the points equal in-process ones.

    The Ray instance runs in a network namespace of its own (loopback only), within a time bound.
    """
    pytest.importorskip("ray")
    argv = _isolated_network() + [
        sys.executable, "-m", "sramsim.commands.main", "sweep", "--model", setup["ckpt"],
        "--data", setup["data"], "--chips", "2", "--rows", str(ROWS), "--cols", str(COLS),
        "--voltages", "1.0,0.8", "--out", str(tmp_path / "ray"), "--executor", "ray",
        "--workers", "1", "--threads", "2", "--no-progress", "--json"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ray_ = json.loads(res.stdout)
    assert ray_["computed_points"] == 4 and (ray_["workers"], ray_["threads"]) == (1, 2)
    one = S.run_sweep(setup["ckpt"], setup["data"], S.random_chips(2, "finfet14", ROWS, COLS), [1.0, 0.8], tmp_path / "one", execution=Execution(threads=2, progress=False))
    key = lambda p: (p.get("voltage", 0), p.get("chip_index", -1), p.get("offset_index", -1))
    pick = lambda ps: sorted((key(p), p["accuracy"], p["loss"]) for p in ps)
    assert pick(_points(tmp_path / "ray")) == pick(_points(tmp_path / "one"))


def test_ray_cluster_without_room_is_refused():
    class FakeRay:                        # what ray.nodes() reports: two nodes of 2 and 1 CPUs
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 1.0}},
                    {"Alive": False, "Resources": {"CPU": 64.0}}]
    from sramsim.analysis.executors import _check_ray_room
    _check_ray_room(FakeRay, actors=3, threads=1)
    _check_ray_room(FakeRay, actors=1, threads=2)
    with pytest.raises(InputError, match="room for 1 such worker"):
        _check_ray_room(FakeRay, actors=2, threads=2)
    with pytest.raises(InputError, match="room for 0"):
        _check_ray_room(FakeRay, actors=1, threads=4)


def test_pinned_threads_sets_and_restores_torch_and_numba():
    import numba
    from sramsim.analysis.executors import get_threads, pinned_threads, set_threads
    before = get_threads()
    with pinned_threads(1):
        assert get_threads() == (1, 1)
    assert get_threads() == before
    previous = set_threads((2, 1))
    try:
        assert previous == before and get_threads() == (2, 1)
    finally:
        set_threads(previous)
    assert get_threads() == before and numba.get_num_threads() == before[1]


def _children(pid: int) -> dict[int, str]:
    """Live (non-zombie) child processes of `pid`: {pid: command line}, read from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            out[int(entry)] = cmd
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_exit_when_the_sweep_is_killed(setup, tmp_path):
    """kill -9 of `sramsim sweep --workers 2`: both workers and the resource tracker end."""
    out = tmp_path / "o"
    argv = [sys.executable, "-m", "sramsim.commands.main", "sweep", "--model", setup["ckpt"], "--data",
            setup["data"], "--chips", "4", "--rows", str(ROWS), "--cols", str(COLS),
            "--voltages", "1.0:0.76:-0.005", "--out", str(out), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids = {}
    try:
        deadline = time.monotonic() + 120
        points = out / "points.jsonl"
        while time.monotonic() < deadline:       # both workers set up and computing
            kids = _children(proc.pid)
            if (sum("spawn_main" in c for c in kids.values()) == 2 and points.exists()
                    and points.read_text().count("\n") >= 3):
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail("the sweep's workers did not start within 120 s")
        assert any("resource_tracker" in c for c in kids.values()), kids
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in kids):
            time.sleep(0.1)
        left = {pid: cmd for pid, cmd in kids.items() if alive(pid)}
        assert left == {}, f"still running 10 s after the sweep was killed: {left}"
    finally:                                     # leave nothing behind, whatever failed
        proc.kill()
        proc.wait()
        for pid in kids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- CLI

def _cli(capsys, *argv):
    code = main(["sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_and_table(setup, tmp_path, capsys):
    base = ["--model", setup["ckpt"], "--data", setup["data"], "--chips", "1", "--rows", str(ROWS),
            "--cols", str(COLS), "--voltages", "1.0:0.8:-0.1", "--out", str(tmp_path / "o"),
            "--no-progress"]
    code, out, _ = _cli(capsys, *base, "--json")
    assert code == 0
    s = json.loads(out)
    assert [p["voltage"] for p in s["points"]] == [1.0, 0.9, 0.8]
    assert {"voltage", "ber", "accuracy_mean", "accuracy_std", "ci95", "n", "energy_per_read",
            "saving"} <= set(s["points"][0])
    code, out, _ = _cli(capsys, *base, "--limit", "1000")    # limit >= N: same data, resumes
    assert code == 0 and "voltage" in out.splitlines()[0] and "fault-free" in out


@pytest.mark.parametrize("extra, needle", [
    (["--voltages", "1.0:0.7:-0.1"], "below chip"),
    (["--voltages", "1.5"], "above the chips' nominal voltage"),
    (["--voltages", "x"], "--voltages"),
    (["--voltages", "1.0", "--chips", "0"], "--chips"),
    (["--voltages", "1.0", "--workers", "0"], "--workers"),
    (["--voltages", "1.0", "--offsets", "two"], "--offsets"),
    (["--voltages", "1.0", "--data", "/nonexistent/data"], "/nonexistent/data"),
    (["--voltages", "1.0", "--model", "/nonexistent/m.pt"], "m.pt"),
])
def test_cli_bad_input_one_line_exit_2(setup, tmp_path, capsys, extra, needle):
    argv = ["--model", setup["ckpt"], "--data", setup["data"], "--chips", "1",
            "--out", str(tmp_path / "o"), "--no-progress"]
    # later flags win in argparse, so `extra` overrides the defaults above
    code, out, err = _cli(capsys, *argv, *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and needle in err


# Runs `sramsim sweep` with ResultStore.append patched to SIGKILL the process after exactly
# K records (the clean point first), leaving a torn half line behind: a real kill -9 at a known point.
KILL_AFTER = r"""
import os, signal, sys
from sramsim.analysis.store import ResultStore
from sramsim.commands.main import main
k, written, append = int(sys.argv[1]), [0], ResultStore.append
def append_then_die(self, records):
    for rec in records:
        if written[0] == k:
            with open(self.points_path, "a") as f:
                f.write('{"voltage": 0.8, "chip_')
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, [rec])
        written[0] += 1
ResultStore.append = append_then_die
sys.exit(main(sys.argv[2:]))
"""


def test_killed_cli_sweep_resumes(setup, tmp_path):
    """SIGKILL `sramsim sweep` after exactly 6 of its 16 records, re-run it: exactly the 10 missing
    points are computed, and every point equals an uninterrupted run's."""
    out = tmp_path / "o"
    args = ["sweep", "--model", setup["ckpt"], "--data", setup["data"], "--chips", "3", "--rows",
            str(ROWS), "--cols", str(COLS), "--voltages", "1.0:0.8:-0.05", "--out", str(out),
            "--no-progress", "--json"]
    total, k = 3 * 5, 6                              # k records: the clean point + 5 points
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER, str(k), *args], capture_output=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "points.jsonl").read_text().endswith("\n")     # the torn last line
    res = subprocess.run([sys.executable, "-m", "sramsim.commands.main", *args], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["computed_points"] == total - (k - 1) and s["reused_points"] == k - 1
    assert len(_points(out)) == total + 1
    assert all(p["n"] == 3 for p in s["points"])
    whole = S.run_sweep(setup["ckpt"], setup["data"], S.random_chips(3, "finfet14", ROWS, COLS), S.parse_voltages("1.0:0.8:-0.05"), tmp_path / "whole", execution=Execution(progress=False))
    key = lambda p: (p.get("voltage", 0), p.get("chip_index", -1), p.get("offset_index", -1))
    pick = lambda ps: sorted((key(p), p["accuracy"], p["loss"]) for p in ps)
    assert pick(_points(out)) == pick(_points(tmp_path / "whole"))
    assert [p["accuracy_mean"] for p in s["points"]] == [p["accuracy_mean"] for p in whole["points"]]
