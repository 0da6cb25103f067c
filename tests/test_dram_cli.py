"""`sramsim dram info | energy | tolerance`: reports as a user runs them (--json and tables) and
one-line errors with exit 2 for bad input."""
from __future__ import annotations

import json

import pytest
import torch

from sramsim.commands.main import main
from sramsim.memory.dram import PARTS_DIR, DEFAULT_PART
from sramsim.nn.models import build, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

META = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "norm": "batch", "bits": 8,
        "scheme": "symmetric", "clip": None, "dataset": "fashion-mnist"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An untrained default CNN (seed 0) and a part file too small to hold it."""
    root = tmp_path_factory.mktemp("dram_cli")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build("cnn", 1, 10).eval()
    save_checkpoint(root / "cnn.pt", model, META)
    spec = json.loads((PARTS_DIR / f"{DEFAULT_PART}.json").read_text())
    spec["architecture"].update({"banks": 1, "rows": 512, "columns": 8})     # 16 KB in all
    spec["name"] = "tiny"
    (root / "tiny.json").write_text(json.dumps(spec))
    return {"model": str(root / "cnn.pt"), "tiny": str(root / "tiny.json"), "root": root}


def run(capsys, *argv):
    code = main(["dram", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_and_table(capsys):
    code, out, _ = run(capsys, "info", "--voltage", "1.0", "--json")
    r = json.loads(out)
    assert code == 0 and r["capacity_bytes"] == 2 ** 29 and r["geometry"]["banks"] == 8
    assert r["voltage"] == 1.0 and r["nominal_voltage"] == 1.2 and r["lowered_supply"] == "vdd2"
    assert r["access_J"]["hit"] < r["access_J"]["miss"] < r["access_J"]["conflict"]
    nominal = json.loads(run(capsys, "info", "--json")[1])
    assert nominal["voltage"] == 1.2 and nominal["access_J"]["hit"] > r["access_J"]["hit"]
    code, out, _ = run(capsys, "info")
    assert code == 0 and "4 Gbit" in out and "conflict" in out and "refresh" in out


def test_energy_per_mapping(capsys, world):
    code, out, _ = run(capsys, "energy", "--model", world["model"], "--voltage", "1.0", "--json")
    r = json.loads(out)
    assert code == 0 and set(r["mappings"]) == {"naive", "drmap", "error-aware"}
    for row in r["mappings"].values():
        assert row["counts"]["bursts"] == -(-r["weight_bytes"] // 32)
        assert 0 < row["saving"] < 1
    code, out, _ = run(capsys, "energy", "--model", world["model"], "--mapping", "drmap")
    assert code == 0 and "drmap" in out and "naive" not in out and "saving" not in out


@pytest.mark.parametrize("argv,needle", [
    (["info", "--part", "NOPE"], "unknown DRAM part 'NOPE'"),
    (["info", "--voltage", "1.3"], "above the nominal voltage 1.2"),
    (["info", "--voltage", "0.5"], "below 0.8 V, the floor of curve"),
    (["info", "--voltage", "abc"], "--voltage must be a number"),
    (["info", "--voltage", "nan"], "--voltage must be a positive finite number"),
    (["energy", "--model", "MODEL", "--part", "TINY"], "do not fit in DRAM part"),
    (["energy", "--model", "MODEL", "--mapping", "error-aware"], "needs --voltage"),
    (["energy", "--model", "ROOT/missing.pt"], "no such"),
    (["energy", "--model", "MODEL", "--seed", "-1"], "--seed must be >= 0"),
    (["tolerance", "--model", "MODEL", "--margin", "0"], "--margin must lie strictly between"),
    (["tolerance", "--model", "MODEL", "--margin", "1"], "--margin must lie strictly between"),
    (["tolerance", "--model", "MODEL", "--margin", "2.5"], "--margin must lie strictly between"),
    (["tolerance", "--model", "MODEL", "--margin", "x"], "--margin must be a number"),
    (["tolerance", "--model", "MODEL", "--maps", "0"], "--maps must be >= 1"),
    (["tolerance", "--model", "MODEL", "--ber-range", "1e-2"], "--ber-range must be LOW,HIGH"),
    (["tolerance", "--model", "MODEL", "--ber-range", "1e-2,1e-3"], "0 < LOW < HIGH"),
    (["tolerance", "--model", "MODEL", "--ber-range", "1e-6,2"], "--ber-range HIGH must lie"),
    (["tolerance", "--model", "MODEL", "--part", "TINY", "--limit", "5"], "do not fit in DRAM"),
])
def test_bad_input_is_one_line_exit_2(capsys, world, argv, needle):
    argv = [a.replace("MODEL", world["model"]).replace("TINY", world["tiny"])
            .replace("ROOT", str(world["root"])) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err


def test_tolerance_random_json_table_and_resume(capsys, world, tmp_path):
    argv = ["tolerance", "--model", world["model"], "--data", "fashion-mnist", "--limit", "40",
            "--maps", "2", "--ber-range", "1e-4,1e-2", "--bisect", "1", "--out", tmp_path / "t"]
    code, out, _ = run(capsys, *argv, "--json")
    r = json.loads(out)
    assert code == 0 and r["faults"]["source"] == "random" and r["maps"] == 2
    assert r["margin"] == 0.01 and r["n_samples"] == 40 and r["computed_maps"] > 0
    assert set(r["energy"]) == {"naive", "drmap", "error-aware"}
    assert [p["ber"] for p in r["points"]] == sorted(p["ber"] for p in r["points"])
    code, out, _ = run(capsys, *argv)                   # same folder: resumes, prints the table
    assert code == 0 and "fault-free quantized accuracy" in out and "reused" not in out
    assert "mapping" in out and "points.jsonl" in out
    again = json.loads((tmp_path / "t" / "tolerance.json").read_text())
    assert again["computed_maps"] == 0 and again["points"] == r["points"]


def test_tolerance_dram_error_model(capsys, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "tolerance", "--model", world["model"], "--limit", "20",
                       "--maps", "1", "--ber-range", "1e-7,1e-6", "--bisect", "0",
                       "--error-model", "2", "--mapping", "naive", "--json")
    r = json.loads(out)
    assert (tmp_path / "cnn-tolerance" / "tolerance.json").is_file()    # resumable by default
    assert code == 0 and r["faults"]["source"] == "dram" and r["faults"]["error_model"] == 2
    assert "dram_chip" in r["faults"]["maps_rule"] and r["faults"]["mapping"] == "naive"
    assert len(r["points"]) >= 1


def test_tolerance_without_out_says_where_and_how_long(capsys, world, tmp_path, monkeypatch):
    """Issue 23: a search without --out used to run for minutes in memory only; now it writes to
    MODEL-tolerance (resumable), says so, and estimates the time from the fault-free pass."""
    monkeypatch.chdir(tmp_path)
    argv = ["tolerance", "--model", world["model"], "--limit", "20", "--maps", "2",
            "--ber-range", "1e-4,1e-2", "--bisect", "1"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    assert "writing to cnn-tolerance/ (resumable" in err
    assert "at most 8 fault maps of 20 images to evaluate" in err and "expect up to ~" in err
    assert "cnn-tolerance/tolerance.png" in out
    assert (tmp_path / "cnn-tolerance" / "tolerance.png").stat().st_size > 10_000
    code, out, err = run(capsys, *argv)                     # the same command resumes
    assert code == 0 and "expect up to" not in err
    assert json.loads((tmp_path / "cnn-tolerance" / "tolerance.json").read_text())[
        "computed_maps"] == 0


def test_model_error_is_the_deprecated_spelling_of_error_model(capsys, world):
    """One name per concept: --error-model; --model-error still works, with a one-line note."""
    new = run(capsys, "energy", "--model", world["model"], "--mapping", "error-aware",
              "--voltage", "1.0", "--error-model", "1", "--json")
    old = run(capsys, "energy", "--model", world["model"], "--mapping", "error-aware",
              "--voltage", "1.0", "--model-error", "1", "--json")
    assert new[0] == old[0] == 0 and json.loads(new[1]) == json.loads(old[1])
    assert json.loads(old[1])["error_model"] == 1
    assert old[2] == "note: --model-error is deprecated; use --error-model\n" and new[2] == ""
    with pytest.raises(SystemExit):
        main(["dram", "tolerance", "--help"])
    helptext = capsys.readouterr().out
    assert "--error-model" in helptext and "--model-error" not in helptext
