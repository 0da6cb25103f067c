"""kill -9 and resume (issue 21, item 11): `sweep --workers 2`, `train-base`, `fusion train`,
`dram tolerance` and `sparkxd`, each SIGKILLed right after a known write, then re-run on the same
output: the result equals an uninterrupted run's, nothing finished is lost, and no process of the
killed run is left behind. Plus the output-folder lock, a full disk during a sweep and
`train-base --out` over a checkpoint of other settings."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import alive
from sramsim.commands.main import main
from sramsim.nn import models

ROOT = Path(__file__).resolve().parents[1]

# Runs a console command with `MODULE.ATTR` wrapped so that the process SIGKILLs itself right
# after the K-th call returns (a kill -9 at a known point), first writing the pids of its child
# processes to $KILL_CHILDREN so the test can check that none outlives it.
KILL_AFTER = r"""
import importlib, os, signal, sys
module, attr, k, prog = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original, calls = getattr(owner, name), [0]
def children():
    me, kids = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:
            kids.append(pid)
    return kids
def wrapped(*args, **kwargs):
    result = original(*args, **kwargs)
    calls[0] += 1
    if calls[0] == k:
        with open(os.environ["KILL_CHILDREN"], "w") as f:
            f.write(" ".join(children()))
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, name, wrapped)
main = importlib.import_module("fusion.cli" if prog == "fusion" else "sramsim.commands.main").main
sys.exit(main(sys.argv[5:]))
"""


def kill_after(tmp_path, target: str, k: int, argv: list[str], prog: str = "sramsim") -> None:
    """Run `argv` with `target` ("module:Attr.attr") SIGKILLing the process after its k-th call;
    then check that every child of the killed run exits within 10 s."""
    module, attr = target.split(":")
    record = tmp_path / "children.txt"
    run = subprocess.run([sys.executable, "-c", KILL_AFTER, module, attr, str(k), prog, *argv],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "KILL_CHILDREN": str(record)})
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    kids = [int(p) for p in record.read_text().split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(alive, kids)):
        time.sleep(0.1)
    left = [p for p in kids if alive(p)]
    for pid in left:                                # leave nothing behind, then fail
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"children of the killed run still running: {left}"


def cli(argv: list[str], prog: str = "sramsim") -> subprocess.CompletedProcess:
    module = "fusion.cli" if prog == "fusion" else "sramsim.commands.main"
    run = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def world(digits_world):
    """A 28x28 ten-class data folder whose classes are learnable, and an untrained CNN."""
    return digits_world


def _points(folder: Path) -> list:
    """The folder's points without their timings (t_faults, t_eval, seconds), sorted."""
    lines = (folder / "points.jsonl").read_text().splitlines()
    return sorted(json.dumps({k: v for k, v in json.loads(line).items()
                              if not k.startswith("t_") and k != "seconds"}, sort_keys=True)
                  for line in lines)


# --- kill -9 and resume ------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sweep_with_two_workers_killed_resumes_to_the_same_points(world, tmp_path):
    argv = ["sweep", "--model", world["ckpt"], "--data", world["data"], "--chips", "3", "--rows",
            "64", "--cols", "128", "--voltages", "1.0:0.8:-0.05", "--out", str(tmp_path / "o"),
            "--workers", "2", "--no-progress", "--json"]
    kill_after(tmp_path, "sramsim.analysis.store:ResultStore.append", 6, argv)
    kept = (tmp_path / "o" / "points.jsonl").read_text().splitlines()
    assert len(kept) == 6
    summary = json.loads(cli(argv).stdout)
    assert summary["reused_points"] == 5 and summary["computed_points"] == 3 * 5 - 5
    whole = [*argv[:argv.index("--out") + 1], str(tmp_path / "whole"), "--workers", "1",
             "--no-progress", "--json"]
    cli(whole)
    assert _points(tmp_path / "o") == _points(tmp_path / "whole")
    assert kept == (tmp_path / "o" / "points.jsonl").read_text().splitlines()[:6]


def test_train_base_killed_after_an_epoch_resumes_to_the_same_weights(world, tmp_path):
    base = ["train-base", "--data", world["data"], "--epochs", "3", "--batch-size", "32",
            "--no-progress", "--json"]
    out = tmp_path / "m.pt"
    kill_after(tmp_path, "sramsim.nn.training:_save_state", 1, [*base, "--out", str(out)])
    assert not out.exists() and Path(f"{out}.partial").exists()
    report = json.loads(cli([*base, "--out", str(out)]).stdout)
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    cli([*base, "--out", str(tmp_path / "whole.pt")])
    a, _ = models.load_checkpoint(out)
    b, _ = models.load_checkpoint(tmp_path / "whole.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_fusion_train_killed_after_an_epoch_resumes_to_the_same_generator(world, tmp_path):
    from fusion.store import load_generator
    base = ["train", "--base", world["ckpt"], "--data", world["data"], "--ber", "0.02",
            "--generator", "ConvS", "--width", "0.25", "--n-perturbed", "1", "--batch-size", "40",
            "--epochs", "3", "--limit", "80", "--no-progress"]
    out = tmp_path / "g"
    kill_after(tmp_path, "fusion.eopm:EopmTrainer.save_checkpoint", 1,
               [*base, "--out", str(out)], prog="fusion")
    cli([*base, "--out", str(out)], prog="fusion")
    cli([*base, "--out", str(tmp_path / "whole")], prog="fusion")
    a, meta_a = load_generator(out / "generator.pt")
    b, meta_b = load_generator(tmp_path / "whole" / "generator.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_dram_tolerance_killed_resumes_to_the_same_result(world, tmp_path):
    base = ["dram", "tolerance", "--model", world["ckpt"], "--data", world["data"], "--limit",
            "40", "--maps", "2", "--ber-range", "1e-4,1e-2", "--bisect", "1", "--no-progress",
            "--json"]
    out = tmp_path / "t"
    kill_after(tmp_path, "sramsim.analysis.store:ResultStore.append", 3, [*base, "--out", str(out)])
    kept = (out / "points.jsonl").read_text().splitlines()
    resumed = json.loads(cli([*base, "--out", str(out)]).stdout)
    whole = json.loads(cli([*base, "--out", str(tmp_path / "whole")]).stdout)
    assert resumed["points"] == whole["points"]
    assert resumed["tolerable_ber"] == whole["tolerable_ber"]
    assert (out / "points.jsonl").read_text().splitlines()[:len(kept)] == kept


def test_sparkxd_killed_resumes_to_the_same_results(world, tmp_path):
    base = ["sparkxd", "--model", "cnn", "--data", world["data"], "--limit", "120", "--epochs",
            "1", "--fat-epochs", "1", "--maps", "1", "--ber-range", "1e-4,1e-2", "--bisect", "1",
            "--dram-rows", "1024", "--no-progress", "--json"]
    out = tmp_path / "study"
    kill_after(tmp_path, "sramsim.analysis.store:ResultStore.append", 2, [*base, "--out", str(out)])
    resumed = json.loads(cli([*base, "--out", str(out)]).stdout)
    whole = json.loads(cli([*base, "--out", str(tmp_path / "whole")]).stdout)

    def measured(summary):
        return {name: {k: v for k, v in r.items() if "second" not in k}
                for name, r in summary["results"].items() if isinstance(r, dict)}
    assert measured(resumed) == measured(whole)


# --- the output-folder lock --------------------------------------------------------------------
HOLD = r"""
import sys, time
from sramsim.analysis.store import ResultStore
store = ResultStore(sys.argv[1], {"holder": True})
print("holding", flush=True)
time.sleep(600)
"""


def test_a_second_sweep_on_the_same_out_is_refused_naming_the_holder(world, tmp_path, capfd):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "holding"
        argv = ["sweep", "--model", world["ckpt"], "--data", world["data"], "--chips", "1",
                "--rows", "64", "--cols", "128", "--voltages", "1.0,0.9", "--out", str(out),
                "--no-progress"]
        assert main(argv) == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and f"pid {holder.pid}" in err and str(out) in err, err
    finally:
        holder.kill()                           # kill -9: the kernel releases the lock
        holder.wait()
    (out / "config.json").unlink()              # the holder's stand-in configuration
    assert main([*argv, "--json"]) == 0          # the lock went with the killed holder
    assert json.loads(capfd.readouterr().out)["computed_points"] == 2


# --- a full disk during a sweep ----------------------------------------------------------------
def test_disk_full_during_a_sweep_is_one_line_and_resumes(world, tmp_path, capfd, monkeypatch):
    from sramsim.analysis.store import ResultStore
    argv = ["sweep", "--model", world["ckpt"], "--data", world["data"], "--chips", "2", "--rows",
            "64", "--cols", "128", "--voltages", "1.0:0.8:-0.1", "--out", str(tmp_path / "o"),
            "--no-progress", "--json"]
    append, written = ResultStore.append, []

    def fill_up(self, records):
        if len(written) == 3:                   # a torn half line, then the disk is full
            with open(self.points_path, "a") as f:
                f.write('{"voltage": 0.9, "chip')
            raise OSError(errno.ENOSPC, "No space left on device", str(self.points_path))
        append(self, records)
        written.extend(records)
    monkeypatch.setattr(ResultStore, "append", fill_up)
    assert main(argv) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    monkeypatch.setattr(ResultStore, "append", append)
    assert main(argv) == 0
    resumed = json.loads(capfd.readouterr().out)
    assert resumed["reused_points"] == 2 and resumed["computed_points"] == 2 * 3 - 2
    assert main([*argv[:argv.index("--out") + 1], str(tmp_path / "whole"), "--no-progress",
                 "--json"]) == 0
    capfd.readouterr()
    assert _points(tmp_path / "o") == _points(tmp_path / "whole")


# --- train-base --out over another model -------------------------------------------------------
def test_train_base_refuses_a_checkpoint_of_other_settings_without_force(world, tmp_path, capfd):
    out = tmp_path / "m.pt"
    base = ["train-base", "--data", world["data"], "--epochs", "1", "--limit", "40",
            "--no-progress", "--json", "--out", str(out)]
    assert main(base) == 0
    first = out.read_bytes()
    capfd.readouterr()
    assert main([*base, "--seed", "5"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "other settings" in err and "seed" in err and "--force" in err
    assert out.read_bytes() == first                    # untouched
    assert main(base) == 0                              # the same settings: kept, not retrained
    assert json.loads(capfd.readouterr().out)["skipped"] is True
    assert main([*base, "--seed", "5", "--force"]) == 0
    assert out.read_bytes() != first
    (tmp_path / "notes.pt").write_text("my notes")
    assert main([*base[:-1], str(tmp_path / "notes.pt")]) == 2
    assert "not a readable sramsim checkpoint" in capfd.readouterr().err
    assert (tmp_path / "notes.pt").read_text() == "my notes"
