"""Diehl & Cook (2015) STDP network: dynamics, the STDP rule, label assignment, training/resume."""
import copy
import math

import numpy as np
import pytest
import torch

from conftest import write_idx
from sramsim.errors import InputError
from sramsim.inject.quantized_model import QuantizedModel, quantized_parameter_names
from sramsim.nn.data import Dataset
from sramsim.nn.fat import FaultInjector
from sramsim.nn.models import build, load_checkpoint, save_checkpoint
from sramsim.nn.models import diehl_cook as D
from sramsim.nn.models.diehl_cook import DiehlCook, class_scores, normalize_, stdp_delta
from sramsim.nn.snn_engine.encoding import key_from_seed
from sramsim.nn.stdp import apply_update, assign_labels, encoding_seed, order_seed, train_stdp
from sramsim.nn.training import TrainOptions, epoch_seed, state_path_for, step_seed, train_base


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one torch thread avoids OpenMP wake-ups on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quadrants(n: int, seed: int) -> Dataset:
    """28x28 images of 4 classes: class k has a bright quadrant k on a dim noisy background;
    scaled to [-1, 1] as the data sets are (pixel intensity (x + 1) / 2)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.1
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, :, 14 * r:14 * r + 14, 14 * c:14 * c + 14] += 0.8
    return Dataset(x.clamp(0, 1) * 2 - 1, y, 4, "quadrants")


# ---------------------------------------------------------------- the STDP rule

def test_stdp_update_hand_worked_2x2():
    # T=3 steps, 2 inputs, 2 neurons. input 0 spikes at t=0, input 1 at t=2;
    # neuron 0 spikes at t=1, neuron 1 at t=2. Traces are 1 at a spike, x d = exp(-1/20) per step.
    s_in = torch.zeros(3, 1, 2)
    s_in[0, 0, 0] = s_in[2, 0, 1] = 1
    s_out = torch.zeros(3, 1, 2)
    s_out[1, 0, 0] = s_out[2, 0, 1] = 1
    d = math.exp(-1 / 20)
    # potentiation at post spikes: n0 at t=1 gets nu_post * x_pre(1) = nu_post * [d, 0];
    #                              n1 at t=2 gets nu_post * x_pre(2) = nu_post * [d^2, 1].
    # depression at pre spikes: input 0 at t=0 sees x_post(0) = [0, 0] (nothing);
    #                           input 1 at t=2 sees x_post(2) = [d, 1] -> -nu_pre * [d, 1].
    expected = torch.tensor([[1e-2 * d, -1e-4 * d],
                             [1e-2 * d * d, 1e-2 - 1e-4]])
    assert torch.allclose(stdp_delta(s_in, s_out), expected, rtol=1e-6, atol=0)
    # the batch sum: the same presentation twice gives twice the change
    twice = stdp_delta(s_in.repeat(1, 2, 1), s_out.repeat(1, 2, 1))
    assert torch.allclose(twice, 2 * expected, rtol=1e-6, atol=0)


def test_weight_normalisation_and_bounds():
    w = torch.rand(5, 784, generator=torch.Generator().manual_seed(1)) * 0.5 - 0.1
    normalize_(w)
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    assert torch.allclose(w.sum(1), torch.full((5,), 78.4), rtol=1e-5)
    model = DiehlCook(3, 784, 10)
    assert torch.allclose(model.fc.weight.sum(1), torch.full((3,), 78.4), rtol=1e-5)
    delta = torch.zeros(3, 784)
    delta[0, :10] = 5.0            # pushes 10 weights above wmax ...
    delta[1, :] = -1.0             # ... and a whole neuron below 0
    before = model.fc.weight.detach().clone()
    apply_update(model, delta)
    w = model.fc.weight.detach()
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    clamped = (before[0] + delta[0]).clamp(0, 1)        # clamped at wmax, then normalised
    assert torch.allclose(w[0], clamped * (78.4 / clamped.sum()), rtol=1e-5)
    assert float(w[1].abs().sum()) == 0.0               # all clamped to 0: stays 0
    assert math.isclose(float(w[2].sum()), 78.4, rel_tol=1e-5)


# ---------------------------------------------------------------- neuron dynamics

def one_step(model, current, learn=False):
    return model.dynamics(torch.as_tensor(current, dtype=torch.float32), learn)


def test_adaptive_threshold_increments():
    model = DiehlCook(1, 4, 2)
    # rest -65 + 13 = -52 = threshold: a spike; theta rises by theta_plus = 0.05 (after a decay
    # of exp(-1/1e7) of 0)
    spikes = one_step(model, [[[13.0]]], learn=True)
    assert spikes.tolist() == [[[True]]] and math.isclose(float(model.theta), 0.05, rel_tol=1e-6)
    # two samples of the batch cross -52 + 0.05: theta rises by both (the increments add up)
    spikes = one_step(model, [[[13.1], [13.1]]], learn=True)
    assert spikes.tolist() == [[[True], [True]]]
    assert math.isclose(float(model.theta), 0.15, rel_tol=1e-6)
    # now the threshold is -52 + 0.15: 13.1 no longer reaches it, 13.2 does
    assert one_step(model, [[[13.1]]]).tolist() == [[[False]]]
    assert one_step(model, [[[13.2]]]).tolist() == [[[True]]]
    # without learning theta stays; a spiking neuron is refractory for 5 steps
    before = model.theta.clone()
    spikes = one_step(model, [[[20.0]]] * 7)
    assert torch.equal(model.theta, before)
    assert spikes[:, 0, 0].tolist() == [True, False, False, False, False, False, True]


def test_lateral_inhibition_and_one_spike_per_step():
    # neuron 0 spikes at t=0; neuron 1 gets just enough current at t=1
    current = [[[13.0, 0.0]], [[0.0, 13.0]]]
    free = DiehlCook(2, 4, 2, inh=0.0)
    assert one_step(free, current)[:, 0].tolist() == [[True, False], [False, True]]
    inhibited = DiehlCook(2, 4, 2)          # inh = 120: the spike at t=0 holds neuron 1 down
    assert one_step(inhibited, current)[:, 0].tolist() == [[True, False], [False, False]]
    # both cross at once: only the larger overshoot spikes, both are reset
    both = one_step(DiehlCook(2, 4, 2, inh=0.0), [[[13.0, 14.0]], [[0.0, 0.0]]])
    assert both[:, 0].tolist() == [[False, True], [False, False]]


def test_spike_record_is_binary_and_forward_is_deterministic_in_eval():
    model = DiehlCook(6, 784, 4, time_steps=30)
    x = quadrants(8, 0).x
    rec = model.run(x, key=0)
    assert rec.spikes.dtype == torch.bool and rec.spikes.shape == (30, 8, 6)
    assert rec.spikes.any()
    assert int(rec.spikes.sum(2).max()) <= 1            # at most one spike per sample and step
    model.assignments.copy_(torch.tensor([0, 1, 2, 3, 0, -1]))
    model.eval()
    out = model(x)
    assert out.shape == (8, 4) and torch.equal(out, model(x))
    weights = QuantizedModel(model).clean_weights()
    swapped = torch.func.functional_call(model, weights, (x,))
    assert torch.equal(swapped, torch.func.functional_call(model, weights, (x,)))
    assert quantized_parameter_names(model) == ["fc.weight"]
    assert sorted(n for n, _ in model.named_buffers()) == ["assignments", "theta"]


# ---------------------------------------------------------------- labels

def test_label_assignment_and_class_scores_by_hand():
    counts = torch.tensor([[5.0, 0.0, 0.0],
                           [3.0, 1.0, 0.0],
                           [0.0, 2.0, 0.0],
                           [1.0, 4.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # neuron 0: class means 4 (class 0) and 0.5 (class 1) -> 0; neuron 1: 0.5 and 3 -> 1;
    # neuron 2 never fired -> -1 (unassigned); class 2 has no images (mean 0)
    assignments = assign_labels(counts, labels, 3)
    assert assignments.tolist() == [0, 1, -1]
    scores = class_scores(torch.tensor([[2.0, 6.0, 9.0]]), torch.tensor([0, 1, -1]), 3)
    assert scores.tolist() == [[2.0, 6.0, 0.0]]
    # mean over the neurons of a class
    scores = class_scores(torch.tensor([[2.0, 6.0, 1.0]]), torch.tensor([0, 0, 1]), 2)
    assert scores.tolist() == [[4.0, 1.0]]


# ---------------------------------------------------------------- training

def test_train_stdp_learns_above_chance():
    train_set, test_set = quadrants(200, 0), quadrants(200, 1)
    torch.manual_seed(0)
    model = DiehlCook(16, 784, 4, time_steps=40)
    history = train_stdp(model, train_set, TrainOptions(epochs=1, batch_size=8), test_set,
                         progress=False, log=None)
    record = history[0]
    assert set(record) >= {"epoch", "seconds", "train_accuracy", "test_accuracy"}
    # chance is 0.25; 200 test images: 0.25 + 5 binomial sigmas ~ 0.40
    assert record["test_accuracy"] > 0.6, record
    assert (model.assignments >= 0).any() and not model.training


def test_resume_equals_uninterrupted(tmp_path):
    data = quadrants(48, 2)
    opts = TrainOptions(epochs=3, batch_size=16, seed=5)

    def fresh():
        torch.manual_seed(0)
        return DiehlCook(8, 784, 4, time_steps=20)

    full = fresh()
    train_stdp(full, data, opts, progress=False, log=None)
    state = tmp_path / "run.pt.partial"

    def stop_after_first(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stdp(fresh(), data, opts, state_path=state, progress=False, log=None,
                   on_epoch_end=stop_after_first)
    torch.manual_seed(1)
    resumed = DiehlCook(8, 784, 4, time_steps=20)       # other initial weights: all from the state
    ran = []
    history = train_stdp(resumed, data, opts, state_path=state, progress=False, log=None,
                         on_epoch_end=lambda e, r: ran.append(e))
    assert ran == [2, 3] and [h["epoch"] for h in history] == [1, 2, 3]
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(InputError, match="different options"):
        train_stdp(fresh(), data, TrainOptions(epochs=3, batch_size=16, seed=6),
                   state_path=state, progress=False, log=None)


def fat_one_batch(data_seed: int, model_seed: int):
    """One FAT STDP epoch of one batch (BER 0.05, constant): (opts, the model before, the model
    after, the learning presentations as (x, weight, key))."""
    data = quadrants(16, data_seed)
    opts = TrainOptions(epochs=1, batch_size=16, fat_ber=0.05, fat_curriculum="constant")
    torch.manual_seed(model_seed)
    model = DiehlCook(4, 784, 4, time_steps=10)
    start = copy.deepcopy(model)
    calls = []
    run = model.run

    def spy(x, weight=None, learn=False, **kw):
        if learn:
            calls.append((x.clone(), weight.clone(), kw["key"]))
        return run(x, weight, learn, **kw)

    model.run = spy
    train_stdp(model, data, opts, progress=False, log=None)
    return opts, start, model, calls


def test_fat_integrates_with_faulty_weights_and_learns_on_clean_ones():
    opts, start, model, seen = fat_one_batch(3, 0)
    expected = FaultInjector(start, ["fc.weight"], opts).weights(start, 0, 0)["fc.weight"]
    assert len(seen) == 1 and torch.equal(seen[0][1], expected.detach())
    assert not torch.equal(seen[0][1], start.fc.weight)    # faults at BER 0.05 do change it
    # the update went to the clean float weights: still in [0, 1] and normalised
    assert torch.allclose(model.fc.weight.sum(1), torch.full((4,), 78.4), rtol=1e-5)


def test_seeds_batch_order_as_training_and_encoding_on_its_own_stream():
    assert all(order_seed(3, e) == epoch_seed(3, e) for e in range(4))
    seeds = {encoding_seed(3, e, s) for e in range(3) for s in range(5)}
    assert len(seeds) == 15 and not seeds & {step_seed(3, e, s) for e in range(3) for s in range(5)}


def test_eval_re_presents_silent_samples_at_a_higher_rate():
    model = DiehlCook(3, 784, 2, time_steps=30)
    model.eval()
    faint = torch.full((4, 1, 28, 28), -0.9)         # pixel intensity 0.05
    first = model.run(faint, key=key_from_seed(model.seed)).counts()
    assert (first.sum(1) < D.MIN_SPIKES).all()       # too faint to respond at 128 Hz ...
    counts = model.spike_counts(faint)               # ... so presented again at +32 Hz steps
    assert (counts.sum(1) > first.sum(1)).all()
    assert torch.equal(counts, model.spike_counts(faint))


def test_randbet_is_refused():
    with pytest.raises(InputError, match="randbet"):
        train_stdp(DiehlCook(2, 784, 4), quadrants(4, 0), TrainOptions(randbet_p=0.01),
                   progress=False, log=None)


def test_checkpoint_round_trip(tmp_path):
    model = build("diehl-cook5", 1, 10, image_size=(28, 28))
    model.theta.copy_(torch.arange(5.0) / 10)
    model.assignments.copy_(torch.tensor([3, 1, -1, 0, 9]))
    path = tmp_path / "dc.pt"
    save_checkpoint(path, model, {"arch": "diehl-cook5", "in_channels": 1, "num_classes": 10,
                                  "norm": "batch", "image_size": [28, 28]})
    loaded, meta = load_checkpoint(path)
    assert meta["image_size"] == [28, 28] and isinstance(loaded, DiehlCook)
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    x = quadrants(4, 0).x
    model.eval()
    assert torch.equal(model(x), loaded(x))


def test_train_base_trains_diehl_cook_by_stdp(tmp_path):
    for prefix, n in (("train", 40), ("t10k", 20)):
        data = quadrants(n, 0 if prefix == "train" else 1)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                  ((data.x[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", data.y.numpy().astype(np.uint8))
    out = tmp_path / "dc.pt"
    meta = train_base("diehl-cook6", str(tmp_path), out, TrainOptions(epochs=1, batch_size=10),
                      progress=False, log=None)
    assert not state_path_for(out).exists()
    model, saved = load_checkpoint(out)
    assert isinstance(model, DiehlCook) and saved["image_size"] == [28, 28]
    assert saved["test_accuracy"] == meta["test_accuracy"] and len(saved["history"]) == 1


def test_sizes_are_checked_up_front():
    with pytest.raises(InputError, match="synapses"):
        DiehlCook(D.MAX_SYNAPSES, 2, 10)
    with pytest.raises(InputError, match="input values"):
        DiehlCook(2, 10, 2).run(torch.zeros(1, 1, 2, 2))


def test_fat_stdp_update_is_the_faulty_presentations_change_applied_to_the_clean_weights():
    """FAT for STDP: the presentation integrates with the faulty weights (theta adapts to the
    spikes they cause) and its change lands on the clean float weights, exactly."""
    from sramsim.nn.stdp import present, wmax_of
    _, start, model, calls = fat_one_batch(5, 1)
    assert len(calls) == 1
    x, faulty, key = calls[0]
    clean_w = start.fc.weight.detach().clone()
    assert not torch.equal(faulty, clean_w)
    replay = copy.deepcopy(start)
    rec = replay.run(x, faulty, learn=True, key=key)
    expected = normalize_(clean_w + rec.delta_w, wmax=wmax_of(None))
    assert torch.equal(model.fc.weight.detach(), expected)
    # the clean weights alone would have given another change
    clean_rec = copy.deepcopy(start).run(x, None, learn=True, key=key)
    assert not torch.equal(clean_rec.delta_w, rec.delta_w)
    # present(): the faulty presentation alone unless clean+faulty is asked for
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    assert torch.equal(present(a, x, key, faulty, False).delta_w, rec.delta_w)
    both = present(b, x, key, faulty, True)
    assert torch.equal(both.delta_w, 0.5 * (clean_rec.delta_w + rec.delta_w))
    theta_clean = copy.deepcopy(start)
    theta_clean.run(x, None, learn=True, key=key)
    assert torch.equal(b.theta, 0.5 * (theta_clean.theta + replay.theta))


def test_clip_is_the_synapses_upper_bound_under_stdp():
    from sramsim.nn.stdp import wmax_of
    torch.manual_seed(2)
    model = DiehlCook(4, 784, 4, time_steps=5)
    delta = torch.zeros_like(model.fc.weight)
    delta[:, :3] = 5.0                                   # pushes three synapses far above 0.3
    apply_update(model, delta, clip=0.3)
    w = model.fc.weight.detach()
    assert float(w.max()) <= 0.3 and float(w.min()) >= 0.0
    # clamped to 0.3 before the row was scaled to its sum: the three stay equal, the row's top
    assert torch.equal(w[:, :3], w[:, :1].expand(4, 3))
    assert torch.equal(w[:, 0], w.max(1).values)
    assert wmax_of(None) == D.WMAX and wmax_of(2.0) == D.WMAX and wmax_of(0.3) == 0.3


# ---------------------------------------------------------------- the recipe

def test_recipe_is_checked_and_sets_the_rate_of_every_presentation():
    model = DiehlCook(3, 784, 2, time_steps=30)
    for bad in (0, -1, float("nan"), float("inf"), D.MAX_INTENSITY * 1.01):
        with pytest.raises(InputError, match="intensity"):
            model.set_recipe(intensity=bad)
    for bad in (-1, float("nan"), 2e6):
        with pytest.raises(InputError, match="theta_rest_ms"):
            model.set_recipe(theta_rest_ms=bad)
    assert (model.intensity, model.theta_rest_ms) == (D.INTENSITY, None)   # nothing kept
    x = quadrants(3, 0).x
    default = DiehlCook(3, 784, 2, time_steps=30)
    model.set_recipe(intensity=64.0)
    key = key_from_seed(5)
    assert torch.equal(model.encode(x, 30, key), default.encode(x, 30, key, intensity=64.0))
    assert not torch.equal(model.encode(x, 30, key), default.encode(x, 30, key))
    # the re-presentation of a silent sample steps up from the model's rate
    model.eval()
    faint = torch.full((2, 1, 28, 28), -0.9)
    counts = model.spike_counts(faint)
    assert torch.equal(counts, model.spike_counts(faint))


def test_online_theta_decays_over_the_batch_time_and_rests():
    model = DiehlCook(4, 784, 2, time_steps=100)
    model.theta.fill_(10.0)
    model.rest_decay_(64)                               # BindsNET's batched time base: nothing
    assert torch.equal(model.theta, torch.full((4,), 10.0))
    model.set_recipe(theta_rest_ms=150.0)
    model.rest_decay_(1)                                # one image: its 150 ms of rest
    assert torch.equal(model.theta, torch.full((4,), 10.0) * math.exp(-150 / D.TC_THETA_DECAY))
    model.theta.fill_(10.0)
    model.rest_decay_(64)                               # 63 more presentations, 64 rests
    expected = 10.0 * math.exp(-(64 * 250 - 100) / D.TC_THETA_DECAY)
    assert torch.allclose(model.theta, torch.full((4,), expected), rtol=1e-6, atol=0)
    model.set_recipe(theta_rest_ms=0.0)
    model.theta.fill_(10.0)
    model.rest_decay_(1)                                # batch 1 without rest: online already
    assert torch.equal(model.theta, torch.full((4,), 10.0))


def test_recipe_trains_from_the_options_and_is_saved(tmp_path):
    train_set = quadrants(64, 0)
    runs = {}
    for rest in (None, 150.0):
        torch.manual_seed(0)
        model = DiehlCook(8, 784, 4, time_steps=30)
        opts = TrainOptions(epochs=1, batch_size=16, stdp_intensity=64.0, stdp_rest_ms=rest)
        train_stdp(model, train_set, opts, progress=False, log=None, assign_samples=32)
        assert model.intensity == 64.0 and model.theta_rest_ms == rest
        runs[rest] = model.theta.clone()
    # the same presentations while the thresholds are equal; the rests only lower theta after
    assert (runs[150.0] <= runs[None]).all() and (runs[150.0] < runs[None]).any()
    path = tmp_path / "dc.pt"
    save_checkpoint(path, model, {"arch": "diehl-cook8", "in_channels": 1, "num_classes": 4,
                                  "norm": "batch", "image_size": [28, 28]})
    loaded, meta = load_checkpoint(path)
    assert (loaded.intensity, loaded.theta_rest_ms) == (64.0, 150.0)
    assert meta["intensity"] == 64.0 and meta["theta_rest_ms"] == 150.0
    # a checkpoint from before the recipe existed (its writer knew no such fields): the defaults
    model.checkpoint_meta = lambda: {"input_coding": model.input_coding}
    save_checkpoint(path, model, {"arch": "diehl-cook8", "in_channels": 1, "num_classes": 4,
                                  "norm": "batch", "image_size": [28, 28]})
    old, meta = load_checkpoint(path)
    assert "intensity" not in meta
    assert (old.intensity, old.theta_rest_ms) == (D.INTENSITY, None)


def test_recipe_options_are_recorded_only_when_given_and_refused_for_gradients():
    assert "stdp_intensity" not in TrainOptions().as_dict()
    assert "stdp_rest_ms" not in TrainOptions().as_dict()
    assert TrainOptions(stdp_rest_ms=150.0).as_dict()["stdp_rest_ms"] == 150.0
    with pytest.raises(InputError, match="stdp_intensity must be a rate"):
        TrainOptions(stdp_intensity=0.0)
    from sramsim.nn.training import train
    with pytest.raises(InputError, match="Diehl & Cook network's recipe"):
        train(build("cnn", 1, 4), quadrants(8, 0), TrainOptions(stdp_intensity=64.0),
              progress=False, log=None)
