"""Layer-by-layer construction of the memory image (issue 15: billion-weight models) and the
bench_scale model builder: same bytes as packing all codes at once, weight counts as claimed."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from sramsim import QuantizedModel
from sramsim.errors import InputError
from sramsim.inject import quantization as Q
from sramsim.inject.quantized_model import quantized_parameter_names

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_scale  # noqa: E402


def reference_image(model: nn.Module, bits: int, scheme: str, clip, include_bias: bool,
                    word_bits: int):
    """The construction before issue 15, kept plain: every layer's codes into one list,
    torch.cat, pack once, pad to whole words. Returns (image, [(name, start, count, shape, q)])."""
    params = dict(model.named_parameters())
    codes, segments, start = [], [], 0
    for name in quantized_parameter_names(model, include_bias):
        w = params[name].detach().to("cpu", torch.float32)
        if clip is not None:
            w = torch.clamp(w, -clip, clip)
        q = Q.layer_params(w, bits, scheme, clip)
        codes.append(Q.quantize(w.reshape(-1), q))
        segments.append((name, start, w.numel(), tuple(w.shape), q))
        start += w.numel()
    packed = Q.pack(torch.cat(codes), bits).numpy()
    word_bytes = word_bits // 8
    image = np.zeros(-(-packed.size // word_bytes) * word_bytes, dtype=np.uint8)
    image[:packed.size] = packed
    return image, segments


def odd_model(seed: int, sizes: list[int], dtype=torch.float32) -> nn.Module:
    """Linear layers of odd widths, so 4- and 2-bit layers start and end inside a byte."""
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    layers.insert(1, nn.Conv1d(1, 3, kernel_size=3, bias=False))   # a layer without bias
    return nn.Sequential(*layers).to(dtype)


def assert_same_as_reference(model, bits, scheme, clip, include_bias, word_bits):
    qm = QuantizedModel(model, bits=bits, scheme=scheme, clip=clip, include_bias=include_bias,
                        word_bits=word_bits)
    image, segments = reference_image(model, bits, scheme, clip, include_bias, word_bits)
    assert qm.image.dtype == np.uint8 and not qm.image.flags.writeable
    np.testing.assert_array_equal(qm.image, image)
    assert [(s.name, s.start, s.count, s.shape, s.quant) for s in qm.segments] == segments
    assert qm.n_codes == sum(s[2] for s in segments)


@pytest.mark.parametrize("bits, scheme", [(b, s) for b in Q.BITS for s in Q.schemes_for(b)])
@pytest.mark.parametrize("word_bits", [8, 16])
def test_layer_by_layer_image_is_byte_identical(monkeypatch, scheme, bits, word_bits):
    monkeypatch.setattr(Q, "CHUNK", 7)     # pieces end mid-byte and mid-layer
    model = odd_model(bits + word_bits, [5, 3, 7, 2])
    for clip, include_bias in [(None, False), (0.3, True)]:
        assert_same_as_reference(model, bits, scheme, clip, include_bias, word_bits)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), chunk=st.integers(1, 40),
       bits_scheme=st.sampled_from([(b, s) for b in Q.BITS for s in Q.schemes_for(b)]),
       word_bits=st.sampled_from([8, 16, 32]), include_bias=st.booleans(), seed=st.integers(0, 99))
def test_any_chunking_gives_the_reference_image(sizes, chunk, bits_scheme, word_bits, include_bias,
                                                seed):
    bits, scheme = bits_scheme
    Q_chunk = Q.CHUNK
    Q.CHUNK = chunk
    try:
        assert_same_as_reference(odd_model(seed, [3] + sizes), bits, scheme, None, include_bias,
                                 word_bits)
    finally:
        Q.CHUNK = Q_chunk


def test_bf16_model_quantizes_like_its_float32_copy(monkeypatch):
    """A bf16 model is converted a piece at a time, to the same codes as a float32 copy."""
    monkeypatch.setattr(Q, "CHUNK", 5)
    model = odd_model(3, [6, 5, 4], torch.bfloat16)
    for bits in (8, 4):
        qm = QuantizedModel(model, bits=bits, scheme="asymmetric")
        image, _ = reference_image(model, bits, "asymmetric", None, False, 8)
        np.testing.assert_array_equal(qm.image, image)


def test_non_finite_weight_named_in_any_piece(monkeypatch):
    monkeypatch.setattr(Q, "CHUNK", 4)
    model = odd_model(1, [5, 3])
    with torch.no_grad():
        model[0].weight[2, 4] = float("inf")          # in the fourth piece of 15 weights
    with pytest.raises(InputError, match=r"weight '0.weight' holds NaN or infinite values"):
        QuantizedModel(model)


def test_pack_into_completes_shared_bytes():
    image = torch.zeros(3, dtype=torch.uint8)
    Q.pack_into(image, 0, torch.tensor([1, 2, 3], dtype=torch.uint8), 2)
    Q.pack_into(image, 3, torch.tensor([3, 0, 1, 2, 1], dtype=torch.uint8), 2)
    expected = Q.pack(torch.tensor([1, 2, 3, 3, 0, 1, 2, 1], dtype=torch.uint8), 2)
    assert image[:2].tolist() == expected.tolist() and image[2] == 0
    assert Q.image_bytes(8, 2, 8) == 2 and Q.image_bytes(9, 2, 16) == 4
    assert Q.image_bytes(0, 8, 8) == 0 and Q.image_bytes(3, 8, 32) == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_layer_range_finds_a_non_finite_value_anywhere_in_a_long_piece(bad):
    w = torch.randn(100_003)
    for where in (0, 17, 65_536, 100_002):
        v = w.clone()
        v[where] = bad
        assert Q.layer_range(v) is None and Q.layer_range(v, clip=0.5, chunk=1000) is None
    assert Q.layer_range(w, clip=0.5) == (float(torch.clamp(w, -0.5, 0.5).min()),
                                          float(torch.clamp(w, -0.5, 0.5).max()))


def test_bench_scale_builder_makes_the_weights_it_claims():
    """The decoder stack of benchmarks/bench_scale.py on a tiny config: parameter counts as
    `parameter_counts` states them, QuantizedModel stores exactly the linear weights, and the
    model runs forward (causal: a later token never changes an earlier position's logits)."""
    torch.manual_seed(0)
    vocab, d_model, n_layers = 50, 32, 2
    model = bench_scale.DecoderLM(vocab, d_model, n_layers, n_heads=4)
    counts = bench_scale.parameter_counts(vocab, d_model, n_layers)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    qm = QuantizedModel(model)
    assert qm.n_codes == counts["quantized"] == n_layers * 12 * d_model ** 2 + vocab * d_model
    assert qm.image.size == counts["quantized"]
    tokens = torch.randint(0, vocab, (2, 7))
    logits = model(tokens)
    assert logits.shape == (2, 7, vocab) and bool(torch.isfinite(logits).all())
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % vocab
    assert torch.allclose(model(changed)[:, :-1], logits[:, :-1], atol=1e-6)
    for size, (d, layers) in bench_scale.CONFIGS.items():     # the stated sizes, by formula
        total = bench_scale.parameter_counts(bench_scale.VOCAB, d, layers)["total"]
        assert 0.8 < total / {"10M": 1e7, "100M": 1e8, "300M": 3e8, "1B": 1e9}[size] < 1.3


def reference_random_chip(geometry, curve, v_floor: float, seed: int, kinds):
    """Chip.random's map written plainly (the draw before the chunked failure voltages): sorted
    positions, one 32-bit key per fault, faults ordered by (key, position index), uniforms from
    the keys, the curve's inverse on all of them at once."""
    from sramsim.memory.geometry import draw_kinds
    from sramsim.memory.sampling import bernoulli_positions
    rng = np.random.default_rng(seed)
    p = float(curve.ber(v_floor))
    positions = bernoulli_positions(rng, geometry.capacity_bits, p)
    key = rng.integers(0, 2 ** 32, positions.shape[0], dtype=np.uint64)
    order = np.lexsort((np.arange(key.shape[0]), key))
    u = (key[order].astype(np.float64) + 0.5) / 2 ** 32
    vfail = np.clip(np.asarray(curve.voltage(u * p), dtype=np.float64).astype(np.float32),
                    np.float32(v_floor), np.float32(1.0))
    return positions[order], vfail, draw_kinds(rng, key.shape[0], kinds)


@pytest.mark.parametrize("chunk", [7, 1 << 16])
@pytest.mark.parametrize("seed", [0, 3])
def test_random_chip_is_the_plain_reference_map_for_any_chunk(monkeypatch, chunk, seed):
    from sramsim import BerCurve, Chip, Geometry
    from sramsim.memory import chip as chip_module
    monkeypatch.setattr(chip_module, "VFAIL_CHUNK", chunk)
    geometry = Geometry(64, 256)
    kinds = {"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25}
    for curve, v_floor in ((BerCurve.builtin("finfet14"), 0.76),
                           (BerCurve.gaussian(0.706, 0.055), 0.8)):
        chip = Chip.random(geometry, curve, v_floor, seed=seed, kinds=kinds)
        address, vfail, kind = reference_random_chip(geometry, curve, v_floor, seed, kinds)
        assert len(chip) > 200
        np.testing.assert_array_equal(chip.address, address)
        np.testing.assert_array_equal(chip.vfail.view(np.uint32), vfail.view(np.uint32))
        np.testing.assert_array_equal(chip.kind, kind)
        # the address order the draw hands over is the chip's own
        by_address, order = chip._by_address
        np.testing.assert_array_equal(order, np.argsort(chip.address))
        np.testing.assert_array_equal(by_address, np.sort(chip.address))


def reference_byte_faults(chip, v: float):
    """Byte faults of chip at v the plain way: sort the faults present, group them by byte."""
    from sramsim.memory.chip import ByteFaults
    f = chip.faults(v)
    order = np.argsort(f.address)
    return ByteFaults.from_sorted(f.address[order], f.kind[order])


def test_byte_faults_in_address_order_equal_sorting_them():
    from sramsim import BerCurve, Chip, Geometry
    kinds = {"flip": 0.6, "stuck0": 0.2, "stuck1": 0.2}
    drawn = Chip.random(Geometry(128, 256), BerCurve.builtin("finfet14"), 0.76, seed=5,
                        kinds=kinds)
    flips = Chip.random(Geometry(64, 64), BerCurve.builtin("finfet14"), 0.76, seed=6)
    for chip in (drawn, flips):
        # the same faults without the address order Chip.random hands over (a loaded profile)
        plain = Chip(chip.geometry, chip.address, chip.vfail, chip.kind, chip.v_floor)
        assert plain._by_address is None
        for v in (0.95, 0.9, 0.8, 0.76, 0.85):      # few faults (sorted), then most (in order)
            ref = reference_byte_faults(chip, v)
            for c in (chip, plain):
                got = c.byte_faults(v)
                for field in ("byte", "xor", "clear", "set"):
                    a, b = getattr(ref, field), getattr(got, field)
                    assert (a is None) == (b is None), field
                    if a is not None:
                        np.testing.assert_array_equal(a, b)
        assert plain._by_address is not None
        copy = pickle.loads(pickle.dumps(chip))         # a sweep worker's copy keeps the order
        assert copy == chip and copy._by_address is not None
        np.testing.assert_array_equal(copy.byte_faults(0.8).byte, chip.byte_faults(0.8).byte)
