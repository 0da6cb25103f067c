"""`sramsim sweep --model FILE.pt2`: a sweep over a PT2E-quantized model saved by torch.export,
run from the command line like a sramsim checkpoint's (its own int8 weights and kernels)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import write_idx, write_quadrants
from sramsim.analysis.sweep import random_chips
from sramsim.commands.main import main
from sramsim.inject.torch_quantized import TorchQuantizedModel, load_exported
from sramsim.nn.data import load_dataset
from sramsim.nn.evaluation import evaluate

# torch 2.13 warns that quantized tensors are deprecated, torch.export's pytree about torchao
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

CHIP = ["--chips", "1", "--rows", "64", "--cols", "128", "--seed", "3"]   # 8192 bits >= 820 B
VOLTAGES = "1.0,0.85,0.75"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, stride=2), nn.Linear(4 * 7 * 7, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def export_pt2e(model: nn.Module, x: torch.Tensor, path, dynamic: bool = True) -> None:
    """Quantize `model` with PT2E (x86 per-channel int8), calibrated on `x`, and save the program."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    gm = torch.export.export(model, (x[:8],), dynamic_shapes=shapes).module()
    gm = prepare_pt2e(gm, X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config()))
    gm(x if dynamic else x[:8])
    gm = convert_pt2e(gm)
    torch.export.save(torch.export.export(gm, (x[:8],), dynamic_shapes=shapes), str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(data dir, q.pt2): a small CNN trained 8 steps on the quadrant data (clean 100%, 77% at
    20% BER), then PT2E-quantized."""
    root = write_quadrants(tmp_path_factory.mktemp("quadrants"), 256, 120, noise=120, bright=50)
    train = load_dataset(str(root), "train")
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        opt.step()
    path = root / "q.pt2"
    export_pt2e(model.eval(), train.x, path)
    return root, path


def sweep(capsys, *argv) -> dict:
    assert main(["sweep", *argv, "--no-progress", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def points(out) -> dict:
    """{(voltage, chip, offset) or "clean": (accuracy, loss)} from a sweep's points.jsonl."""
    recs = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    return {"clean" if r.get("clean") else (r["voltage"], r["chip_index"], r["offset_index"]):
            (r["accuracy"], r["loss"]) for r in recs}


def test_sweep_points_are_the_model_run_by_hand_and_resume(files, tmp_path, capsys):
    data, pt2 = files
    out = tmp_path / "sw"
    s = sweep(capsys, "--model", str(pt2), "--data", str(data), *CHIP, "--voltages", VOLTAGES,
              "--out", str(out))
    test = load_dataset(str(data), "test")
    gm = load_exported(pt2)
    clean = evaluate(gm, test)
    assert s["clean_accuracy"] == clean["accuracy"] and s["clean_loss"] == clean["loss"]
    assert s["float_accuracy"] is None
    assert s["quantization"]["bits"] == 8 and s["quantization"]["scheme"] == "pt2e"
    assert [p["voltage"] for p in s["points"]] == [1.0, 0.85, 0.75]
    assert s["points"][0]["ber"] == 0 and s["points"][0]["accuracy_mean"] == clean["accuracy"]
    assert s["points"][1]["saving"] == pytest.approx(1 - 0.85 ** 2)    # E ~ V^2, as for any image

    # a faulty point is the model evaluated by hand with the chip's faults loaded into it
    tqm = TorchQuantizedModel(gm)
    chip = random_chips(1, rows=64, cols=128, seed=3)[0].build()
    for p in s["points"][1:]:
        with tqm.loaded(tqm.faulty_image(chip, voltage=p["voltage"], offset=0)):
            by_hand = evaluate(gm, test)
        assert p["accuracy_mean"] == by_hand["accuracy"]
        assert p["loss_mean"] == by_hand["loss"]
        assert p["ber"] == chip.ber(p["voltage"]) > 0
    assert s["points"][2]["accuracy_mean"] < clean["accuracy"] - 0.05   # faults do show
    assert evaluate(gm, test) == clean                                  # weights restored

    again = sweep(capsys, "--model", str(pt2), "--data", str(data), *CHIP, "--voltages", VOLTAGES,
                  "--out", str(out))
    assert again["computed_points"] == 0 and again["reused_points"] == 3
    assert again["points"] == s["points"]
    assert main(["sweep", "--model", str(pt2), "--data", str(data), *CHIP, "--voltages",
                 VOLTAGES, "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "(int8 model quantized by PyTorch: no float model)" in table and "0.85" in table


# two spawned processes import torch and torchao: ~45 s on 2 loaded cores
def test_two_workers_give_the_points_of_one(files, tmp_path, capsys):
    data, pt2 = files
    argv = ["--model", str(pt2), "--data", str(data), "--chips", "2", "--rows", "64", "--cols",
            "128", "--offsets", "2", "--voltages", "0.85,0.8"]
    one = sweep(capsys, *argv, "--out", str(tmp_path / "one"))
    two = sweep(capsys, *argv, "--out", str(tmp_path / "two"), "--workers", "2")
    assert two["computed_points"] == one["computed_points"] == 8
    assert points(tmp_path / "two") == points(tmp_path / "one")


def test_bad_models_and_refused_options_are_one_line_errors(files, tmp_path, capsys):
    data, pt2 = files
    base = ["sweep", "--data", str(data), *CHIP, "--voltages", "0.9", "--no-progress"]

    def refused(model, *extra) -> str:
        assert main([*base, "--model", str(model), "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    foreign = tmp_path / "foreign.pt2"
    torch.save({"w": torch.zeros(3)}, foreign)
    assert str(foreign) in refused(foreign) and "not a torch.export program" in refused(foreign)
    float_program = tmp_path / "float.pt2"
    torch.export.save(torch.export.export(Net().eval(), (torch.zeros(2, 1, 16, 16),)),
                      str(float_program))
    assert "holds no int8 weights" in refused(float_program)
    static = tmp_path / "static.pt2"
    export_pt2e(Net().eval(), torch.rand(16, 1, 16, 16), static, dynamic=False)
    err = refused(static)
    assert str(static) in err and "dynamic batch" in err
    wrong = tmp_path / "wrong.pt2"                  # 16x16 model on 28x28 inputs
    data28 = tmp_path / "d28"
    data28.mkdir()
    write_idx(data28 / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    write_idx(data28 / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    export_pt2e(Net().eval(), torch.rand(16, 1, 16, 16), wrong)
    assert main(["sweep", "--model", str(wrong), "--data", str(data28), *CHIP, "--voltages",
                 "0.9", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(wrong) in err and "[1, 28, 28]" in err and "\n" not in err

    for extra, flag in ((["--bits", "4"], "--bits 4"), (["--scheme", "rquant"], "--scheme rquant"),
                        (["--ecc", "secded72"], "--ecc secded72")):
        err = refused(pt2, *extra)
        assert err.startswith(f"sramsim: error: {flag} does not apply to {pt2}"), err
    assert not (tmp_path / "o").exists()            # refused before anything was written
    s = sweep(capsys, *base[1:], "--model", str(pt2), "--out", str(tmp_path / "b8"), "--bits", "8")
    assert s["quantization"]["bits"] == 8           # --bits 8 applies trivially


def test_vuln_groups_are_the_model_run_by_hand(files, capsys):
    from sramsim.analysis.vulnerability import all_group, fault_maps, layer_group, restrict
    data, pt2 = files
    assert main(["vuln", "--model", str(pt2), "--data", str(data), "--ber", "0.2", "--models",
                 "2", "--no-progress", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    gm = load_exported(pt2)
    test = load_dataset(str(data), "test")
    tqm = TorchQuantizedModel(gm)
    assert r["clean_accuracy"] == evaluate(gm, test)["accuracy"]
    assert r["quantization"] == {"bits": 8, "scheme": "pt2e", "clip": None}
    assert sorted(x["label"] for x in r["layers"]) == sorted(tqm.names)
    assert len(r["bits"]) == 8
    rows = {x["label"]: x for x in r["layers"]}
    for k, (faulty, _) in enumerate(fault_maps(tqm, 2, ber=0.2, seed=0)):     # the same maps
        for g in [all_group(tqm)] + [layer_group(tqm, n) for n in tqm.names]:
            with tqm.loaded(restrict(tqm.image, faulty, g)):
                by_hand = evaluate(gm, test)["accuracy"]
            got = r["all"] if g.kind == "all" else rows[g.label]
            assert got["accuracy"][k] == by_hand
    assert r["all"]["drop_mean"] > 0.05
    for extra, flag in ((["--bits", "2"], "--bits 2"), (["--ecc", "secded13"], "--ecc secded13")):
        assert main(["vuln", "--model", str(pt2), "--data", str(data), "--ber", "0.01",
                     "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"sramsim: error: {flag} does not apply to {pt2}") and "\n" not in err


def test_loaded_program_moves_to_eval_once(files, monkeypatch):
    """torchao re-traces on every train()/eval(); allow_train_eval only when the mode changes."""
    import torchao.quantization.pt2e.export_utils as U
    calls = []
    for name in ("_move_exported_model_to_eval", "_move_exported_model_to_train"):
        real = getattr(U, name)
        monkeypatch.setattr(U, name, lambda m, real=real, name=name: (calls.append(name),
                                                                       real(m))[1])
    data, pt2 = files
    gm = load_exported(pt2)
    assert not gm.training and calls == ["_move_exported_model_to_eval"]
    test = load_dataset(str(data), "test")
    assert evaluate(gm, test) == evaluate(gm, test)
    assert gm.eval() is gm and calls == ["_move_exported_model_to_eval"]
    assert gm.train() is gm and gm.training and calls[-1] == "_move_exported_model_to_train"
