"""EDEN DRAM error models: BER over the chip follows the curve (times the multipliers), each model's
correlation structure, nesting over voltage, determinism (seed; thread counts 1, 2, 3 in
test_determinism.py), bad input."""

import numpy as np
import pytest
from scipy.stats import chi2

from sramsim import BerCurve
from sramsim.errors import InputError
from sramsim.memory.dram import DramGeometry
from sramsim.memory.dram_curves import (DEFAULT_DRAM_CURVE, dram_curve, dram_curve_description,
                                        dram_curve_names, dram_nominal_voltage)
from sramsim.memory.dram_errors import (MODEL_NAMES, data_dependent_kinds, dram_chip,
                                        line_factors, line_index)
from sramsim.memory.geometry import FLIP, STUCK0, STUCK1

SMALL = DramGeometry(banks=2, rows=256, columns=64, device_width=8, subarray_rows=64)
CURVE = dram_curve()
V_FLOOR = 0.87                      # BER 8.1e-2 on the default curve
VOLTAGES = (0.95, 0.90, 0.88)       # BER 1.3e-3, 2.3e-2, 5.5e-2
Z = 4.0                             # two-sided normal bound: P(false failure) ~ 6e-5 per check
CASES = [(0, {}), (0, {"partition": "subarray", "spread": 1.0}), (1, {}),
         (1, {"partition": "bank"}), (2, {}), (3, {}), (3, {"group_rows": 5})]


def cells_per_line(g, model, params):
    """Cells of one line of `model` (partition, bitline, wordline, whole chip)."""
    if model == 0:
        return g.capacity_bits // g.n_partitions(params.get("partition", "bank"))
    if model == 1:
        return g.rows if params.get("partition", "subarray") == "bank" else g.subarray_rows
    if model == 2:
        return g.cols
    return g.capacity_bits


def per_line_expectation(g, seed, model, params, v):
    """(n cells, p = min(1, ber(v) x factor)) of every line of the chip drawn with `seed`."""
    f = line_factors(g, seed, model, **params)
    return cells_per_line(g, model, params), np.minimum(1.0, CURVE.ber(v) * f)


@pytest.mark.parametrize("model, params", CASES)
def test_empirical_ber_matches_the_curve_times_the_multipliers(model, params):
    seed = 11
    chip = dram_chip(SMALL, CURVE, V_FLOOR, seed, error_model=model, **params)
    f = line_factors(SMALL, seed, model, **params)
    n = cells_per_line(SMALL, model, params)
    assert f.size * n == SMALL.capacity_bits
    assert f.mean() == pytest.approx(1.0, rel=1e-12)     # chip-wide BER = the curve's (uncapped)
    for v in VOLTAGES:
        p = np.minimum(1.0, CURVE.ber(v) * f)
        expected, var = (n * p).sum(), (n * p * (1 - p)).sum()
        assert abs(chip.count(v) - expected) <= Z * np.sqrt(var), (v, chip.count(v), expected)
        if p.max() < 1:
            assert expected == pytest.approx(SMALL.capacity_bits * CURVE.ber(v), rel=1e-9)


@pytest.mark.parametrize("model, params", CASES)
def test_faults_fall_on_their_lines_as_the_multipliers_say(model, params):
    """Per-line counts vs. binomial(n, min(1, ber x f)): a chi-square over the lines (checks the
    draw's index -> address mapping against `line_index`)."""
    seed = 4
    chip = dram_chip(SMALL, CURVE, V_FLOOR, seed, error_model=model, **params)
    v = 0.90
    n, p = per_line_expectation(SMALL, seed, model, params, v)
    counts = np.bincount(line_index(SMALL, chip.faults(v).address, model, **params).astype(np.intp),
                         minlength=p.size)
    assert counts.size == p.size
    full = p == 1
    assert np.all(counts[full] == n)                       # capped lines: every cell faulty
    var = n * p[~full] * (1 - p[~full])
    stat = (((counts[~full] - n * p[~full]) ** 2) / var).sum()
    k = int((~full).sum())
    assert chi2.ppf(1e-4, k) <= stat <= chi2.ppf(1 - 1e-4, k), (stat, k)


def dispersion(counts, cells):
    """Binomial dispersion statistic of line counts under equal rates (~ chi2(len - 1))."""
    mean = counts.mean()
    return ((counts - mean) ** 2).sum() / (mean * (1 - mean / cells))


def line_counts(chip, v, by):
    """Faults at v per bitline (same bit of the row across the rows of a subarray) or per row."""
    a = chip.faults(v).address
    g = chip.geometry
    if by == "bitline":
        lines = g.partition_index(a, by="subarray") * np.uint64(g.cols) + a % np.uint64(g.cols)
        return np.bincount(lines.astype(np.intp), minlength=g.n_partitions("subarray") * g.cols), \
            g.subarray_rows
    return np.bincount((a // np.uint64(g.cols)).astype(np.intp), minlength=g.total_banks * g.rows), \
        g.cols


def test_bitline_and_wordline_models_concentrate_errors_on_their_lines():
    v = 0.90
    uniform = dram_chip(SMALL, CURVE, V_FLOOR, 2, error_model=0, spread=0.0)
    bitline = dram_chip(SMALL, CURVE, V_FLOOR, 2, error_model=1)
    wordline = dram_chip(SMALL, CURVE, V_FLOOR, 2, error_model=2)
    for by in ("bitline", "row"):
        counts, cells = line_counts(uniform, v, by)
        lo, hi = chi2.ppf([1e-4, 1 - 1e-4], counts.size - 1)
        assert lo <= dispersion(counts, cells) <= hi           # model 0: no line structure
    # Model 1 over-disperses bitlines (index = statistic / dof far above 1) but not rows; model 2
    # the reverse.
    counts, cells = line_counts(bitline, v, "bitline")
    assert dispersion(counts, cells) / (counts.size - 1) > 5
    counts, cells = line_counts(bitline, v, "row")
    assert dispersion(counts, cells) <= chi2.ppf(1 - 1e-4, counts.size - 1)
    counts, cells = line_counts(wordline, v, "row")
    assert dispersion(counts, cells) / (counts.size - 1) > 5
    counts, cells = line_counts(wordline, v, "bitline")
    assert dispersion(counts, cells) <= chi2.ppf(1 - 1e-4, counts.size - 1)
    # The weak lines are a weak_fraction of all lines and carry weak_factor x the normal rate.
    for model, lines in ((1, SMALL.n_partitions("subarray") * SMALL.cols), (2, SMALL.total_banks * SMALL.rows)):
        f = line_factors(SMALL, 2, model)
        assert f.size == lines and set(np.round(f / f.min(), 9)) == {1.0, 50.0}
        weak = int((f > f.min()).sum())
        assert abs(weak - 0.01 * lines) <= Z * np.sqrt(lines * 0.01 * 0.99)


def test_partition_rates_differ_by_the_spread():
    v = 0.90
    g = DramGeometry(banks=4, rows=256, columns=64, device_width=8, subarray_rows=16)   # 64 subarrays
    size = g.capacity_bits // g.n_partitions("subarray")
    same = dram_chip(g, CURVE, V_FLOOR, 1, error_model=0, partition="subarray", spread=0.0)
    assert np.all(line_factors(g, 1, 0, partition="subarray", spread=0.0) == 1.0)
    counts = np.bincount(g.partition_index(same.faults(v).address, "subarray").astype(np.intp))
    lo, hi = chi2.ppf([1e-4, 1 - 1e-4], counts.size - 1)
    assert lo <= dispersion(counts, size) <= hi
    spread = dram_chip(g, CURVE, V_FLOOR, 1, error_model=0, partition="subarray", spread=0.5)
    counts = np.bincount(g.partition_index(spread.faults(v).address, "subarray").astype(np.intp))
    assert dispersion(counts, size) > 10 * hi
    # The multipliers are log-normal with log-sd = spread (sample of 64: +-4 standard errors).
    many = DramGeometry(banks=8, rows=512, columns=4, device_width=8, subarray_rows=1)  # 4096
    for s in (0.25, 1.0):
        logf = np.log(line_factors(many, 3, 0, partition="subarray", spread=s))
        assert logf.std(ddof=1) == pytest.approx(s, rel=Z / np.sqrt(2 * logf.size))


@pytest.mark.parametrize("group_rows", [None, 5, 256])
def test_data_dependent_kinds_follow_the_row_groups_exactly(group_rows):
    params = {} if group_rows is None else {"group_rows": group_rows}
    chip = dram_chip(SMALL, CURVE, V_FLOOR, 7, error_model=3, **params)
    g = group_rows or SMALL.subarray_rows
    row = SMALL.decompose(chip.address)["row"].astype(np.int64)
    want = np.where((row // g) % 2 == 0, STUCK0, STUCK1)
    assert np.array_equal(chip.kind, want)
    assert np.array_equal(data_dependent_kinds(SMALL, chip.address, g), want)
    assert set(np.unique(chip.kind)) == ({STUCK0} if g == SMALL.rows else {STUCK0, STUCK1})
    assert FLIP not in chip.kind
    # On the image: true-cell groups only lose ones (clear mask), anti-cell groups only gain them.
    masks = chip.byte_masks(0.9)
    assert not masks.xor.any()
    row_of_byte = (np.arange(SMALL.capacity_bytes) * 8 // SMALL.cols) % SMALL.rows
    anti_byte = (row_of_byte // g) % 2 == 1
    assert not masks.clear[anti_byte].any() and not masks.set[~anti_byte].any()
    assert masks.clear[~anti_byte].any()


def test_data_dependent_positions_are_uniform():
    chip = dram_chip(SMALL, CURVE, V_FLOOR, 8, error_model=3)
    for by in ("bitline", "row"):
        counts, cells = line_counts(chip, 0.9, by)
        lo, hi = chi2.ppf([1e-4, 1 - 1e-4], counts.size - 1)
        assert lo <= dispersion(counts, cells) <= hi


@pytest.mark.parametrize("model", sorted(MODEL_NAMES))
def test_nested_over_voltage(model):
    chip = dram_chip(SMALL, CURVE, V_FLOOR, 5, error_model=model, kinds={"flip": 1, "stuck1": 1}) \
        if model < 3 else dram_chip(SMALL, CURVE, V_FLOOR, 5, error_model=model)
    assert np.all(np.diff(chip.vfail.astype(np.float64)) <= 0)
    assert chip.vfail.min() >= np.float32(V_FLOOR) and chip.vfail.max() <= np.float32(1.2)
    assert np.unique(chip.address).size == len(chip)
    assert int(chip.address.max()) < SMALL.capacity_bits
    previous = None
    for v in (1.2, 1.0, 0.95, 0.92, 0.90, 0.88, V_FLOOR):
        now = chip.faults(v)
        if previous is not None:
            assert np.isin(previous.address, now.address).all()
            assert len(now) >= len(previous)
        previous = now
    assert len(chip.faults(V_FLOOR)) == len(chip)


def test_chip_metadata():
    chip = dram_chip(SMALL, v_floor=0.9, seed=3, error_model="bitline", weak_factor=10)
    assert chip.voltage_unit == "V" and chip.nominal_voltage == 1.2
    assert chip.geometry.technology == "dram" and chip.curve.name == DEFAULT_DRAM_CURVE
    assert chip.attrs["error_model"] == 1 and chip.attrs["error_model_name"] == "bitline"
    assert chip.attrs["seed"] == 3 and chip.attrs["curve_name"] == DEFAULT_DRAM_CURVE
    assert '"weak_factor": 10.0' in chip.attrs["error_model_params"]
    user = BerCurve.from_table([0.8, 1.0, 1.35], [0.1, 1e-4, 0.0], name="mine")
    chip = dram_chip(SMALL, user, 0.85, 0, error_model=2, nominal_voltage=1.35)
    assert chip.nominal_voltage == 1.35 and chip.curve is user and len(chip) > 0


def test_bundled_curve():
    assert dram_curve_names() == ["lpddr3-illustrative"]
    assert dram_nominal_voltage() == 1.2 and "illustrative" in dram_curve_description()
    c = dram_curve("lpddr3-illustrative")
    assert c.ber(1.2) < 1e-12 and c.ber(1.1) < 1e-8          # error-free near nominal
    assert 1e-3 < c.ber(0.95) < 2e-3 and c.voltage(c.ber(0.93)) == pytest.approx(0.93)


def test_same_seed_same_map_other_seed_other_map():
    for model in sorted(MODEL_NAMES):
        a, b = (dram_chip(SMALL, CURVE, V_FLOOR, 9, error_model=model) for _ in range(2))
        assert a.same_faults(b) and a.attrs == b.attrs
        assert not a.same_faults(dram_chip(SMALL, CURVE, V_FLOOR, 10, error_model=model))


@pytest.mark.parametrize("kwargs, match", [
    ({"error_model": 7}, "unknown DRAM error model 7"),
    ({"error_model": "bogus"}, "unknown DRAM error model 'bogus'"),
    ({"error_model": True}, "unknown DRAM error model True"),
    ({"error_model": 0, "spread": -0.1}, "spread must be a finite number >= 0"),
    ({"error_model": 0, "spread": float("nan")}, "spread must be a finite number"),
    ({"error_model": 0, "partition": "rank"}, "partition must be 'bank' or 'subarray'"),
    ({"error_model": 1, "weak_fraction": 1.5}, r"weak_fraction must be a finite number in \[0, 1\]"),
    ({"error_model": 2, "weak_factor": 0.5}, "weak_factor must be a finite number >= 1"),
    ({"error_model": 2, "spread": 0.5}, "model 2 .wordline. has no parameter.s. spread"),
    ({"error_model": 3, "group_rows": 0}, r"group_rows must be an integer in \[1, 256\]"),
    ({"error_model": 3, "kinds": {"flip": 1}}, "has no parameter.s. kinds"),
    ({"error_model": 0, "kinds": {"weird": 1}}, "kinds: unknown fault kind"),
    ({"v_floor": 1.3}, "v_floor 1.3 V is above the nominal voltage 1.2 V"),
    ({"v_floor": 0.0}, "v_floor must be a positive voltage"),
    ({"v_floor": None}, "v_floor .* is required"),
    ({"seed": 1.5}, "seed must be a non-negative integer, got 1.5"),
    ({"seed": "3"}, "seed must be a non-negative integer, got '3'"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"curve": "ddr9"}, "unknown DRAM BER curve 'ddr9'; bundled: lpddr3-illustrative"),
    ({"curve": BerCurve.gaussian(0.8, 0.05)}, "nominal_voltage is needed for curve"),
    ({"curve": BerCurve.from_table([0.9, 1.2], [0.1, 0.0]), "nominal_voltage": 1.2,
      "v_floor": 0.85}, "v_floor 0.85 V: voltage below the lowest tabulated voltage"),
    ({"nominal_voltage": -1.0}, "nominal_voltage must be a finite number >= 0"),
    ({"nominal_voltage": 0}, "nominal_voltage must be a positive voltage"),
])
def test_bad_input_is_one_line(kwargs, match):
    args = {"geometry": SMALL, "curve": CURVE, "v_floor": 0.9, "seed": 0, "error_model": 0}
    args.update(kwargs)
    with pytest.raises(InputError, match=match) as err:
        dram_chip(**args)
    assert "\n" not in str(err.value)


def test_wrong_geometry_type_and_too_large_maps_are_refused():
    from sramsim.memory.geometry import Geometry
    with pytest.raises(InputError, match="geometry must be a DramGeometry, got Geometry"):
        dram_chip(Geometry(64, 64), v_floor=0.9)
    huge = DramGeometry(channels=64, ranks=4)                  # 1.1e12 bits
    with pytest.raises(InputError, match=r"DRAM chip map of 1099511627776 bits .* needs ~") as err:
        dram_chip(huge, v_floor=0.5, error_model=1)
    assert "\n" not in str(err.value)


def test_full_default_part_at_ber_1e_3():
    """The default 4 Gb part at BER 1e-3 (~4.3 M faults): count within the binomial interval."""
    g = DramGeometry()
    v = float(CURVE.voltage(1e-3))
    chip = dram_chip(g, CURVE, v, 0, error_model=1)
    f = line_factors(g, 0, 1)
    p = np.minimum(1.0, 1e-3 * f)
    n = g.subarray_rows
    expected, sd = (n * p).sum(), np.sqrt((n * p * (1 - p)).sum())
    assert abs(len(chip) - expected) <= Z * sd
    assert expected == pytest.approx(g.capacity_bits * 1e-3, rel=1e-9)
    assert int(chip.address.max()) < g.capacity_bits
    weak = f[line_index(g, chip.address, 1).astype(np.intp)] > 1
    assert abs(weak.mean() - (p * (f > 1)).sum() / p.sum()) < 0.01   # share of faults on weak lines


def test_model_keyword_is_the_deprecated_name_of_error_model():
    """One name per concept: error_model= (CLI --error-model); model= still works, with a note."""
    with pytest.warns(FutureWarning, match=r"dram_chip\(model=...\) is deprecated: use error_model="):
        old = dram_chip(SMALL, CURVE, V_FLOOR, 4, model=2)
    assert old.same_faults(dram_chip(SMALL, CURVE, V_FLOOR, 4, error_model=2))
    with pytest.warns(FutureWarning):
        assert np.array_equal(line_factors(SMALL, 4, model=1), line_factors(SMALL, 4, 1))
    with pytest.raises(InputError, match="give error_model only"), pytest.warns(FutureWarning):
        dram_chip(SMALL, CURVE, V_FLOOR, 4, error_model=1, model=2)


def test_a_map_over_a_gigabyte_says_its_size_first(monkeypatch):
    """Issue 23: dram_chip(DramGeometry(), v_floor=0.9) peaked at 5.3 GB silently."""
    from sramsim.memory import sizes
    monkeypatch.setattr(sizes, "physical_memory_bytes", lambda: 4 * 2 ** 30)
    with pytest.raises(InputError, match=r"DRAM chip map of 4294967296 bits .* needs ~5\.8 GiB, "
                                         r"more than this machine's 4\.0 GiB"):
        dram_chip(DramGeometry(), v_floor=0.9)                    # refused before drawing
    monkeypatch.setattr(sizes, "LARGE_BYTES", 2 ** 10)
    with pytest.warns(sizes.MemoryNote, match=r"needs ~.* of memory"):
        dram_chip(SMALL, CURVE, V_FLOOR, 0)
