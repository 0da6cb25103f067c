"""`sramsim profile ...` end to end: exit codes, one-line errors, JSON shapes, the PNG, and the
installed console script."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sramsim import Chip, Geometry
from sramsim.commands.main import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sramsim" / "data" / "profiles" / "finfet14-8192x128-s0.h5"
SYNTH = ["profile", "synth", "--rows", "64", "--cols", "32", "--banks", "2", "--v-floor", "0.78",
         "--seed", "5"]


def run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, argv) -> dict:
    code, out, err = run(capsys, [*argv, "--json"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2 and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("sramsim: error: ")
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def synth_file(tmp_path, capsys) -> Path:
    path = tmp_path / "c.h5"
    code, out, err = run(capsys, [*SYNTH, "--kinds", "flip=2,stuck0=1,stuck1=1", "--out", path])
    assert code == 0 and err == "" and f"wrote {path}" in out
    return path


def test_synth_matches_the_library(synth_file):
    chip = Chip.load(synth_file)
    from sramsim import BerCurve
    want = Chip.random(Geometry(64, 32, banks=2), BerCurve.builtin("finfet14"), 0.78, 5,
                       kinds={"flip": 2, "stuck0": 1, "stuck1": 1})
    assert chip.same_faults(want) and chip.attrs == {"seed": 5}
    assert chip.name == "finfet14-64x32-s5"


def test_synth_json_and_refuses_to_overwrite(tmp_path, capsys, synth_file):
    info = run_json(capsys, [*SYNTH, "--out", tmp_path / "d.h5", "--name", "mine",
                             "--curve", "gaussian:0.706,0.055"])
    assert info["name"] == "mine" and info["curve"].startswith("gaussian")
    assert info["geometry"]["capacity_bits"] == 4096
    assert_one_line_error(*run(capsys, [*SYNTH, "--out", synth_file]), "file exists", "--force")
    assert run(capsys, [*SYNTH, "--out", synth_file, "--force"])[0] == 0


@pytest.mark.parametrize("extra, fragment", [
    (["--curve", "finfet99"], "unknown BER curve 'finfet99'"),
    (["--curve", "gaussian:1"], "expected gaussian:MU,SIGMA"),
    (["--kinds", "flip=1,melt=1"], "unknown fault kind"),
    (["--kinds", "flip=x"], "'flip=x' is not KIND=WEIGHT"),
    (["--v-floor", "0.5"], "below the lowest voltage 0.75"),
    (["--word-bits", "12"], "word_bits must be a multiple of 8"),
])
def test_synth_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, fragment):
    argv = [*SYNTH, "--out", tmp_path / "x.h5", *extra]
    assert_one_line_error(*run(capsys, argv), fragment)
    assert not (tmp_path / "x.h5").exists()


def test_info_human_and_json(capsys, synth_file):
    code, out, err = run(capsys, ["profile", "info", synth_file])
    assert code == 0 and "64x32 bits x 2 bank(s)" in out and "curve BER" in out
    info = run_json(capsys, ["profile", "info", synth_file, "--voltages", "0.9", "0.8"])
    chip = Chip.load(synth_file)
    assert info["file"] == str(synth_file) and info["faults"] == len(chip)
    assert sum(info["kinds"].values()) == len(chip) and info["v_floor"] == 0.78
    assert [r["voltage"] for r in info["voltages"]] == [0.9, 0.8]
    assert [r["faults"] for r in info["voltages"]] == [chip.count(0.9), chip.count(0.8)]
    assert info["voltages"][1]["ber"] == chip.count(0.8) / 4096
    assert set(info["voltages"][0]) == {"voltage", "faults", "ber", "kinds", "curve_ber"}
    assert info["non_nested"] is None and info["attrs"] == {"seed": 5}


def test_info_errors_are_one_line(tmp_path, capsys, synth_file):
    assert_one_line_error(*run(capsys, ["profile", "info", synth_file, "--voltages", "0.7"]),
                          "below chip", "v_floor 0.78")
    assert_one_line_error(*run(capsys, ["profile", "info", tmp_path / "nope.h5"]),
                          "nope.h5: no such file")
    text = tmp_path / "t.h5"
    text.write_text("hello")
    assert_one_line_error(*run(capsys, ["profile", "info", text]), f"{text}: cannot open")


def test_validate_exit_codes_and_json(tmp_path, capsys, synth_file):
    code, out, err = run(capsys, ["profile", "validate", synth_file])
    assert code == 0 and out == f"{synth_file}: ok\n" and err == ""
    broken = tmp_path / "broken.h5"
    broken.write_bytes(synth_file.read_bytes()[:500])
    foreign = tmp_path / "foreign.h5"
    import h5py
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    code, out, err = run(capsys, ["profile", "validate", synth_file, broken, foreign])
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [f"{broken}: cannot open as a chip profile: truncated file",
                                f"{foreign}: not a sramsim chip profile (root attribute 'format' "
                                "is missing)"]
    code, out, _ = run(capsys, ["profile", "validate", synth_file, broken, "--json"])
    report = json.loads(out)
    assert code == 2 and report["valid"] is False
    assert [(r["file"], r["valid"]) for r in report["files"]] == [(str(synth_file), True),
                                                                   (str(broken), False)]
    assert report["files"][1]["problems"] == ["cannot open as a chip profile: truncated file"]


def test_import_folder(tmp_path, capsys):
    obs = tmp_path / "bitmaps"
    obs.mkdir()
    np.save(obs / "v0.90.npy", np.array([3]))
    np.save(obs / "v0.85_0to1.npy", np.array([5, 3]))
    np.save(obs / "v0.85_1to0.npy", np.array([9]))
    m = np.zeros((8, 8), bool)
    m.ravel()[[5, 9, 11]] = True
    np.save(obs / "v0.80_1to0.npy", m)
    np.save(obs / "v0.80_0to1.npy", np.array([13]))
    out = tmp_path / "measured.h5"
    info = run_json(capsys, ["profile", "import", obs, "--rows", 8, "--cols", 8, "--out", out,
                             "--voltage-unit", "V", "--nominal-voltage", "0.95"])
    assert info["source"] == "measured" and info["voltage_unit"] == "V"
    assert info["measured_voltages"] == [0.9, 0.85, 0.8] and info["v_floor"] == 0.8
    assert info["non_nested"] == 1                       # bit 3 failed at 0.90/0.85, not at 0.80
    assert info["kinds"] == {"flip": 2, "stuck0": 2, "stuck1": 1}
    assert [r["faults"] for r in info["voltages"]] == [1, 3, 5]
    chip = Chip.load(out)
    # 3: undirected -> flip; 5: 0to1 and 1to0 -> flip; 9, 11: only 1to0 -> stuck0; 13: stuck1
    assert chip.address.tolist() == [3, 5, 9, 11, 13]
    assert chip.kind.tolist() == [0, 0, 1, 1, 2]
    assert chip.name == "bitmaps" and chip.nominal_voltage == 0.95


def test_import_errors_are_one_line(tmp_path, capsys):
    obs = tmp_path / "bitmaps"
    obs.mkdir()
    np.save(obs / "v0.9.npy", np.array([70]))
    argv = ["profile", "import", obs, "--rows", 8, "--cols", 8, "--out", tmp_path / "m.h5"]
    assert_one_line_error(*run(capsys, argv), "voltage 0.9", "must lie in [0, 64)")
    assert_one_line_error(*run(capsys, ["profile", "import", tmp_path / "none", "--rows", 8,
                                        "--cols", 8, "--out", tmp_path / "m.h5"]), "not a directory")
    assert not (tmp_path / "m.h5").exists()


def test_plot_writes_a_png(tmp_path, capsys, synth_file):
    out = tmp_path / "map.png"
    report = run_json(capsys, ["profile", "plot", synth_file, "--voltage", "0.8", "--out", out])
    assert report["block"] == [1, 1] and report["banks_shown"] == 2
    assert report["faults"] == Chip.load(synth_file).count(0.8)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert_one_line_error(*run(capsys, ["profile", "plot", synth_file, "--voltage", "0.5",
                                        "--out", out]), "below chip")
    assert_one_line_error(*run(capsys, ["profile", "plot", synth_file, "--voltage", "0.8",
                                        "--out", tmp_path / "map.pdf"]), "expected a .png")


def test_fault_map_blocks_count_every_fault():
    from sramsim.analysis.plots import KIND_COLORS, fault_map_rgb
    chip = Chip(Geometry(4, 8, banks=2), address=[0, 33, 34, 63], vfail=[0.9, 0.9, 0.8, 0.8],
                kind=[0, 1, 2, 0], v_floor=0.8)
    rgb, block = fault_map_rgb(chip, 0.8)
    assert block == (1, 1) and rgb.shape == (2, 4, 8, 3)
    faulty = np.argwhere(np.any(rgb < 1.0, axis=-1))
    assert faulty.tolist() == [[0, 0, 0], [1, 0, 1], [1, 0, 2], [1, 3, 7]]
    rgb, block = fault_map_rgb(chip, 0.8, max_rows=2, max_cols=4)   # 2x2-bit blocks
    assert block == (2, 2) and rgb.shape == (2, 2, 4, 3)
    assert np.argwhere(np.any(rgb < 1.0, axis=-1)).tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 1],
                                                                [1, 1, 3]]
    rgb, _ = fault_map_rgb(chip, 0.9, banks=1)                      # only bank 0, at 0.9
    assert rgb.shape == (1, 4, 8, 3)
    assert np.argwhere(np.any(rgb < 1.0, axis=-1)).tolist() == [[0, 0, 0]]
    np.testing.assert_allclose(rgb[0, 0, 0], KIND_COLORS[0])            # densest block: pure kind


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["profile", "synth", "--rows", "8"])
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    exe = shutil.which("sramsim") or str(Path(sys.executable).with_name("sramsim"))
    done = subprocess.run([exe, "profile", "info", str(SHIPPED), "--voltages", "0.833", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["name"] == "finfet14-8192x128-s0" and info["geometry"]["rows"] == 8192
    assert abs(info["voltages"][0]["ber"] - 0.01115) < 0.0005   # binomial sd ~1e-4 on 2^20 bits
    bad = subprocess.run([exe, "profile", "validate", str(tmp_path / "missing.h5")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == f"{tmp_path / 'missing.h5'}: no such file"


# --- issue 11 (memory layer): duplicate voltage spellings, sizes, nominal voltage --------------------
def test_import_merges_the_same_voltage_spelled_twice(capsys, tmp_path):
    obs = tmp_path / "obs"
    obs.mkdir()
    np.save(obs / "v0.900.npy", np.array([1, 4]))
    np.save(obs / "v0.90.npy", np.array([9]))
    np.save(obs / "v0.8.npy", np.array([1, 4, 9, 12]))
    info = run_json(capsys, ["profile", "import", obs, "--rows", "4", "--cols", "8",
                             "--out", tmp_path / "m.h5"])
    assert info["faults"] == 4 and info["measured_voltages"] == [0.9, 0.8]
    assert [r["faults"] for r in info["voltages"]] == [3, 4]      # all three 0.9 bits kept


def test_synth_of_a_billion_rows_is_one_line_naming_the_size(capsys, tmp_path):
    code, out, err = run(capsys, ["profile", "synth", "--rows", "1000000000", "--cols", "128",
                                  "--v-floor", "0.75", "--seed", "0", "--out", tmp_path / "x.h5"])
    assert_one_line_error(code, out, err, "128000000000 bits", "needs ~", "of memory")


def test_import_with_failures_above_nominal_is_one_line(capsys, tmp_path):
    obs = tmp_path / "obs"
    obs.mkdir()
    np.save(obs / "v1.0.npy", np.array([1]))
    np.save(obs / "v0.8.npy", np.array([1, 2]))
    code, out, err = run(capsys, ["profile", "import", obs, "--rows", "4", "--cols", "8",
                                  "--voltage-unit", "V", "--nominal-voltage", "0.9",
                                  "--out", tmp_path / "m.h5"])
    assert_one_line_error(code, out, err, "exceed the nominal voltage 0.9")
