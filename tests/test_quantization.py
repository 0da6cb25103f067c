"""Quantization schemes, packing of 8/4/2-bit words and the memory image, bit-exact."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from sramsim import Chip, Faults, Geometry, QuantizedModel, RandomBitErrors
from sramsim.inject import quantization as Q

SCHEMES = ["symmetric", "asymmetric", "rquant"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_round_trip_error_at_most_half_step(scheme, bits):
    w = torch.randn(5000) * 0.3 + (0.1 if scheme != "symmetric" else 0.0)
    q = Q.layer_params(w, bits, scheme)
    codes = Q.quantize(w, q)
    assert codes.dtype == torch.uint8 and int(codes.max()) < 2 ** bits
    err = (Q.dequantize(codes, q) - w).abs().max().item()
    assert err <= q.delta / 2 + 1e-6


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("values", [[-3e-44] * 4, [1e-40, 2e-40, -1e-40], [0.0, 1e-45]])
def test_weights_closer_than_float32_tiny_store_one_point(scheme, values):
    """A step below float32's smallest normal cannot be divided by (hypothesis found -3e-44
    re-encoding to another code): such a layer stores one point with a unit step."""
    w = torch.tensor(values, dtype=torch.float32)
    q = Q.layer_params(w, 8, scheme)
    assert q.delta == 1.0
    codes = Q.quantize(w, q)
    back = Q.dequantize(codes, q)
    assert torch.equal(Q.quantize(back, q), codes)
    assert float((back - w).abs().max()) <= 1e-38
    if scheme != "symmetric":
        assert q.lo == q.hi == float(w.min()) and torch.all(codes == 0)


def test_symmetric_msb_flip_moves_by_128_delta():
    w = torch.tensor([0.5, -0.25, 0.01, 1.0])
    q = Q.layer_params(w, 8, "symmetric")
    codes = Q.quantize(w, q)
    flipped = codes ^ 0x80
    diff = Q.dequantize(flipped, q) - Q.dequantize(codes, q)
    assert torch.allclose(diff.abs(), torch.full((4,), 128 * q.delta))
    # two's complement: a positive value's MSB flip makes it negative
    assert Q.dequantize(flipped, q)[0] < 0


def test_rquant_clamps_into_layer_range():
    w = torch.tensor([-0.2, 0.0, 0.3, 0.6])
    q = Q.layer_params(w, 8, "rquant")
    codes = Q.quantize(w, q)
    assert int(codes.max()) == 254          # 2 * 127 steps: the all-ones code is unused
    all_codes = torch.arange(256, dtype=torch.uint8)
    values = Q.dequantize(all_codes, q)
    assert values.min().item() == pytest.approx(-0.2) and values.max().item() == pytest.approx(0.6)
    assert Q.dequantize(torch.tensor([255], dtype=torch.uint8), q).item() == pytest.approx(0.6)


def test_pack_layout_exact():
    assert Q.pack(torch.tensor([1, 2, 3, 4], dtype=torch.uint8), 4).tolist() == [0x21, 0x43]
    assert Q.pack(torch.tensor([1, 2, 3, 0, 3], dtype=torch.uint8), 2).tolist() == [0b00111001, 0b11]
    assert Q.pack(torch.tensor([7, 200], dtype=torch.uint8), 8).tolist() == [7, 200]


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([8, 4, 2]), n=st.integers(1, 200), seed=st.integers(0, 1000))
def test_pack_unpack_round_trip(bits, n, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (n,), generator=g, dtype=torch.uint8)
    assert torch.equal(Q.unpack(Q.pack(codes, bits), bits, n), codes)


def test_fake_quantize_straight_through():
    w = torch.randn(100, requires_grad=True)
    y = Q.fake_quantize(w, 4, "symmetric", clip=0.5)
    assert y.abs().max() <= 0.5 + 1e-6
    y.sum().backward()
    inside = w.detach().abs() < 0.5
    assert torch.all(w.grad[inside] == 1) and torch.all(w.grad[~inside] == 0)


def test_bad_scheme_or_bits():
    with pytest.raises(ValueError, match="scheme"):
        Q.check_scheme("float", 8)
    with pytest.raises(ValueError, match="bits"):
        Q.check_scheme("symmetric", 3)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.fc2 = nn.Linear(2, 2, bias=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def tiny_model() -> Tiny:
    m = Tiny()
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, -0.6, 0.25], [0.0, 0.75, -1.0]]))
        m.fc1.bias.copy_(torch.tensor([0.1, -0.2]))
        m.fc2.weight.copy_(torch.tensor([[0.6, -0.6], [0.25, 1.0]]))
    return m.eval()


def test_image_layout_8bit_symmetric():
    qm = QuantizedModel(tiny_model(), bits=8, scheme="symmetric")
    assert [s.name for s in qm.segments] == ["fc1.weight", "fc2.weight"]
    # fc1: delta = 1/127 -> codes 127, -76 (0xB4), 32, 0, 95, -127 (0x81); fc2: 76, -76, 32, 127
    assert qm.image.tolist() == [127, 0xB4, 32, 0, 95, 0x81, 76, 0xB4, 32, 127]
    qmb = QuantizedModel(tiny_model(), bits=8, include_bias=True)
    assert [s.name for s in qmb.segments] == ["fc1.weight", "fc1.bias", "fc2.weight"]
    with pytest.raises(ValueError):
        qm.image[0] = 1  # the clean image is read-only


def test_image_layout_4bit_and_faulty_weight():
    qm = QuantizedModel(tiny_model(), bits=4, scheme="symmetric")
    # delta = 1/7: fc1 codes 7, -4 (0xC), 2, 0, 5, -7 (0x9); fc2: 4, -4 (0xC), 2, 7
    assert qm.image.tolist() == [0xC7, 0x02, 0x95, 0xC4, 0x72]
    # flipping chip bit 7 (word 0, bit 7) = MSB of code 1 (-4 -> 4): fc1.weight[0, 1] moves by +8 delta
    chip = Chip(Geometry(1, 40), np.array([7], np.uint64), np.array([0.9], np.float32),
                np.array([0], np.uint8), v_floor=0.8)
    w = qm.perturbed(chip, voltage=0.85)
    clean = qm.clean_weights()
    diff = w["fc1.weight"] - clean["fc1.weight"]
    expected = torch.zeros(2, 3)
    expected[0, 1] = 8 / 7
    assert torch.allclose(diff, expected, atol=1e-6)
    assert torch.equal(w["fc2.weight"], clean["fc2.weight"])
    # offset 1 word (byte): image byte b -> chip byte (b + 1) % 5, so chip bit 7 hits image byte 4,
    # whose high nibble is code 9 = fc2.weight[1, 1]
    w2 = qm.perturbed(chip, voltage=0.85, offset=1)
    d2 = w2["fc2.weight"] - clean["fc2.weight"]
    assert torch.allclose(d2, torch.tensor([[0.0, 0.0], [0.0, -8 / 7]]), atol=1e-6)  # 7 -> -1


def test_2bit_packing_positions():
    m = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 1.0]]))
    qm = QuantizedModel(m, bits=2, scheme="symmetric")
    # codes 1, 3 (-1), 0, 1 -> 0b01_00_11_01
    assert qm.image.tolist() == [0b01001101]
    f = Faults(np.array([4], np.uint64), np.array([2], np.uint8))   # stuck1 at bit 4: code 0 -> 1
    w = qm.dequantize(qm.faulty_image(f))["weight"]
    assert w.tolist() == [[1.0, -1.0, 1.0, 1.0]]


def test_perturbed_runs_with_functional_call_and_model_untouched():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qm = QuantizedModel(model, bits=8)
    x = torch.randn(5, 3)
    w = qm.perturbed(RandomBitErrors(0.3, seed=1))
    y_faulty = qm.forward(x, w)
    y_clean = qm.forward(x, qm.clean_weights())
    assert y_faulty.shape == (5, 2) and not torch.allclose(y_faulty, y_clean)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # quantized clean forward is close to the float model
    assert torch.allclose(y_clean, model(x), atol=0.05)


def test_tiling_model_larger_than_chip():
    torch.manual_seed(0)
    model = nn.Linear(64, 16)
    qm = QuantizedModel(model, bits=8)
    chip = Chip(Geometry(2, 64), np.array([0, 70], np.uint64), np.full(2, 0.9, np.float32),
                np.zeros(2, np.uint8), v_floor=0.9)       # 16 bytes, model 1024 bytes: 64 tiles
    out = qm.faulty_image(chip, 0.9, offset=3)
    diff = np.flatnonzero(out != qm.image)
    # chip byte 0 bit 0 and chip byte 8 bit 6, each hit once per tile; image byte b -> chip (b + 3) % 16
    expect = sorted([b for b in range(1024) if (b + 3) % 16 in (0, 8)])
    assert diff.tolist() == expect
    assert set((out ^ qm.image)[diff].tolist()) == {0x01, 0x40}


def _old_stack_unpack(images: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The batched unpacking dequantize_stack carried before it was folded into Q.unpack."""
    if bits == 8:
        return images[:, :n]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    return ((images[:, :, None] >> shifts) & (2 ** bits - 1)).reshape(images.shape[0], -1)[:, :n]


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_unpack_of_a_stack_equals_each_image_and_the_old_stack_unpacking(bits):
    g = torch.Generator().manual_seed(bits)
    images = torch.randint(0, 256, (5, 37), generator=g, dtype=torch.uint8)
    n = 37 * (8 // bits) - 3
    stacked = Q.unpack(images, bits, n)
    assert stacked.shape == (5, n)
    assert torch.equal(stacked, _old_stack_unpack(images, bits, n))
    for i in range(5):
        assert torch.equal(stacked[i], Q.unpack(images[i], bits, n))
    with pytest.raises(ValueError, match="bytes"):
        Q.unpack(images, bits, 37 * (8 // bits) + 1)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_dequantize_of_a_stack_is_bit_identical_to_one_image_at_a_time(bits):
    from sramsim.inject.weight_sets import dequantize_stack
    qm = QuantizedModel(tiny_model(), bits=bits, scheme="asymmetric", include_bias=True)
    rng = np.random.default_rng(bits)
    images = rng.integers(0, 256, (4, qm.image.size)).astype(np.uint8)
    stack = dequantize_stack(qm, torch.from_numpy(images))
    for i in range(4):
        single = qm.dequantize(images[i])
        for name, w in single.items():
            assert stack[name].shape == (4, *w.shape)
            assert torch.equal(stack[name][i], w)
    with pytest.raises(ValueError, match="nbytes"):
        dequantize_stack(qm, torch.from_numpy(images[0]))
    with pytest.raises(ValueError, match="uint8"):
        qm.dequantize(images[:, :-1])


@pytest.mark.parametrize("bad", ["hello", None, {"weight": torch.zeros(2)}, nn.Linear])
def test_quantized_model_refuses_what_is_not_a_module(bad):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        QuantizedModel(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": 8.0}, "bits"), ({"bits": True}, "bits"), ({"word_bits": 16.0}, "word_bits"),
    ({"word_bits": 12}, "word_bits"), ({"clip": -1.0}, "clip"), ({"clip": float("nan")}, "clip"),
    ({"clip": "0.5"}, "clip")])
def test_quantized_model_refuses_coerced_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizedModel(tiny_model(), **kwargs)


def test_quantized_model_accepts_numpy_integers():
    qm = QuantizedModel(tiny_model(), bits=np.int64(4), word_bits=np.int32(16))
    assert qm.bits == 4 and type(qm.bits) is int and qm.word_bits == 16 and qm.image.size % 2 == 0


def test_quantized_model_refuses_non_finite_weights():
    m = tiny_model()
    with torch.no_grad():
        m.fc2.weight[0, 1] = float("nan")
    with pytest.raises(ValueError, match="fc2.weight.*NaN"):
        QuantizedModel(m)


@pytest.mark.parametrize("offset", [1.5, "3", 2.0, True, None])
def test_offset_must_be_an_integer(offset):
    qm = QuantizedModel(tiny_model(), bits=8)
    chip = Chip(Geometry(1, 40), np.array([7], np.uint64), np.array([0.9], np.float32),
                np.array([0], np.uint8), v_floor=0.8)
    with pytest.raises(TypeError, match="offset"):
        qm.perturbed(chip, voltage=0.85, offset=offset)
    with pytest.raises(TypeError, match="offset"):
        qm.faulty_image(chip, 0.85, offset=offset)


def test_numpy_integer_and_negative_offsets_are_placements():
    qm = QuantizedModel(tiny_model(), bits=8)                   # 10 bytes
    chip = Chip(Geometry(1, 40), np.array([7], np.uint64), np.array([0.9], np.float32),
                np.array([0], np.uint8), v_floor=0.8)           # 5 bytes: tiled twice
    a = qm.faulty_image(chip, 0.85, offset=np.int64(1))
    assert np.array_equal(a, qm.faulty_image(chip, 0.85, offset=1))
    assert np.array_equal(qm.faulty_image(chip, 0.85, offset=-4), a)   # -4 = 1 mod 5


def test_perturbed_into_a_caller_buffer():
    qm = QuantizedModel(tiny_model(), bits=4)
    chip = Chip(Geometry(1, 40), np.array([7], np.uint64), np.array([0.9], np.float32),
                np.array([0], np.uint8), v_floor=0.8)
    out = np.empty_like(qm.image)
    w = qm.perturbed(chip, voltage=0.85, out=out)
    assert np.array_equal(out, qm.faulty_image(chip, 0.85))
    out[:] = 0                                          # the weights do not share the buffer
    assert all(torch.equal(w[k], v) for k, v in qm.perturbed(chip, voltage=0.85).items())
