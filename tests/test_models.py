"""Base models: shapes, parameter counts, GroupNorm swap, checkpoint round trip and bad files."""
import pytest
import torch
from torch import nn

from sramsim.errors import InputError
from sramsim.nn.models import ARCHS, atomic_torch_save, build, load_checkpoint, save_checkpoint
from sramsim.nn.models.norm import groups_for


SHAPE_CASES = [(arch, c, s) for arch in ("cnn", "resnet18", "vgg11") for c, s in ((1, 28), (3, 32))] \
    + [(arch, 3, 32) for arch in ("resnet50", "vgg16", "vgg19")] \
    + [("resnet20", 1, 28), ("resnet20", 3, 32)]
assert {a for a, _, _ in SHAPE_CASES} == set(ARCHS)


@pytest.mark.parametrize("arch,channels,size", SHAPE_CASES)
def test_output_shapes(arch, channels, size):
    torch.manual_seed(0)
    model = build(arch, channels, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts():
    # CIFAR ResNet18 / ResNet50 (3x3 stem, 10 classes): 11,173,962 and 23,520,842 parameters
    assert n_params(build("resnet18", 3, 10)) == 11_173_962
    assert n_params(build("resnet50", 3, 10)) == 23_520_842
    # CIFAR VGG19 as NeuralFuse builds it (biased convs + BatchNorm): conv weights 20,018,880,
    # conv biases 5,504, BatchNorm 2 * 5,504, linear 512 * 10 + 10
    assert n_params(build("vgg19", 3, 10)) == 20_040_522 == 20_018_880 + 5_504 + 11_008 + 5_130
    # cnn: convs 1*32*9 + 32*64*9 + 64*64*9, three norms 2*(32+64+64), linear 3136*10 + 10
    assert n_params(build("cnn", 1, 10)) == 288 + 18432 + 36864 + 320 + 31370


def test_group_norm_replaces_every_batch_norm():
    for arch in ("cnn", "resnet18", "vgg11"):
        model = build(arch, 3, 10, norm="group")
        kinds = {type(m) for m in model.modules()}
        assert nn.BatchNorm2d not in kinds and nn.GroupNorm in kinds
        assert not list(model.buffers())      # no running statistics at all
    assert [groups_for(c) for c in (32, 64, 128, 512, 2048, 6)] == [8, 16, 32, 32, 32, 1]


def test_unknown_arch_and_norm():
    with pytest.raises(InputError, match="unknown model 'resnet19'"):
        build("resnet19")
    with pytest.raises(InputError, match="norm"):
        build("cnn", norm="layer")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build("cnn", 1, 10)
    model.train()
    model(torch.randn(8, 1, 28, 28))          # move BatchNorm running stats off their defaults
    path = tmp_path / "m.pt"
    meta = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "norm": "batch", "bits": 4,
            "scheme": "rquant", "clip": 0.1, "dataset": "fashion-mnist", "test_accuracy": 0.5}
    save_checkpoint(path, model, meta)
    loaded, got = load_checkpoint(path)
    assert not loaded.training
    assert got == meta
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "sramsim.model" and raw["version"] == 1


def test_checkpoint_meta_defaults_and_required(tmp_path):
    model = build("cnn", 3, 4, norm="group")
    save_checkpoint(tmp_path / "m.pt", model, {"arch": "cnn", "in_channels": 3, "num_classes": 4,
                                               "norm": "group"})
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["bits"] == 8 and meta["scheme"] == "symmetric" and meta["clip"] is None
    with pytest.raises(ValueError, match="arch"):
        save_checkpoint(tmp_path / "n.pt", model, {"in_channels": 3, "num_classes": 4})


def test_bad_checkpoint_files(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(InputError, match="none.pt: no such"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage" * 10)
    with pytest.raises(InputError, match="corrupt.pt: not a readable") as info:
        load_checkpoint(corrupt)
    assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.pt"
    torch.save(build("cnn").state_dict(), foreign)      # a bare state dict, not our format
    with pytest.raises(InputError, match="foreign.pt: not a sramsim model checkpoint"):
        load_checkpoint(foreign)
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, build("cnn", 1, 10), {"arch": "cnn", "in_channels": 1, "num_classes": 10})
    obj = torch.load(wrong, weights_only=True)
    obj["meta"]["num_classes"] = 5
    atomic_torch_save(obj, wrong)                       # consistent (its digest rewritten)
    with pytest.raises(InputError, match="wrong.pt: weights do not fit"):
        load_checkpoint(wrong)
    obj["version"] = 99
    torch.save(obj, wrong)
    with pytest.raises(InputError, match="version 99"):
        load_checkpoint(wrong)
