"""Activations in a faulty buffer: calibration, the allocation, bit-exact reads (numba = torch =
a hand case), persistence over inferences, the evaluator's hooks, and accuracy falling with the
buffer's voltage."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sramsim import BerCurve, Chip, Geometry, QuantizedModel
from sramsim.errors import InputError
from sramsim.inject.activations import (QuantizedActivations, attached, calibrate, quantize,
                                        read_back, stored_and_read)
from sramsim.inject.draws import ChipDraw
from sramsim.nn.evaluation import Evaluator, evaluate

from conftest import quadrant_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hand_chip(faults: dict[int, tuple[int, float]]) -> Chip:
    """A 64-bit chip (4 x 16) with the given {bit address: (kind, vfail)} faults."""
    items = sorted(faults.items(), key=lambda kv: -kv[1][1])
    return Chip(Geometry(4, 16), np.array([a for a, _ in items], np.uint64),
                np.array([v for _, (_, v) in items], np.float32),
                np.array([k for _, (k, _) in items], np.uint8), v_floor=0.5, name="hand")


def test_calibration_scales_sizes_and_order():
    model, data = quadrant_world(64)
    qm = QuantizedModel(model)
    acts = calibrate(model, data.x, qm.clean_weights(), batch_size=16)
    assert acts.names == ("1", "2") and acts.sizes == (4, 4) and acts.bases == (0, 4)
    with torch.no_grad():
        h = torch.func.functional_call(model[1], {k.split(".", 1)[1]: v for k, v in
                                                  qm.clean_weights().items() if k.startswith("1.")}
                                       | {"bias": model[1].bias}, (data.x.flatten(1),))
    assert acts.scales[0] == pytest.approx(float(h.abs().max()) / 127, rel=1e-6)
    assert acts.n_bytes == 8 and acts.accesses() == 16 and acts.accesses(1, 3) == 32
    assert acts.describe()["layers"][1] == {"name": "2", "scale": acts.scales[1], "bytes": 4,
                                            "base": 4}


def test_masks_follow_the_allocation_with_offset_and_wrapping():
    # buffer of 8 bytes (4 rows x 16 bits); outputs of 4 and 4 bytes: bytes 0..7 -> wraps at 8
    acts = QuantizedActivations(("a", "b"), (1.0, 1.0), (4, 6))
    chip = hand_chip({8 * 1 + 3: (0, 0.9), 8 * 6 + 0: (1, 0.9), 8 * 0 + 7: (2, 0.8)})
    m = acts.masks(chip, 0.85, offset=0)
    xa, ca, sa = m.layers[0]
    assert list(xa) == [0, 8, 0, 0] and not ca.any() and not sa.any()
    xb, cb, sb = m.layers[1]                 # buffer bytes 4..9 -> chip bytes 4,5,6,7,0,1
    assert list(cb) == [0, 0, 1, 0, 0, 0] and list(xb) == [0, 0, 0, 0, 0, 8] and not sb.any()
    m2 = acts.masks(chip, 0.75, offset=3)    # byte b at chip byte (b + 3) % 8; stuck1 at byte 0
    assert list(m2.layers[0][2]) == [0, 0, 0, 0] and list(m2.layers[1][2]) == [0, 128, 0, 0, 0, 0]
    assert list(m2.layers[0][1]) == [0, 0, 0, 1]
    assert acts.masks(chip, 0.95).any is False and acts.masks(None).any is False


def test_read_back_hand_case_numba_and_torch():
    codes = torch.tensor([[5, -3, 127, 0], [-128 + 1, 64, 1, -1]], dtype=torch.int8)
    xor = np.array([0x01, 0x80, 0, 0], np.uint8)
    clear = np.array([0, 0, 0x40, 0], np.uint8)
    set_ = np.array([0, 0, 0, 0x02], np.uint8)
    want = codes.view(torch.uint8).numpy().copy()
    for i in range(2):
        want[i] = ((want[i] ^ xor) & ~clear) | set_
    for backend in ("numba", "torch"):
        got = read_back(codes, (xor, clear, set_), backend)
        assert got.dtype == torch.int8 and np.array_equal(got.view(torch.uint8).numpy(), want)
    # e.g. 5 ^ 1 = 4; -3 (0xFD) ^ 0x80 = 0x7D = 125; 127 & ~0x40 = 63; 0 | 2 = 2
    assert read_back(codes, (xor, clear, set_), "numba")[0].tolist() == [4, 125, 63, 2]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 40))
def test_numba_and_torch_reads_are_identical(seed, batch, n):
    rng = np.random.default_rng(seed)
    codes = torch.from_numpy(rng.integers(-127, 128, (batch, n)).astype(np.int8))
    masks = tuple(rng.integers(0, 256, n).astype(np.uint8) & rng.integers(0, 256, n).astype(np.uint8)
                  for _ in range(3))
    a = read_back(codes, masks, "numba")
    b = read_back(codes, masks, "torch")
    assert torch.equal(a, b)


def _composed(x: torch.Tensor, scale: float, masks: tuple | None) -> torch.Tensor:
    """The hook's three torch steps, one after the other (the reference of the fused kernel)."""
    return read_back(quantize(x, scale), masks, "torch").to(torch.float32) * scale


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 50),
       st.floats(1e-3, 10.0), st.booleans())
def test_fused_store_and_read_is_the_composed_torch_steps(seed, batch, n, scale, faulty):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 60 * scale, (batch, n)).astype(np.float32)
    x[:, ::3] = (rng.integers(-140, 140, x[:, ::3].shape) + 0.5) * np.float32(scale)  # ties
    x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
    t = torch.from_numpy(x)
    masks = tuple(rng.integers(0, 256, n).astype(np.uint8) & rng.integers(0, 256, n)
                  .astype(np.uint8) for _ in range(3)) if faulty else None
    got = stored_and_read(t, scale, masks)
    want = _composed(t, scale, masks)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def _buffered(seed: int) -> tuple:
    """(model, data, quantized model, stored activations, a 64-bit buffer chip of all kinds)."""
    model, data = quadrant_world(64)
    qm = QuantizedModel(model)
    acts = calibrate(model, data.x, qm.clean_weights())
    chip = Chip.random(Geometry(4, 16), BerCurve.builtin("finfet14"), 0.75, seed=seed,
                       kinds={"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25})
    return model, data, qm, acts, chip


def test_hook_paths_agree_on_a_model():
    """The numba hook (CPU default) and the torch hook give the same logits under faults."""
    model, data, _, acts, chip = _buffered(4)
    faults = acts.masks(chip, 0.78, 1)
    assert faults.any
    out = {}
    for backend in ("auto", "torch"):
        with attached(model, acts, faults, backend), torch.no_grad():
            out[backend] = model(data.x)
    assert torch.equal(out["auto"], out["torch"])


def test_quantize_rounds_and_clamps():
    q = quantize(torch.tensor([0.26, -0.26, 300.0, -300.0, 0.0, 0.25, 0.75, float("nan")]), 0.5)
    assert q.tolist() == [1, -1, 127, -127, 0, 0, 2, 0]


def test_evaluator_with_a_fault_free_buffer_is_the_quantized_model():
    model, data = quadrant_world()
    qm = QuantizedModel(model)
    acts = calibrate(model, data.x, qm.clean_weights())
    ev = Evaluator(qm, activations=acts)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clean = ev.clean(data)
    # by hand: the dequantized weights, each stored output quantized/dequantized
    with attached(model, acts):
        want = evaluate(model, data, qm.clean_weights())
    assert clean == want and clean["accuracy"] > 0.95
    assert all(not m._forward_hooks for m in model.modules())        # hooks removed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(InputError, match="stored activations"):
        Evaluator(qm).evaluate(data, activations=ChipDraw(hand_chip({}), 0.9, 0))


def test_activation_faults_are_persistent_over_inferences():
    _, data, qm, acts, chip = _buffered(1)
    ev = Evaluator(qm, activations=acts)
    with ev.faults(None, activations=ChipDraw(chip, 0.76, 2)) as run:
        whole = run.logits(data.x, batch_size=64)
        one_by_one = torch.cat([run.logits(data.x[i:i + 1]) for i in range(8)])
    assert torch.equal(whole[:8], one_by_one)
    assert run.changed


def test_accuracy_falls_as_the_buffer_voltage_drops():
    model, data = quadrant_world()
    qm = QuantizedModel(model)
    acts = calibrate(model, data.x[:128], qm.clean_weights())
    ev = Evaluator(qm, activations=acts)
    clean = ev.clean(data)["accuracy"]
    chips = [Chip.random(Geometry(4, 16), BerCurve.builtin("finfet14"), 0.75, seed=s)
             for s in range(12)]

    def mean_acc(v):
        return np.mean([ev.evaluate(data, activations=ChipDraw(c, v, 0))["accuracy"]
                        for c in chips])

    high, low = mean_acc(0.95), mean_acc(0.75)
    assert high == pytest.approx(clean, abs=0.02)       # ~1e-6 BER: the 64 cells almost all good
    assert low < clean - 0.1                             # 20% BER on the stored outputs
    # the weights alone, clean: only the buffer changed
    assert ev.evaluate(data)["accuracy"] == clean


def test_cuda_path_matches_when_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(3)
    codes = torch.from_numpy(rng.integers(-127, 128, (7, 33)).astype(np.int8))
    masks = tuple(rng.integers(0, 256, 33).astype(np.uint8) for _ in range(3))
    assert torch.equal(read_back(codes.cuda(), masks).cpu(), read_back(codes, masks, "numba"))


def test_bad_inputs():
    with pytest.raises(InputError):
        QuantizedActivations(("a",), (0.0,), (3,))
    with pytest.raises(InputError):
        QuantizedActivations(("a",), (1.0,), (3, 4))
    acts = QuantizedActivations(("a",), (1.0,), (3,))
    with pytest.raises(InputError, match="needs a voltage"):
        acts.masks(hand_chip({}))
    with pytest.raises(InputError, match="whole number"):
        acts.accesses(-1)
    model, data = quadrant_world(8)
    with pytest.raises(InputError, match="no layer"), attached(model, acts):
        pass
    bad = QuantizedActivations(("1", "2"), (1.0, 1.0), (5, 4))
    with attached(model, bad), pytest.raises(InputError, match="buffer slot"):
        model(data.x)
