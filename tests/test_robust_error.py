"""Robust error (RErr, Stutz et al. MLSys 2021) in sweeps and `fusion eval`, on a case worked by hand.

Model: flatten + Linear(2, 2) with identity weights, 8-bit symmetric: delta = 1/127, codes
[127, 0, 0, 127] at image bytes 0..3. The hand-made chip has one flip at bit 7 of byte 0
(failing at V <= 0.9): code 127 -> 0xFF = -1, so W[0, 0] becomes -1/127 and class 0's logit
turns negative for every input with x0 > 0.

    x          y   clean pred   faulty pred
    (1, 0.5)   0   0  ok        1  wrong
    (1, 0)     0   0  ok        1  wrong   (logits -1/127 vs 0)
    (0, 1)     1   1  ok        1  ok
    (0, 1)     0   1  wrong     1  wrong
clean error 1/4; RErr 3/4 at V = 0.85; at V = 0.95 the chip has no faults and RErr = 1/4.
"""
import numpy as np
import pytest
import torch
from torch import nn

from sramsim import Chip, Geometry, QuantizedModel
from sramsim.nn.data import Dataset
from sramsim.analysis.executors import Execution
from sramsim.analysis.sweep import run_sweep

fusion_eval = pytest.importorskip("fusion.evaluation")


def _model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    return model.eval()


def _data() -> Dataset:
    x = torch.tensor([[1.0, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).reshape(4, 2, 1, 1)
    return Dataset(x, torch.tensor([0, 0, 1, 0]), 2, "hand")


def _chip() -> Chip:
    return Chip(Geometry(1, 64), np.array([7], dtype=np.uint64), np.array([0.9], dtype=np.float32),
                np.array([0], dtype=np.uint8), v_floor=0.8, name="hand")


def test_the_hand_case_holds():
    qm = QuantizedModel(_model(), bits=8, scheme="symmetric")
    assert qm.image.tolist() == [127, 0, 0, 127]
    faulty = qm.faulty_image(_chip(), 0.85)
    assert faulty.tolist() == [255, 0, 0, 127]
    w = qm.dequantize(faulty)["1.weight"]
    assert w[0, 0].item() == pytest.approx(-1 / 127)


def test_sweep_reports_clean_error_and_rerr(tmp_path):
    chip_path = tmp_path / "hand.h5"
    _chip().save(chip_path)
    s = run_sweep(_model(), _data(), [str(chip_path)], [0.95, 0.85], tmp_path / "sweep",
                  execution=Execution(progress=False))
    assert s["clean_error"] == pytest.approx(0.25)
    by_v = {p["voltage"]: p for p in s["points"]}
    assert by_v[0.95]["rerr_mean"] == pytest.approx(0.25)
    assert by_v[0.85]["rerr_mean"] == pytest.approx(0.75)
    assert by_v[0.85]["accuracy_drop"] == pytest.approx(0.5)


def test_fusion_eval_reports_clean_error_and_rerr():
    qm = QuantizedModel(_model(), bits=8, scheme="symmetric")
    faults = fusion_eval.FaultSpec(voltage=0.85, chips=[_chip()])
    r = fusion_eval.evaluate(qm, _data(), faults)
    assert r["n_models"] == 1
    assert r["clean_error"] == pytest.approx(0.25)
    assert r["rerr_mean"] == pytest.approx(0.75) and r["rerr_std"] == 0.0
    assert r["rerr_mean"] == pytest.approx(1.0 - r["pa_mean"])


def test_fusion_eval_rerr_with_a_generator_uses_the_transformed_inputs():
    """An identity-start generator leaves inputs unchanged, so its errors equal the base's."""
    from fusion import generators
    x = torch.tensor([[1.0, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).reshape(4, 1, 1, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    qm = QuantizedModel(model.eval(), bits=8, scheme="symmetric")
    data = Dataset(x, torch.tensor([0, 0, 1, 0]), 2, "hand")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = generators.build("ConvS", 1, identity_init=True)
    r = fusion_eval.evaluate(qm, data, fusion_eval.FaultSpec(voltage=0.85, chips=[_chip()]), g)
    assert r["clean_error_nf"] == pytest.approx(0.25)
    assert r["rerr_nf_mean"] == pytest.approx(0.75) and r["rerr_nf_std"] == 0.0
