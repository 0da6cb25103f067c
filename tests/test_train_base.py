"""Quantization-aware training, clipping, RandBET, resume and the `sramsim train-base` CLI."""
import gzip
import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from sramsim import QuantizedModel, RandomBitErrors
from sramsim.inject import quantization as Q
from sramsim.commands.main import main
from sramsim.nn.data import Dataset
from sramsim.errors import InputError
from sramsim.nn.evaluation import accuracy
from sramsim.nn.models import build, load_checkpoint
from sramsim.inject.quantized_model import quantized_parameter_names
from sramsim.nn.training import (TrainOptions, qat_weights, randbet_weights, state_path_for, step_loss,
                              step_seed, train, train_base)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and much faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def linear_task(n: int, seed: int, features: int = 8, classes: int = 4) -> Dataset:
    """Label = argmax of a fixed random linear map of Gaussian inputs (easy, but not trivial)."""
    x = torch.randn(n, 1, 1, features, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(features, classes, generator=torch.Generator().manual_seed(99))
    return Dataset(x, (x.reshape(n, features) @ w).argmax(1), classes, "linear")


def mlp(seed: int = 0, hidden: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, hidden, bias=False), nn.GroupNorm(1, hidden),
                         nn.ReLU(), nn.Linear(hidden, 4))


def image_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images: class 1 has a bright top half, class 0 a bright bottom half."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.uint8)
    x = rng.integers(0, 90, (n, 28, 28), dtype=np.uint8)
    x[y == 1, :14] += 150
    x[y == 0, 14:] += 150
    return x, y


def write_idx_dir(root, n_train=64, n_test=32):
    def idx(arr):
        return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) \
            + arr.tobytes()
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = image_task(n, seed)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(idx(x))
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(idx(y))
    return root


# ---------------------------------------------------------------- the training step

def test_training_reduces_loss_and_learns():
    model, data = mlp(), linear_task(512, 1)
    history = train(model, data, TrainOptions(epochs=4, batch_size=64, lr=0.03), linear_task(500, 2),
                    progress=False, log=None)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    losses = [h["loss"] for h in history]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.5 * losses[0]
    assert history[-1]["test_accuracy"] > 0.88          # chance is 0.25


@pytest.mark.parametrize("scheme,bits", [("symmetric", 8), ("asymmetric", 4), ("rquant", 2)])
def test_qat_forward_uses_exactly_the_weights_in_memory(scheme, bits):
    model = mlp()
    opts = TrainOptions(bits=bits, scheme=scheme, clip=0.3)
    names = quantized_parameter_names(model)
    fake = qat_weights(model, names, opts)
    stored = QuantizedModel(model, bits, scheme, clip=0.3).clean_weights()
    assert set(fake) == set(stored) == {"1.weight", "4.weight"}
    for n in names:
        assert torch.allclose(fake[n], stored[n], atol=1e-7)
    # straight-through: d(sum fake)/dw is 1 inside the clip range, 0 outside
    sum(f.sum() for f in fake.values()).backward()
    w = model[1].weight
    assert torch.equal(w.grad, (w.abs() <= 0.3).float())


def test_clip_bound_holds_after_training():
    model = mlp()
    opts = TrainOptions(epochs=2, batch_size=32, lr=0.05, clip=0.05)
    train(model, linear_task(256, 1), opts, progress=False, log=None)
    for n, p in model.named_parameters():
        if n in quantized_parameter_names(model):
            assert float(p.detach().abs().max()) <= np.float32(0.05)
            assert float(p.detach().abs().max()) == pytest.approx(0.05)   # the bound is active
    qm = QuantizedModel(model, 8, "symmetric", clip=0.05)
    assert all(float(w.abs().max()) <= np.float32(0.05) for w in qm.clean_weights().values())


def test_rquant_training_round_trip_and_clamping():
    model = mlp()
    opts = TrainOptions(epochs=2, batch_size=64, lr=0.01, scheme="rquant", bits=4)
    train(model, linear_task(256, 1), opts, progress=False, log=None)
    qm = QuantizedModel(model, 4, "rquant")
    params = dict(model.named_parameters())
    clean = qm.clean_weights()
    faulty = qm.perturbed(RandomBitErrors(0.3, seed=3))
    for seg in qm.segments:
        w = params[seg.name].detach()
        lo, hi = float(w.min()), float(w.max())
        # round trip: within half a step of the float weights
        assert float((clean[seg.name] - w).abs().max()) <= seg.quant.delta / 2 + 1e-6
        # clamping: no bit error can push a weight outside the layer's range ...
        assert float(faulty[seg.name].min()) >= lo - 1e-6 and float(faulty[seg.name].max()) <= hi + 1e-6
        # ... though errors did change many of them
        assert (faulty[seg.name] != clean[seg.name]).float().mean() > 0.3


def test_randbet_gradient_is_mean_of_clean_and_perturbed_gradients():
    model, data = mlp(), linear_task(64, 1)
    x, y = data.x, data.y
    names = quantized_parameter_names(model)
    plain = TrainOptions(clip=1.0)
    randbet = TrainOptions(clip=1.0, randbet_p=0.1)

    def grads(opts, seed=7):
        model.zero_grad()
        step_loss(model, x, y, opts, names, seed)[0].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    g_plain, g_rb = grads(plain), grads(randbet)
    assert any(not torch.allclose(g_plain[n], g_rb[n]) for n in names)
    # by hand: the faulty weights of the same seed, gradient taken at them
    faulty = QuantizedModel(model, 8, "symmetric", 1.0).perturbed(RandomBitErrors(0.1, seed=7))
    assert any(not torch.equal(faulty[n], qat_weights(model, names, plain)[n]) for n in names)
    leaves = {n: faulty[n].clone().requires_grad_(True) for n in names}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.zero_grad()
    nn.functional.cross_entropy(torch.func.functional_call(model, {**leaves, **buffers}, (x,)), y).backward()
    for n in names:
        expected = 0.5 * (g_plain[n] + leaves[n].grad)
        assert torch.allclose(g_rb[n], expected, atol=1e-6), n
    # a different seed draws a different pattern, hence a different gradient
    assert any(not torch.allclose(g_rb[n], grads(randbet, seed=8)[n]) for n in names)


def test_randbet_grad_clip_clamps_the_perturbed_gradient_before_averaging():
    """Stutz et al.'s update: (clean gradient + clamp(perturbed gradient, -C, C)) / 2, for every
    parameter (norm affine and biases too), checked against the two gradients taken by hand."""
    model, data = mlp(), linear_task(64, 1)
    x, y = data.x, data.y
    names = quantized_parameter_names(model)
    bound = 2e-3
    plain = TrainOptions(clip=1.0)
    clamped = TrainOptions(clip=1.0, randbet_p=0.1, randbet_grad_clip=bound)

    def grads(opts):
        model.zero_grad()
        step_loss(model, x, y, opts, names, 7)[0].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    g_clean, g_step = grads(plain), grads(clamped)
    faulty = QuantizedModel(model, 8, "symmetric", 1.0).perturbed(RandomBitErrors(0.1, seed=7))
    leaves = {n: (faulty[n] if n in names else p.detach()).clone().requires_grad_(True)
              for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    nn.functional.cross_entropy(torch.func.functional_call(model, {**leaves, **buffers}, (x,)), y).backward()
    assert set(leaves) - set(names), "the test model must have parameters outside the memory image"
    clamped_elements = 0
    for n, leaf in leaves.items():
        expected = 0.5 * (g_clean[n] + leaf.grad.clamp(-bound, bound))
        assert torch.allclose(g_step[n], expected, atol=1e-7, rtol=1e-5), n
        clamped_elements += int((leaf.grad.abs() > bound).sum())
    assert clamped_elements > 10                       # the clamp did bite
    # a bound no gradient reaches leaves the unclamped RandBET step unchanged
    loose = grads(TrainOptions(clip=1.0, randbet_p=0.1, randbet_grad_clip=1e6))
    unclamped = grads(TrainOptions(clip=1.0, randbet_p=0.1))
    for n in loose:
        assert torch.allclose(loose[n], unclamped[n], atol=1e-7), n


def test_randbet_start_trains_clean_epochs_first():
    """Before `randbet_start` every step is the plain QAT step (bit-identical weights); after it
    the perturbed pass runs."""
    data = linear_task(256, 1)
    snapshots = {}

    def run(opts, key):
        model = mlp(seed=0)
        history = train(model, data, opts, progress=False, log=None,
                        on_epoch_end=lambda e, r: snapshots.setdefault((key, e), {
                            n: v.clone() for n, v in model.state_dict().items()}))
        return history

    base = dict(epochs=2, batch_size=32, clip=1.0, seed=1)
    run(TrainOptions(**base), "plain")
    history = run(TrainOptions(**base, randbet_p=0.1, randbet_start=1), "delayed")
    assert [h["randbet"] for h in history] == [False, True]
    first = [torch.equal(snapshots[("plain", 1)][n], snapshots[("delayed", 1)][n])
             for n in snapshots[("plain", 1)]]
    assert all(first)
    assert not all(torch.equal(snapshots[("plain", 2)][n], snapshots[("delayed", 2)][n])
                   for n in snapshots[("plain", 2)])


def test_new_randbet_options_are_checked_and_left_out_when_unset():
    for bad, message in ((dict(randbet_p=0.1, randbet_grad_clip=0.0), "positive"),
                         (dict(randbet_p=0.1, randbet_grad_clip=float("nan")), "positive"),
                         (dict(randbet_grad_clip=0.05), "needs randbet_p"),
                         (dict(randbet_p=0.1, randbet_start=-1), "non-negative"),
                         (dict(randbet_p=0.1, randbet_start=1.5, epochs=3), "non-negative integer"),
                         (dict(randbet_start=1, epochs=3), "needs randbet_p"),
                         (dict(randbet_p=0.1, randbet_start=2, epochs=2),
                          "less than the epochs trained")):
        with pytest.raises(InputError, match=message):
            TrainOptions(**bad)
    # checkpoints and training states of older runs keep matching their options
    assert not {"randbet_grad_clip", "randbet_start"} & set(TrainOptions(randbet_p=0.1).as_dict())
    d = TrainOptions(epochs=3, randbet_p=0.1, randbet_grad_clip=0.05, randbet_start=1).as_dict()
    assert d["randbet_grad_clip"] == 0.05 and d["randbet_start"] == 1


def test_randbet_weights_carry_gradient_to_float_weights():
    model = mlp()
    names = quantized_parameter_names(model)
    w = randbet_weights(model, names, TrainOptions(randbet_p=0.2), RandomBitErrors(0.2, seed=1))
    sum(v.sum() for v in w.values()).backward()
    assert torch.equal(model[1].weight.grad, torch.ones_like(model[1].weight))


def test_randbet_hardens_a_tiny_model_at_high_ber():
    """p = 10 % bit errors, 8-bit: RandBET beats plain QAT (same clip) by several points.

    Over seeds 0-4 the gain measured 6-10 points with a standard error of about 1.5 points;
    we require 3 points on seed 0.
    """
    train_set, test_set = linear_task(1000, 1), linear_task(1000, 2)
    robust = {}
    for p in (0.0, 0.1):
        model = mlp(seed=0)
        opts = TrainOptions(epochs=20, batch_size=64, lr=0.01, clip=1.0, randbet_p=p)
        train(model, train_set, opts, progress=False, log=None)
        qm = QuantizedModel(model, 8, "symmetric", clip=1.0)
        assert accuracy(model, test_set, qm.clean_weights()) > 0.93
        source = RandomBitErrors(0.1, seed=5)                 # same patterns for both models
        robust[p] = np.mean([accuracy(model, test_set, qm.perturbed(source)) for _ in range(30)])
    assert robust[0.1] > robust[0.0] + 0.03, robust


def test_step_seeds_are_distinct_and_reproducible():
    seeds = {step_seed(0, e, s) for e in range(3) for s in range(100)}
    assert len(seeds) == 300
    assert step_seed(5, 1, 2) == step_seed(5, 1, 2) != step_seed(6, 1, 2)


def test_options_validation():
    for bad in (dict(bits=3), dict(scheme="float"), dict(clip=0.0), dict(clip=-1.0),
                dict(randbet_p=1.0), dict(epochs=0), dict(batch_size=0), dict(lr=-1.0),
                dict(optimizer="lbfgs"), dict(seed=-1)):
        with pytest.raises(InputError):
            TrainOptions(**bad)
    assert TrainOptions(optimizer="sgd").lr == 0.05


# ---------------------------------------------------------------- resume and determinism

def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    data = Dataset(*[torch.as_tensor(a) for a in image_task(48, 0)], 2, "img")
    data = Dataset(data.x[:, None].float() / 127.5 - 1, data.y.long(), 2, "img")
    opts = TrainOptions(epochs=3, batch_size=16, seed=3, randbet_p=0.01, clip=0.5)

    def fresh():
        torch.manual_seed(0)
        return build("cnn", 1, 2)

    full = fresh()
    train(full, data, opts, progress=False, log=None)

    state = tmp_path / "run.pt.partial"

    def stop_after_first(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    first = fresh()
    with pytest.raises(KeyboardInterrupt):
        train(first, data, opts, state_path=state, progress=False, log=None,
              on_epoch_end=stop_after_first)
    assert state.exists()
    resumed = build("cnn", 1, 2)            # different initial weights: all comes from the state
    epochs_run = []
    history = train(resumed, data, opts, state_path=state, progress=False, log=None,
                    on_epoch_end=lambda e, r: epochs_run.append(e))
    assert epochs_run == [2, 3] and [h["epoch"] for h in history] == [1, 2, 3]
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(InputError, match="different options"):
        train(build("cnn", 1, 2), data, TrainOptions(epochs=3, batch_size=16, seed=4),
              state_path=state, progress=False, log=None)


def test_train_base_writes_checkpoint_and_is_deterministic(tmp_path):
    root = write_idx_dir(tmp_path)
    opts = TrainOptions(epochs=2, batch_size=16, seed=1)
    meta = train_base("cnn", str(root), tmp_path / "a.pt", opts, progress=False, log=None)
    assert not state_path_for(tmp_path / "a.pt").exists()
    model, saved = load_checkpoint(tmp_path / "a.pt")
    assert saved["arch"] == "cnn" and saved["in_channels"] == 1 and saved["num_classes"] == 2
    assert saved["bits"] == 8 and saved["scheme"] == "symmetric" and saved["clip"] is None
    assert saved["dataset"] == str(root.resolve()) and len(saved["history"]) == 2
    assert saved["test_accuracy"] == meta["test_accuracy"] > 0.9     # the task is easy
    qm = QuantizedModel(model, 8, "symmetric")
    from sramsim.nn.data import load_dataset
    assert accuracy(model, load_dataset(str(root)), qm.clean_weights()) == saved["test_accuracy"]
    train_base("cnn", str(root), tmp_path / "b.pt", opts, progress=False, log=None)
    other, _ = load_checkpoint(tmp_path / "b.pt")
    for (n, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), n
    again = train_base("cnn", str(root), tmp_path / "a.pt", opts, progress=False, log=None)
    assert again["skipped"] is True


# ---------------------------------------------------------------- CLI

def test_cli_trains_and_prints_json(tmp_path, capsys):
    root = write_idx_dir(tmp_path, n_train=32, n_test=16)
    out = tmp_path / "m.pt"
    rc = main(["train-base", "--model", "cnn", "--data", str(root), "--epochs", "1", "--out", str(out),
               "--limit", "24", "--batch-size", "8", "--bits", "4", "--scheme", "rquant",
               "--clip", "0.2", "--norm", "group", "--randbet-p", "0.01", "--json", "--no-progress"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bits"] == 4 and report["scheme"] == "rquant" and report["norm"] == "group"
    assert 0.0 <= report["test_accuracy"] <= 1.0 and len(report["history"]) == 1
    model, meta = load_checkpoint(out)
    assert meta["limit"] == 24 and meta["train_samples"] == 24 and meta["test_samples"] == 16
    assert meta["randbet_p"] == 0.01 and meta["clip"] == 0.2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert max(float(model.state_dict()[n].abs().max())
               for n in quantized_parameter_names(model)) <= np.float32(0.2)


def test_cli_randbet_recipe_flags(tmp_path, capsys):
    root = write_idx_dir(tmp_path, n_train=32, n_test=16)
    out = tmp_path / "m.pt"
    rc = main(["train-base", "--data", str(root), "--epochs", "2", "--out", str(out), "--limit", "16",
               "--batch-size", "8", "--scheme", "rquant", "--clip", "0.1", "--norm", "group",
               "--randbet-p", "0.2", "--randbet-grad-clip", "0.05", "--randbet-start", "1",
               "--json", "--no-progress"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["randbet_grad_clip"] == 0.05 and report["randbet_start"] == 1
    assert [h["randbet"] for h in report["history"]] == [False, True]
    _, meta = load_checkpoint(out)
    assert meta["train_config"]["options"]["randbet_grad_clip"] == 0.05
    # the same command again keeps the finished model
    assert main(["train-base", "--data", str(root), "--epochs", "2", "--out", str(out), "--limit", "16",
                 "--batch-size", "8", "--scheme", "rquant", "--clip", "0.1", "--norm", "group",
                 "--randbet-p", "0.2", "--randbet-grad-clip", "0.05", "--randbet-start", "1",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "kept existing" in text and "gradient clamp 0.05" in text and "from epoch 2" in text


@pytest.mark.parametrize("argv,message", [
    (["--data", "{tmp}/missing"], "no such dataset directory"),
    (["--bits", "3"], "--bits must be one of 8, 4, 2"),
    (["--model", "resnet34"], "--model: unknown model"),
    (["--scheme", "float"], "--scheme must be one of"),
    (["--norm", "layer"], "--norm must be one of"),
    (["--clip", "-1"], "--clip must be a positive"),
    (["--randbet-p", "1.5"], "--randbet-p must lie in"),
    (["--randbet-p", "0.1", "--randbet-grad-clip", "0"], "--randbet-grad-clip must be a positive"),
    (["--randbet-p", "0.1", "--randbet-grad-clip", "x"], "--randbet-grad-clip must be a number"),
    (["--randbet-grad-clip", "0.05"], "--randbet-grad-clip clamps the perturbed pass's gradient"),
    (["--randbet-p", "0.1", "--randbet-start", "-1"], "--randbet-start must be >= 0"),
    (["--randbet-start", "1"], "--randbet-start delays RandBET; it needs --randbet-p"),
    (["--randbet-p", "0.1", "--randbet-start", "2"], "--randbet-start must be less than the epochs trained (2)"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(["train-base", "--out", str(tmp_path / "x.pt"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and message in err and err.startswith("sramsim: error:")
    assert not (tmp_path / "x.pt").exists()


def test_unwritable_out_is_refused_before_training(tmp_path, capsys):
    """--out under a regular file (unwritable even for root): one line before any epoch runs
    (it used to train the epoch, lose it and end in a traceback)."""
    root = write_idx_dir(tmp_path, n_train=16, n_test=8)
    (tmp_path / "afile").write_text("not a folder")
    epochs = []
    with pytest.raises(InputError, match="output .*afile is not a directory"):
        train_base("cnn", str(root), tmp_path / "afile" / "m.pt", TrainOptions(epochs=1),
                   progress=False, log=None, on_epoch_end=lambda e, r: epochs.append(e))
    assert epochs == []
    rc = main(["train-base", "--data", str(root), "--out", str(tmp_path / "afile" / "m.pt"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--out" in err and "epoch" not in err, err


def test_cli_corrupt_partial_state_exits_2(tmp_path, capsys):
    root = write_idx_dir(tmp_path, n_train=16, n_test=8)
    state_path_for(tmp_path / "m.pt").write_bytes(b"junk")
    rc = main(["train-base", "--data", str(root), "--out", str(tmp_path / "m.pt"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "m.pt.partial" in err and err.count("\n") == 1


def test_cli_image_folder_needs_and_records_resize(tmp_path, capsys):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for k, size in enumerate([(12, 10), (8, 8)]):
                path = tmp_path / "imgs" / split / cls / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    base = ["train-base", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "m.pt"),
            "--epochs", "1", "--batch-size", "2", "--no-progress"]
    assert main(base) == 2
    assert "pass an image size" in capsys.readouterr().err
    assert main(base + ["--image-size", "16"]) == 0
    model, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["in_channels"] == 3 and meta["image_size"] == [16, 16] and meta["resize"] == 16
    assert "test accuracy" in capsys.readouterr().out
