"""NeuralFuse input-transformation generators (Sun et al., NeurIPS 2024): ConvL/S, DeConvL/S,
UNetL/S.

A generator G maps an input x (scaled to [-1, 1]) to clamp(x + t(x), -1, 1): it learns a
perturbation that keeps a frozen model accurate when that model's weights carry bit errors.
G itself runs at nominal voltage, so its own weights are exact.

Three families, one class each, the size ("L" or "S") a parameter:
- `ConvGenerator`: conv encoder with max-pooling, conv decoder with x2 upsampling,
  t = tanh(BN(conv)).
- `DeConvGenerator`: the same encoder, decoder by transposed convolutions, t = tanh(BN(convT)).
- `UNetGenerator`: U-Net (bias-free double convs, 3 down / 3 up steps with skips), t = 1x1 conv.
All three pool three times, so inputs are padded (edge replication) to a multiple of 8 and the
output is cropped back: a 28x28 Fashion-MNIST image works as well as a 32x32 CIFAR one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sramsim.errors import InputError

NAMES = ("ConvL", "ConvS", "DeConvL", "DeConvS", "UNetL", "UNetS")
MULTIPLE = 8   # 2 ** (number of pooling steps)

# Layer specs. An int c: 3x3 conv (pad 1) -> c channels + BN + ReLU; "M": 2x2 max-pool;
# "U": x2 upsample; ("T", c): transposed conv (k4, s2, p1) -> c channels + BN + ReLU.
# "in" stands for the input's channel count. The last layer (conv or transposed conv to "in",
# + BN + tanh) is added by the class.
_ENCODER_L = [32, 32, "M", 64, 64, "M", 128, 128, "M"]
_ENCODER_S = [32, "M", 64, "M", 64, "M"]
_CONV_SPECS = {
    "L": _ENCODER_L + [128, "U", 128, 64, "U", 64, 32, "U", 32],
    "S": _ENCODER_S + [64, "U", 32, "U", "in", "U"],
}
_DECONV_SPECS = {
    "L": _ENCODER_L + [128, ("T", 64), 64, ("T", 32), 32],
    "S": _ENCODER_S + [("T", 64), ("T", 32)],
}
_UNET_WIDTHS = {"L": (16, 32, 64, 128), "S": (8, 16, 32, 64)}


def _conv_bn_relu(cin: int, cout: int, bias: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _deconv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _layers(spec: list, in_channels: int, width: float) -> tuple[list[nn.Module], int]:
    """Modules for a spec list (hidden widths scaled by `width`), and the channels they end with."""
    layers: list[nn.Module] = []
    c = in_channels
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        elif item == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        elif isinstance(item, tuple):
            cout = _scaled(item[1], width)
            layers += _deconv_bn_relu(c, cout)
            c = cout
        else:
            cout = in_channels if item == "in" else _scaled(item, width)
            layers += _conv_bn_relu(c, cout)
            c = cout
    return layers, c


class Generator(nn.Module):
    """Common frame: pad to a multiple of 8, x + t(x), clamp to [-1, 1], crop back."""

    family = ""

    def __init__(self, in_channels: int, size: str, width: float = 1.0):
        super().__init__()
        if size not in ("L", "S"):
            raise InputError(f"generator size must be 'L' or 'S', got {size!r}")
        if int(in_channels) != in_channels or in_channels <= 0:
            raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
        if not width > 0:
            raise InputError(f"width must be > 0, got {width!r}")
        self.in_channels = int(in_channels)
        self.size = size
        self.width = float(width)

    def last_layer(self) -> nn.Module:
        """The layer whose scale sets t's amplitude (zeroed by `zero_transform`)."""
        raise NotImplementedError

    def zero_transform(self) -> Generator:
        """Make t(x) = 0, so G starts as the identity (and EOPM starts from the base's accuracy)."""
        with torch.no_grad():
            last = self.last_layer()
            weight, bias = last.weight, last.bias
            assert isinstance(weight, torch.Tensor)     # a conv or an affine BatchNorm
            weight.zero_()
            if bias is not None:
                assert isinstance(bias, torch.Tensor)
                bias.zero_()
        return self

    @property
    def name(self) -> str:
        """The generator's name in NAMES (family + size), e.g. "ConvS"."""
        return self.family + self.size

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """t(x) on an input whose height and width are multiples of 8."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) = clamp(x + t(x), -1, 1), any height and width (padded to 8, cropped back)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        if ph or pw:
            padded = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
            t = self.transform(padded)[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        else:
            t = self.transform(x)
        return torch.clamp(x + t, -1.0, 1.0)

    def extra_repr(self) -> str:
        """Name, channels and width in the module's repr."""
        return f"name={self.name}, in_channels={self.in_channels}, width={self.width:g}"


class ConvGenerator(Generator):
    """ConvL / ConvS: conv encoder-decoder with nearest x2 upsampling; t = tanh(BN(conv3x3))."""

    family = "Conv"

    def __init__(self, in_channels: int, size: str = "L", width: float = 1.0):
        super().__init__(in_channels, size, width)
        layers, c = _layers(_CONV_SPECS[size], self.in_channels, self.width)
        layers += [nn.Conv2d(c, self.in_channels, 3, padding=1), nn.BatchNorm2d(self.in_channels),
                   nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """t(x): the conv stack ending in tanh."""
        return self.body(x)

    def last_layer(self) -> nn.Module:
        """The BatchNorm before tanh."""
        return self.body[-2]


class DeConvGenerator(Generator):
    """DeConvL / DeConvS: conv encoder, transposed-conv decoder; t = tanh(BN(convT k4 s2))."""

    family = "DeConv"

    def __init__(self, in_channels: int, size: str = "L", width: float = 1.0):
        super().__init__(in_channels, size, width)
        layers, c = _layers(_DECONV_SPECS[size], self.in_channels, self.width)
        layers += [nn.ConvTranspose2d(c, self.in_channels, 4, stride=2, padding=1),
                   nn.BatchNorm2d(self.in_channels), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """t(x): the conv stack ending in tanh."""
        return self.body(x)

    def last_layer(self) -> nn.Module:
        """The BatchNorm before tanh."""
        return self.body[-2]


class _DoubleConv(nn.Sequential):
    """Two bias-free 3x3 conv + BN + ReLU (the U-Net block)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(*_conv_bn_relu(cin, cout, bias=False),
                         *_conv_bn_relu(cout, cout, bias=False))


class _Up(nn.Module):
    """x2 transposed conv, concatenate the skip, double conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = _DoubleConv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample x, join the encoder's skip, convolve."""
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetGenerator(Generator):
    """UNetL / UNetS: widths 16/32/64/128 or 8/16/32/64; t = 1x1 conv (no tanh: the clamp bounds
    it)."""

    family = "UNet"

    def __init__(self, in_channels: int, size: str = "L", width: float = 1.0):
        super().__init__(in_channels, size, width)
        w = [_scaled(c, self.width) for c in _UNET_WIDTHS[size]]
        self.inc = _DoubleConv(self.in_channels, w[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), _DoubleConv(w[i], w[i + 1]))
                                   for i in range(3))
        self.ups = nn.ModuleList(_Up(w[i + 1], w[i]) for i in reversed(range(3)))
        self.out = nn.Conv2d(w[0], self.in_channels, 1)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """t(x): down with skips kept, up joining them, 1x1 conv out."""
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        return self.out(h)

    def last_layer(self) -> nn.Module:
        """The 1x1 output conv."""
        return self.out


_FAMILIES = {cls.family: cls for cls in (ConvGenerator, DeConvGenerator, UNetGenerator)}


def build(name: str, in_channels: int = 1, width: float = 1.0,
          identity_init: bool = False) -> Generator:
    """One of NAMES for images with `in_channels` channels (weights freshly initialised).

    width: scales every hidden channel count (1.0 = the paper's generator; a smaller G costs less
    energy at nominal voltage). identity_init: start with t(x) = 0, i.e. G(x) = x.
    """
    if name not in NAMES:
        raise InputError(f"unknown generator {name!r}; use one of {', '.join(NAMES)}")
    g = _FAMILIES[name[:-1]](in_channels, name[-1], width)
    return g.zero_transform() if identity_init else g


def weight_count(model: nn.Module) -> int:
    """Number of conv / transposed-conv / linear weights (what sits in weight memory; no BN, no
    bias)."""
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, kinds))
