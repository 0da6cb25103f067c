"""Parallel and serial kernels give identical bytes; both agree with plain numpy semantics."""
import numpy as np
import pytest

from sramsim.inject import image_kernels as kernels
from sramsim.memory import kernels as memory_kernels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, 300_001).astype(np.uint8)
    masks = [rng.integers(0, 256, 4099).astype(np.uint8) for _ in range(3)]
    address = np.sort(rng.choice(image.size * 8, 20_000, replace=False)).astype(np.uint64)
    kind = rng.integers(0, 3, address.size).astype(np.uint8)
    return image, masks, address, kind


@pytest.mark.parametrize("offset", [0, 17, 4098])
def test_tiled_kernels_parallel_equals_serial_equals_numpy(data, offset):
    image, (x, c, s), _, _ = data
    idx = (np.arange(image.size) + offset) % x.size
    expected_xor = image ^ x[idx]
    expected_all = ((image ^ x[idx]) & ~c[idx]) | s[idx]
    for kernel in (kernels.apply_xor_tiled, kernels.apply_xor_tiled_serial):
        out = np.empty_like(image)
        kernel(image, out, x, offset)
        assert np.array_equal(out, expected_xor)
    for kernel in (kernels.apply_masks_tiled, kernels.apply_masks_tiled_serial):
        out = np.empty_like(image)
        kernel(image, out, x, c, s, offset)
        assert np.array_equal(out, expected_all)


def test_sparse_kernels_parallel_equals_serial_equals_numpy(data):
    image, _, address, kind = data
    byte, bit = (address >> np.uint64(3)).astype(np.int64), (address & np.uint64(7)).astype(np.uint8)
    expected = image.copy()
    one = (np.uint8(1) << bit).astype(np.uint8)
    np.bitwise_xor.at(expected, byte[kind == 0], one[kind == 0])
    np.bitwise_and.at(expected, byte[kind == 1], ~one[kind == 1])
    np.bitwise_or.at(expected, byte[kind == 2], one[kind == 2])
    for kernel in (kernels.apply_sparse_inplace, kernels.apply_sparse_inplace_serial):
        out = image.copy()
        kernel(out, address, kind)
        assert np.array_equal(out, expected)
    flips = image.copy()
    np.bitwise_xor.at(flips, byte, one)
    for kernel in (kernels.apply_sparse_flips_inplace, kernels.apply_sparse_flips_inplace_serial):
        out = image.copy()
        kernel(out, address)
        assert np.array_equal(out, flips)


def test_byte_aligned_chunks_never_split_a_byte():
    address = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17], np.uint64)
    starts = kernels._byte_aligned_starts(address, 5)
    assert starts[0] == 0 and starts[-1] == address.size and np.all(np.diff(starts) >= 0)
    for s in starts[1:-1]:
        if 0 < s < address.size:
            assert address[s] >> np.uint64(3) != address[s - 1] >> np.uint64(3)


def test_build_byte_masks_exact():
    xor, clear, set_ = (np.zeros(3, np.uint8) for _ in range(3))
    memory_kernels.build_byte_masks(np.array([0, 9, 23, 10], np.uint64), np.array([0, 1, 2, 0], np.uint8),
                             xor, clear, set_)
    assert xor.tolist() == [0x01, 0x04, 0x00]
    assert clear.tolist() == [0x00, 0x02, 0x00]
    assert set_.tolist() == [0x00, 0x00, 0x80]


def test_repeated_or_out_of_range_fault_addresses_are_refused_on_both_paths():
    import torch
    from sramsim import Faults
    from sramsim.inject.mapping import apply_faults
    from sramsim.inject.torch_backend import TorchApplier
    image = np.arange(4, dtype=np.uint8)
    twice = Faults(np.array([9, 3, 9], np.uint64), np.zeros(3, np.uint8))   # XOR would cancel
    with pytest.raises(ValueError, match="repeat"):
        apply_faults(image, twice)
    applier = TorchApplier(torch.from_numpy(image.copy()))
    with pytest.raises(ValueError, match="distinct"):                       # index_add_ would carry
        applier(Faults(np.array([9, 9], np.uint64), np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match="beyond"):
        applier(Faults(np.array([1, 32], np.uint64), np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match="beyond"):
        apply_faults(image, Faults(np.array([32], np.uint64), np.zeros(1, np.uint8)))
    ok = Faults(np.array([9, 3], np.uint64), np.array([0, 2], np.uint8))   # unsorted is fine here
    assert apply_faults(image, ok).tolist() == [0 | 0x08, 1 ^ 0x02, 2, 3]


@pytest.mark.parametrize("offset", [1.5, "3"])
def test_chip_draw_offsets_must_be_integers_on_both_paths(offset):
    import torch
    from sramsim import Chip, Geometry
    from sramsim.inject.draws import ChipDraw, apply_numpy
    from sramsim.inject.torch_backend import TorchApplier
    chip = Chip(Geometry(1, 32), np.array([3], np.uint64), np.array([0.9], np.float32),
                np.zeros(1, np.uint8), v_floor=0.8)
    image = np.zeros(8, np.uint8)
    draw = ChipDraw(chip, 0.85, offset)
    with pytest.raises(TypeError, match="offset"):
        apply_numpy(image, draw, np.empty_like(image))
    with pytest.raises(TypeError, match="offset"):
        TorchApplier(torch.from_numpy(image.copy()))(draw)
