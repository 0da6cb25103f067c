import pytest
import torch
from torch import nn

from fusion import generators
from fusion.generators import NAMES, build, weight_count


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_shape_and_range(name, channels, size):
    g = build(name, channels).train()
    x = torch.rand(3, channels, size, size) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert float(y.detach().min()) >= -1.0 and float(y.detach().max()) <= 1.0
    assert not torch.equal(y, x)          # it does transform
    y.sum().backward()                    # and is trainable end to end
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_zero_transform_is_identity_and_crop_aligned(name):
    """With the last layer silenced t(x) = 0, so G(x) == x exactly: the pad/crop keeps every pixel
    in place, also for sizes that are not multiples of 8 (and non-square ones)."""
    g = build(name, 2).eval()
    last = [m for m in g.modules() if isinstance(m, (nn.BatchNorm2d, nn.Conv2d, nn.ConvTranspose2d))][-1]
    assert g.last_layer() is last
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    x = torch.rand(2, 2, 27, 30) * 2 - 1
    assert torch.equal(g(x), x)


@pytest.mark.parametrize("name", NAMES)
def test_identity_init_starts_at_identity_and_learns(name):
    g = build(name, 1, identity_init=True).train()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    y = g(x)
    assert torch.equal(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert g.last_layer().weight.grad.abs().sum() > 0     # not stuck at zero


def test_output_is_clamped_residual():
    g = build("ConvS", 1).eval()
    x = torch.full((1, 1, 8, 8), 0.95)
    with torch.no_grad():
        bn = g.body[-2]
        bn.weight.zero_()
        bn.bias.fill_(10.0)               # t = tanh(10) ~ 1 everywhere
    assert torch.equal(g(x), torch.ones_like(x))


# Conv/linear weights for 3 input channels, summed by hand from the layer lists in the issue:
#   ConvS  = 3*32*9 + 32*64*9 + 64*64*9 + 64*64*9 + 64*32*9 + 32*3*9 + 3*3*9            = 112,401
#   ConvL  = encoder 286,560 + decoder (2*128*128 + 128*64 + 64*64 + 64*32 + 32*32 + 32*3)*9 = 720,576
#   UNetL  = double convs 2,736 + 13,824 + 55,296 + 221,184 + 110,592 + 27,648 + 6,912,
#            transposed 2x2 convs 32,768 + 8,192 + 2,048, 1x1 out 48                     = 481,248
EXPECTED_WEIGHTS_RGB = {"ConvS": 112_401, "ConvL": 720_576, "UNetL": 481_248,
                        "DeConvS": 156_000, "DeConvL": 645_472, "UNetS": 120_432}


@pytest.mark.parametrize("name", NAMES)
def test_weight_counts(name):
    assert weight_count(build(name, 3)) == EXPECTED_WEIGHTS_RGB[name]


def test_size_ordering_and_one_class_per_family():
    for family in ("Conv", "DeConv", "UNet"):
        large, small = build(family + "L", 3), build(family + "S", 3)
        assert type(large) is type(small)
        assert weight_count(small) < weight_count(large)
        assert large.name == family + "L" and small.name == family + "S"
    assert {type(build(n, 1)) for n in NAMES} == {generators.ConvGenerator,
                                                   generators.DeConvGenerator,
                                                   generators.UNetGenerator}


def test_width_scales_hidden_channels():
    # ConvS at width 1/4: channels 8, 16, 16, 16, 8 -> 1*8*9 + 8*16*9 + 16*16*9*2 + 16*8*9 + 8*1*9 + 1*1*9
    g = build("ConvS", 1, width=0.25)
    assert weight_count(g) == 72 + 1152 + 4608 + 1152 + 72 + 9
    assert g(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 28, 28)
    assert weight_count(build("UNetS", 1, width=0.5)) < weight_count(build("UNetS", 1)) / 3


def test_bad_names():
    with pytest.raises(ValueError, match="unknown generator"):
        build("ConvM", 1)
    with pytest.raises(ValueError, match="in_channels"):
        build("ConvS", 0)
    with pytest.raises(ValueError, match="width"):
        build("ConvS", 1, width=0)
