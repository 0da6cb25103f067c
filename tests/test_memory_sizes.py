"""Sizes that cannot fit are refused up front, naming the size: library calls and the CLI
(`sramsim sweep` here; `sramsim profile synth` in test_cli_profile.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sramsim import BerCurve, Chip, Geometry, RandomBitErrors
from sramsim.commands.main import main
from sramsim.errors import InputError
from sramsim.memory import sizes
from sramsim.memory.sampling import bernoulli_positions

FINFET = BerCurve.builtin("finfet14")
GIB = 2 ** 30


def huge_profile_chip() -> Chip:
    """A valid profile of 10^12 rows x 128 bits (16 TB of dense masks) with three faults."""
    return Chip(Geometry(10 ** 12, 128), [5, 10 ** 13, 7], np.float32([0.9, 0.8, 0.8]),
                [0, 1, 0], 0.75, name="huge")


def test_physical_memory_and_format():
    total = sizes.physical_memory_bytes()
    assert 2 ** 26 < total < 2 ** 50
    assert sizes.format_bytes(196 * GIB + 1) == "196 GiB"
    assert sizes.format_bytes(1.5 * GIB) == "1.5 GiB" and sizes.format_bytes(12) == "12 B"
    with pytest.raises(InputError, match=r"^thing needs ~[0-9.]+ [GT]iB, more than this "
                                         r"machine's [0-9.]+ [GMT]iB of memory$"):
        sizes.require_memory(2 * total, "thing")
    with pytest.warns(sizes.MemoryNote, match=r"^thing needs ~[0-9.]+ [GMT]iB of memory \(of this "
                                              r"machine's [0-9.]+ [GMT]iB\)$"):
        sizes.require_memory(total // 2, "thing")   # fits: no error, but says its size first


def test_small_allocations_say_nothing():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sizes.require_memory(sizes.LARGE_BYTES, "thing")      # at the threshold: silent


def test_random_chip_of_a_billion_rows_is_refused_before_drawing(monkeypatch):
    drawn = []
    monkeypatch.setattr("sramsim.memory.chip.bernoulli_positions",
                        lambda *a: drawn.append(a) or np.empty(0, np.uint64))
    with pytest.raises(InputError, match=r"128000000000 bits .* needs ~[0-9.]+ TiB, more than"):
        Chip.random(Geometry(10 ** 9, 128), FINFET, 0.75, seed=0)
    assert drawn == []


def test_limit_is_the_machines_memory(monkeypatch):
    """The same chip fits or not depending only on the machine's memory (8 MiB bits at 20%)."""
    geo = Geometry(8192, 1024)
    monkeypatch.setattr(sizes, "physical_memory_bytes", lambda: 64 * 2 ** 20)
    with pytest.raises(InputError, match="more than this machine's 64 MiB of memory"):
        Chip.random(geo, FINFET, 0.75, seed=0)
    monkeypatch.setattr(sizes, "physical_memory_bytes", lambda: 4 * GIB)
    assert len(Chip.random(geo, FINFET, 0.75, seed=0)) > 1_000_000


def test_random_bit_errors_and_positions_refuse_huge_draws():
    with pytest.raises(InputError, match=r"10000000000000 bits at BER 0.5 needs ~[0-9.]+ TiB"):
        RandomBitErrors(0.5, seed=1).draw(10 ** 13)
    with pytest.raises(InputError, match="needs ~"):
        bernoulli_positions(np.random.default_rng(0), 10 ** 13, 1.0)
    assert len(RandomBitErrors(0.5, seed=1).draw(1000)) > 0


def test_dense_masks_of_a_huge_profile_are_refused(tmp_path):
    chip = huge_profile_chip()
    path = tmp_path / "huge.h5"
    chip.save(path)                       # the file itself is valid and small
    loaded = Chip.load(path)
    assert loaded == chip and loaded.count(0.8) == 3
    with pytest.raises(InputError, match=r"byte masks of chip 'huge' \(128000000000000 bits\) "
                                         r"needs ~[0-9.]+ TiB"):
        loaded.byte_masks(0.8)
    from sramsim.inject.mapping import apply_faults
    with pytest.raises(InputError, match="needs ~"):
        apply_faults(np.zeros(16, np.uint8), loaded, 0.8)


# --- CLI: one line, exit 2 --------------------------------------------------------------------
def one_line_error(capsys, argv) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def sweep_world(tmp_path_factory):
    """An 8-image IDX test set, an untrained CNN checkpoint and the 10^12-row profile."""
    from sramsim.nn.models import build, save_checkpoint
    root = tmp_path_factory.mktemp("sizes")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (8, 28, 28)), rng.integers(0, 10, 8)
    with open(data / "t10k-images-idx3-ubyte", "wb") as f:
        f.write(b"".join(d.to_bytes(4, "big") for d in (0x0803, 8, 28, 28)))
        f.write(images.astype(np.uint8).tobytes())
    with open(data / "t10k-labels-idx1-ubyte", "wb") as f:
        f.write((0x0801).to_bytes(4, "big") + (8).to_bytes(4, "big"))
        f.write(labels.astype(np.uint8).tobytes())
    torch.manual_seed(0)
    save_checkpoint(root / "cnn.pt", build("cnn").eval(),
                    {"arch": "cnn", "in_channels": 1, "num_classes": 10, "norm": "batch",
                     "bits": 8, "scheme": "symmetric", "clip": None, "dataset": str(data)})
    huge_profile_chip().save(root / "huge.h5")
    return root


@pytest.mark.parametrize("source, needle", [
    (["--chips", "1", "--rows", "1000000000", "--cols", "2048"], "2048000000000 bits"),
])
def test_cli_sweep_with_sizes_that_cannot_fit(capsys, sweep_world, source, needle):
    err = one_line_error(capsys, ["sweep", "--model", str(sweep_world / "cnn.pt"),
                                  "--data", str(sweep_world / "data"), *source,
                                  "--voltages", "1.0,0.9", "--no-progress",
                                  "--out", str(sweep_world / f"out{len(source)}")])
    assert needle in err and "needs ~" in err and "of memory" in err


def test_cli_sweep_with_a_huge_sparse_profile_runs(capsys, sweep_world):
    """The sweep writes a point's faults in place from the chip's sorted faulty bytes (O(faults),
    `QuantizedModel.faults_applied`): a 10^14-bit profile with 3 faults needs no dense masks."""
    code = main(["sweep", "--model", str(sweep_world / "cnn.pt"), "--data",
                 str(sweep_world / "data"), "--profiles", str(sweep_world / "huge.h5"),
                 "--voltages", "1.0,0.9", "--no-progress", "--out", str(sweep_world / "out-huge")])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
