"""Layer-by-layer construction of the memory image (issue 15: billion-weight models) and the
bench_scale model builder: same bytes as packing all codes at once, weight counts as claimed."""
from __future__ import annotations

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
        q = Q.layer_params(w, bits, scheme)
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


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric", "rquant"])
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("word_bits", [8, 16])
def test_layer_by_layer_image_is_byte_identical(monkeypatch, scheme, bits, word_bits):
    monkeypatch.setattr(Q, "CHUNK", 7)     # pieces end mid-byte and mid-layer
    model = odd_model(bits + word_bits, [5, 3, 7, 2])
    for clip, include_bias in [(None, False), (0.3, True)]:
        assert_same_as_reference(model, bits, scheme, clip, include_bias, word_bits)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), chunk=st.integers(1, 40),
       bits=st.sampled_from([8, 4, 2]),
       scheme=st.sampled_from(["symmetric", "asymmetric", "rquant"]),
       word_bits=st.sampled_from([8, 16, 32]), include_bias=st.booleans(), seed=st.integers(0, 99))
def test_any_chunking_gives_the_reference_image(sizes, chunk, bits, scheme, word_bits, include_bias,
                                                seed):
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
