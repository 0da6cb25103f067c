"""DRAM organisation: sizes of the default part, the address function pair both ways (exact small
cases and a property test against a plain loop), partitions, bundled part files."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sramsim.errors import InputError
from sramsim.memory.dram import DramGeometry, load_part, part_names

SMALL = DramGeometry(channels=2, ranks=2, banks=2, rows=4, columns=3, device_width=8,
                     subarray_rows=2, burst_length=2)


def test_default_part_is_lpddr3_4gb_x32():
    g = DramGeometry()
    assert (g.banks, g.rows, g.columns, g.device_width, g.burst_length) == (8, 16384, 1024, 32, 8)
    assert g.capacity_bits == 4 * 2 ** 30           # 4 Gb
    assert g.row_bytes == 4096 and g.subarrays_per_bank == 32 and g.burst_bits == 256
    assert DramGeometry.from_part() == g
    assert g.technology == "dram"


def test_decompose_exact_small_cases():
    g = SMALL
    # bit 5 of column 2 of row 3 in bank 1 of rank 0 of channel 1
    a = ((((1 * 2 + 0) * 2 + 1) * 4 + 3) * 3 + 2) * 8 + 5
    d = g.decompose([a, 0, g.capacity_bits - 1])
    assert [int(d[k][0]) for k in ("channel", "rank", "bank", "subarray", "row", "column", "bit")] \
        == [1, 0, 1, 1, 3, 2, 5]
    assert all(int(d[k][1]) == 0 for k in d)
    last = {k: int(d[k][2]) for k in d}
    assert last == {"channel": 1, "rank": 1, "bank": 1, "subarray": 1, "row": 3, "column": 2,
                    "bit": 7}
    assert int(g.compose(channel=1, rank=0, bank=1, row=3, column=2, bit=5)) == a


def test_row_is_contiguous_and_split_agrees_with_sram_rule():
    g = SMALL
    row = g.compose(channel=0, rank=1, bank=0, row=2, column=np.repeat(np.arange(3), 8),
                    bit=np.tile(np.arange(8), 3))
    assert np.array_equal(row, row[0] + np.arange(g.cols, dtype=np.uint64))
    bank, r, col = g.split(row)
    assert set(bank.tolist()) == {2} and set(r.tolist()) == {2}     # flat bank (0*2+1)*2+0
    assert np.array_equal(((bank * np.uint64(g.rows)) + r) * np.uint64(g.cols) + col, row)


def naive_decompose(g, a):
    """Plain loop over every location until the address matches (the reference)."""
    i = 0
    for ch in range(g.channels):
        for rk in range(g.ranks):
            for bk in range(g.banks):
                for row in range(g.rows):
                    for col in range(g.columns):
                        for bit in range(g.device_width):
                            if i == a:
                                return dict(channel=ch, rank=rk, bank=bk,
                                            subarray=row // g.subarray_rows, row=row,
                                            column=col, bit=bit)
                            i += 1
    raise AssertionError


@settings(max_examples=60, deadline=None)
@given(st.integers(0, SMALL.capacity_bits - 1))
def test_decompose_matches_plain_loop_and_compose_inverts(a):
    d = SMALL.decompose([a])
    got = {k: int(v[0]) for k, v in d.items()}
    assert got == naive_decompose(SMALL, a)
    assert int(SMALL.compose(**{k: v for k, v in got.items() if k != "subarray"})) == a


def test_partitions():
    g = SMALL
    a = np.arange(g.capacity_bits, dtype=np.uint64)
    bank = g.partition_index(a, "bank")
    sub = g.partition_index(a, "subarray")
    assert np.bincount(bank.astype(np.int64)).tolist() == [g.rows * g.cols] * g.n_partitions("bank")
    assert np.bincount(sub.astype(np.int64)).tolist() == \
        [g.subarray_rows * g.cols] * g.n_partitions("subarray")
    with pytest.raises(InputError, match="partition"):
        g.partition_index(a, "rank")


@pytest.mark.parametrize("kw, match", [
    ({"banks": 0}, "banks must be a positive integer"),
    ({"rows": 1.5}, "rows must be a positive integer"),
    ({"ranks": True}, "ranks must be a positive integer"),
    ({"rows": 100, "subarray_rows": 64}, "multiple of subarray_rows"),
    ({"word_bits": 12}, "word_bits"),
])
def test_bad_geometry(kw, match):
    with pytest.raises(InputError, match=match):
        DramGeometry(**kw)


def test_out_of_range_addresses_and_locations():
    with pytest.raises(InputError, match="beyond the part's capacity"):
        SMALL.decompose([SMALL.capacity_bits])
    with pytest.raises(InputError, match="column must lie in"):
        SMALL.compose(column=3)


def test_parts(tmp_path):
    assert "MICRON_4Gb_LPDDR3-1600_32bit_A" in part_names()
    spec = load_part("MICRON_4Gb_LPDDR3-1600_32bit_A")
    assert spec["power"]["idd0"] == [15.0, 80.0] and spec["timing"]["RC"] == 48
    with pytest.raises(InputError, match="unknown DRAM part 'nope'"):
        load_part("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="not a readable DRAM part file"):
        load_part(str(bad))
