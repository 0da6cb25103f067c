"""resnet20 (He et al. 2016's CIFAR ResNet): structure, parameter count, shapes, quantization."""
import numpy as np
import torch
from torch import nn

from sramsim import Chip, Geometry, BerCurve, QuantizedModel
from sramsim.inject.quantized_model import quantized_parameter_names
from sramsim.nn.models import build

# conv/linear weights of resnet20 on C input channels, 10 classes: stem C*16*9; stage 1: six
# 16->16 3x3 convs; stage 2: 16->32 3x3, five 32->32 3x3, 1x1 shortcut 16*32; stage 3 likewise
# 32->64 and 64->64 with shortcut 32*64; linear 64*10.
def stored_weights(c: int) -> int:
    return (c * 16 * 9 + 6 * 16 * 16 * 9 + 16 * 32 * 9 + 5 * 32 * 32 * 9 + 16 * 32
            + 32 * 64 * 9 + 5 * 64 * 64 * 9 + 32 * 64 + 64 * 10)


def test_structure_and_parameter_count():
    model = build("resnet20", 3, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 19     # 1 stem + 18 in 9 blocks
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2      # two down-sampling shortcuts
    assert [m.out_channels for m in convs if m.kernel_size == (3, 3)][-1] == 64
    # bias of the linear layer, weight and bias of 21 BatchNorms (16*7 + 32*7 + 64*7 channels)
    extra = 10 + 2 * (16 * 7 + 32 * 7 + 64 * 7)
    assert sum(p.numel() for p in model.parameters()) == stored_weights(3) + extra
    assert stored_weights(3) == 270_896       # He et al.: "0.27M" for resnet20


def test_forward_shapes_28_and_32():
    torch.manual_seed(0)
    for c, size in ((1, 28), (3, 32)):
        model = build("resnet20", c, 7).eval()
        with torch.no_grad():
            out = model(torch.randn(3, c, size, size))
        assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_quantizes_into_one_image_and_reads_back_faults():
    torch.manual_seed(0)
    model = build("resnet20", 1, 10).eval()
    names = quantized_parameter_names(model)
    assert len(names) == 22                 # 21 convs + the linear layer
    qm = QuantizedModel(model, bits=8, scheme="symmetric")
    assert qm.image.dtype.name == "uint8" and qm.image.size == stored_weights(1)
    clean = qm.clean_weights()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        got = torch.func.functional_call(model, clean, (x,))
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()    # 8-bit weights: close to float
    # the image (~265 KiB) is larger than a 128 KiB chip: mapped word k -> (k + offset) mod capacity
    chip = Chip.random(Geometry(256, 128), BerCurve.builtin("finfet14"), 0.75, seed=3)
    faulty = qm.faulty_image(chip, voltage=0.8)
    flips = int(np.unpackbits(faulty ^ qm.image).sum())
    n_bits, capacity = qm.image.size * 8, 256 * 128
    address = chip.faults(0.8).address.astype(np.int64)      # flips only: each tile pays each
    assert address.size > 0
    assert flips == int(((n_bits - 1 - address) // capacity + 1).sum())
