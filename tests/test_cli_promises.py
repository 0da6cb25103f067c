"""Promises from a hostile audit (issue 21, item 11), command-line side: every bad input below
is refused before any work in exactly one line on stderr with exit status 2 (no traceback, no
hang, no usage block, nothing written into the current folder)."""
import numpy as np
import pytest
import torch

from sramsim import BerCurve, Chip, Geometry
from sramsim.commands.main import main
from sramsim.errors import MAX_THREADS, InputError
from sramsim.nn import models
from sramsim.nn.torch_files import atomic_torch_save
from fusion.cli import main as fusion_main


@pytest.fixture(scope="module")
def env(digits_world):
    """digits_world (a 28x28 ten-class data dir, an untrained CNN checkpoint) and a profile."""
    chip = digits_world["root"] / "chip.h5"
    Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.75, 0).save(chip)
    return {**digits_world, "chip": str(chip)}


def refused(capfd, argv, *, prog=main) -> str:
    """Run a command expected to refuse: exit 2, exactly one line on stderr, returned."""
    assert prog(argv) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "usage" not in err, err
    return err


@pytest.fixture
def in_empty_cwd(tmp_path, monkeypatch):
    """Run in an empty folder and check that nothing was written there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert list(cwd.iterdir()) == []


def with_meta(env, tmp_path, **changes) -> str:
    """A copy of the checkpoint with its meta changed (and its digest rewritten)."""
    obj = torch.load(env["ckpt"], weights_only=True)
    obj["meta"].update(changes)
    path = tmp_path / "changed.pt"
    atomic_torch_save(obj, path)
    return str(path)


# --- checkpoint metadata ---------------------------------------------------------------------
def test_num_classes_1e10_is_refused_up_front_with_the_size(env, tmp_path, capfd):
    ckpt = with_meta(env, tmp_path, num_classes=1e10)
    d = env["data"]
    for argv, prog in (
            (["sweep", "--model", ckpt, "--data", d, "--chips", "1", "--rows", "64", "--cols",
              "64", "--voltages", "0.9", "--out", str(tmp_path / "s")], main),
            (["vuln", "--model", ckpt, "--data", d, "--ber", "0.01"], main),
            (["energy", "--model", ckpt, "--voltage", "0.9"], main),
            (["dram", "energy", "--model", ckpt], main),
            (["train", "--base", ckpt, "--data", d, "--ber", "0.01", "--epochs", "1", "--out",
              str(tmp_path / "g")], fusion_main)):
        err = refused(capfd, argv, prog=prog)
        assert "10,000,000,000 classes" in err and "TiB" in err and ckpt in err, (argv, err)


def test_image_size_as_a_plain_int_is_read_as_square(env, tmp_path, capfd):
    ckpt = with_meta(env, tmp_path, image_size=28)
    assert models.load_checkpoint(ckpt)[1]["image_size"] == [28, 28]
    assert main(["energy", "--model", ckpt, "--voltage", "0.9", "--json"]) == 0
    assert "Traceback" not in capfd.readouterr().err


# --- sizes that overflow a C long, names the file system refuses -----------------------------
def test_profile_with_a_2_to_the_62_geometry_is_one_line(env, tmp_path, capfd):
    import h5py
    path = tmp_path / "huge.h5"
    Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.9, 0).save(path)
    with h5py.File(path, "r+") as f:
        f["geometry"].attrs["rows"] = np.int64(2 ** 62)
        f["geometry"].attrs["cols"] = np.int64(2 ** 62)
    err = refused(capfd, ["profile", "info", str(path)])
    assert "capacity" in err and str(path) in err


def test_profile_import_of_2_to_the_64_bits_is_one_line(tmp_path, capfd):
    bitmaps = tmp_path / "bitmaps"
    bitmaps.mkdir()
    np.save(bitmaps / "v0.9.npy", np.array([1, 2], dtype=np.int64))
    err = refused(capfd, ["profile", "import", str(bitmaps), "--rows", "4294967296", "--cols",
                          "4294967296", "--out", str(tmp_path / "p.h5")])
    assert "capacity" in err


def test_300_character_file_names_are_one_line(env, tmp_path, capfd):
    long = "x" * 300
    refused(capfd, ["profile", "info", str(tmp_path / f"{long}.h5")])
    err = refused(capfd, ["profile", "plot", env["chip"], "--voltage", "0.9", "--out",
                          str(tmp_path / f"{long}.png")])
    assert "--out" in err and "255" in err
    err = refused(capfd, ["profile", "synth", "--rows", "64", "--cols", "64", "--v-floor", "0.8",
                          "--seed", "1", "--out", str(tmp_path / f"{long}.h5")])
    assert "--out" in err and "255" in err


def test_v_floor_below_zero_in_a_profile_is_refused(env, tmp_path, capfd):
    import h5py
    path = tmp_path / "floor.h5"
    Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.9, 0).save(path)
    with h5py.File(path, "r+") as f:
        f.attrs["v_floor"] = -1.0
    assert "v_floor" in refused(capfd, ["profile", "info", str(path)])


# --- counts that crash or cannot finish --------------------------------------------------------
def test_threads_beyond_the_bound_are_refused(env, tmp_path, capfd):
    from sramsim.analysis.executors import set_threads
    d, ckpt = env["data"], env["ckpt"]
    for argv in (["sweep", "--model", ckpt, "--data", d, "--chips", "1", "--voltages", "0.9",
                  "--out", str(tmp_path / "s"), "--threads", "100000"],
                 ["dram", "tolerance", "--model", ckpt, "--data", d, "--threads", "100000"],
                 ["sparkxd", "--out", str(tmp_path / "x"), "--data", d, "--threads", "100000"]):
        assert f"--threads must be <= {MAX_THREADS}" in refused(capfd, argv)
    with pytest.raises(InputError, match="threads"):
        set_threads(100000)


def test_counts_that_cannot_finish_are_refused_naming_them(env, tmp_path, capfd):
    d, ckpt = env["data"], env["ckpt"]
    err = refused(capfd, ["sweep", "--model", ckpt, "--data", d, "--chips", "1", "--rows", "64",
                          "--cols", "64", "--voltages", "0.9", "--out", str(tmp_path / "s"),
                          "--offsets", "1000000000"])
    assert "1,000,000,000 points" in err and "1,000,000" in err
    assert "--models must be <= 100000" in refused(
        capfd, ["vuln", "--model", ckpt, "--data", d, "--ber", "0.01", "--models", "100000000"])
    assert "--workers must be <=" in refused(
        capfd, ["sweep", "--model", ckpt, "--data", d, "--chips", "1", "--voltages", "0.9",
                "--out", str(tmp_path / "s"), "--workers", "100000"])
    assert not (tmp_path / "s").exists()


# --- wrongly accepted values ---------------------------------------------------------------
def test_vuln_voltage_above_nominal_is_refused(env, capfd):
    err = refused(capfd, ["vuln", "--model", env["ckpt"], "--data", env["data"], "--profile",
                          env["chip"], "--voltage", "1.5"])
    assert "above" in err and "nominal" in err


def test_demo_checks_its_voltages_before_training(env, tmp_path, capfd, monkeypatch):
    import sramsim.nn.training as training

    def no_training(*args, **kwargs):
        raise AssertionError("the base model must not train before the arguments are checked")
    monkeypatch.setattr(training, "train_base", no_training)
    for text in ("2.0", "1.0,,0.9"):
        err = refused(capfd, ["demo", "--out", str(tmp_path / "demo"), "--data", env["data"],
                              "--voltages", text])
        assert "--voltages" in err


def _commands(env, tmp):
    """Each command that takes --out / --seed / --voltages, with otherwise valid arguments."""
    d, ckpt, chip = env["data"], env["ckpt"], env["chip"]
    return {
        "sweep": (main, ["sweep", "--model", ckpt, "--data", d, "--chips", "1", "--rows", "64",
                         "--cols", "64", "--voltages", "0.9", "--out", f"{tmp}/s"]),
        "train-base": (main, ["train-base", "--data", d, "--epochs", "1", "--out", f"{tmp}/t.pt"]),
        "profile synth": (main, ["profile", "synth", "--rows", "64", "--cols", "64", "--v-floor",
                                 "0.8", "--seed", "1", "--out", f"{tmp}/p.h5"]),
        "profile plot": (main, ["profile", "plot", chip, "--voltage", "0.9", "--out",
                                f"{tmp}/p.png"]),
        "demo": (main, ["demo", "--data", d, "--epochs", "1", "--out", f"{tmp}/demo"]),
        "dram tolerance": (main, ["dram", "tolerance", "--model", ckpt, "--data", d, "--out",
                                  f"{tmp}/dt"]),
        "dram energy": (main, ["dram", "energy", "--model", ckpt]),
        "vuln": (main, ["vuln", "--model", ckpt, "--data", d, "--ber", "0.01"]),
        "sparkxd": (main, ["sparkxd", "--data", d, "--out", f"{tmp}/sx"]),
        "fusion train": (fusion_main, ["train", "--base", ckpt, "--data", d, "--ber", "0.01",
                                       "--epochs", "1", "--out", f"{tmp}/g"]),
        "fusion eval": (fusion_main, ["eval", "--base", ckpt, "--data", d, "--ber", "0.01"]),
        "fusion demo": (fusion_main, ["demo", "--base", ckpt, "--data", d, "--out",
                                      f"{tmp}/fd"]),
    }


def _replace(argv, flag, value):
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


OUT_COMMANDS = ("sweep", "train-base", "profile synth", "profile plot", "demo", "dram tolerance",
                "sparkxd", "fusion train", "fusion demo")
SEED_COMMANDS = ("sweep", "train-base", "profile synth", "dram tolerance", "dram energy", "vuln",
                 "sparkxd", "fusion train", "fusion eval")


@pytest.mark.parametrize("command", OUT_COMMANDS)
def test_empty_out_is_refused(env, tmp_path, capfd, in_empty_cwd, command):
    prog, argv = _commands(env, tmp_path)[command]
    assert "--out: empty path" in refused(capfd, _replace(argv, "--out", ""), prog=prog)


@pytest.mark.parametrize("command", SEED_COMMANDS)
def test_negative_seed_is_refused(env, tmp_path, capfd, in_empty_cwd, command):
    prog, argv = _commands(env, tmp_path)[command]
    assert "--seed must be >= 0" in refused(capfd, _replace(argv, "--seed", "-1"), prog=prog)


def test_empty_voltage_entries_are_refused(env, tmp_path, capfd, in_empty_cwd):
    prog, argv = _commands(env, tmp_path)["sweep"]
    for text in ("1.0,,0.9", "1.0,0.9,", ",0.9"):
        err = refused(capfd, _replace(argv, "--voltages", text), prog=prog)
        assert "empty entry" in err
