"""Fault-aware training: the curriculum schedule, the faulty weights each step trains on
(values, straight-through gradient, determinism, every source), exact resume, --init, and the
CLI's one-line errors."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from sramsim import Chip, Geometry, QuantizedModel, RandomBitErrors
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.inject.quantized_model import quantized_parameter_names
from sramsim.memory.curves import BerCurve
from sramsim.memory.profiles import save_chip
from sramsim.nn.data import Dataset
from sramsim.nn.fat import (FaultInjector, chip_voltage, curriculum_ber, fat_step_seed,
                            parse_source)
from sramsim.nn.models import load_checkpoint
from sramsim.nn.training import TrainOptions, state_path_for, train, train_base


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def task(n: int, seed: int) -> Dataset:
    x = torch.randn(n, 1, 1, 16, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(16, 3, generator=torch.Generator().manual_seed(7))
    return Dataset(x, (x.reshape(n, 16) @ w).argmax(1), 3, "lin")


def net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32, bias=False), nn.ReLU(),
                         nn.Linear(32, 3, bias=False))


def test_curriculum_schedules():
    assert [curriculum_ber(1e-2, e, 4, "log", 1e-5) for e in range(4)] == \
        pytest.approx([1e-5, 1e-4, 1e-3, 1e-2])
    assert [curriculum_ber(0.1, e, 3, "linear", 0.02) for e in range(3)] == \
        pytest.approx([0.02, 0.06, 0.1])
    assert {curriculum_ber(0.05, e, 5, "constant") for e in range(5)} == {0.05}
    assert curriculum_ber(0.05, 0, 1, "log") == 0.05      # a single epoch trains at the target
    with pytest.raises(InputError, match="fat_curriculum"):
        curriculum_ber(0.05, 0, 3, "cosine")


@pytest.mark.parametrize("kw, match", [
    ({"fat_ber": 1.0}, "fat_ber"), ({"fat_ber": -1e-3}, "fat_ber"),
    ({"fat_ber": 1e-2, "fat_start": 1e-2}, "fat_start"),
    ({"fat_ber": 1e-2, "fat_start": 0.0}, "fat_start"),
    ({"fat_ber": 1e-2, "fat_curriculum": "steps"}, "fat_curriculum"),
    ({"fat_ber": 1e-2, "fat_source": "dram:model7"}, r"dram:error-model=0\.\.3"),
    ({"fat_ber": 1e-2, "fat_source": "sram"}, "fat_source"),
    ({"fat_ber": 1e-2, "fat_source": "chips:/nonexistent.h5"}, "no such profile"),
    ({"fat_ber": 1e-2, "randbet_p": 0.01}, "choose one"),
])
def test_bad_settings_are_one_line_errors(kw, match):
    with pytest.raises(InputError, match=match):
        TrainOptions(**kw)


def test_options_without_fat_record_what_they_did_before():
    """Checkpoints written before FAT existed still match their settings (no retraining)."""
    assert not any(k.startswith("fat") for k in TrainOptions().as_dict())
    assert TrainOptions(fat_ber=1e-3).as_dict()["fat_source"] == "random"


def test_parse_source():
    assert parse_source("random") == ("random", None)
    assert parse_source("dram:error-model=2") == ("dram", 2)
    assert parse_source("dram:model2") == ("dram", 2)        # the spelling of sramsim <= 0.1
    assert parse_source("dram:3") == ("dram", 3)


def test_one_spelling_for_the_error_model_source():
    from sramsim.nn.fat import canonical_source
    assert canonical_source("dram:error-model=1") == "dram:error-model=1"
    with pytest.warns(FutureWarning, match="'dram:model1' is deprecated: use 'dram:error-model=1'"):
        opts = TrainOptions(epochs=2, fat_ber=0.01, fat_source="dram:model1")
    assert opts.fat_source == "dram:error-model=1"
    # a checkpoint recorded with the old spelling still matches the same settings spelled anew
    from sramsim.nn.training import _spelled_now
    old = {"options": {**opts.as_dict(), "fat_source": "dram:model1"}, "tag": {}}
    assert _spelled_now(old) == {"options": opts.as_dict(), "tag": {}}


@pytest.mark.parametrize("source", ["random", "dram:error-model=0", "dram:error-model=3"])
def test_step_weights_are_the_faulty_image_with_straight_through_gradient(source):
    model = net()
    names = quantized_parameter_names(model)
    opts = TrainOptions(epochs=3, fat_ber=0.05, fat_source=source, fat_curriculum="log",
                        fat_start=1e-3, seed=4)
    inj = FaultInjector(model, names, opts)
    assert inj.active and inj.ber(0) == pytest.approx(1e-3) and inj.ber(2) == pytest.approx(0.05)
    w = inj.weights(model, 2, 5)
    qm = QuantizedModel(model)
    image = inj.faulty_image(qm, 0.05, fat_step_seed(4, 2, 5))
    expect = qm.dequantize(image)
    for n in names:
        # w + (w_f - w) equals w_f up to one float32 rounding
        torch.testing.assert_close(w[n].detach(), expect[n], rtol=1e-6, atol=1e-7)
    wrong = int(np.bitwise_count(image ^ qm.image).sum())
    assert 0 < wrong < qm.n_bits * 0.2
    # same step -> same map, another step -> another map
    w2 = inj.weights(model, 2, 5)
    w3 = inj.weights(model, 2, 6)
    assert all(torch.equal(w[n], w2[n]) for n in names)
    assert not all(torch.equal(w[n], w3[n]) for n in names)
    # d loss / d w = d loss / d w_faulty (straight through)
    params = dict(model.named_parameters())
    g = torch.autograd.grad(sum((w[n] * 1.5).sum() for n in names), [params[n] for n in names])
    assert all(torch.equal(gi, torch.full_like(gi, 1.5)) for gi in g)


def test_random_source_rate_inside_binomial_interval():
    model = nn.Sequential(nn.Linear(256, 256, bias=False))
    names = quantized_parameter_names(model)
    inj = FaultInjector(model, names, TrainOptions(fat_ber=0.01, fat_curriculum="constant"))
    qm = QuantizedModel(model)
    wrong = sum(int(np.bitwise_count(inj.faulty_image(qm, 0.01, s) ^ qm.image).sum())
                for s in range(5))
    n = 5 * qm.n_bits
    half = 3.3 * math.sqrt(n * 0.01 * 0.99)
    assert abs(wrong - 0.01 * n) < half


def test_chip_pool_source(tmp_path):
    g = Geometry(rows=64, cols=64, word_bits=8)
    chips = []
    for i in range(2):
        chip = Chip.random(g, BerCurve.builtin("finfet14"), v_floor=0.75, seed=i)
        save_chip(chip, tmp_path / f"c{i}.h5")
        chips.append(chip)
    v = chip_voltage(chips[0], 0.01)
    assert chips[0].count(v) >= math.ceil(0.01 * g.capacity_bits)
    model = nn.Sequential(nn.Linear(20, 10, bias=False))
    src = "chips:" + ",".join(str(tmp_path / f"c{i}.h5") for i in range(2))
    inj = FaultInjector(model, quantized_parameter_names(model),
                        TrainOptions(fat_ber=0.01, fat_curriculum="constant", fat_source=src))
    qm = QuantizedModel(model)
    images = [inj.faulty_image(qm, 0.01, s) for s in range(6)]
    assert any(not np.array_equal(im, qm.image) for im in images)
    np.testing.assert_array_equal(images[0], inj.faulty_image(qm, 0.01, 0))
    with pytest.raises(InputError, match="below fat_ber"):
        FaultInjector(model, quantized_parameter_names(model),
                      TrainOptions(fat_ber=0.9, fat_curriculum="constant", fat_source=src))


def test_fat_trains_and_resumes_exactly(tmp_path):
    """Interrupted after epoch 1 and resumed == uninterrupted, bit for bit; history records the
    curriculum BER."""
    train_set, test_set = task(192, 0), task(64, 1)
    opts = TrainOptions(epochs=3, batch_size=32, fat_ber=0.02, fat_source="dram:error-model=1",
                        fat_start=1e-4, seed=2)
    full = net()
    hist = train(full, train_set, opts, test_set, tmp_path / "a.state", progress=False, log=None)
    assert [h["fat_ber"] for h in hist] == pytest.approx([1e-4, math.sqrt(2e-6), 0.02])

    class Stop(Exception):
        pass

    def stop(epoch, record):
        if epoch == 1:
            raise Stop
    part = net()
    with pytest.raises(Stop):
        train(part, train_set, opts, test_set, tmp_path / "b.state", progress=False, log=None,
              on_epoch_end=stop)
    resumed = net()
    train(resumed, train_set, opts, test_set, tmp_path / "b.state", progress=False, log=None)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # FAT changes what is learned
    plain = net()
    train(plain, train_set, TrainOptions(epochs=3, batch_size=32, seed=2), test_set,
          progress=False, log=None)
    assert not torch.equal(plain[1].weight, full[1].weight)


def test_train_base_init_and_fat_cli(tmp_path, capsys, monkeypatch):
    """train-base --init starts from a checkpoint (recorded with its digest); --fat-* flags reach
    the trainer and the checkpoint meta; wrong --init is a one-line error."""
    from tests.test_train_base import write_idx_dir
    data = write_idx_dir(tmp_path)
    base = tmp_path / "base.pt"
    assert main(["train-base", "--model", "cnn", "--data", str(data), "--epochs", "1",
                 "--out", str(base), "--batch-size", "32", "--no-progress"]) == 0
    fat = tmp_path / "fat.pt"
    capsys.readouterr()
    assert main(["train-base", "--model", "cnn", "--data", str(data), "--epochs", "2",
                 "--out", str(fat), "--batch-size", "32", "--no-progress", "--init", str(base),
                 "--fat-ber", "1e-2", "--fat-source", "dram:model0", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["fat"] == {"ber": 0.01, "curriculum": "log", "source": "dram:error-model=0",
                              "start": 1e-5, "loss": "faulty"}
    assert "note: --fat-source dram:model0 is deprecated; use --fat-source dram:error-model=0" in err
    assert len(summary["init"]["sha256"]) == 64
    _, meta = load_checkpoint(fat)
    assert [h["fat_ber"] for h in meta["history"]] == pytest.approx([1e-5, 1e-2])
    code = main(["train-base", "--model", "resnet18", "--data", str(data), "--epochs", "1",
                 "--out", str(tmp_path / "x.pt"), "--init", str(base), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "cnn" in err[0]


def test_a_moved_folder_resumes_and_another_init_is_refused(tmp_path):
    """The init checkpoint is known by its contents: a folder of base + retrained model moved
    elsewhere is the same model (skipped), while retraining it from other weights is refused."""
    import shutil

    from sramsim.nn.training import OutputExists, TrainOptions, train_base
    from tests.test_train_base import write_idx_dir
    data = write_idx_dir(tmp_path)
    first = tmp_path / "study"
    first.mkdir()
    opts = TrainOptions(epochs=1, batch_size=32)
    train_base("cnn", str(data), first / "base.pt", opts, progress=False, log=None)
    train_base("cnn", str(data), first / "fat.pt", opts, init=first / "base.pt", progress=False,
               log=None)
    moved = shutil.move(first, tmp_path / "elsewhere")
    again = train_base("cnn", str(data), f"{moved}/fat.pt", opts, init=f"{moved}/base.pt",
                       progress=False, log=None)
    assert again["skipped"] is True
    other = tmp_path / "other.pt"
    train_base("cnn", str(data), other, TrainOptions(epochs=1, batch_size=32, seed=7),
               progress=False, log=None)
    with pytest.raises(OutputExists, match="init"):
        train_base("cnn", str(data), f"{moved}/fat.pt", opts, init=other, progress=False,
                   log=None)


@pytest.mark.parametrize("flags, match", [
    (["--fat-ber", "2"], "--fat-ber"), (["--fat-ber", "nan"], "--fat-ber"),
    (["--fat-ber", "1e-2", "--fat-source", "dram:model5"], "dram:error-model=0..3"),
    (["--fat-ber", "1e-2", "--fat-curriculum", "cosine"], "--fat-curriculum"),
    (["--fat-ber", "1e-3", "--fat-start", "1e-2"], "--fat-start"),
    (["--init", "/nonexistent.pt"], "nonexistent"),
])
def test_cli_one_line_errors(tmp_path, capsys, flags, match):
    code = main(["train-base", "--model", "cnn", "--data", "fashion-mnist", "--limit", "64",
                 "--out", str(tmp_path / "m.pt"), "--no-progress"] + flags)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_log_uniform_curriculum_draws_each_steps_ber_in_range():
    from sramsim.nn.fat import step_ber
    bers = [step_ber(3e-2, 1e-4, 0, 0, s) for s in range(400)]
    assert all(1e-4 <= b <= 3e-2 for b in bers)
    assert bers == [step_ber(3e-2, 1e-4, 0, 0, s) for s in range(400)]      # deterministic
    logs = np.log10(bers)
    # log10 uniform on [-4, log10 0.03]: mean and spread within sampling error
    lo, hi = -4.0, math.log10(3e-2)
    assert abs(logs.mean() - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * 400)
    assert curriculum_ber(3e-2, 0, 3, "log-uniform", 1e-4) == 3e-2
    opts = TrainOptions(epochs=2, fat_ber=3e-2, fat_start=1e-4, fat_curriculum="log-uniform")
    inj = FaultInjector(nn.Linear(4, 2), ["weight"], opts)
    assert inj.ber(1, 7) == step_ber(3e-2, 1e-4, 0, 1, 7) and inj.ber(1) == 3e-2


def test_clean_plus_faulty_loss_is_the_mean_of_both_passes():
    from sramsim.nn.training import step_loss
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    names = quantized_parameter_names(model)
    faulty = {n: p + (p * 0.5 - p).detach() for n, p in model.named_parameters() if n in names}
    only = TrainOptions(fat_ber=1e-2)
    mean = TrainOptions(fat_ber=1e-2, fat_loss="clean+faulty")
    loss_f, _ = step_loss(model, x, y, only, names, fat_weights=faulty)
    loss_m, _ = step_loss(model, x, y, mean, names, fat_weights=faulty)
    loss_c, _ = step_loss(model, x, y, TrainOptions(), names)
    assert loss_m.item() == pytest.approx(0.5 * (loss_c.item() + loss_f.item()), rel=1e-6)
    with pytest.raises(InputError, match="fat_loss"):
        TrainOptions(fat_ber=1e-2, fat_loss="sum")
    assert "fat_loss" not in only.as_dict() and mean.as_dict()["fat_loss"] == "clean+faulty"
