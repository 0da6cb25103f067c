"""SCALE-Sim weight-read counts: layer tables, the closed form, the scalesim package and the CLI."""
import json

import pytest
import torch
from torch import nn

from sramsim.analysis import energy as E
from sramsim.analysis import systolic as S
from sramsim.commands.main import main
from sramsim.errors import InputError


class Mixed(nn.Module):
    """Every kind of layer the table knows: padded, strided, 1x1, transposed, linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 40, 3, padding=1)             # 40 filters: two column folds
        self.b = nn.Conv2d(40, 8, 3, stride=2, padding=1)
        self.c = nn.Conv2d(8, 8, 1, stride=2)
        self.up = nn.ConvTranspose2d(8, 5, 4, stride=2, padding=1)
        self.fc = nn.Linear(5 * 6 * 6, 7)

    def forward(self, x):
        x = self.up(self.c(self.b(self.a(x))))
        return self.fc(x.flatten(1))


def test_topology_rows_are_scalesims_conventions():
    layers = S.topology(Mixed(), (2, 11, 11))
    rows = [(l.name, l.ifmap_h, l.ifmap_w, l.filter_h, l.channels, l.filters, l.stride) for l in layers]
    assert rows == [("a", 13, 13, 3, 2, 40, 1),
                    ("b", 13, 13, 3, 40, 8, 2),
                    ("c", 6, 6, 1, 8, 8, 2),
                    ("up", 9, 9, 4, 8, 5, 1),          # 3x3 input: 2 zeros inserted, 2 around
                    ("fc", 1, 1, 1, 180, 7, 1)]
    # SCALE-Sim's output size is ceil((H - F + S) / S): for c torch gives 3x3, SCALE-Sim 4x4
    # (and 17x17 for ResNet18's strided 34x34 layers, torch 16x16); its counts keep that.
    assert [l.ofmap_pixels for l in layers] == [121, 36, 16, 36, 1]
    assert S.ConvLayer("x", 34, 34, 3, 3, 64, 128, 2).ofmap_pixels == 17 * 17


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's speed note
@pytest.mark.parametrize("kernel", [3, 4])
def test_same_padding_keeps_the_output_size(kernel):
    """padding='same' pads kernel - 1 in all (split unevenly for even kernels)."""
    (layer,) = S.topology(nn.Conv2d(1, 2, kernel, padding="same"), (1, 8, 8))
    assert (layer.ifmap_h, layer.ifmap_w) == (7 + kernel, 7 + kernel)
    assert layer.ofmap_pixels == 64                     # what torch outputs: 8x8


def test_closed_form_counts_words_per_output_tile():
    layers = S.topology(Mixed(), (2, 11, 11))
    reads = S.filter_sram_reads(layers)
    assert reads == [9 * 2 * 40 * 4,        # 121 pixels -> 4 tiles of 32
                     9 * 40 * 8 * 2, 8 * 8 * 1, 16 * 8 * 5 * 2, 180 * 7]
    assert S.accesses(64) == 8 and S.accesses(65) == 9 and S.accesses(64, weight_bits=4) == 4


@pytest.mark.parametrize("name", ["ResNet18", "VGG19", "ConvL", "ConvS"])
def test_neuralfuse_published_counts_reproduced_exactly(name):
    from fusion.generators import build as build_generator
    from sramsim.nn.models import build as build_model
    model = (build_model(name.lower(), 3, 10) if name in ("ResNet18", "VGG19")
             else build_generator(name, 3))
    assert S.count_accesses(model, (3, 32, 32), "systolic") == E.PUBLISHED_ACCESSES[name]


def test_unetl_is_not_reproduced_and_its_gap_is_stated():
    """4 of 5: the closed form gives UNetL 173,952 reads, 6,942 (3.8%) fewer than published."""
    from fusion.generators import build as build_generator
    ours = S.count_accesses(build_generator("UNetL", 3), (3, 32, 32), "systolic")
    assert ours == 173_952
    assert E.PUBLISHED_ACCESSES["UNetL"] - ours == 6_942
    assert round(100 * (1 - ours / E.PUBLISHED_ACCESSES["UNetL"]), 1) == 3.8


def test_scalesim_package_agrees_with_closed_form_layer_by_layer():
    layers = S.topology(Mixed(), (2, 11, 11))
    ran = S.run_scalesim(layers)
    assert [r["layer"] for r in ran] == [l.name for l in layers]
    assert [r["sram_filter_reads"] for r in ran] == S.filter_sram_reads(layers)
    # Everything fits the 256 KB weight SRAM: each weight comes from DRAM once.
    assert [r["dram_filter_reads"] for r in ran] == [l.weights for l in layers]


def test_bad_models_and_shapes_are_input_errors():
    with pytest.raises(InputError, match=r"\[C, H, W\]"):
        S.topology(Mixed(), (2, 11))
    with pytest.raises(InputError, match="does not run on input shape"):
        S.topology(Mixed(), (3, 11, 11))
    with pytest.raises(InputError, match="dilation"):
        S.topology(nn.Conv2d(1, 1, 3, dilation=2), (1, 8, 8))
    with pytest.raises(InputError, match="no conv/linear"):
        S.topology(nn.ReLU(), (1, 4, 4))
    with pytest.raises(InputError, match="unknown access-count method"):
        S.count_accesses(Mixed(), (2, 11, 11), "magic")


def _energy(capsys, *argv):
    code = main(["energy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_systolic_count_of_published_pair(capsys):
    code, out, _ = _energy(capsys, "--accesses", "2755968", "--addon", "ConvS", "--input-shape",
                           "3,32,32", "--count", "systolic", "--voltage", "0.833", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["addon_accesses"] == 41_508 and r["count"] == "systolic"
    assert r["saving"] == pytest.approx(1 - 0.833 ** 2 - 41_508 / 2_755_968)


def test_cli_scalesim_run_matches_closed_form(cnn_checkpoint, capsys):
    ckpt, model = cnn_checkpoint
    results = {}
    for method in ("systolic", "scalesim"):
        code, out, _ = _energy(capsys, "--model", str(ckpt), "--count", method, "--voltage", "0.9",
                               "--json")
        assert code == 0
        results[method] = json.loads(out)["base_accesses"]
    assert results["systolic"] == results["scalesim"] == S.count_accesses(model, (1, 28, 28), "systolic")


@pytest.mark.parametrize("shape", ["3,32", "3,0,32", "a,b,c"])
def test_cli_bad_input_shape_is_one_line_exit_2(capsys, shape):
    code, out, err = _energy(capsys, "--accesses", "100", "--addon", "ConvS", "--input-shape", shape,
                             "--voltage", "0.9")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--input-shape must be C,H,W" in err


def test_cli_checkpoint_without_image_size_asks_for_input_shape(tmp_path, capsys):
    from sramsim.nn import models
    ckpt = tmp_path / "old.pt"
    models.save_checkpoint(ckpt, models.build("cnn", 1, 10),
                           {"arch": "cnn", "in_channels": 1, "num_classes": 10, "norm": "batch"})
    code, out, err = _energy(capsys, "--model", str(ckpt), "--count", "systolic", "--voltage", "0.9")
    assert code == 2 and err.count("\n") == 1 and "--input-shape" in err and "old.pt" in err
    code, out, _ = _energy(capsys, "--model", str(ckpt), "--count", "systolic", "--input-shape",
                           "1,28,28", "--voltage", "0.9", "--json")
    assert code == 0 and json.loads(out)["base_accesses"] == 30_164
