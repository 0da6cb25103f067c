"""The quantization conventions of Stutz et al.'s published code (`stutz-symmetric`,
`stutz-rquant`; davidstutz/random-bit-error-robustness, common/quantization.py), bit for bit:
hand-computed codes and values for every code path, their differences from sramsim's own
`symmetric` / `rquant`, and hypothesis tests against a plain numpy reference written from the
formulas. The numba decoder's equality with `dequantize` for these schemes is tested with every
other scheme in tests/test_inplace.py."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from sramsim import QuantizedModel
from sramsim.errors import InputError
from sramsim.inject import quantization as Q

f32 = np.float32


def codes_of(values, bits, scheme, clip=None):
    w = torch.tensor(values, dtype=torch.float32)
    if clip is not None:
        w = torch.clamp(w, -clip, clip)
    q = Q.layer_params(w, bits, scheme, clip)
    return Q.quantize(w, q).tolist(), q


# --- plain references, from the formulas (float32 throughout, numpy not torch) -----------------
def ref_symmetric(w: np.ndarray, clip=None):
    """r = max|w| + 0.001 (at most clip), delta = r/127, codes truncated toward zero; decoding
    clamps to [-r, r]. Returns (int8 codes, decode(int codes) -> float32)."""
    r = float(np.abs(w).max()) + 0.001
    if clip is not None:
        r = min(r, clip)
    delta = f32(r / 127)
    codes = np.trunc(np.clip(w, f32(-r), f32(r)) / delta).astype(np.int8)
    return codes, lambda c: np.clip(c.astype(np.float32) * delta, f32(-r), f32(r))


def ref_rquant(w: np.ndarray, bits: int):
    """u = (w - min)/(max - min), code = round((2u - 1)/d + 2**(m-1)), d = 1.001/(2**(m-1) - 1);
    decoding clamps to [-1, 1], maps back and clamps to [min, max]."""
    lo, hi = float(w.min()), float(w.max())
    half, span, d = 2 ** (bits - 1), f32(hi - lo), f32(1.001 / (2 ** (bits - 1) - 1))
    x = (w - f32(lo)) / span * f32(2) - f32(1)
    codes = np.round(np.minimum(np.clip(x, f32(-1), f32(1)) / d + f32(half), f32(2 ** bits - 1)))

    def decode(c):
        x = np.clip((c.astype(np.float32) - f32(half)) * d, f32(-1), f32(1))
        return np.clip((x + f32(1)) / f32(2) * span + f32(lo), f32(lo), f32(hi))
    return codes.astype(np.uint8), decode


# --- stutz-symmetric: exact --------------------------------------------------------------------
def test_stutz_symmetric_truncates_toward_zero_over_max_plus_margin():
    # r = 1 + 0.001, delta = 1.001/127: w * 127/1.001 = 63.44, -31.72, 0, 126.87, -126.87, 12.69,
    # -12.69, 95.15 -> truncated (12.69 -> 12 where rounding gives 13; -12.69 -> -12, not -13)
    codes, q = codes_of([0.5, -0.25, 0.0, 1.0, -1.0, 0.1, -0.1, 0.75], 8, "stutz-symmetric")
    assert codes == [63, 256 - 31, 0, 126, 256 - 126, 12, 256 - 12, 95]
    assert (q.delta, q.lo, q.hi) == (1.001 / 127, -1.001, 1.001)
    # the largest weight is code 126, never 127: the margin keeps the top code free
    ours, _ = codes_of([0.5, -0.25, 0.0, 1.0, -1.0, 0.1, -0.1, 0.75], 8, "symmetric")
    assert ours == [64, 256 - 32, 0, 127, 256 - 127, 13, 256 - 13, 95]


def test_stutz_symmetric_margin_dominates_a_small_layer():
    # max|w| = 1e-4: r = 0.0011, so 1e-4 -> 11.5 -> 11, -5e-5 -> -5.8 -> -5 (ours: 127, -64)
    codes, q = codes_of([1e-4, -5e-5], 8, "stutz-symmetric")
    assert codes == [11, 256 - 5] and q.hi == pytest.approx(0.0011)
    codes, q = codes_of([0.0, 0.0], 8, "stutz-symmetric")       # an all-zero layer: r = 0.001
    assert codes == [0, 0] and (q.lo, q.hi) == (-0.001, 0.001)


def test_stutz_symmetric_range_with_clip():
    # clip 0.5 below max|w| + 0.001: r = 0.5 (not 0.501); 0.5*254 = 127, -0.3*254 = -76.2, 25.4
    codes, q = codes_of([0.7, -0.3, 0.1], 8, "stutz-symmetric", clip=0.5)
    assert codes == [127, 256 - 76, 25] and (q.lo, q.hi) == (-0.5, 0.5)
    # clip 2 above it: r = 0.701, codes 0.7*127/0.701 = 126.8, -54.3, 18.1
    codes, q = codes_of([0.7, -0.3, 0.1], 8, "stutz-symmetric", clip=2.0)
    assert codes == [126, 256 - 54, 18] and q.hi == pytest.approx(0.701)


def test_stutz_symmetric_decode_clamps_to_the_range():
    q = Q.layer_params(torch.tensor([-1.0, 1.0]), 8, "stutz-symmetric")
    delta = f32(1.001 / 127)
    values = Q.dequantize(torch.tensor([126, 127, 128, 129, 255, 0], dtype=torch.uint8), q)
    # 127 * delta and -128 * delta lie beyond r = 1.001: both read back as +-r
    assert values.tolist() == [float(f32(126) * delta), float(f32(1.001)), -float(f32(1.001)),
                               float(f32(-127) * delta), float(-delta), 0.0]


@pytest.mark.parametrize("bits", [4, 2])
def test_stutz_symmetric_is_8_bit_only(bits):
    with pytest.raises(InputError, match="stutz-symmetric.*8 bits only"):
        Q.check_scheme("stutz-symmetric", bits)
    with pytest.raises(InputError, match="8 bits only"):
        QuantizedModel(nn.Linear(3, 2), bits=bits, scheme="stutz-symmetric")
    assert "stutz-symmetric" not in Q.schemes_for(bits) and "stutz-rquant" in Q.schemes_for(bits)


# --- stutz-rquant: exact -----------------------------------------------------------------------
@pytest.mark.parametrize("bits, theirs, ours", [
    # w = -0.2, 0, 0.3, 0.6 on [-0.2, 0.6]: u = 0, .25, .625, 1, x = 2u - 1 = -1, -.5, .25, 1.
    # 8 bits: x * 127/1.001 + 128 = 1.13, 64.56, 159.72, 254.87; ours 254u = 0, 63.5, 158.75, 254
    (8, [1, 65, 160, 255], [0, 63, 159, 254]),
    # 4 bits: x * 7/1.001 + 8 = 1.01, 4.50, 9.75, 14.99; ours 14u = 0, 3.5 (-> 4, half to even)
    (4, [1, 5, 10, 15], [0, 4, 9, 14]),
    # 2 bits: x / 1.001 + 2 = 1.001, 1.5005, 2.25, 2.999; ours 2u = 0, .5 (-> 0), 1.25, 2
    (2, [1, 2, 2, 3], [0, 0, 1, 2]),
])
def test_stutz_rquant_codes_centred_on_half(bits, theirs, ours):
    codes, q = codes_of([-0.2, 0.0, 0.3, 0.6], bits, "stutz-rquant")
    assert codes == theirs
    assert (q.lo, q.hi) == (float(f32(-0.2)), float(f32(0.6)))
    assert q.delta == pytest.approx(0.8 / 2 * 1.001 / (2 ** (bits - 1) - 1))
    assert codes_of([-0.2, 0.0, 0.3, 0.6], bits, "rquant")[0] == ours


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_stutz_rquant_decode_clamps_every_code_into_the_layer_range(bits):
    q = Q.layer_params(torch.tensor([-0.2, 0.6]), bits, "stutz-rquant")
    half = 2 ** (bits - 1)
    values = Q.dequantize(torch.arange(2 ** bits, dtype=torch.uint8), q)
    lo, hi = float(f32(-0.2)), float(f32(0.6))
    # code 0 (never written) lies below -1 on [-1, 1]: clamped to min; 1 and 2**m - 1 read
    # min and max; the centre reads the middle of the range
    assert values[0].item() == values[1].item() == lo and values[-1].item() == hi
    assert values[half].item() == float(f32(0.5) * f32(0.8) + f32(-0.2))
    assert torch.all(values[2:] > values[1:-1])                 # from code 1 on: increasing
    assert float(values.min()) == lo and float(values.max()) == hi


def test_stutz_rquant_one_point_layer_is_the_centre_code():
    codes, q = codes_of([0.3, 0.3, 0.3], 8, "stutz-rquant")     # their 0/0; ours: the centre
    assert codes == [128, 128, 128] and q.lo == q.hi == float(f32(0.3))
    values = Q.dequantize(torch.arange(256, dtype=torch.uint8), q)
    assert torch.all(values == f32(0.3))                          # any code reads the one point


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("values", [[1e-40, 2e-40, -1e-40], [0.0, 1e-45], [-3e-44] * 3])
def test_stutz_rquant_subnormal_ranges_stay_finite_and_in_range(bits, values):
    """A range of subnormal width is divided by, not multiplied into a step: codes stay valid,
    every code decodes to a finite value in [min, max], the error stays below half a step."""
    w = torch.tensor(values)
    q = Q.layer_params(w, bits, "stutz-rquant")
    codes = Q.quantize(w, q)
    assert int(codes.min()) >= 1 and int(codes.max()) < 2 ** bits
    every = Q.dequantize(torch.arange(2 ** bits, dtype=torch.uint8), q)
    assert torch.isfinite(every).all() and float(every.min()) >= q.lo and float(every.max()) <= q.hi
    assert float((Q.dequantize(codes, q) - w).abs().max()) <= q.delta / 2 + 1e-45


def test_a_flip_near_the_centre_goes_opposite_ways_in_the_two_conventions():
    """The issue the separate schemes exist for: a weight at the middle of its layer's range is
    code 127 in rquant and 128 in stutz-rquant, so the same MSB flip sends it to 255 (the top of
    the range) in one and to 0 (the bottom) in the other."""
    w = torch.tensor([-0.2, 0.2, 0.6])
    for scheme, centre, flipped_to in (("rquant", 127, 0.6), ("stutz-rquant", 128, -0.2)):
        q = Q.layer_params(w, 8, scheme)
        codes = Q.quantize(w, q)
        assert codes[1].item() == centre
        assert Q.dequantize(codes ^ 0x80, q)[1].item() == float(f32(flipped_to))


# --- both: properties against the references ------------------------------------------------------
WEIGHTS = dict(n=st.integers(1, 300), scale=st.floats(1e-3, 1e2), shift=st.floats(-1, 1),
               seed=st.integers(0, 2 ** 32 - 1))


def random_weights(n, scale, shift, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(n) + shift) * scale).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(clip=st.sampled_from([None, 0.05, 1.0]), **WEIGHTS)
def test_stutz_symmetric_equals_the_reference(clip, n, scale, shift, seed):
    w = random_weights(n, scale, shift, seed)
    if clip is not None:
        w = np.clip(w, f32(-clip), f32(clip))
    codes, q = codes_of(w.tolist(), 8, "stutz-symmetric", clip)
    ref_codes, ref_decode = ref_symmetric(w, clip)
    assert codes == ref_codes.view(np.uint8).tolist()
    every = torch.arange(256, dtype=torch.uint8)
    assert np.array_equal(Q.dequantize(every, q).numpy(), ref_decode(every.numpy().view(np.int8)))
    values = Q.dequantize(torch.tensor(codes, dtype=torch.uint8), q)
    assert float((values - torch.from_numpy(w)).abs().max()) <= q.delta * (1 + 1e-6)  # truncation
    # re-quantizing a read-back weight keeps its code or moves it one step toward zero
    again = Q.quantize(Q.dequantize(every, q), q).view(torch.int8).to(torch.int32)
    signed = every.view(torch.int8).to(torch.int32).clamp(-127, 127)
    step = signed - again
    assert torch.all((step == 0) | (step == signed.sign()))


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from(Q.BITS), clip=st.sampled_from([None, 0.05]), **WEIGHTS)
def test_stutz_rquant_equals_the_reference(bits, clip, n, scale, shift, seed):
    w = random_weights(n, scale, shift, seed)
    if clip is not None:
        w = np.clip(w, f32(-clip), f32(clip))
    codes, q = codes_of(w.tolist(), bits, "stutz-rquant", clip)
    every = torch.arange(2 ** bits, dtype=torch.uint8)
    if w.min() == w.max():
        assert set(codes) == {2 ** (bits - 1)} and torch.all(Q.dequantize(every, q) == q.lo)
        return
    ref_codes, ref_decode = ref_rquant(w, bits)
    assert codes == ref_codes.tolist() and min(codes) >= 1
    assert np.array_equal(Q.dequantize(every, q).numpy(), ref_decode(every.numpy()))
    values = Q.dequantize(torch.tensor(codes, dtype=torch.uint8), q)
    assert float((values - torch.from_numpy(w)).abs().max()) <= q.delta / 2 * (1 + 1e-4) \
        + 1e-6 * float(np.abs(w).max())
    # rounding: every code a scheme writes (1 .. 2**m - 1) re-encodes to itself
    assert torch.equal(Q.quantize(Q.dequantize(every[1:], q), q), every[1:])


@settings(max_examples=20, deadline=None)
@given(bits_scheme=st.sampled_from([(8, "stutz-symmetric"), (8, "stutz-rquant"),
                                    (4, "stutz-rquant"), (2, "stutz-rquant")]),
       clip=st.sampled_from([None, 0.1]), sizes=st.tuples(st.integers(1, 7), st.integers(1, 9)),
       seed=st.integers(0, 999))
def test_quantized_model_image_is_the_reference_codes_packed(bits_scheme, clip, sizes, seed):
    bits, scheme = bits_scheme
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], 3))
    qm = QuantizedModel(model, bits=bits, scheme=scheme, clip=clip)
    codes = []
    for layer in (model[0], model[1]):
        w = layer.weight.detach().reshape(-1).numpy()
        w = np.clip(w, f32(-clip), f32(clip)) if clip is not None else w
        if scheme == "stutz-symmetric":
            codes.append(ref_symmetric(w, clip)[0].view(np.uint8))
        elif w.min() == w.max():
            codes.append(np.full(w.size, 2 ** (bits - 1), np.uint8))
        else:
            codes.append(ref_rquant(w, bits)[0])
    packed = Q.pack(torch.from_numpy(np.concatenate(codes)), bits).numpy()
    assert np.array_equal(qm.image[:packed.size], packed)


def test_fake_quantize_uses_the_clip_in_the_stutz_symmetric_range():
    w = torch.tensor([0.7, -0.3, 0.1], requires_grad=True)
    y = Q.fake_quantize(w, 8, "stutz-symmetric", clip=0.5)       # r = 0.5: 0.5 -> 127 -> 0.5
    assert y.tolist() == [0.5, float(f32(-76) * f32(0.5 / 127)), float(f32(25) * f32(0.5 / 127))]
    y.sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 1.0]


# --- every place a scheme name is accepted ------------------------------------------------------
def test_cli_sweep_vuln_and_train_base_take_the_stutz_schemes(digits_world, tmp_path, capsys):
    import json

    from sramsim.commands.main import main
    from sramsim.nn.models import load_checkpoint
    base = ["--model", digits_world["ckpt"], "--data", digits_world["data"], "--json", "--no-progress"]
    assert main(["sweep", *base, "--chips", "1", "--rows", "64", "--cols", "512", "--voltages",
                 "0.85", "--out", str(tmp_path / "s"), "--scheme", "stutz-rquant", "--bits", "4"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["quantization"]["scheme"] == "stutz-rquant" and s["quantization"]["bits"] == 4
    assert main(["vuln", *base, "--ber", "0.02", "--models", "1", "--by", "bit",
                 "--scheme", "stutz-symmetric"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["quantization"]["scheme"] == "stutz-symmetric"
    assert "bit 7 (sign)" in [row["label"] for row in v["bits"]]
    out = tmp_path / "t.pt"
    assert main(["train-base", "--data", digits_world["data"], "--epochs", "1", "--out", str(out),
                 "--batch-size", "32", "--bits", "2", "--scheme", "stutz-rquant", "--clip", "0.2",
                 "--json", "--no-progress"]) == 0
    capsys.readouterr()
    model, meta = load_checkpoint(out)
    assert meta["scheme"] == "stutz-rquant" and meta["bits"] == 2
    QuantizedModel(model, bits=2, scheme="stutz-rquant", clip=0.2)


@pytest.mark.parametrize("argv", [
    ["train-base", "--bits", "4", "--scheme", "stutz-symmetric"],
    ["vuln", "--ber", "0.01", "--bits", "4", "--scheme", "stutz-symmetric"],
    ["sweep", "--chips", "1", "--rows", "64", "--cols", "512", "--voltages", "0.9", "--bits", "2",
     "--scheme", "stutz-symmetric"],
])
def test_cli_refuses_stutz_symmetric_below_8_bits_in_one_line(digits_world, tmp_path, capsys, argv):
    from sramsim.commands.main import main
    where = ((["--model", digits_world["ckpt"]] if argv[0] != "train-base" else [])
             + ["--data", digits_world["data"]])
    out = ["--out", str(tmp_path / ("x.pt" if argv[0] == "train-base" else "o"))]
    code = main([argv[0], *where, *argv[1:], *(out if argv[0] != "vuln" else []), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "8 bits only" in err, err
    assert not any(tmp_path.iterdir())
