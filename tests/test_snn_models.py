"""Surrogate-gradient spiking networks (snn-fc<N>, snn-conv<N>): shapes, binary spikes, the
deterministic eval encoding, the synapses in memory, functional_call, training and checkpoints."""
import pytest
import snntorch
import torch

from sramsim import QuantizedModel, RandomBitErrors
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.inject.quantized_model import quantized_parameter_names
from sramsim.nn.evaluation import accuracy
from sramsim.nn.models import build, load_checkpoint, save_checkpoint
from sramsim.nn.torch_files import atomic_torch_save, read_torch_file
from sramsim.nn.models.snn import MAX_SYNAPSES, build_snn
from sramsim.nn.training import TrainOptions, train_base
from conftest import write_quadrants

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fc(n=8, steps=4, classes=3, seed=0, size=(6, 6)):
    torch.manual_seed(seed)
    return build_snn("snn-fc", n, 1, classes, size, steps=steps)


def images(b=5, c=1, size=(6, 6), seed=0):
    return torch.rand(b, c, *size, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_counts():
    model = fc().eval()
    out = model(images())
    assert out.shape == (5, 3) and out.dtype == torch.float32
    # class scores are 0.2 x the spike counts over the 4 steps
    counts = out / model.score_scale
    assert torch.allclose(counts, counts.round()) and counts.min() >= 0 and counts.max() <= 4
    torch.manual_seed(0)
    conv = build("snn-conv2", 3, 4, image_size=(32, 32))
    conv.steps = 2
    assert conv.eval()(images(2, 3, (32, 32))).shape == (2, 4)
    # 32x32 -> conv5 28 -> pool 14 -> conv5 10 -> pool 5: Linear(2*2*5*5, 4)
    assert conv.stages[2][1].weight.shape == (4, 100)


def test_spike_records_are_binary_and_sum_to_the_scores():
    model = fc(n=16, steps=6).eval()
    x = images(4)
    hidden, output = model.forward_spikes(x)
    assert hidden.shape == (6, 4, 16) and output.shape == (6, 4, 3)
    for rec in (hidden, output):
        assert set(rec.unique().tolist()) <= {0.0, 1.0}
    assert hidden.sum() > 0
    assert torch.equal(output.sum(0) * 0.2, model(x))
    torch.manual_seed(0)
    conv = build_snn("snn-conv", 2, 1, 3, (16, 16), steps=3).eval()
    recs = conv.forward_spikes(images(2, 1, (16, 16)))
    assert [tuple(r.shape) for r in recs] == [(3, 2, 2, 6, 6), (3, 2, 4, 1, 1), (3, 2, 3)]
    assert all(set(r.unique().tolist()) <= {0.0, 1.0} for r in recs)


def test_eval_is_deterministic_and_follows_the_seed_attribute():
    model = fc(n=32, steps=5).eval()
    x = images(6)
    state = torch.get_rng_state()
    first = model.forward_spikes(x)[0]
    assert torch.equal(first, model.forward_spikes(x)[0])
    assert torch.equal(model(x), model(x))
    assert torch.equal(torch.get_rng_state(), state)      # eval never draws from the global RNG
    model.seed = 1
    assert not torch.equal(first, model.forward_spikes(x)[0])


def test_train_mode_draws_from_the_seeded_global_rng():
    model = fc(n=32, steps=5).train()
    x = images(6)
    torch.manual_seed(7)
    a = model.forward_spikes(x)[0]
    b = model.forward_spikes(x)[0]
    torch.manual_seed(7)
    assert torch.equal(a, model.forward_spikes(x)[0])
    assert not torch.equal(a, b)


def test_encoding_has_rate_semantics():
    model = fc(steps=400).eval()
    x = torch.zeros(1, 1, 6, 6)           # inputs in [-1, 1]: pixel intensity (x + 1) / 2
    x[..., :3] = 1.0
    x[..., 3:] = -0.5
    spikes = model.encode(x).float()
    assert spikes.shape == (400, 1, 1, 6, 6)
    assert torch.equal(spikes[..., :3], torch.ones_like(spikes[..., :3]))
    # P(spike) = 0.25 over 400 x 18 Bernoulli draws: 3 sigma = 3 * sqrt(.25 * .75 / 7200) ~ 0.015
    assert abs(float(spikes[..., 3:].mean()) - 0.25) < 0.015
    assert torch.equal(model.encode(x), model.encode(x))      # eval: keyed by model.seed
    model.input_coding = "clamp"          # checkpoints from before issue 22: clamp(x, 0, 1)
    old = model.encode(x).float()
    assert old[..., 3:].sum() == 0 and torch.equal(old[..., :3], spikes[..., :3])
    model.input_coding = "other"
    with pytest.raises(InputError, match="input coding 'other'"):
        model.encode(x)


def test_only_the_synapses_are_stored():
    model = fc()
    assert quantized_parameter_names(model) == ["stages.0.1.weight", "stages.1.weight"]
    assert [n for n, _ in model.named_parameters()] == quantized_parameter_names(model)
    conv = build_snn("snn-conv", 3, 1, 10, (28, 28))
    names = quantized_parameter_names(conv)
    assert names == ["stages.0.0.weight", "stages.1.0.weight", "stages.2.1.weight"]
    assert [n for n, _ in conv.named_parameters()] == names
    assert QuantizedModel(conv).n_codes == 3 * 25 + 6 * 3 * 25 + 6 * 4 * 4 * 10
    # beta / threshold are snntorch buffers, not weights in memory
    assert "neurons.0.beta" in dict(conv.named_buffers())
    assert float(conv.neurons[0].beta) == pytest.approx(0.95) and float(conv.neurons[0].threshold) == 1.0


def test_quantized_round_trip_and_functional_call():
    model = fc(n=24, steps=6).eval()
    with torch.no_grad():                      # stronger synapses: an untrained net that fires
        for p in model.parameters():
            p.mul_(4)
    x = images(8)
    qm = QuantizedModel(model, bits=8)
    clean = qm.clean_weights()
    params = {n: p.detach() for n, p in model.named_parameters()}
    for name, w in clean.items():
        step = float(params[name].abs().max()) / 127
        assert float((w - params[name]).abs().max()) <= step / 2 + 1e-7
    ref = torch.func.functional_call(model, clean, (x,))
    assert ref.sum() > 0
    copy = fc(n=24, steps=6, seed=5).eval()
    copy.load_state_dict({**model.state_dict(), **clean})
    assert torch.equal(copy(x), ref)
    before = model(x)
    faulty = qm.perturbed(RandomBitErrors(0.05, seed=1))
    assert not torch.equal(torch.func.functional_call(model, faulty, (x,)), ref)
    assert torch.equal(model(x), before)                  # own weights and state untouched


def test_no_state_leaks_between_calls():
    model = fc(n=16, steps=4).eval()
    x = images(4)
    ref = model(x)
    model(images(2, seed=3))                              # another batch size in between
    weights = {n: p * 3 for n, p in model.named_parameters()}
    torch.func.functional_call(model, weights, (x,))
    assert torch.equal(model(x), ref)
    assert all(lif.mem.numel() == 0 for lif in model.neurons)
    n_before = len(snntorch.SpikingNeuron.instances)
    for _ in range(3):
        fc()
    assert len(snntorch.SpikingNeuron.instances) == n_before    # built models are not kept alive


def test_train_base_learns_and_checkpoint_round_trips(tmp_path):
    data = write_quadrants(tmp_path, 320, 160)
    out = tmp_path / "snn.pt"
    opts = TrainOptions(epochs=2, batch_size=32, lr=5e-3, seed=0)
    meta = train_base("snn-fc16", str(data), out, opts, limit=300, progress=False, log=None)
    assert meta["image_size"] == [16, 16] and meta["quantized_weights"] == 16 * 256 + 16 * 4
    assert meta["test_accuracy"] > 0.6                    # chance is 0.25
    model, got = load_checkpoint(out)
    assert not model.training and got["arch"] == "snn-fc16"
    from sramsim.nn.data import load_dataset
    test = load_dataset(str(data), "test")
    qm = QuantizedModel(model, got["bits"], got["scheme"])
    assert accuracy(model, test, qm.clean_weights()) == pytest.approx(meta["test_accuracy"])
    path = tmp_path / "again.pt"
    save_checkpoint(path, model, got)
    again, _ = load_checkpoint(path)
    x = test.x[:16]
    assert torch.equal(again(x), model(x))


def test_checkpoint_round_trip_conv(tmp_path):
    torch.manual_seed(0)
    model = build("snn-conv2", 1, 10, image_size=(20, 20)).eval()
    meta = {"arch": "snn-conv2", "in_channels": 1, "num_classes": 10, "norm": "batch",
            "image_size": [20, 20]}
    save_checkpoint(tmp_path / "c.pt", model, meta)
    loaded, _ = load_checkpoint(tmp_path / "c.pt")
    x = images(3, 1, (20, 20))
    assert torch.equal(loaded(x), model(x))


def test_sizes_refused_up_front():
    with pytest.raises(InputError, match="snn-conv100000: .* synapse weights") as info:
        build("snn-conv100000")
    assert f"{MAX_SYNAPSES:,}" in str(info.value)
    with pytest.raises(InputError, match="at least 16x16 pixels, got 12x12"):
        build("snn-conv4", image_size=(12, 12))


@pytest.mark.parametrize("arch", ["snn-fc0", "snn-fcx"])
def test_bad_model_name_is_one_line_exit_2(capsys, tmp_path, arch):
    code = main(["train-base", "--model", arch, "--data", str(tmp_path), "--out",
                 str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2
    assert arch in err and "unknown model" in err and err.count("\n") == 1
    assert not (tmp_path / "m.pt").exists()


def test_input_coding_is_saved_and_old_checkpoints_keep_clamp(tmp_path):
    torch.manual_seed(0)
    meta = {"arch": "snn-fc4", "in_channels": 1, "num_classes": 3, "norm": "batch",
            "image_size": [6, 6]}
    model = build("snn-fc4", 1, 3, image_size=(6, 6))
    assert model.input_coding == "intensity"
    save_checkpoint(tmp_path / "new.pt", model, meta)
    loaded, got = load_checkpoint(tmp_path / "new.pt")
    assert loaded.input_coding == "intensity" and got["input_coding"] == "intensity"
    # a checkpoint written before the field: trained with the clamp coding, loaded with it
    obj = read_torch_file(tmp_path / "new.pt", "sramsim.model", 1, "checkpoint")
    del obj["meta"]["input_coding"]
    atomic_torch_save(obj, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[0].input_coding == "clamp"
    obj["meta"]["input_coding"] = "gamma"
    atomic_torch_save(obj, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="input_coding 'gamma'"):
        load_checkpoint(tmp_path / "bad.pt")
