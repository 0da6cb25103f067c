"""The one evaluator and the one executor: the user's model is never changed, every path gives the
functional path's numbers, and vuln / fusion eval give the same results on any executor and
resume from their output folder."""
import copy
import json

import numpy as np
import pytest
import torch

from sramsim import BerCurve, Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.analysis import vulnerability as V
from sramsim.analysis.executors import Execution
from sramsim.analysis.operating_point import Reference, first_failure, lowest_within, passes
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.inject.layout import MemoryLayout
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import Evaluator, evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def world(n: int = 40):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ReLU(),
                                torch.nn.Linear(12, 3)).eval()
    g = torch.Generator().manual_seed(1)
    data = Dataset(torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g),
                   3, "tiny")
    return model, data


def floats(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("layout", [MemoryLayout(), MemoryLayout(ecc="secded13"),
                                    MemoryLayout(bit_placement="shuffle")])
def test_every_map_equals_the_functional_path_and_leaves_the_model_alone(layout):
    model, data = world()
    before = floats(model)
    qm = QuantizedModel(model, bits=8)
    chip = Chip.random(Geometry(8, 64), BerCurve.builtin("finfet14"), 0.75, seed=3,
                       kinds={"flip": 0.6, "stuck0": 0.2, "stuck1": 0.2})
    ev = Evaluator(qm, layout)
    assert ev.inplace and ev.model is not model
    for v, offset in ((0.9, 0), (0.8, 5), (0.76, 17)):
        got = ev.evaluate(data, chip, v, offset)
        image, record = layout.read(qm, chip, v, offset)
        want = evaluate(model, data, qm.dequantize(image))
        assert (got["accuracy"], got["loss"]) == (want["accuracy"], want["loss"])
        assert got["changed"] == (not np.array_equal(image, qm.image))
        assert {k: got[k] for k in record} == record
    assert same(floats(model), before)                       # the caller's model is untouched
    clean = ev.clean(data)
    assert clean == evaluate(model, data, qm.clean_weights())
    with ev.faults(None) as run:
        assert not run.changed and run.evaluate(data) == clean


def test_an_unchanged_map_is_the_clean_evaluation():
    model, data = world()
    ev = Evaluator(QuantizedModel(model))
    r = ev.evaluate(data, RandomBitErrors(1e-9, seed=0))
    assert not r["changed"] and (r["accuracy"], r["loss"]) == tuple(ev.clean(data).values())


def test_chip_draws_and_faulty_images_are_sources_too():
    from sramsim.inject.draws import ChipDraw
    model, data = world()
    qm = QuantizedModel(model)
    chip = Chip.random(Geometry(8, 64), BerCurve.builtin("finfet14"), 0.75, seed=3)
    ev = Evaluator(qm)
    a = ev.evaluate(data, ChipDraw(chip, 0.8, 3))
    b = ev.evaluate(data, chip, 0.8, 3)
    c = ev.evaluate(data, qm.faulty_image(chip, 0.8, 3))
    assert a == b and (c["accuracy"], c["loss"]) == (a["accuracy"], a["loss"])
    with pytest.raises(InputError, match="carries its own voltage"):
        ev.evaluate(data, ChipDraw(chip, 0.8, 3), 0.8)


# ------------------------------------------------------------------------------ the executor

def test_vuln_on_a_pool_equals_in_process_and_resumes(tmp_path):
    model, data = world()
    qm = QuantizedModel(model)
    kw = dict(ber=0.02, models=4, by="layer", seed=5)
    local = V.analyze(qm, data, **kw)
    out = tmp_path / "v"
    pooled = V.analyze(qm, data, **kw, execution=Execution(workers=2), out_dir=out)
    assert pooled == local
    assert json.loads((out / "vuln.json").read_text()) == json.loads(json.dumps(local))
    lines = (out / "points.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["map"] for line in lines) == [0, 1, 2, 3]
    seen = []
    again = V.analyze(qm, data, **kw, out_dir=out, on_map=seen.append)
    assert again == local and seen == []                     # every map reused
    (out / "points.jsonl").write_text("\n".join(lines[:2]) + "\n")    # two maps lost
    third = V.analyze(qm, data, **kw, out_dir=out, on_map=seen.append)
    assert third == local and len(seen) == 2
    with pytest.raises(InputError, match="different configuration"):
        V.analyze(qm, data, **{**kw, "seed": 6}, out_dir=out)


def test_fusion_eval_on_a_pool_equals_in_process_and_resumes(tmp_path):
    from fusion.evaluation import FaultSpec
    from fusion.evaluation import evaluate as fusion_evaluate
    model, data = world()
    qm = QuantizedModel(model)
    faults = FaultSpec(ber=0.03)
    local = fusion_evaluate(qm, data, faults, n_models=3)
    out = tmp_path / "f"
    pooled = fusion_evaluate(qm, data, faults, n_models=3, execution=Execution(workers=2),
                             out_dir=out)
    assert pooled == local and (out / "eval.json").exists()
    seen = []
    assert fusion_evaluate(qm, data, faults, n_models=3, out_dir=out, on_map=seen.append) == local
    assert seen == []


def test_executor_options_are_checked():
    for bad, match in (({"executor": "slurm"}, "executor"), ({"workers": 0}, "workers"),
                       ({"threads": 100000}, "threads"), ({"workers": None}, "only with the ray"),
                       ({"ray_address": "127.0.0.1:6379"}, "needs the ray executor")):
        with pytest.raises(InputError, match=match):
            Execution(**bad)


def test_cli_commands_that_evaluate_many_maps_take_the_executor_flags(tmp_path, cnn_checkpoint):
    """vuln and fusion eval (like sweep, dram tolerance and sparkxd) take --executor; a bad
    executor setting is one line and exit 2 before any work."""
    path, _ = cnn_checkpoint
    for argv in (["vuln", "--model", str(path), "--ber", "0.01"],
                 ["dram", "tolerance", "--model", str(path)],
                 ["sparkxd", "--out", str(tmp_path / "s")]):
        assert main(argv + ["--executor", "local", "--ray-address", "127.0.0.1:1"]) == 2
    from fusion.cli import main as fusion_main
    assert fusion_main(["eval", "--base", str(path), "--ber", "0.01", "--executor", "local",
                        "--ray-address", "127.0.0.1:1"]) == 2


# ------------------------------------------------------------------------------ the rule

def test_the_operating_point_rule_with_an_explicit_reference():
    points = [{"voltage": 1.0, "accuracy_mean": 0.90}, {"voltage": 0.9, "accuracy_mean": 0.895},
              {"voltage": 0.8, "accuracy_mean": 0.889}, {"voltage": 0.7, "accuracy_mean": 0.95}]
    assert passes(0.89, 0.90, 0.01) and not passes(0.8899, 0.90, 0.01)
    assert lowest_within(points, 0.90, 0.01)["voltage"] == 0.9      # stops at the first failure
    assert first_failure(points, 0.90, 0.01)["voltage"] == 0.8
    assert lowest_within(points, 0.92, 0.01) is None
    own = Reference.own_clean()
    control = Reference.given(0.93, "control clean accuracy")
    assert own.value(0.9) == 0.9 and control.value(0.9) == 0.93
    assert control.describe() == {"kind": "given", "label": "control clean accuracy",
                                  "accuracy": 0.93}
    both = Reference.strictest({"own clean": 0.9, "unprotected clean": 0.92})
    assert both.value(0.0) == 0.92 and "unprotected clean" in both.label
    for bad in (float("nan"), 1.5, -0.1, "x"):
        with pytest.raises(InputError):
            Reference.given(bad, "x")


def test_tolerance_search_takes_the_reference():
    from sramsim.analysis import tolerance as T
    model, data = world(80)
    kw = {"maps": 1, "low": 1e-3, "high": 1e-1, "bisect_steps": 0}
    own = T.search(model, data, **kw)
    assert own["reference"] == {"kind": "own-clean", "label": "own clean accuracy",
                                "accuracy": own["clean_accuracy"]}
    higher = Reference.given(own["clean_accuracy"] + 0.5 if own["clean_accuracy"] < 0.5 else 1.0,
                             "an unreachable control")
    strict = T.search(model, data, reference=higher, **kw)
    assert strict["tolerable_ber"] is None and strict["bound"] == "below the lowest BER scanned"
    assert strict["reference"]["label"] == "an unreachable control"


def test_a_pytorch_quantized_model_runs_on_a_copy_the_evaluator_owns():
    import torch.ao.quantization as tq

    from sramsim import TorchQuantizedModel
    from sramsim.memory.chip import Faults
    torch.manual_seed(0)
    float_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.ReLU(),
                                      torch.nn.Linear(5, 3)).eval()
    model = tq.quantize_dynamic(float_model, {torch.nn.Linear}, dtype=torch.qint8)
    _, data = world()
    tqm = TorchQuantizedModel(model)
    ref = model(data.x)
    ev = Evaluator(tqm)
    assert ev.model is not model
    fault = Faults(np.array([8 * 3 + 7], dtype=np.uint64), np.zeros(1, np.uint8))
    with ev.faults(fault) as run:
        assert run.changed and not torch.equal(run.model(data.x), ref)
        assert torch.equal(model(data.x), ref)               # the user's model: never written
    with tqm.loaded(tqm.faulty_image(fault)):                 # the primitive, by hand
        by_hand = evaluate(model, data)
    assert ev.evaluate(data, fault) == {**by_hand, "changed": True}
    with pytest.raises(InputError, match="ecc is not modelled"):
        Evaluator(tqm, MemoryLayout(ecc="secded72"))
