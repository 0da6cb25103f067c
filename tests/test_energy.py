"""Energy model: E(V) formula, access counts, the NeuralFuse add-on accounting and the CLI."""
import json

import pytest
from torch import nn

from sramsim.analysis import energy as E
from sramsim.commands.main import main
from sramsim.memory.curves import BerCurve
from sramsim.errors import InputError


def test_energy_per_read_dynamic_is_v_squared():
    assert E.energy_per_read(1.0) == 1.0
    assert E.energy_per_read(0.5) == pytest.approx(0.25)
    assert E.energy_per_read(0.833) == pytest.approx(0.693889, abs=1e-6)
    # absolute voltages: only the ratio to nominal matters
    assert E.energy_per_read(0.7, nominal=0.8) == pytest.approx((0.7 / 0.8) ** 2)


def test_energy_per_read_leakage_share_is_linear_in_v():
    # all leakage: energy per read ~ V; half and half: the average of V^2 and V
    assert E.energy_per_read(0.8, leakage_share=1.0) == pytest.approx(0.8)
    assert E.energy_per_read(0.8, leakage_share=0.5) == pytest.approx(0.5 * 0.64 + 0.5 * 0.8)
    assert E.energy_per_read(1.0, leakage_share=0.3) == pytest.approx(1.0)
    # leakage makes lowering the voltage save less
    assert E.energy_per_read(0.8, leakage_share=0.2) > E.energy_per_read(0.8)


@pytest.mark.parametrize("args", [(0.0,), (-1.0,), (float("nan"),), (0.8, 0.0), (0.8, 1.0, 1.5),
                                  (0.8, 1.0, -0.1), (1.5,), (0.9, 0.8)])
def test_energy_per_read_rejects_nonsense(args):
    with pytest.raises(InputError):
        E.energy_per_read(*args)


def test_neuralfuse_resnet18_convl_saving_reproduced():
    """NeuralFuse's accounting at 1% BER of finfet14: ResNet18 + ConvL saves ~19%."""
    v = BerCurve.builtin("finfet14").voltage(0.01)
    assert v == pytest.approx(0.833, abs=3e-3)   # 0.835 at exactly 1%; 0.833 is 1.115%
    s = E.addon_saving(E.PUBLISHED_ACCESSES["ResNet18"], E.PUBLISHED_ACCESSES["ConvL"], 0.833)
    # 1 - 0.833^2 - 320256/2755968 = 0.18991
    assert s == pytest.approx(1 - 0.833 ** 2 - 320_256 / 2_755_968, rel=1e-12)
    assert s == pytest.approx(0.19, abs=0.002)
    assert E.addon_saving(100, 0, 0.833) == pytest.approx(E.saving(0.833))


def test_addon_saving_rejects_bad_counts():
    with pytest.raises(InputError):
        E.addon_saving(0, 10, 0.9)
    with pytest.raises(InputError):
        E.addon_saving(10, -1, 0.9)


def test_weight_accesses_counts_conv_and_linear_weights_once():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5), nn.ConvTranspose2d(2, 2, 2))
    expected = 4 * 3 * 3 * 3 + 144 * 5 + 2 * 2 * 2 * 2
    assert E.weight_accesses(model) == expected
    assert E.weight_accesses(model, (3, 8, 8)) == expected
    assert E.weight_accesses(model, include_bias=True) == expected + 4 + 5 + 2
    with pytest.raises(InputError, match="channels"):
        E.weight_accesses(model, (1, 8, 8))
    with pytest.raises(InputError):
        E.weight_accesses(nn.Sequential(nn.ReLU()))


def _energy(capsys, *argv):
    code = main(["energy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_published_counts_give_19_percent(capsys):
    code, out, _ = _energy(capsys, "--accesses", "2755968", "--addon", "ConvL", "--voltage", "0.833",
                           "--count", "published", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["count"] == "published" and r["addon_accesses_looked_up"] is True
    assert "looked up" in r["addon_accesses_source"]
    assert r["energy_per_read"] == pytest.approx(0.6939, abs=1e-4)
    assert r["saving"] == pytest.approx(0.19, abs=0.002)
    assert r["addon_accesses"] == 320_256
    assert r["ber"] == pytest.approx(1.115e-2, rel=1e-6)
    code2, out2, _ = _energy(capsys, "--accesses", "2755968", "--addon-accesses", "320256",
                             "--ber", "0.01115", "--json")
    assert code2 == 0 and json.loads(out2)["saving"] == pytest.approx(r["saving"], abs=1e-6)


def test_cli_human_table(capsys):
    code, out, _ = _energy(capsys, "--accesses", "1000", "--voltage", "0.9")
    assert code == 0
    assert "19.00%" in out and "energy per read" in out


@pytest.mark.parametrize("argv, needle", [
    (["--accesses", "100", "--voltage", "0.5"], "below the lowest voltage"),
    (["--accesses", "100", "--voltage", "abc"], "--voltage must be a number"),
    (["--accesses", "100", "--voltage", "1.2"], "above the nominal"),
    (["--accesses", "100", "--voltage", "nan"], "finite"),
    (["--accesses", "-5", "--voltage", "0.9"], "--accesses must be positive"),
    (["--accesses", "x", "--voltage", "0.9"], "whole number"),
    (["--accesses", "100", "--addon", "Nope", "--voltage", "0.9", "--count", "published"],
     "no published access count"),
    (["--accesses", "100", "--addon", "Nope", "--voltage", "0.9", "--input-shape", "3,32,32"],
     "no add-on of that name is registered"),
    (["--accesses", "100", "--ber", "1.5"], "--ber must lie in [0, 1]"),
    (["--accesses", "100", "--voltage", "0.9", "--count", "systolic"], "nothing to count"),
    (["--accesses", "100", "--addon-accesses", "5", "--voltage", "0.9", "--count", "weights"],
     "nothing to count"),
    (["--model", "/nonexistent/ckpt.pt", "--voltage", "0.9", "--count", "published"],
     "--count published"),
    (["--accesses", "100", "--addon", "ConvS", "--voltage", "0.9", "--count", "published",
      "--input-shape", "3,32,32"], "--input-shape would not be used"),
    (["--accesses", "100", "--voltage", "0.9", "--leakage-share", "2"], "--leakage-share"),
    (["--model", "/nonexistent/ckpt.pt", "--voltage", "0.9"], "ckpt.pt"),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, out, err = _energy(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and needle in err


def test_cli_model_checkpoint_and_generator_count(cnn_checkpoint, capsys):
    from fusion import generators
    ckpt, model = cnn_checkpoint
    code, out, _ = _energy(capsys, "--model", str(ckpt), "--addon", "ConvS", "--voltage", "0.833",
                           "--json")
    assert code == 0
    r = json.loads(out)
    base = E.weight_accesses(model)
    addon = generators.weight_count(generators.build("ConvS", 1))
    assert r["base_accesses"] == base and r["addon_accesses"] == addon
    assert r["saving"] == pytest.approx(1 - 0.833 ** 2 - addon / base)


@pytest.mark.parametrize("count", [None, "weights", "systolic"])
def test_cli_count_governs_the_addon_count(capsys, count):
    """--count systolic (or the default) never silently falls back to the published table."""
    argv = ["--accesses", "2755968", "--addon", "ConvS", "--voltage", "0.833", "--json"]
    argv += [] if count is None else ["--count", count]
    code, out, err = _energy(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--input-shape" in err and "--count published" in err


def test_cli_looked_up_count_is_labelled_in_the_table(capsys):
    code, out, _ = _energy(capsys, "--accesses", "2755968", "--addon", "UNetL", "--voltage", "0.833",
                           "--count", "published")
    assert code == 0
    assert "180,894" in out and "looked up, not computed" in out
    assert "not computed" in out.splitlines()[-3]          # the note row under the add-on's reads


def test_cli_counted_addon_is_not_labelled_looked_up(capsys):
    code, out, _ = _energy(capsys, "--accesses", "2755968", "--addon", "UNetL", "--voltage", "0.833",
                           "--count", "systolic", "--input-shape", "3,32,32", "--json")
    r = json.loads(out)
    assert code == 0 and r["count"] == "systolic" and r["addon_accesses_looked_up"] is False
    assert r["addon_accesses"] == 173_952 != E.PUBLISHED_ACCESSES["UNetL"]
    assert r["addon_accesses_source"].startswith("UNetL: counted")


def test_given_numbers_report_no_count(capsys):
    code, out, _ = _energy(capsys, "--accesses", "1000", "--addon-accesses", "10", "--voltage", "0.9",
                           "--json")
    r = json.loads(out)
    assert code == 0 and r["count"] is None and r["addon_accesses_looked_up"] is False
