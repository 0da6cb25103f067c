"""HDF5 chip profiles: bit-identical round trips, one-line errors for every kind of bad file,
and exact measured-bitmap imports (directions, non-nested observations)."""
from __future__ import annotations

import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sramsim import BerCurve, Chip, Geometry, VoltageError
from sramsim.errors import InputError, ProfileError
from sramsim.commands.main import main
from sramsim.memory.profiles import (decimal_voltage, import_bitmaps, load_bitmap_dir, load_chip,
                              save_chip, summary, validate)

ROOT = Path(__file__).resolve().parents[1]
FLIP, STUCK0, STUCK1 = 0, 1, 2


def small_chip(seed: int = 3, kinds=None) -> Chip:
    kinds = kinds or {"flip": 1.0, "stuck0": 0.5, "stuck1": 0.5}
    return Chip.random(Geometry(64, 32, banks=2), BerCurve.builtin("finfet14"), 0.78, seed,
                       kinds=kinds)


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.h5"
    small_chip().save(path)
    return path


def assert_same_chip(a: Chip, b: Chip) -> None:
    assert a.same_faults(b)
    assert (a.name, a.source, a.voltage_unit, a.nominal_voltage, a.v_floor) == \
           (b.name, b.source, b.voltage_unit, b.nominal_voltage, b.v_floor)
    assert a.geometry == b.geometry and a.attrs == b.attrs
    assert (a.address.dtype, a.vfail.dtype, a.kind.dtype) == (b.address.dtype, b.vfail.dtype,
                                                              b.kind.dtype)


# --- round trips ---------------------------------------------------------------------------------
def test_round_trip_is_bit_identical(good):
    chip = small_chip()
    loaded = Chip.load(good)
    assert len(chip) > 100 and set(np.unique(chip.kind)) == {FLIP, STUCK0, STUCK1}
    assert_same_chip(chip, loaded)
    assert loaded.attrs == {"seed": 3}
    assert loaded.curve.name == "finfet14"
    for got, want in zip(loaded.curve.table(), chip.curve.table()):
        np.testing.assert_array_equal(got, want)
    assert loaded.faults(0.8).address.tobytes() == chip.faults(0.8).address.tobytes()
    assert validate(good) == []


def test_file_layout_and_compression(good):
    with h5py.File(good, "r") as f:
        assert f.attrs["format"] == "sramsim.chip" and f.attrs["version"] == 1
        assert f.attrs["source"] == "synthetic" and f.attrs["technology"] == "sram"
        assert dict(f["geometry"].attrs) == {"rows": 64, "cols": 32, "banks": 2, "word_bits": 8}
        for key, dtype in (("address", np.uint64), ("vfail", np.float32), ("kind", np.uint8)):
            ds = f["faults"][key]
            assert ds.dtype == dtype and ds.compression == "gzip" and ds.shuffle
        assert "measured" not in f and f["ber_curve/voltage"].shape == (7,)


def test_gaussian_curve_and_empty_chip_round_trip(tmp_path):
    curve = BerCurve.gaussian(0.706, 0.055)
    chip = Chip.random(Geometry(16, 16), curve, 0.99, seed=1)   # BER(0.99) ~ 1e-7: no faults
    assert len(chip) == 0
    save_chip(chip, tmp_path / "g.h5")
    loaded = load_chip(tmp_path / "g.h5")
    assert_same_chip(chip, loaded)
    assert (loaded.curve.mu, loaded.curve.sigma) == (0.706, 0.055)
    assert loaded.ber(0.99) == 0.0


def test_extra_attrs_and_technology_round_trip(tmp_path):
    chip = small_chip()
    chip.attrs.update(lot="A7", temperature_c=85.5, retest=True)
    chip.geometry = Geometry(64, 32, banks=2, technology="dram")
    chip.save(tmp_path / "x.h5")
    loaded = Chip.load(tmp_path / "x.h5")
    assert loaded.attrs == {"seed": 3, "lot": "A7", "temperature_c": 85.5, "retest": True}
    assert loaded.geometry.technology == "dram"


def test_save_refuses_an_invalid_chip_and_leaves_nothing(tmp_path):
    chip = small_chip()
    chip.address[1] = chip.address[0]
    with pytest.raises(ProfileError, match="duplicate"):
        chip.save(tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="overwrite schema"):
        Chip(Geometry(8, 8), [], [], [], 0.8, attrs={"v_floor": 1}).save(tmp_path / "c.h5")


# --- bad files: one line naming the file and the problem -----------------------------------------
def rewrite(path: Path, key: str, data) -> None:
    with h5py.File(path, "r+") as f:
        del f[key]
        f[key] = data


def corrupt_faults(path: Path, **changes) -> None:
    with h5py.File(path, "r+") as f:
        arrays = {k: f["faults"][k][()] for k in ("address", "vfail", "kind")}
    for key, fn in changes.items():
        arrays[key] = fn(arrays[key])
    for key, data in arrays.items():
        rewrite(path, f"faults/{key}", data)


def set_attr(path: Path, key: str, value, where: str = "/") -> None:
    with h5py.File(path, "r+") as f:
        if value is None:
            del f[where].attrs[key]
        else:
            f[where].attrs[key] = value


def swap_first_two(a):
    a = a.copy()
    a[[0, 1]] = a[[1, 0]]
    return a


def raise_first(a, index=0):
    a = a.copy()
    a[index] = 10 ** 6
    return a


CORRUPTIONS = {
    "wrong format": (lambda p: set_attr(p, "format", "other.tool"), "format is 'other.tool'"),
    "no format": (lambda p: set_attr(p, "format", None), "not a sramsim chip profile"),
    "newer version": (lambda p: set_attr(p, "version", 2), "unsupported profile version 2"),
    "missing attr": (lambda p: set_attr(p, "v_floor", None), "missing root attribute 'v_floor'"),
    "attr type": (lambda p: set_attr(p, "v_floor", "low"), "'v_floor' has the wrong type"),
    "bad source": (lambda p: set_attr(p, "source", "guessed"), "'source' is 'guessed'"),
    "bad unit": (lambda p: set_attr(p, "voltage_unit", "mV"), "'voltage_unit' is 'mV'"),
    "bad geometry": (lambda p: set_attr(p, "rows", 0, "geometry"), "bad /geometry"),
    "missing geometry attr": (lambda p: set_attr(p, "cols", None, "geometry"),
                              "missing /geometry attribute 'cols'"),
    "missing dataset": (lambda p: _delete(p, "faults/kind"), "missing dataset /faults/kind"),
    "missing group": (lambda p: _delete(p, "geometry"), "missing group /geometry"),
    "length mismatch": (lambda p: rewrite(p, "faults/kind", np.zeros(3, np.uint8)),
                        "length mismatch"),
    "2-D dataset": (lambda p: rewrite(p, "faults/kind", np.zeros((2, 2), np.uint8)), "must be 1-D"),
    "float addresses": (lambda p: corrupt_faults(p, address=lambda a: a.astype(np.float64)),
                        "/faults/address has dtype float64"),
    "address >= capacity": (lambda p: corrupt_faults(p, address=lambda a: raise_first(a, 5)),
                            "1 address(es) in /faults/address >= capacity 4096"),
    "duplicate address": (lambda p: corrupt_faults(p, address=lambda a: np.r_[a[:1], a[:-1]]),
                          "1 duplicate address(es)"),
    "NaN vfail": (lambda p: corrupt_faults(p, vfail=lambda v: np.where(np.arange(v.size) == 4,
                                                                        np.nan, v)),
                  "1 NaN/infinite voltage(s) in /faults/vfail"),
    "unsorted vfail": (lambda p: corrupt_faults(p, vfail=lambda v: v[::-1].copy()),
                       "not sorted descending"),
    "vfail below floor": (lambda p: corrupt_faults(p, vfail=lambda v: v - np.float32(0.05)),
                          "below v_floor 0.78"),
    "kind code": (lambda p: corrupt_faults(p, kind=lambda k: np.where(np.arange(k.size) == 2, 3, k)
                                           .astype(np.uint8)), "codes outside 0 (flip)"),
    "curve not monotone": (lambda p: rewrite(p, "ber_curve/ber", np.linspace(0, 0.2, 7)),
                           "bad /ber_curve"),
}


def _delete(path: Path, key: str) -> None:
    with h5py.File(path, "r+") as f:
        del f[key]


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_each_corruption_is_a_one_line_profile_error(good, what):
    damage, expected = CORRUPTIONS[what]
    damage(good)
    problems = validate(good)
    assert problems and any(expected in p for p in problems), problems
    with pytest.raises(ProfileError) as info:
        Chip.load(good)
    message = str(info.value)
    assert message.startswith(f"{good}: ") and "\n" not in message
    assert expected in message or "more problem" in message


def test_several_problems_are_all_listed(good):
    corrupt_faults(good, address=lambda a: raise_first(a), kind=lambda k: k + np.uint8(3))
    problems = validate(good)
    assert len(problems) == 2
    with pytest.raises(ProfileError, match=r">= capacity 4096 \(and 1 more problem"):
        load_chip(good)


def test_truncated_text_foreign_missing_and_directory(tmp_path, good):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.h5"
    text.write_text("rows,cols\n8,8\n")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["images"] = np.zeros((2, 4))
    cases = {truncated: "truncated", text: "not an HDF5 file", foreign: "not a sramsim chip profile",
             tmp_path / "absent.h5": "no such file", tmp_path: "is a directory"}
    for path, expected in cases.items():
        assert any(expected in p for p in validate(path)), (path, validate(path))
        with pytest.raises(ProfileError) as info:
            Chip.load(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
        assert expected in str(info.value)
        with pytest.raises(ProfileError):
            validate(path, strict=True)


def test_truncated_or_zeroed_inside_the_data(tmp_path):
    """Cut a big profile at several points, or zero bytes inside its compressed chunks."""
    path = tmp_path / "big.h5"
    Chip.random(Geometry(512, 256), BerCurve.builtin("finfet14"), 0.75, seed=0).save(path)
    bad = tmp_path / "bad.h5"
    data = path.read_bytes()
    for frac in (0.3, 0.6, 0.9, 0.999):
        bad.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ProfileError, match="truncated") as info:
            load_chip(bad)
        assert str(info.value).startswith(f"{bad}: ") and "\n" not in str(info.value)
    for frac in (0.2, 0.5, 0.8):                       # inside the gzip chunks of /faults
        i = int(len(data) * frac)
        bad.write_bytes(data[:i - 64] + bytes(64) + data[i:])
        with pytest.raises(ProfileError, match="unreadable data") as info:
            load_chip(bad)
        assert str(info.value).startswith(f"{bad}: ") and "\n" not in str(info.value)


def test_measured_profile_checks(tmp_path):
    chip = import_bitmaps({0.9: [1], 0.8: [1, 2]}, Geometry(8, 8))
    path = tmp_path / "m.h5"
    chip.save(path)
    rewrite(path, "measured/voltages", np.array([0.9, np.nan], np.float32))
    assert "NaN/infinite voltage(s) in /measured/voltages" in validate(path)
    rewrite(path, "measured/voltages", np.array([0.9, 0.85], np.float32))
    assert validate(path) == ["v_floor 0.8 is below the lowest measured voltage 0.85",
                              "/faults/vfail has voltages that are not in /measured/voltages"]
    _delete(path, "measured")
    assert validate(path) == ["missing group /measured"]


# --- importing measured bitmaps --------------------------------------------------------------------
def bool_map(bits, n=16):
    m = np.zeros(n, dtype=bool)
    m[list(bits)] = True
    return m.reshape(4, 4)


TINY_OBSERVATIONS = {
    0.7: {"any": np.array([3, 5]), "0to1": np.array([7]), "1to0": np.array([12, 10, 12])},
    0.9: np.array([3]),
    0.6: {"0to1": bool_map({3, 5, 7}), "1to0": bool_map({3, 10, 12, 14})},
    0.8: {"0to1": np.array([5, 10], np.uint16), "1to0": np.array([10]), "any": np.array([1])},
}


def check_tiny(chip: Chip) -> None:
    np.testing.assert_array_equal(chip.address, [3, 1, 5, 10, 7, 12, 14])
    np.testing.assert_array_equal(chip.vfail, np.float32([0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.6]))
    np.testing.assert_array_equal(chip.kind, [FLIP, FLIP, FLIP, FLIP, STUCK1, STUCK0, STUCK0])
    # bit 3 missed 0.8, bit 1 missed 0.7 and 0.6: two non-nested bits, both kept
    assert chip.attrs == {"non_nested": 2}
    assert chip.source == "measured" and chip.v_floor == 0.6
    np.testing.assert_array_equal(chip.measured_voltages, np.float32([0.9, 0.8, 0.7, 0.6]))
    np.testing.assert_array_equal(chip.faults(0.75).address, [3, 1, 5, 10])
    np.testing.assert_array_equal(chip.faults(0.7).address, [3, 1, 5, 10, 7, 12])
    if chip.nominal_voltage >= 0.95:
        assert chip.count(0.95) == 0
    else:                                   # above the nominal voltage nothing is known
        with pytest.raises(VoltageError, match="above .* nominal voltage"):
            chip.count(0.95)
    with pytest.raises(VoltageError, match="lowest measured voltage 0.6"):
        chip.faults(0.55)


def test_import_tiny_case_exactly():
    check_tiny(import_bitmaps(TINY_OBSERVATIONS, Geometry(4, 4)))


def test_import_from_folder_matches_dict_and_round_trips(tmp_path):
    names = {0.9: "v0.900", 0.8: "v0.80", 0.7: "v0.7", 0.6: "v0.600"}
    for v, obs in TINY_OBSERVATIONS.items():
        parts = obs if isinstance(obs, dict) else {"any": obs}
        for direction, arr in parts.items():
            suffix = "" if direction == "any" else f"_{direction}"
            np.save(tmp_path / f"{names[v]}{suffix}.npy", arr)
    (tmp_path / "README.txt").write_text("ignored")
    assert sorted(load_bitmap_dir(tmp_path)) == [0.6, 0.7, 0.8, 0.9]
    chip = import_bitmaps(tmp_path, Geometry(4, 4), voltage_unit="V", nominal_voltage=0.9)
    check_tiny(chip)
    assert chip.name == tmp_path.name and chip.voltage_unit == "V"
    out = tmp_path / "out" / "m.h5"
    out.parent.mkdir()
    chip.save(out)
    loaded = Chip.load(out)
    assert_same_chip(chip, loaded)
    np.testing.assert_array_equal(loaded.measured_voltages, chip.measured_voltages)
    info = summary(loaded)
    assert info["non_nested"] == 2 and info["measured_voltages"] == [0.9, 0.8, 0.7, 0.6]
    assert [r["faults"] for r in info["voltages"]] == [1, 4, 6, 7]


def test_voltages_are_compared_in_float32():
    chip = import_bitmaps({0.7: [1, 2], 0.3: [1, 2, 3]}, Geometry(8, 8))
    assert chip.count(0.7) == 2 and chip.count(0.3) == 3   # float32(0.7) < 0.7: still selected
    assert decimal_voltage(chip.vfail[0]) == 0.7 and decimal_voltage(np.float32(0.3)) == 0.3
    low = import_bitmaps({0.9: [1], 0.7: [1, 2]}, Geometry(8, 8))
    assert low.v_floor == 0.7 and float(low.measured_voltages[-1]) < 0.7
    assert [low.count(float(v)) for v in low.measured_voltages] == [1, 2]   # stored values work
    with pytest.raises(VoltageError):
        low.count(0.6999999)


@pytest.mark.parametrize("obs, expected", [
    ({0.9: [64]}, r"bit addresses must lie in \[0, 64\)"),
    ({0.9: [-1]}, r"must lie in \[0, 64\)"),
    ({0.9: np.array([1.0, 2.0])}, "expected a 1-D integer array"),
    ({0.9: np.zeros(63, bool)}, "boolean map has 63 entries, the chip has 64 bits"),
    ({0.9: {"up": [1]}}, "unknown direction 'up'"),
    ({0.9: [1], 0.9 + 1e-12: [2]}, "too close to tell apart"),
    ({}, "no tested voltages"),
    ({float("nan"): [1]}, "positive numbers"),
])
def test_import_rejects_bad_observations(obs, expected):
    with pytest.raises(InputError, match=expected):
        import_bitmaps(obs, Geometry(8, 8))


def test_import_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no v<voltage>.npy observation files"):
        load_bitmap_dir(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        load_bitmap_dir(tmp_path / "nope")
    np.save(tmp_path / "volt_0.9.npy", np.array([1]))
    with pytest.raises(InputError, match="volt_0.9.npy: file name not understood"):
        load_bitmap_dir(tmp_path)
    (tmp_path / "volt_0.9.npy").unlink()
    (tmp_path / "v0.9.npy").write_text("not numpy")
    with pytest.raises(InputError, match="v0.9.npy: not a readable .npy array"):
        load_bitmap_dir(tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 31), max_size=12), min_size=1, max_size=5),
       st.lists(st.sampled_from(["any", "0to1", "1to0"]), min_size=5, max_size=5))
def test_import_matches_a_per_bit_reference(failing, directions):
    """vfail = highest failing voltage, kinds from the union of directions, non_nested counted,
    and the resulting chip is nested at every tested voltage."""
    voltages = [1.0 - 0.05 * i for i in range(len(failing))]
    obs = {v: {d: np.array(bits, dtype=np.int64)} for v, bits, d in zip(voltages, failing, directions)}
    chip = import_bitmaps(obs, Geometry(4, 8))
    expect = {}
    for bit in sorted(set().union(*map(set, failing))):
        seen_at = [i for i, bits in enumerate(failing) if bit in bits]
        dirs = {directions[i] for i in seen_at}
        kind = (STUCK1 if dirs == {"0to1"} else STUCK0 if dirs == {"1to0"} else FLIP)
        nested = seen_at == list(range(seen_at[0], len(voltages)))
        expect[bit] = (np.float32(voltages[seen_at[0]]), kind, nested)
    got = {int(a): (v, k) for a, v, k in zip(chip.address, chip.vfail, chip.kind)}
    assert got == {b: e[:2] for b, e in expect.items()}
    assert chip.attrs["non_nested"] == sum(not e[2] for e in expect.values())
    previous = set()
    for v in voltages:
        now = set(chip.faults(v).address.tolist())
        assert previous <= now
        previous = now


# --- shipped profiles --------------------------------------------------------------------------------
SHIPPED = [ROOT / "sramsim" / "data" / "profiles" / f"finfet14-8192x128-s{s}.h5" for s in range(5)]


def readme_synth_commands() -> dict[str, list[str]]:
    """The `sramsim profile synth ...` lines of sramsim/data/profiles/README.md, keyed by their --out file."""
    commands = {}
    for line in (ROOT / "sramsim" / "data" / "profiles" / "README.md").read_text().splitlines():
        if line.strip().startswith("sramsim profile synth"):
            argv = shlex.split(line)[1:]
            commands[argv[argv.index("--out") + 1]] = argv
    return commands


def test_shipped_profiles_validate_and_match_their_spec():
    for path in SHIPPED:
        assert validate(path) == [], path
        chip = load_chip(path)
        assert chip.geometry == Geometry(8192, 128) and chip.v_floor == 0.75
        assert chip.curve.name == "finfet14" and np.all(chip.kind == FLIP)
        assert abs(chip.ber(0.75) - 0.2056) < 0.003   # ~5 sigma of a binomial on 2^20 bits


def test_readme_commands_reproduce_the_shipped_profiles_bit_identically(tmp_path):
    from sramsim.commands.main import main
    commands = readme_synth_commands()
    assert sorted(commands) == sorted(str(p.relative_to(ROOT)) for p in SHIPPED)
    for out, argv in commands.items():
        argv = list(argv)
        fresh = tmp_path / Path(out).name
        argv[argv.index("--out") + 1] = str(fresh)
        assert main(argv) == 0
        assert_same_chip(load_chip(ROOT / out), load_chip(fresh))


# --- issue 11: nominal voltage, duplicate spellings, reader errors vs our bugs, equality -------------
def test_round_trip_chip_equals_the_loaded_one(good, tmp_path):
    assert Chip.load(good) == small_chip()
    measured = import_bitmaps({0.9: [1], 0.8: [1, 2]}, Geometry(8, 8), voltage_unit="V",
                              nominal_voltage=0.95)
    measured.save(tmp_path / "m.h5")
    assert Chip.load(tmp_path / "m.h5") == measured
    gauss = Chip.random(Geometry(16, 16), BerCurve.gaussian(0.706, 0.055), 0.9, seed=1)
    gauss.save(tmp_path / "g.h5")
    assert Chip.load(tmp_path / "g.h5") == gauss


def test_vfail_or_floor_above_nominal_is_a_problem_line(good):
    corrupt_faults(good, vfail=lambda v: np.where(np.arange(v.size) < 2, np.float32(1.25), v))
    problems = validate(good)
    assert "2 voltage(s) in /faults/vfail above the nominal voltage 1 (highest 1.25)" in problems
    with pytest.raises(ProfileError, match="above the nominal voltage") as info:
        Chip.load(good)
    assert str(info.value).startswith(f"{good}: ") and "\n" not in str(info.value)
    set_attr(good, "nominal_voltage", 0.7)
    assert "v_floor 0.78 is above the nominal voltage 0.7" in validate(good)


def test_import_refuses_failures_above_nominal():
    with pytest.raises(InputError, match="exceed the nominal voltage 0.9"):
        import_bitmaps({1.0: [1], 0.8: [1, 2]}, Geometry(8, 8), voltage_unit="V",
                       nominal_voltage=0.9)


def test_same_voltage_spelled_twice_is_merged_never_dropped(tmp_path):
    """v0.900.npy and v0.90.npy are one tested voltage: the union of their bits (bool maps OR-ed,
    address lists joined); directed files of that voltage merge the same way."""
    np.save(tmp_path / "v0.900.npy", np.array([1, 4]))
    np.save(tmp_path / "v0.90.npy", np.array([4, 9]))
    np.save(tmp_path / "v0.8.npy", np.isin(np.arange(64), [1, 2]).reshape(8, 8))
    np.save(tmp_path / "v0.80.npy", np.isin(np.arange(64), [2, 3]))
    np.save(tmp_path / "v0.7_0to1.npy", np.array([5]))
    np.save(tmp_path / "v0.700_0to1.npy", np.array([6]))
    np.save(tmp_path / "v0.70_1to0.npy", np.array([6]))
    obs = load_bitmap_dir(tmp_path)
    assert sorted(obs) == [0.7, 0.8, 0.9]
    chip = import_bitmaps(tmp_path, Geometry(8, 8))
    got = {int(a): (float(v), int(k)) for a, v, k in zip(chip.address, chip.vfail, chip.kind)}
    f = lambda x: float(np.float32(x))   # noqa: E731
    assert got == {1: (f(0.9), FLIP), 4: (f(0.9), FLIP), 9: (f(0.9), FLIP), 2: (f(0.8), FLIP),
                   3: (f(0.8), FLIP), 5: (f(0.7), STUCK1), 6: (f(0.7), FLIP)}
    np.testing.assert_array_equal(chip.measured_voltages, np.float32([0.9, 0.8, 0.7]))


def test_same_voltage_spelled_twice_with_mixed_contents_is_refused(tmp_path):
    np.save(tmp_path / "v0.9.npy", np.array([1, 4]))
    np.save(tmp_path / "v0.90.npy", np.isin(np.arange(64), [2]))
    with pytest.raises(InputError, match=r"v0.90?.npy: same voltage and direction as v0.90?.npy"):
        load_bitmap_dir(tmp_path)


def test_a_bug_in_our_reader_surfaces_but_damaged_data_is_one_line(good, monkeypatch, tmp_path):
    from sramsim.memory import profile_file

    def buggy(*args):
        raise TypeError("bug in our own code")
    monkeypatch.setattr(profile_file, "_check_measured", buggy)
    measured = tmp_path / "m.h5"
    with h5py.File(good, "r+") as f:          # make the reader reach _check_measured
        f.create_group("measured").create_dataset("voltages", data=np.float32([0.9, 0.78]))
    with pytest.raises(TypeError, match="bug in our own code"):
        validate(good)
    monkeypatch.setattr(profile_file, "_duplicates", lambda a: {}["no such key"])
    with pytest.raises(KeyError):
        load_chip(good)
    monkeypatch.undo()
    # damaged bytes inside the compressed fault data are still the one-line problem
    path = tmp_path / "big.h5"
    Chip.random(Geometry(512, 256), BerCurve.builtin("finfet14"), 0.75, seed=0).save(path)
    data = path.read_bytes()
    i = int(len(data) * 0.5)
    measured.write_bytes(data[:i - 64] + bytes(64) + data[i:])
    with pytest.raises(ProfileError, match="unreadable data") as info:
        load_chip(measured)
    assert str(info.value).startswith(f"{measured}: ") and "\n" not in str(info.value)


def _relink(path: Path, key: str, link) -> None:
    """Replace `key` in `path` by `link` (an h5py link object)."""
    with h5py.File(path, "r+") as f:
        del f[key]
        f[key] = link


def test_links_out_of_the_file_are_refused_naming_it(tmp_path, capsys):
    """A profile is self-contained: `profile info` on a file whose faults link into another
    file must not read that file's faults."""
    other = small_chip(seed=9)
    other.save(tmp_path / "other.h5")
    cases = {"external": h5py.ExternalLink(str(tmp_path / "other.h5"), "/faults/address"),
             "external group": h5py.ExternalLink(str(tmp_path / "other.h5"), "/faults"),
             "soft": h5py.SoftLink("/faults/vfail")}
    for what, link in cases.items():
        path = tmp_path / f"{what.replace(' ', '-')}.h5"
        small_chip().save(path)
        _relink(path, "faults" if what == "external group" else "faults/address", link)
        with pytest.raises(ProfileError, match="link") as err:
            Chip.load(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value), what
        assert main(["profile", "info", str(path)]) == 2
        out = capsys.readouterr()
        assert len(out.err.splitlines()) == 1 and "link" in out.err and not out.out, what


def test_external_and_virtual_datasets_are_refused(tmp_path):
    raw = tmp_path / "raw.bin"
    address = small_chip().address
    raw.write_bytes(address.astype("<u8").tobytes())
    path = tmp_path / "ext.h5"
    small_chip().save(path)
    with h5py.File(path, "r+") as f:
        del f["faults/address"]
        f.create_dataset("faults/address", shape=address.shape, dtype="<u8",
                         external=[(str(raw), 0, h5py.h5f.UNLIMITED)])
    with pytest.raises(ProfileError, match="external"):
        Chip.load(path)
    other = tmp_path / "other.h5"
    small_chip().save(other)
    layout = h5py.VirtualLayout(shape=address.shape, dtype="<u8")
    layout[:] = h5py.VirtualSource(str(other), "faults/address", shape=address.shape)
    virtual = tmp_path / "virtual.h5"
    small_chip().save(virtual)
    with h5py.File(virtual, "r+") as f:
        del f["faults/address"]
        f.create_virtual_dataset("faults/address", layout)
    with pytest.raises(ProfileError, match="virtual"):
        Chip.load(virtual)
