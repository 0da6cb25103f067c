"""Bad input on the command line, as a hostile user would type it: every case must exit 2 with
exactly one line on stderr that names the flag (or the file), never a traceback, and must fail
before any work is done (nothing is written)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fusion.cli import main as fusion_main
from sramsim import BerCurve, Chip, Geometry
from sramsim.commands.main import build_parser
from sramsim.commands.main import main as sramsim_main
from sramsim.errors import InputError
from sramsim.nn.models import build, load_checkpoint, save_checkpoint
from conftest import write_idx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

META = {"arch": "cnn", "in_channels": 1, "num_classes": 2, "norm": "batch", "bits": 8,
        "scheme": "symmetric", "clip": None, "dataset": None}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 16x16 two-class IDX dataset, a base CNN, the same CNN with one NaN weight, a chip
    profile, and a regular file to put output paths under (unwritable even for root)."""
    root = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for prefix, n in (("train", 32), ("t10k", 16)):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 16, 16)))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 2, n))
    torch.manual_seed(0)
    model = build("cnn", 1, 2).eval()
    save_checkpoint(root / "base.pt", model, META)
    with torch.no_grad():
        next(model.parameters()).view(-1)[3] = float("nan")
    save_checkpoint(root / "nan.pt", model, META)
    Chip.random(Geometry(64, 32), BerCurve.builtin("finfet14"), 0.78, 1).save(root / "chip.h5")
    (root / "afile").write_text("a regular file, not a folder\n")
    return {"ROOT": str(root), "DATA": str(data), "BASE": str(root / "base.pt"),
            "NAN": str(root / "nan.pt"), "CHIP": str(root / "chip.h5"), "FILE": str(root / "afile")}


def fill(argv, world, tmp_path):
    """Replace the placeholders BASE, DATA, CHIP, NAN, FILE, TMP in each argument."""
    out = []
    for a in argv:
        for key, value in {**world, "TMP": str(tmp_path)}.items():
            a = a.replace(key, value)
        out.append(a)
    return out


def assert_one_line(code, out, err, prog, needles):
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: "), err
    for needle in needles:
        assert needle in err, err


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


# ---------------------------------------------------------------- fusion

EVAL = ["eval", "--base", "BASE", "--data", "DATA"]
TRAIN = ["train", "--base", "BASE", "--data", "DATA", "--epochs", "1", "--out", "TMP/g",
         "--no-progress", "--batch-size", "16", "--n-perturbed", "1"]
DEMO = ["demo", "--base", "BASE", "--data", "DATA", "--out", "TMP/d", "--no-progress",
        "--budget", "1", "--train-limit", "16", "--eval-limit", "8", "--models", "1"]

FUSION_CASES = [
    # the curve's BER and voltage ranges (issue 11: these were ValueError tracebacks, exit 1)
    (EVAL + ["--ber", "0.5"], ["--ber 0.5", "0.2056"]),
    (EVAL + ["--ber", "2"], ["--ber"]),
    (EVAL + ["--ber", "nan"], ["--ber"]),
    (EVAL + ["--ber", "-0.01"], ["--ber"]),
    (EVAL + ["--ber", "1"], ["--ber"]),
    (EVAL + ["--voltage", "0.5"], ["--voltage 0.5", "below", "0.75"]),
    (EVAL + ["--voltage", "1.5"], ["--voltage 1.5", "above the nominal voltage"]),
    (EVAL + ["--voltage", "nan"], ["--voltage"]),
    (EVAL + ["--voltage", "-1"], ["--voltage"]),
    (EVAL + ["--voltage", "x"], ["--voltage"]),
    (EVAL + ["--profile", "CHIP", "--voltage", "1.2"], ["--voltage 1.2", "above", "nominal"]),
    (EVAL + ["--profile", "CHIP", "--voltage", "nan"], ["--voltage"]),
    (EVAL + ["--ber", "0.01", "--limit", "0"], ["--limit"]),
    (EVAL + ["--ber", "0.01", "--limit", "1.5"], ["--limit"]),
    (EVAL + ["--ber", "0.01", "--batch-size", "-1"], ["--batch-size"]),
    (EVAL + ["--ber", "0.01", "--seed", "-1"], ["--seed"]),
    (EVAL + ["--ber", "0.01", "--seed", "1.5"], ["--seed"]),
    (EVAL + ["--ber", "0.01", "--seed", str(2 ** 64)], ["--seed"]),
    (EVAL + ["--ber", "0.01", "--models", "x"], ["--models"]),
    (EVAL + ["--ber", "0.01", "--generator", "TMP/none.pt"], ["none.pt"]),
    (EVAL + ["--ber", "0.01", "--device", "bogus"], ["--device"]),
    (EVAL + ["--ber", "0.01", "--base", "NAN"], ["nan.pt", "NaN", "features.0.weight"]),
    (TRAIN + ["--ber", "0.5"], ["--ber 0.5"]),
    (TRAIN + ["--voltage", "0.5"], ["--voltage 0.5"]),
    (TRAIN + ["--ber", "0.01", "--epochs", "x"], ["--epochs"]),
    (TRAIN + ["--ber", "0.01", "--width", "nan"], ["--width"]),
    (TRAIN + ["--ber", "0.01", "--width", "1000"], ["--width 1000", "GiB"]),
    (TRAIN + ["--ber", "0.01", "--n-perturbed", str(10 ** 9)], ["--n-perturbed", "GiB"]),
    (TRAIN + ["--ber", "0.01", "--lam", "-1"], ["--lam"]),
    (TRAIN + ["--ber", "0.01", "--lam", "nan"], ["--lam"]),
    (TRAIN + ["--ber", "0.01", "--lr", "0"], ["--lr"]),
    (TRAIN + ["--ber", "0.01", "--lr-step", "0"], ["--lr-step"]),
    (TRAIN + ["--ber", "0.01", "--ema", "nan"], ["--ema"]),
    (TRAIN + ["--ber", "0.01", "--seed", "-2"], ["--seed"]),
    (TRAIN + ["--ber", "0.01", "--val-split", "x"], ["--val-split"]),
    (TRAIN + ["--ber", "0.01", "--val-split", "8", "--val-maps", "0"], ["--val-maps"]),
    (TRAIN + ["--ber", "0.01", "--val-split", "8", "--val-ber", "0.5"], ["--val-ber 0.5"]),
    (TRAIN + ["--ber", "0.01", "--time-budget", "-1"], ["--time-budget"]),
    (TRAIN + ["--ber", "0.01", "--out", "FILE/g"], ["--out", "not a directory"]),
    (TRAIN + ["--ber", "0.01", "--out", "FILE"], ["--out", "not a directory"]),
    (EVAL + ["--ber", "0.01", "--ecc", "secded64"], ["--ecc 'secded64'", "secded72"]),
    (EVAL + ["--ber", "0.01", "--ecc-policy", "zero"], ["--ecc-policy needs --ecc"]),
    (EVAL + ["--ber", "0.01", "--ecc", "secded72", "--ecc-policy", "drop"], ["--ecc-policy 'drop'"]),
    (EVAL + ["--ber", "0.01", "--placement", "skip"], ["--bit-placement 'skip'", "linear, shuffle"]),
    (EVAL + ["--ber", "0.01", "--placement", "shuffle"], ["--bit-placement shuffle needs a known chip map"]),
    (EVAL + ["--profile", "CHIP", "--voltage", "0.9", "--placement", "shuffle", "--ecc", "secded13"],
     ["--bit-placement shuffle with --ecc"]),
    (EVAL + ["--profile", "CHIP", "--voltage", "0.9", "--placement", "skip-faulty-words"],
     ["skip-faulty-words", "fault-free words of 256"]),
    (DEMO + ["--ber", "0.5"], ["--ber 0.5", "0.2056"]),
    (DEMO + ["--ber", "2"], ["--ber"]),
    (DEMO + ["--ber", "nan"], ["--ber"]),
    (DEMO + ["--ber", "0"], ["--ber"]),
    (DEMO + ["--budget", "0"], ["--budget"]),
    (DEMO + ["--budget", "nan"], ["--budget"]),
    (DEMO + ["--train-limit", "0"], ["--train-limit"]),
    (DEMO + ["--eval-limit", "x"], ["--eval-limit"]),
    (DEMO + ["--models", "0"], ["--models"]),
    (DEMO + ["--out", "FILE/d"], ["--out", "not a directory"]),
]


@pytest.mark.parametrize("argv, needles", FUSION_CASES, ids=[" ".join(c[0][:1] + c[0][-2:])
                                                             for c in FUSION_CASES])
def test_fusion_bad_input_is_one_line_exit_2(capsys, world, tmp_path, argv, needles):
    code = fusion_main(fill(argv, world, tmp_path))
    out, err = capsys.readouterr()
    assert_one_line(code, out, err, "fusion", needles)
    assert leftovers(tmp_path) == []                                # failed before any work


# ---------------------------------------------------------------- sramsim

SYNTH = ["profile", "synth", "--rows", "64", "--cols", "32", "--v-floor", "0.78", "--seed", "1",
         "--out", "TMP/c.h5"]
IMPORT = ["profile", "import", "ROOT", "--rows", "8", "--cols", "8", "--out", "TMP/m.h5"]
PLOT = ["profile", "plot", "CHIP", "--voltage", "0.9", "--out", "TMP/p.png"]
TRAIN_BASE = ["train-base", "--data", "DATA", "--out", "TMP/m.pt", "--no-progress", "--limit", "16"]
SWEEP = ["sweep", "--model", "BASE", "--data", "DATA", "--chips", "1", "--rows", "64", "--cols",
         "512", "--voltages", "1.0,0.9", "--out", "TMP/o", "--no-progress"]
VULN = ["vuln", "--model", "BASE", "--data", "DATA", "--ber", "0.01", "--models", "1",
        "--no-progress"]
ENERGY = ["energy", "--accesses", "1000", "--voltage", "0.9"]
SDEMO = ["demo", "--data", "DATA", "--out", "TMP/d", "--limit", "16", "--no-progress"]

SRAMSIM_CASES = [
    (SYNTH + ["--v-floor", "1.5"], ["--v-floor 1.5", "above the nominal voltage 1"]),
    (SYNTH + ["--v-floor", "nan"], ["--v-floor"]),
    (SYNTH + ["--v-floor", "x"], ["--v-floor"]),
    (SYNTH + ["--seed", "-1"], ["--seed"]),
    (SYNTH + ["--seed", "1.5"], ["--seed"]),
    (SYNTH + ["--rows", "x"], ["--rows"]),
    (SYNTH + ["--rows", "0"], ["--rows"]),
    (SYNTH + ["--banks", "nan"], ["--banks"]),
    (SYNTH + ["--curve", "gaussian:nan,0.05"], ["--curve"]),
    (SYNTH + ["--kinds", "flip=nan"], ["--kinds"]),
    (SYNTH + ["--out", "FILE/c.h5"], ["--out", "not a directory"]),
    (IMPORT + ["--nominal-voltage", "nan"], ["--nominal-voltage"]),
    (IMPORT + ["--nominal-voltage", "-1"], ["--nominal-voltage"]),
    (IMPORT + ["--cols", "x"], ["--cols"]),
    (IMPORT + ["--out", "FILE/m.h5"], ["--out", "not a directory"]),
    (["profile", "info", "CHIP", "--voltages", "0.9", "1.5"], ["--voltages 1.5", "above"]),
    (["profile", "info", "CHIP", "--voltages", "nan"], ["--voltages"]),
    (["profile", "info", "CHIP", "--voltages", "x"], ["--voltages"]),
    (PLOT + ["--voltage", "7"], ["--voltage 7", "above", "nominal voltage 1"]),
    (PLOT + ["--voltage", "0.5"], ["--voltage 0.5", "below"]),
    (PLOT + ["--voltage", "nan"], ["--voltage"]),
    (PLOT + ["--out", "FILE/p.png"], ["--out", "not a directory"]),
    (TRAIN_BASE + ["--epochs", "x"], ["--epochs"]),
    (TRAIN_BASE + ["--epochs", "nan"], ["--epochs"]),
    (TRAIN_BASE + ["--lr", "nan"], ["--lr"]),
    (TRAIN_BASE + ["--batch-size", "0"], ["--batch-size"]),
    (TRAIN_BASE + ["--weight-decay", "-1"], ["--weight-decay"]),
    (TRAIN_BASE + ["--seed", "-1"], ["--seed"]),
    (TRAIN_BASE + ["--clip", "inf"], ["--clip"]),
    (TRAIN_BASE + ["--randbet-p", "nan"], ["--randbet-p"]),
    (TRAIN_BASE + ["--limit", "-5"], ["--limit"]),
    (TRAIN_BASE + ["--image-size", "0"], ["--image-size"]),
    (TRAIN_BASE + ["--stdp-intensity", "0"], ["--stdp-intensity"]),
    (TRAIN_BASE + ["--stdp-intensity", "5000"], ["--stdp-intensity", "rate in (0, 840] Hz"]),
    (TRAIN_BASE + ["--stdp-rest-ms", "nan"], ["--stdp-rest-ms"]),
    (TRAIN_BASE + ["--stdp-rest-ms", "-1"], ["--stdp-rest-ms"]),
    (TRAIN_BASE + ["--out", "FILE/m.pt"], ["--out", "not a directory"]),
    (SWEEP + ["--out", "FILE/o"], ["--out", "not a directory"]),
    (SWEEP + ["--seed", "-1"], ["--seed"]),
    (SWEEP + ["--leakage-share", "nan"], ["--leakage-share"]),
    (SWEEP + ["--threads", "0"], ["--threads"]),
    (SWEEP + ["--model", "NAN"], ["nan.pt", "NaN"]),
    (SWEEP + ["--ecc", "hamming"], ["--ecc 'hamming'", "secded72, secded13"]),
    (SWEEP + ["--ecc-policy", "zero"], ["--ecc-policy needs --ecc"]),
    (SWEEP + ["--ecc", "secded13", "--ecc-policy", "x"], ["--ecc-policy 'x'", "keep, zero"]),
    (SWEEP + ["--placement", "rotate"], ["--bit-placement 'rotate'", "linear, shuffle, skip-faulty-words"]),
    (SWEEP + ["--placement", "shuffle", "--ecc", "secded72"], ["--bit-placement shuffle with --ecc"]),
    (SWEEP + ["--placement", "skip-faulty-words", "--rows", "4"],
     ["skip-faulty-words", "the image needs", "fault-free words of 256"]),
    (VULN + ["--ecc", "secded"], ["--ecc 'secded'"]),
    (VULN + ["--ecc-policy", "zero"], ["--ecc-policy needs --ecc"]),
    (VULN + ["--ecc", "secded72", "--ecc-policy", "none"], ["--ecc-policy 'none'"]),
    (VULN + ["--placement", "rotate"], ["--bit-placement 'rotate'", "linear, shuffle"]),
    (VULN + ["--placement", "shuffle"], ["--bit-placement shuffle needs a known chip map (--profile)"]),
    (["vuln", "--model", "BASE", "--data", "DATA", "--profile", "CHIP", "--voltage", "0.9",
      "--placement", "skip-faulty-words", "--ecc", "secded72"], ["--bit-placement", "with --ecc"]),
    (["vuln", "--model", "BASE", "--data", "DATA", "--profile", "CHIP", "--voltage", "0.9",
      "--placement", "skip-faulty-words", "--no-progress"], ["skip-faulty-words", "fault-free words of 256"]),
    (ENERGY + ["--ecc", "ecc"], ["--ecc 'ecc'"]),
    (ENERGY + ["--ecc-decoder-energy", "0.1"], ["--ecc-decoder-energy needs --ecc"]),
    (ENERGY + ["--ecc", "secded72", "--ecc-decoder-energy", "-1"], ["--ecc-decoder-energy"]),
    (ENERGY + ["--ecc", "secded72", "--ecc-decoder-energy", "nan"], ["--ecc-decoder-energy"]),
    (ENERGY + ["--ecc", "secded72", "--ecc-decoder-energy", "x"], ["--ecc-decoder-energy"]),
    (SDEMO + ["--out", "FILE/d"], ["--out", "not a directory"]),
    (SDEMO + ["--cache", "FILE/c"], ["--cache", "not a directory"]),
    (SDEMO + ["--epochs", "x"], ["--epochs"]),
    (SDEMO + ["--limit", "1"], ["--limit"]),
    (SDEMO + ["--workers", "0"], ["--workers"]),
    (SDEMO + ["--voltages", "0.5"], ["--voltages", "below"]),
    (SDEMO + ["--profiles", "TMP/none.h5"], ["none.h5"]),
]


@pytest.mark.parametrize("argv, needles", SRAMSIM_CASES,
                         ids=[" ".join(c[0][:2] + c[0][-2:]) for c in SRAMSIM_CASES])
def test_sramsim_bad_input_is_one_line_exit_2(capsys, world, tmp_path, argv, needles):
    code = sramsim_main(fill(argv, world, tmp_path))
    out, err = capsys.readouterr()
    assert_one_line(code, out, err, "sramsim", needles)
    assert leftovers(tmp_path) == []                                # failed before any work


# ---------------------------------------------------------------- the library underneath

def test_checkpoint_with_a_nan_weight_is_refused(world):
    with pytest.raises(InputError) as info:
        load_checkpoint(world["NAN"])
    message = str(info.value)
    assert world["NAN"] in message and "'features.0.weight'" in message and "1 NaN" in message
    load_checkpoint(world["BASE"])                                   # the finite twin loads


def test_a_broken_subcommand_module_is_an_error(tmp_path, monkeypatch):
    """A listed subcommand module that is missing or fails to import must raise, not vanish."""
    pkg = tmp_path / "cmds_under_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("def register(sub):\n    sub.add_parser('good')\n")
    (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert build_parser("t", "cmds_under_test", ("good",)).parse_args(["good"]).command == "good"
    with pytest.raises(ModuleNotFoundError, match="cmds_under_test.renamed"):
        build_parser("t", "cmds_under_test", ("good", "renamed"))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        build_parser("t", "cmds_under_test", ("good", "broken"))
    for name in [m for m in sys.modules if m.startswith("cmds_under_test")]:
        monkeypatch.delitem(sys.modules, name)
