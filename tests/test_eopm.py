import copy

import numpy as np
import pytest
import torch
from torch import nn

from fusion.eopm import EopmConfig, EopmTrainer, eopm_loss, stacked_logits
from sramsim.inject.draws import ChipPool, RandomSampler, apply_numpy
from sramsim.inject.torch_backend import TorchApplier
from sramsim.inject.weight_sets import WeightSets, dequantize_stack
from sramsim import BerCurve, Chip, Geometry, QuantizedModel
from sramsim.errors import InputError

MIXED = {"flip": 0.5, "stuck0": 0.25, "stuck1": 0.25}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(nn.Module):
    """A frozen base model small enough for exact tests: conv-BN-ReLU-pool-linear on 8x8 inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2).flatten(1))


def tiny_base(seed=0):
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():                       # non-trivial BatchNorm statistics
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
        net.fc.weight.mul_(8)                   # logits that depend on the input
    return net.eval()


def tiny_data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    return x, torch.randint(0, 3, (n,), generator=g)


def small_chip(seed=3, kinds=None):
    return Chip.random(Geometry(32, 32), BerCurve.builtin("finfet14"), 0.75, seed, kinds=kinds)


# --- weight sets and fault application --------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_weight_stack_equals_quantized_model_perturbed(bits):
    qm = QuantizedModel(tiny_base(), bits=bits)
    ws = WeightSets(qm)
    stack = ws.sample(RandomSampler(0.05, seed=7, kinds=MIXED), 3, with_clean=True)
    ref_source = RandomSampler(0.05, seed=7, kinds=MIXED).source
    refs = [qm.clean_weights()] + [qm.perturbed(ref_source) for _ in range(3)]
    for name in qm.names:
        for i, ref in enumerate(refs):
            assert torch.equal(stack[name][i], ref[name])
    assert not torch.equal(stack[qm.names[0]][1], stack[qm.names[0]][2])   # fresh maps per model


def test_dequantize_stack_matches_single_images():
    qm = QuantizedModel(tiny_base(), bits=4, scheme="asymmetric")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, qm.image.size), dtype=np.uint8)
    stack = dequantize_stack(qm, torch.from_numpy(images))
    for i in range(2):
        single = qm.dequantize(images[i])
        assert all(torch.equal(stack[n][i], single[n]) for n in qm.names)


@pytest.mark.parametrize("kinds", [None, MIXED])
def test_torch_path_is_bit_exact_random(kinds):
    qm = QuantizedModel(tiny_base())
    a, b = RandomSampler(0.03, seed=5, kinds=kinds), RandomSampler(0.03, seed=5, kinds=kinds)
    applier = TorchApplier(torch.from_numpy(qm.image.copy()))
    out = np.empty_like(qm.image)
    for _ in range(4):
        expected = apply_numpy(qm.image, a.draw(qm.n_bits), out)
        got = applier(b.draw(qm.n_bits))
        assert np.array_equal(got.numpy(), expected)
    assert not np.array_equal(out, qm.image)


@pytest.mark.parametrize("kinds", [None, MIXED])
def test_torch_path_is_bit_exact_chips(kinds):
    qm = QuantizedModel(tiny_base())
    chips = [small_chip(3, kinds), small_chip(4, kinds)]      # 128-byte chips, tiled over the image
    assert chips[0].geometry.capacity_bytes < qm.image.size
    a, b = ChipPool(chips, 0.8, seed=2), ChipPool(chips, 0.8, seed=2)
    applier = TorchApplier(torch.from_numpy(qm.image.copy()))
    out = np.empty_like(qm.image)
    for _ in range(6):
        expected = apply_numpy(qm.image, a.draw(qm.n_bits), out)
        assert np.array_equal(applier(b.draw(qm.n_bits)).numpy(), expected)
    ws_np, ws_t = WeightSets(qm, path="numpy"), WeightSets(qm, path="torch")
    s1, s2 = ws_np.sample(ChipPool(chips, 0.8, seed=9), 3), ws_t.sample(ChipPool(chips, 0.8, seed=9), 3)
    assert all(torch.equal(s1[n], s2[n]) for n in qm.names)


def test_chip_pool_is_seeded_and_checks_voltage():
    chips = [small_chip(3), small_chip(4), small_chip(5)]
    draws = lambda seed: [(d.chip.name, d.offset) for d in  # noqa: E731
                          (ChipPool(chips, 0.8, seed=seed).draw(0) for _ in range(1))]
    pool = ChipPool(chips, 0.8, seed=1)
    seq = [(pool.draw(0).chip.name, pool.draw(0).offset) for _ in range(20)]
    pool2 = ChipPool(chips, 0.8, seed=1)
    assert seq == [(pool2.draw(0).chip.name, pool2.draw(0).offset) for _ in range(20)]
    assert len({name for name, _ in seq}) == 3 and len({o for _, o in seq}) > 10
    assert draws(1) == draws(1)
    with pytest.raises(InputError, match="below"):
        ChipPool(chips, 0.7, seed=0)


# --- the loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", ["vmap", "loop"])
def test_loss_equals_clean_plus_lambda_mean_perturbed(batched):
    base = tiny_base()
    qm = QuantizedModel(base)
    stack = WeightSets(qm).sample(RandomSampler(0.05, seed=3), 4, with_clean=True)
    x, y = tiny_data(10)
    logits = stacked_logits(base, stack, x, batched)
    loss, ce = eopm_loss(logits, y, lam=5.0)
    # Reference: a separate copy of the model per weight set, loaded the ordinary way.
    ref = []
    for i in range(5):
        m = copy.deepcopy(base)
        m.load_state_dict({**base.state_dict(), **{n: w[i] for n, w in stack.items()}})
        ref.append(nn.functional.cross_entropy(m(x), y))
    ref = torch.stack(ref)
    assert torch.allclose(ce, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(loss, ref[0] + 5.0 * ref[1:].mean(), rtol=1e-5)
    assert not torch.allclose(ref[1], ref[0])        # the faults matter


def test_loss_gradient_reaches_only_the_input():
    base = tiny_base()
    qm = QuantizedModel(base)
    stack = WeightSets(qm).sample(RandomSampler(0.05, seed=3), 2, with_clean=True)
    x, y = tiny_data(6)
    x.requires_grad_(True)
    loss, _ = eopm_loss(stacked_logits(base, stack, x), y, 5.0)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in base.parameters())


# --- training ------------------------------------------------------------------------------------
def make_trainer(seed=0, source=None, **cfg):
    base = tiny_base()
    qm = QuantizedModel(base)
    config = EopmConfig(**{"generator": "ConvS", "width": 0.25, "n_perturbed": 3,
                           "batch_size": 8, "seed": seed, **cfg})
    return EopmTrainer(qm, source or RandomSampler(0.02, seed=11), 1, config)


def test_only_the_generator_trains():
    tr = make_trainer()
    before = {k: v.clone() for k, v in tr.base.state_dict().items()}
    g_before = {k: v.clone() for k, v in tr.generator.state_dict().items()}
    x, y = tiny_data()
    tr.fit(x, y, epochs=1, progress=False)
    after = tr.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)       # BN statistics included
    assert all(p.grad is None for p in tr.base.parameters())
    assert not tr.base.training
    assert any(not torch.equal(g_before[k], v) for k, v in tr.generator.state_dict().items())


def test_training_lowers_the_perturbed_loss():
    tr = make_trainer(lr=1e-2, batch_size=32)
    x, y = tiny_data(32)
    hist = tr.fit(x, y, epochs=10, progress=False)
    assert hist[-1]["ce_perturbed"] < 0.85 * hist[0]["ce_perturbed"]
    assert hist[-1]["loss"] < 0.9 * hist[0]["loss"]


@pytest.mark.parametrize("source", ["random", "chips"])
def test_resume_is_exact(tmp_path, source):
    def sampler():
        if source == "random":
            return RandomSampler(0.02, seed=11, kinds=MIXED)
        return ChipPool([small_chip(3), small_chip(4)], 0.8, seed=5)
    x, y = tiny_data()
    full = make_trainer(source=sampler())
    full.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "full")
    part = make_trainer(source=sampler())
    part.fit(x, y, epochs=1, progress=False, out_dir=tmp_path / "part")     # "interrupted"
    resumed = make_trainer(source=sampler())                                  # a fresh process
    resumed.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "part")
    assert resumed.epoch == 3
    a, b = full.generator.state_dict(), resumed.generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


def test_learning_rate_steps(tmp_path):
    tr = make_trainer(lr_step=2, lr_gamma=0.5)
    x, y = tiny_data(8)
    hist = tr.fit(x, y, epochs=5, progress=False)
    assert [h["lr"] for h in hist] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]


def test_resume_refuses_other_settings(tmp_path):
    x, y = tiny_data(8)
    make_trainer().fit(x, y, epochs=1, progress=False, out_dir=tmp_path)
    with pytest.raises(InputError, match="lam"):
        make_trainer(lam=1.0).fit(x, y, epochs=2, progress=False, out_dir=tmp_path)
    with pytest.raises(InputError, match="fault source"):
        make_trainer(source=RandomSampler(0.05, seed=11)).fit(x, y, epochs=2, progress=False,
                                                               out_dir=tmp_path)


def test_deadline_stops_early():
    tr = make_trainer()
    x, y = tiny_data(64)
    hist = tr.fit(x, y, epochs=5, progress=False, deadline=0.0)
    assert len(hist) == 1 and hist[0]["steps"] == 1 and not hist[0]["complete"]


def test_bad_config():
    with pytest.raises(InputError, match="generator"):
        EopmConfig(generator="Nope")
    with pytest.raises(InputError, match="n_perturbed"):
        EopmConfig(n_perturbed=0)
    with pytest.raises(InputError, match="ber"):
        RandomSampler(1.5)


def test_vmap_and_loop_steps_agree():
    x, y = tiny_data(16)
    a, b = make_trainer(batched="vmap"), make_trainer(batched="loop")
    assert (a.batched, b.batched, make_trainer().batched) == ("vmap", "loop", "loop")  # auto: CPU -> loop
    ra, rb = a.step(x, y), b.step(x, y)                 # same G init, same fault maps
    assert all(ra[k] == pytest.approx(rb[k], rel=1e-5) for k in ra)
    ga = {n: p.grad for n, p in a.generator.named_parameters()}
    gb = {n: p.grad for n, p in b.generator.named_parameters()}
    assert all(torch.allclose(ga[n], gb[n], rtol=1e-3, atol=1e-6) for n in ga)


def test_ema_is_the_moving_average_of_the_trained_generator():
    decay = 0.9
    tr = make_trainer(ema=decay)
    x, y = tiny_data(16)
    expected = None
    for _ in range(3):
        tr.step(x, y)
        now = {k: v.detach().clone() for k, v in tr.generator.state_dict().items()}
        expected = now if expected is None else {
            k: (decay * expected[k] + (1 - decay) * v if v.is_floating_point() else v) for k, v in now.items()}
    got = tr.result.state_dict()
    floats = [k for k, v in expected.items() if v.is_floating_point()]   # BatchNorm counters aside
    assert all(torch.allclose(got[k], expected[k], atol=1e-7) for k in floats)
    assert not all(torch.equal(got[k], tr.generator.state_dict()[k]) for k in got)
    plain = make_trainer()
    assert plain.result is plain.generator


def test_resume_with_ema_is_exact(tmp_path):
    x, y = tiny_data()
    full = make_trainer(ema=0.8)
    full.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "full")
    make_trainer(ema=0.8).fit(x, y, epochs=1, progress=False, out_dir=tmp_path / "part")
    resumed = make_trainer(ema=0.8)
    resumed.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "part")
    a, b = full.result.state_dict(), resumed.result.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="ema"):
        make_trainer(ema=0.5).fit(x, y, epochs=4, progress=False, out_dir=tmp_path / "part")
    with pytest.raises(InputError, match="ema"):
        EopmConfig(ema=1.0)


# --- validation: keep the best-scoring generator -------------------------------------------------
class ScriptedValidator:
    """Scores epochs from a script (so which epoch wins is known) and records what it saw."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.seen = []

    def __call__(self, generator):
        self.seen.append({k: v.clone() for k, v in generator.state_dict().items()})
        return self.scores[len(self.seen) - 1]

    def describe(self):
        return {"scripted": True}


def test_validation_keeps_the_best_epochs_generator():
    tr = make_trainer()
    x, y = tiny_data(16)
    val = ScriptedValidator([0.5, 0.9, 0.7])
    hist = tr.fit(x, y, epochs=3, progress=False, validate=val)
    assert [h["val_score"] for h in hist] == [0.5, 0.9, 0.7]
    assert tr.best["epoch"] == 2 and tr.best["score"] == 0.9
    kept = tr.result.state_dict()
    assert all(torch.equal(kept[k], val.seen[1][k]) for k in kept)           # epoch 2's G
    assert not all(torch.equal(kept[k], v) for k, v in tr.generator.state_dict().items())
    assert not tr.result.training


def test_validation_does_not_change_training_and_resumes_exactly(tmp_path):
    x, y = tiny_data()
    plain = make_trainer()
    plain.fit(x, y, epochs=3, progress=False)
    full = make_trainer()
    full.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "full",
             validate=ScriptedValidator([0.2, 0.8, 0.4]))
    a, b = plain.generator.state_dict(), full.generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                      # scoring touches no RNG
    make_trainer().fit(x, y, epochs=2, progress=False, out_dir=tmp_path / "part",
                       validate=ScriptedValidator([0.2, 0.8, 0.4]))
    resumed = make_trainer()
    resumed.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "part",
                validate=ScriptedValidator([0.4]))                      # only epoch 3 is left
    assert resumed.best["epoch"] == 2 and resumed.best["score"] == 0.8
    a, b = full.result.state_dict(), resumed.result.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="validation"):                 # scores would not compare
        make_trainer().fit(x, y, epochs=4, progress=False, out_dir=tmp_path / "part")


def test_validator_scores_mean_accuracy_over_fixed_maps():
    from fusion.evaluation import FaultSpec, Validator
    from sramsim.nn.data import Dataset
    from sramsim.nn.evaluation import accuracy
    qm = QuantizedModel(tiny_base())
    x, y = tiny_data(40)
    data = Dataset(x, y, 3, "tiny")
    faults = FaultSpec(ber=0.05)
    val = Validator(qm, data, faults, n_models=3)
    identity = make_trainer().generator.eval()                  # identity init: G(x) = x
    draws = faults.eval_draws(qm.n_bits, 3, val.seed)
    ws = WeightSets(qm)
    expected = np.mean([accuracy(qm.model, data, {n: w[0] for n, w in
                                                  dequantize_stack(qm, ws.images([d])).items()})
                        for d in draws])
    assert val(identity) == pytest.approx(expected)
    assert Validator(qm, data, faults, n_models=3)(identity) == val(identity)     # fixed maps
    assert val.describe() == {"samples": 40, "maps": 3, "seed": val.seed,
                              "fault_source": faults.describe()}
    with pytest.raises(InputError, match="fault map"):
        Validator(qm, data, faults, n_models=0)


# --- random state lives in the trainer -----------------------------------------------------------
def test_training_and_resuming_leave_the_global_rng_alone(tmp_path):
    """Building, training, checkpointing and resuming neither read nor set torch's global RNG
    (resume once set it to the state saved by the interrupted run), and the resumed G is still
    the uninterrupted one whatever the global state of each process."""
    x, y = tiny_data()
    qm = QuantizedModel(tiny_base())               # (tiny_base seeds the global RNG itself)
    config = EopmConfig(generator="ConvS", width=0.25, n_perturbed=3, batch_size=8)

    def trainer():
        return EopmTrainer(qm, RandomSampler(0.02, seed=11), 1, config)
    torch.manual_seed(123)
    trainer().fit(x, y, epochs=1, progress=False, out_dir=tmp_path / "part")
    torch.manual_seed(456)
    before = torch.get_rng_state()
    resumed = trainer()
    resumed.fit(x, y, epochs=3, progress=False, out_dir=tmp_path / "part")
    assert torch.equal(torch.get_rng_state(), before)
    assert "torch" not in torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["rng"]
    torch.manual_seed(789)
    full = trainer()
    full.fit(x, y, epochs=3, progress=False)
    a, b = full.generator.state_dict(), resumed.generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_run_counts_only_its_own_steps(tmp_path):
    """train_generator's "steps_this_run" (what `fusion train` prints as "N steps this run") is
    this call's steps; "steps" is every epoch's (3 batches of 8 per epoch here)."""
    from fusion.evaluation import FaultSpec
    from fusion.pipeline import train_generator
    from sramsim.nn.data import Dataset
    qm = QuantizedModel(tiny_base())
    x, y = tiny_data()
    data = Dataset(x, y, 3, "tiny")
    config = EopmConfig(generator="ConvS", width=0.25, n_perturbed=2, batch_size=8)
    first = train_generator(qm, {"in_channels": 1}, data, FaultSpec(ber=0.02), config, 1,
                            tmp_path, progress=False)
    assert first["steps_this_run"] == first["steps"] == 3
    again = train_generator(qm, {"in_channels": 1}, data, FaultSpec(ber=0.02), config, 3,
                            tmp_path, progress=False)
    assert again["epochs_done"] == 3 and again["steps"] == 9 and again["steps_this_run"] == 6
    done = train_generator(qm, {"in_channels": 1}, data, FaultSpec(ber=0.02), config, 3,
                           tmp_path, progress=False)
    assert done["steps"] == 9 and done["steps_this_run"] == 0      # nothing left to train


# --- validation maps are never evaluation maps ---------------------------------------------------
def _placements(draws):
    return {(d.chip.name, d.offset) for d in draws}


@pytest.mark.parametrize("seed", [0, 2024, 4099])
def test_validation_chip_maps_are_not_evaluation_maps(seed):
    """Chips: evaluation puts every chip at offset 0 first, whatever the seed; validation maps
    (once exactly those) now use odd offsets only, so no (chip, offset) pair is shared."""
    from fusion.evaluation import FaultSpec, Validator
    from sramsim.nn.data import Dataset
    chips = [small_chip(3), small_chip(4)]
    faults = FaultSpec(voltage=0.8, chips=chips)
    qm = QuantizedModel(tiny_base())
    x, y = tiny_data(8)
    val = Validator(qm, Dataset(x, y, 3, "tiny"), faults, n_models=6, seed=seed + 1)
    test = faults.eval_draws(qm.n_bits, 40, seed)
    stack = dequantize_stack(qm, WeightSets(qm).images(test))
    for w in val.weights:                    # the weights the validator scores G with
        assert not any(all(torch.equal(w[n], stack[n][i]) for n in qm.names)
                       for i in range(len(test)))
    assert len(_placements(val.draws)) == 6
    assert not _placements(val.draws) & _placements(test)
    assert {(c.name, 0) for c in chips} <= _placements(test)          # the chips as built
    assert val.describe()["placements"] == "odd offsets"


def test_validation_random_maps_are_not_evaluation_maps():
    from fusion.evaluation import EVAL_SEED, FaultSpec, Validator
    from sramsim.nn.data import Dataset
    faults = FaultSpec(ber=0.05)
    qm = QuantizedModel(tiny_base())
    x, y = tiny_data(8)
    val = Validator(qm, Dataset(x, y, 3, "tiny"), faults, n_models=5)
    test = faults.eval_draws(qm.n_bits, 30)
    seen = {d.address.tobytes() for d in test}
    assert all(d.address.size > 0 and d.address.tobytes() not in seen for d in val.draws)
    with pytest.raises(InputError, match="evaluation seed"):
        Validator(qm, Dataset(x, y, 3, "tiny"), faults, n_models=5, seed=EVAL_SEED)


def test_validation_refuses_a_chip_with_a_single_placement():
    from fusion.evaluation import FaultSpec, Validator
    from sramsim.nn.data import Dataset
    chip = Chip(Geometry(1, 8), np.array([3], dtype=np.uint64), np.array([0.9], dtype=np.float32),
                np.array([0], dtype=np.uint8), v_floor=0.8, name="one-word")
    qm = QuantizedModel(tiny_base())
    x, y = tiny_data(8)
    with pytest.raises(InputError, match="single word"):
        Validator(qm, Dataset(x, y, 3, "tiny"), FaultSpec(voltage=0.85, chips=[chip]), n_models=2)
