import json

import numpy as np
import pytest
import torch

from fusion import generators
from fusion.cli import main
from fusion.store import load_generator, save_generator
from sramsim import BerCurve, Chip, Geometry
from sramsim.nn.models import build, save_checkpoint
from conftest import write_idx


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 16x16 two-class IDX dataset, two untrained base CNNs, a 3-channel one, two chip profiles."""
    root = tmp_path_factory.mktemp("fusion_cli")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for prefix, n in (("train", 48), ("t10k", 40)):
        y = rng.integers(0, 2, n)
        x = rng.integers(0, 120, (n, 16, 16))
        x[y == 1, :8] += 120                      # class 1: bright top half
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", y)
    paths = {}
    for name, seed, channels in (("base_a", 0, 1), ("base_b", 1, 1), ("base_rgb", 2, 3)):
        torch.manual_seed(seed)
        paths[name] = root / f"{name}.pt"
        save_checkpoint(paths[name], build("cnn", channels, 2).eval(),
                        {"arch": "cnn", "in_channels": channels, "num_classes": 2, "norm": "batch",
                         "bits": 8, "scheme": "symmetric", "clip": None, "dataset": str(data)})
    curve = BerCurve.builtin("finfet14")
    for seed in (1, 2):
        paths[f"chip{seed}"] = root / f"chip{seed}.h5"
        Chip.random(Geometry(1024, 512), curve, 0.78, seed).save(paths[f"chip{seed}"])
    return {"root": root, "data": str(data), **{k: str(v) for k, v in paths.items()}}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def train(capsys, world, out, *extra, base="base_a"):
    return run_json(capsys, "train", "--base", world[base], "--generator", "ConvS", "--width", "0.25",
                    "--data", world["data"], "--epochs", "1", "--n-perturbed", "2",
                    "--batch-size", "16", "--out", out, "--no-progress", *extra)


KEYS = {"ca", "pa_mean", "pa_std", "ca_nf", "pa_nf_mean", "pa_nf_std", "recovery", "energy_saving"}


def test_train_then_eval_random_errors(capsys, world, tmp_path):
    meta = train(capsys, world, tmp_path / "g", "--ber", "0.02")
    assert meta["epochs_done"] == 1 and meta["steps"] == 3          # 48 samples / 16
    assert (tmp_path / "g" / "generator.pt").is_file() and (tmp_path / "g" / "checkpoint.pt").is_file()
    g, g_meta = load_generator(tmp_path / "g" / "generator.pt")
    assert g.name == "ConvS" and g.in_channels == 1 and g_meta["fault_source"]["ber"] == 0.02
    r = run_json(capsys, "eval", "--base", world["base_a"], "--generator", tmp_path / "g" / "generator.pt",
                 "--data", world["data"], "--ber", "0.02", "--models", "4")
    assert KEYS <= set(r)
    assert r["n_models"] == 4 and len(r["pa"]) == 4 and len(r["pa_nf"]) == 4 and r["samples"] == 40
    assert r["pa_mean"] == pytest.approx(np.mean(r["pa"]))
    assert r["pa_std"] == pytest.approx(np.std(r["pa"], ddof=1))
    assert r["recovery"] == pytest.approx(r["pa_nf_mean"] - r["pa_mean"])
    assert all(0.0 <= r[k] <= 1.0 for k in ("ca", "pa_mean", "ca_nf", "pa_nf_mean"))
    # energy: 8-bit weights read at the 2%-BER voltage, G's 7,065 weights read at nominal voltage
    v = BerCurve.builtin("finfet14").voltage(0.02)
    base_reads = r["base_accesses"]
    assert r["generator_accesses"] == generators.weight_count(g) == 7065
    assert r["energy_saving_base"] == pytest.approx(1 - v ** 2)
    assert r["energy_saving"] == pytest.approx(1 - v ** 2 - 7065 / base_reads)
    assert r["transfer"] is False
    again = run_json(capsys, "eval", "--base", world["base_a"], "--generator",
                     tmp_path / "g" / "generator.pt", "--data", world["data"], "--ber", "0.02",
                     "--models", "4")
    assert again["pa"] == r["pa"] and again["pa_nf"] == r["pa_nf"]      # fixed evaluation maps


def test_identity_generator_changes_nothing(capsys, world, tmp_path):
    """A generator with t(x) = 0 must give exactly the base model's CA and PA (paired maps)."""
    g = generators.build("UNetS", 1, identity_init=True)
    save_generator(tmp_path / "id.pt", g, {})
    r = run_json(capsys, "eval", "--base", world["base_a"], "--generator", tmp_path / "id.pt",
                 "--data", world["data"], "--ber", "0.05", "--models", "3")
    assert r["ca_nf"] == r["ca"] and r["pa_nf"] == r["pa"] and r["recovery"] == 0.0
    assert r["pa"] != [r["ca"]] * 3                                   # faults do change outputs


def test_eval_systolic_count_charges_generator_by_resolution(capsys, world, tmp_path):
    """--count systolic: SCALE-Sim's reads for base and generator, same accuracies."""
    from sramsim.analysis.systolic import count_accesses
    g = generators.build("ConvS", 1, width=0.25)
    save_generator(tmp_path / "g.pt", g, {})
    argv = ["eval", "--base", world["base_a"], "--generator", tmp_path / "g.pt", "--data",
            world["data"], "--ber", "0.02", "--models", "2"]
    plain = run_json(capsys, *argv)
    r = run_json(capsys, *argv, "--count", "systolic")
    assert r["access_count"] == "systolic" and r["pa_nf"] == plain["pa_nf"]
    assert r["generator_accesses"] == count_accesses(g, (1, 16, 16), "systolic") == 1107
    v = BerCurve.builtin("finfet14").voltage(0.02)
    assert r["energy_saving"] == pytest.approx(1 - v ** 2 - 1107 / r["base_accesses"])


def test_eval_without_generator(capsys, world):
    r = run_json(capsys, "eval", "--base", world["base_a"], "--data", world["data"], "--ber", "0.01",
                 "--limit", "20")
    assert r["samples"] == 20 and r["n_models"] == 10
    assert r["ca_nf"] is None and r["recovery"] is None
    assert r["energy_saving"] == pytest.approx(r["energy_saving_base"])


def test_chip_profiles_train_and_eval(capsys, world, tmp_path):
    meta = train(capsys, world, tmp_path / "g", "--profile", world["chip1"], world["chip2"],
                 "--voltage", "0.8")
    assert meta["fault_source"]["kind"] == "chips" and len(meta["fault_source"]["chips"]) == 2
    r = run_json(capsys, "eval", "--base", world["base_a"], "--generator", tmp_path / "g" / "generator.pt",
                 "--data", world["data"], "--profile", world["chip1"], world["chip2"], "--voltage", "0.8")
    assert r["n_models"] == 2 and r["faults"]["voltage"] == 0.8
    assert 0.0 < r["faults"]["ber"] < 0.05
    assert r["energy_saving_base"] == pytest.approx(1 - 0.8 ** 2)


def test_transfer_to_another_base(capsys, world, tmp_path):
    train(capsys, world, tmp_path / "g", "--ber", "0.01")
    r = run_json(capsys, "eval", "--base", world["base_b"], "--generator", tmp_path / "g" / "generator.pt",
                 "--data", world["data"], "--ber", "0.01", "--models", "2")
    assert r["transfer"] is True and r["generator_trained_on"] == world["base_a"]
    code, out, _ = run(capsys, "eval", "--base", world["base_b"], "--generator",
                       tmp_path / "g" / "generator.pt", "--data", world["data"], "--ber", "0.01",
                       "--models", "2")
    assert code == 0 and "(transfer)" in out and "recovery" in out


def test_train_resumes_and_extends(capsys, world, tmp_path):
    train(capsys, world, tmp_path / "g", "--ber", "0.01")
    meta = train(capsys, world, tmp_path / "g", "--ber", "0.01", "--epochs", "2")
    assert meta["epochs_done"] == 2 and [h["epoch"] for h in meta["history"]] == [1, 2]


def test_train_ema_writes_the_averaged_generator(capsys, world, tmp_path):
    meta = train(capsys, world, tmp_path / "g", "--ber", "0.01", "--ema", "0.5")
    assert meta["config"]["ema"] == 0.5
    g, _ = load_generator(tmp_path / "g" / "generator.pt")
    raw = torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=True)["generator"]
    mine = g.state_dict()
    assert not all(torch.equal(mine[k], raw[k]) for k in raw if raw[k].is_floating_point())


@pytest.mark.parametrize("argv, message", [
    (["--ber", "2"], "--ber"),
    (["--ber", "x"], "--ber must be a number"),
    (["--profile", "CHIP1"], "--voltage"),
    (["--profile", "CHIP1", "--voltage", "0.7"], "below"),
    (["--profile", "nope.h5", "--voltage", "0.8"], "nope.h5"),
    (["--ber", "0.01", "--profile", "CHIP1", "--voltage", "0.8"], "either"),
    ([], "--ber P or --profile"),
    (["--ber", "0.01", "--base", "missing.pt"], "missing.pt"),
    (["--ber", "0.01", "--data", "/no/such/dir"], "/no/such/dir"),
    (["--ber", "0.01", "--models", "0"], "--models"),
    (["--ber", "0.01", "--device", "cuda"], "cuda"),
])
def test_eval_bad_input_is_one_line_exit_2(capsys, world, argv, message):
    argv = [world["chip1"] if a == "CHIP1" else a for a in argv]
    base = [] if "--base" in argv else ["--base", world["base_a"]]
    data = [] if "--data" in argv else ["--data", world["data"]]
    code, out, err = run(capsys, "eval", *base, *data, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("fusion: error:") and message in err


def test_bad_generator_files(capsys, world, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    code, _, err = run(capsys, "eval", "--base", world["base_a"], "--generator", junk,
                       "--data", world["data"], "--ber", "0.01")
    assert code == 2 and "junk.pt" in err and err.count("\n") == 1
    save_generator(tmp_path / "rgb.pt", generators.build("ConvS", 3), {})
    code, _, err = run(capsys, "eval", "--base", world["base_a"], "--generator", tmp_path / "rgb.pt",
                       "--data", world["data"], "--ber", "0.01")
    assert code == 2 and "3-channel" in err
    code, _, err = run(capsys, "eval", "--base", world["base_rgb"], "--data", world["data"], "--ber", "0.01")
    assert code == 2 and "3-channel" in err
    code, _, err = run(capsys, "eval", "--base", junk, "--data", world["data"], "--ber", "0.01")
    assert code == 2 and "junk.pt" in err


def test_train_bad_input(capsys, world, tmp_path):
    common = ["--base", world["base_a"], "--data", world["data"], "--ber", "0.01", "--no-progress"]
    cases = [
        (["--generator", "Big", "--epochs", "1", "--out", tmp_path / "a"], "--generator"),
        (["--epochs", "0", "--out", tmp_path / "a"], "--epochs"),
        (["--epochs", "1", "--n-perturbed", "0", "--out", tmp_path / "a"], "--n-perturbed"),
        (["--epochs", "1", "--width", "-1", "--out", tmp_path / "a"], "--width"),
        (["--epochs", "1", "--ema", "1", "--out", tmp_path / "a"], "--ema"),
    ]
    (tmp_path / "file").write_text("x")
    cases.append((["--epochs", "1", "--out", tmp_path / "file"], "not a directory"))
    for argv, message in cases:
        code, out, err = run(capsys, "train", *common, *argv)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
    # a checkpoint made with other settings is not silently mixed in
    train(capsys, world, tmp_path / "g", "--ber", "0.01")
    code, _, err = run(capsys, "train", *common, "--generator", "ConvS", "--width", "0.25",
                       "--epochs", "2", "--n-perturbed", "2", "--batch-size", "16", "--lam", "1",
                       "--out", tmp_path / "g")
    assert code == 2 and "other settings (lam)" in err


def test_generator_demo_runs_within_budget(world, tmp_path):
    from fusion.demo import run_generator_demo
    r = run_generator_demo(world["base_a"], world["data"], voltage=0.8, budget_seconds=0.5,
                           out_dir=tmp_path / "demo", train_limit=None, eval_limit=None, n_models=2,
                           progress=False, config={"width": 0.25, "n_perturbed": 2, "batch_size": 16},
                           log=lambda msg: None)
    assert {"ca", "pa_mean", "ca_nf", "pa_nf_mean", "energy_saving", "recovery"} <= set(r)
    assert r["steps"] >= 1 and r["n_models"] == 2 and r["voltage"] == 0.8
    assert r["ber"] == pytest.approx(float(BerCurve.builtin("finfet14").ber(0.8)))
    assert (tmp_path / "demo" / "generator.pt").is_file()


def test_train_validation_split_writes_the_best_generator(capsys, world, tmp_path):
    meta = train(capsys, world, tmp_path / "g", "--ber", "0.02", "--epochs", "2", "--val-split", "16",
                 "--val-maps", "2", "--val-ber", "0.01")
    val = meta["validation"]
    assert meta["train_samples"] == 48 - 16
    assert (val["samples"], val["maps"]) == (16, 2) and val["fault_source"]["ber"] == 0.01
    scores = [h["val_score"] for h in meta["history"]]
    assert val["best_score"] == max(scores) and val["best_epoch"] == 1 + scores.index(max(scores))
    code, out, err = run(capsys, "train", "--base", world["base_a"], "--generator", "ConvS", "--width",
                         "0.25", "--data", world["data"], "--ber", "0.02", "--epochs", "3",
                         "--n-perturbed", "2", "--batch-size", "16", "--out", tmp_path / "g",
                         "--val-split", "16", "--val-maps", "2", "--val-ber", "0.02")
    assert code == 2 and "other validation settings" in err      # scores would not compare
    code, out, err = run(capsys, "train", "--base", world["base_a"], "--data", world["data"],
                         "--ber", "0.01", "--epochs", "1", "--out", tmp_path / "h", "--val-split", "48")
    assert code == 2 and "--val-split" in err and "48 samples" in err and err.count("\n") == 1
    code, out, err = run(capsys, "train", "--base", world["base_a"], "--data", world["data"],
                         "--ber", "0.01", "--epochs", "1", "--out", tmp_path / "h", "--val-ber", "0.01")
    assert code == 2 and "--val-split" in err and err.count("\n") == 1
