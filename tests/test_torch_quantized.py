"""PyTorch-quantized models (eager torch.ao.quantization and PT2E via torchao) as memory images:
their own int8 weights, bit-exact faults, their own kernels, restored weights."""
import copy
import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.stats import binom
from torch import nn

import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq

from sramsim import BerCurve, Chip, Faults, Geometry, RandomBitErrors
from sramsim.errors import InputError
from sramsim.inject.torch_quantized import TorchQuantizedModel, load_exported

# torch 2.13 warns that eager quantization and quantized tensors are deprecated (they still run),
# and torch.export's pytree that torchao's LeafSpec check is
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.relu = nn.Conv2d(1, 4, 3), nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.dequant(self.fc(self.relu(self.conv(self.quant(x))).flatten(1)))


class FloatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(1, 4, 3), nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


X = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def eager(per_channel: bool) -> nn.Module:
    torch.manual_seed(0)
    m = Net().eval()
    m.qconfig = tq.get_default_qconfig("x86") if per_channel else tq.default_qconfig
    tq.fuse_modules(m, [["conv", "relu"]], inplace=True)
    prepared = tq.prepare(m)
    prepared(torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    return tq.convert(prepared)


def pt2e(per_channel: bool) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    torch.manual_seed(0)
    m = FloatNet().eval()
    gm = torch.export.export(m, (X,)).module()
    if per_channel:
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)
        config = get_default_x86_inductor_quantization_config()
        quantizer = X86InductorQuantizer().set_global(config)
    else:
        from torchao.testing.pt2e._xnnpack_quantizer import (XNNPACKQuantizer,
                                                             get_symmetric_quantization_config)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(False))
    prepared = prepare_pt2e(gm, quantizer)
    prepared(X)
    return convert_pt2e(prepared)


MODELS = {"eager-tensor": lambda: eager(False), "eager-channel": lambda: eager(True),
          "pt2e-tensor": lambda: pt2e(False), "pt2e-channel": lambda: pt2e(True)}


@pytest.fixture(scope="module", params=list(MODELS))
def built(request):
    return request.param, MODELS[request.param]()


def stored_int8(tqm: TorchQuantizedModel) -> dict[str, torch.Tensor]:
    """The int8 weights the model computes with right now, read from the model itself."""
    out = {}
    for s in tqm.segments:
        if tqm.kind == "eager":
            out[s.name] = tqm.model.get_submodule(s.name).weight().int_repr()
        else:
            out[s.name] = getattr(tqm.model, s.name)
    return out


def reference_faults(image: np.ndarray, address, kind) -> np.ndarray:
    """Plain per-bit application of faults addressed by bit index into the image."""
    out = image.copy()
    for a, k in zip(np.asarray(address, dtype=np.int64).tolist(), np.asarray(kind).tolist()):
        byte, bit = a // 8, a % 8
        if k == 0:
            out[byte] ^= 1 << bit
        elif k == 1:
            out[byte] &= 0xFF ^ (1 << bit)
        else:
            out[byte] |= 1 << bit
    return out


def test_image_is_the_int8_weights_in_module_order(built):
    name, model = built
    tqm = TorchQuantizedModel(model)
    assert tqm.kind == name.split("-")[0]
    assert [s.qscheme for s in tqm.segments] == ["per_" + name.split("-")[1]] * 2
    assert [s.shape for s in tqm.segments] == [(4, 1, 3, 3), (10, 144)]
    assert tqm.image.size == tqm.n_codes == 36 + 1440 and not tqm.image.flags.writeable
    now = stored_int8(tqm)
    for s in tqm.segments:
        got = tqm.image[s.start:s.start + s.count].view(np.int8)
        assert np.array_equal(got, now[s.name].reshape(-1).numpy())


def test_no_fault_gives_identical_outputs(built):
    _, model = built
    tqm = TorchQuantizedModel(model)
    ref = model(X)
    with tqm.loaded(tqm.image) as m:
        assert m is model
        assert torch.equal(m(X), ref)
    with tqm.loaded(tqm.faulty_image(RandomBitErrors(0.0, seed=3))):
        assert torch.equal(model(X), ref)
    assert torch.equal(model(X), ref)


def test_bit7_flip_changes_exactly_that_weight(built):
    _, model = built
    tqm = TorchQuantizedModel(model)
    ref_out = model(X)
    before = {k: v.clone() for k, v in stored_int8(tqm).items()}
    fc = tqm.segments[1]
    codes = tqm.image[fc.start:fc.start + fc.count].view(np.int8)
    j = int(np.flatnonzero(codes > 0)[0])
    k, old = fc.start + j, int(codes[j])
    faults = Faults(np.array([8 * k + 7], dtype=np.uint64), np.zeros(1, dtype=np.uint8))
    with tqm.loaded(tqm.faulty_image(faults)):
        after = stored_int8(tqm)
        out = model(X)
    expected = before[fc.name].clone().reshape(-1)
    expected[j] = old - 128                           # two's complement: bit 7 weighs -128
    assert torch.equal(after[fc.name].reshape(-1), expected)
    assert torch.equal(after[tqm.segments[0].name], before[tqm.segments[0].name])
    # scales and zero points are the model's own: same outputs as writing the weight by hand
    twin = copy.deepcopy(model)
    hand = TorchQuantizedModel(twin)
    image = tqm.image.copy()
    image[k] ^= 0x80
    with hand.loaded(image):
        assert torch.equal(twin(X), out)
    assert torch.equal(model(X), ref_out)
    assert torch.equal(stored_int8(tqm)[fc.name], before[fc.name])


def test_hand_set_weights_have_exact_bytes_and_flip():
    lin = nnq.Linear(3, 2)
    codes = torch.tensor([[5, -3, 127], [-128, 0, 64]], dtype=torch.int8)
    lin.set_weight_bias(torch._make_per_tensor_quantized_tensor(codes, 0.5, 0), torch.zeros(2))
    lin.scale, lin.zero_point = 0.5, 128              # quint8 output covers [-64, 63.5]
    tqm = TorchQuantizedModel(nn.Sequential(lin))
    assert tqm.image.tolist() == [5, 0xFD, 127, 0x80, 0, 64]
    with tqm.loaded(tqm.faulty_image(Faults(np.array([7], dtype=np.uint64), np.zeros(1, dtype=np.uint8)))):
        assert lin.weight().int_repr().tolist() == [[5 - 128, -3, 127], [-128, 0, 64]]
        assert lin.weight().q_scale() == 0.5
        x = torch.quantize_per_tensor(torch.tensor([[1.0, 0.0, 0.0]]), 1.0, 0, torch.quint8)
        assert lin(x).dequantize().tolist() == [[-61.5, -64.0]]   # 0.5 * -123, 0.5 * -128
    assert lin.weight().int_repr().tolist() == codes.tolist()


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_faults_match_plain_reference(data):
    model = shared_eager_channel() if data.draw(st.booleans()) else eager_small()
    tqm = TorchQuantizedModel(model)
    n = tqm.n_bits
    address = data.draw(st.lists(st.integers(0, n - 1), max_size=40, unique=True))
    kind = data.draw(st.lists(st.integers(0, 2), min_size=len(address), max_size=len(address)))
    faults = Faults(np.array(address, dtype=np.uint64), np.array(kind, dtype=np.uint8))
    expected = reference_faults(tqm.image, address, kind)
    assert np.array_equal(tqm.faulty_image(faults), expected)
    with tqm.loaded(tqm.faulty_image(faults)):
        now = stored_int8(tqm)
    for s in tqm.segments:
        assert np.array_equal(now[s.name].reshape(-1).numpy(),
                              expected[s.start:s.start + s.count].view(np.int8))


@functools.cache
def shared_eager_channel() -> nn.Module:
    """One model for all examples (every with-block restores it)."""
    return eager(True)


def eager_small() -> nn.Module:
    lin = nnq.Linear(4, 3)
    w = torch.arange(-6, 6, dtype=torch.float32).reshape(3, 4) / 10
    zero = torch.zeros(3, dtype=torch.long)
    q = torch.quantize_per_channel(w, torch.tensor([0.1, 0.2, 0.05]), zero, 0, torch.qint8)
    lin.set_weight_bias(q, None)
    return nn.Sequential(lin)


def test_restored_after_exception(built):
    _, model = built
    tqm = TorchQuantizedModel(model)
    ref = model(X)
    with pytest.raises(ZeroDivisionError):
        with tqm.loaded(tqm.faulty_image(RandomBitErrors(0.05, seed=1))):
            assert not torch.equal(model(X), ref)
            1 / 0
    assert torch.equal(model(X), ref)
    for s in tqm.segments:
        assert np.array_equal(stored_int8(tqm)[s.name].reshape(-1).numpy(),
                              tqm.image[s.start:s.start + s.count].view(np.int8))
    with tqm.loaded(tqm.image):     # the block can be entered again
        with pytest.raises(RuntimeError, match="already loaded"):
            with tqm.loaded(tqm.image):
                pass
        assert torch.equal(model(X), ref)


def test_eager_restore_puts_back_the_prepacked_weights_without_repacking():
    model = eager(True)
    tqm = TorchQuantizedModel(model)

    def packed():
        conv, fc = model.get_submodule("conv"), model.get_submodule("fc")
        return [conv._packed_params, fc._packed_params._packed_params]

    before = packed()
    with tqm.loaded(tqm.faulty_image(RandomBitErrors(0.05, seed=2))):
        assert all(a is not b for a, b in zip(packed(), before))
    assert all(a is b for a, b in zip(packed(), before))
    # a tensor without faults is not re-packed at all: one flip in fc leaves conv's pack alone
    fc = tqm.segments[1]
    one = Faults(np.array([8 * fc.start + 3], dtype=np.uint64), np.zeros(1, np.uint8))
    with tqm.loaded(tqm.faulty_image(one)):
        now = packed()
        assert now[0] is before[0] and now[1] is not before[1]
    assert all(a is b for a, b in zip(packed(), before))


def test_chip_with_offsets_tiles_like_the_mapping_contract():
    tqm = TorchQuantizedModel(eager(True))
    geometry = Geometry(rows=32, cols=64)            # 256 bytes: the 1476-byte image tiles it
    chip = Chip.random(geometry, BerCurve.builtin("finfet14"), v_floor=0.8, seed=7)
    f = chip.faults(0.8)
    assert len(f) > 0
    cap = geometry.capacity_bytes
    for offset in (0, 3, -5, 1000):
        shift = offset % cap
        # chip bit a sits under image bit 8 * b + a % 8 for every b with (b + shift) % cap == a // 8
        addr, kind = [], []
        for a, k in zip(f.address.tolist(), f.kind.tolist()):
            for b in range((a // 8 - shift) % cap, tqm.image.size, cap):
                addr.append(8 * b + a % 8)
                kind.append(k)
        expected = reference_faults(tqm.image, addr, kind)
        assert np.array_equal(tqm.faulty_image(chip, 0.8, offset), expected)
        with tqm.loaded(tqm.faulty_image(chip, 0.8, offset)):
            now = stored_int8(tqm)
        s = tqm.segments[1]
        assert np.array_equal(now[s.name].reshape(-1).numpy(),
                              expected[s.start:s.start + s.count].view(np.int8))
    assert not np.array_equal(tqm.faulty_image(chip, 0.8, 0), tqm.faulty_image(chip, 0.8, 3))


def test_random_bit_errors_statistics_and_seed():
    tqm = TorchQuantizedModel(eager(False))
    p, runs = 0.01, 40
    changed = sum(int(np.unpackbits(tqm.faulty_image(RandomBitErrors(p, seed=s)) ^ tqm.image).sum())
                  for s in range(runs))
    lo, hi = binom.interval(0.999, runs * tqm.n_bits, p)
    assert lo <= changed <= hi
    a = tqm.faulty_image(RandomBitErrors(p, seed=11))
    assert np.array_equal(a, tqm.faulty_image(RandomBitErrors(p, seed=11)))
    assert not np.array_equal(a, tqm.faulty_image(RandomBitErrors(p, seed=12)))
    stuck = tqm.faulty_image(RandomBitErrors(0.5, kinds={"stuck1": 1.0}, seed=1))
    assert np.all(stuck & tqm.image == tqm.image)       # stuck-at-1 only ever sets bits


def test_pt2e_weights_work_with_functional_call():
    model = pt2e(True)
    tqm = TorchQuantizedModel(model)
    image = tqm.faulty_image(RandomBitErrors(0.02, seed=5))
    with tqm.loaded(image):
        loaded = model(X)
    assert torch.equal(torch.func.functional_call(model, tqm.int8_weights(image), (X,)), loaded)


def test_dynamic_quantized_linear():
    torch.manual_seed(0)
    float_model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    model = tq.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
    tqm = TorchQuantizedModel(model)
    assert [s.name for s in tqm.segments] == ["0", "2"] and tqm.image.size == 40
    x = torch.randn(3, 6)
    ref = model(x)
    with tqm.loaded(tqm.faulty_image(Faults(np.array([8 * 31 + 7], dtype=np.uint64), np.zeros(1, np.uint8)))):
        assert not torch.equal(model(x), ref)
    assert torch.equal(model(x), ref)


def test_fx_graph_mode_model_is_read_through_its_quantized_modules():
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.manual_seed(0)
    prepared = prepare_fx(FloatNet().eval(), tq.get_default_qconfig_mapping("x86"), (X,))
    prepared(X)
    model = convert_fx(prepared)
    tqm = TorchQuantizedModel(model)
    assert tqm.kind == "eager" and [s.shape for s in tqm.segments] == [(4, 1, 3, 3), (10, 144)]
    ref = model(X)
    image = tqm.faulty_image(RandomBitErrors(0.05, seed=6))
    with tqm.loaded(image):
        for s in tqm.segments:
            assert np.array_equal(stored_int8(tqm)[s.name].reshape(-1).numpy(),
                                  image[s.start:s.start + s.count].view(np.int8))
        assert not torch.equal(model(X), ref)
    assert torch.equal(model(X), ref)


def test_word_bits_pads_the_image():
    tqm = TorchQuantizedModel(eager_small(), word_bits=64)
    assert tqm.n_codes == 12 and tqm.image.size == 16 and tqm.n_words == 2
    assert not tqm.image[12:].any()
    noisy = tqm.image.copy()
    noisy[12:] = 0xFF                                  # padding is no weight
    with tqm.loaded(noisy):
        assert stored_int8(tqm)["0"].reshape(-1).tolist() == tqm.image[:12].view(np.int8).tolist()


def test_bad_input_is_one_line_input_error():
    with pytest.raises(InputError, match="no int8 weights"):
        TorchQuantizedModel(FloatNet())
    with pytest.raises(InputError, match="torch.nn.Module"):
        TorchQuantizedModel("model.pt")
    with pytest.raises(InputError, match="ExportedProgram"):
        TorchQuantizedModel(torch.export.export(FloatNet().eval(), (X,)))
    with pytest.raises(InputError, match="word_bits"):
        TorchQuantizedModel(eager_small(), word_bits=12)
    fp16 = tq.quantize_dynamic(nn.Sequential(nn.Linear(4, 2)), {nn.Linear}, dtype=torch.float16)
    with pytest.raises(InputError, match="layer '0'.*not qint8"):
        TorchQuantizedModel(fp16)
    tqm = TorchQuantizedModel(eager_small())
    with pytest.raises(InputError, match=r"uint8 numpy array \[12\]"):
        with tqm.loaded(tqm.image[:5]):
            pass
    with pytest.raises(TypeError, match="offset"):
        tqm.faulty_image(RandomBitErrors(0.1), offset=1.5)


def test_saved_pt2e_program_loads_with_the_same_image_and_outputs(tmp_path):
    model = pt2e(True)
    path = tmp_path / "q.pt2"
    torch.export.save(torch.export.export(model, (X,)), path)
    loaded = load_exported(path)
    loaded.eval()                                       # allowed: sramsim's evaluation calls it
    a, b = TorchQuantizedModel(model), TorchQuantizedModel(loaded)
    assert np.array_equal(a.image, b.image)
    source = RandomBitErrors(0.02, seed=4)
    image = a.faulty_image(source)
    with a.loaded(image), b.loaded(image):
        assert torch.equal(model(X), loaded(X))


def test_load_exported_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_exported(tmp_path / "missing.pt2")
    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="not a torch.export program"):
        load_exported(foreign)
    float_program = tmp_path / "float.pt2"
    torch.export.save(torch.export.export(FloatNet().eval(), (X,)), float_program)
    with pytest.raises(InputError, match="no int8 weights"):
        load_exported(float_program)
