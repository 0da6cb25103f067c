"""Shipped chip profiles: package data with names a user can type (`shipped:NAME`, `shipped`)."""
from __future__ import annotations

import json

import pytest

from sramsim import Chip
from sramsim.commands.main import main
from sramsim.errors import InputError, ProfileError
from sramsim.memory import profile_file
from sramsim.memory.shipped import (SHIPPED_DIR, resolve_profile, resolve_profiles,
                                    shipped_names, shipped_path)

NAMES = [f"finfet14-8192x128-s{s}" for s in range(5)]


def test_the_five_finfet14_chips_ship_inside_the_package():
    assert shipped_names() == NAMES
    assert SHIPPED_DIR.parts[-3:] == ("sramsim", "data", "profiles")
    assert (SHIPPED_DIR / "README.md").is_file()


def test_resolve_names_and_paths(tmp_path):
    assert resolve_profile("shipped:finfet14-8192x128-s2") == SHIPPED_DIR / f"{NAMES[2]}.h5"
    assert resolve_profile(tmp_path / "x.h5") == tmp_path / "x.h5"   # paths pass through
    assert resolve_profiles(["shipped"]) == [SHIPPED_DIR / f"{n}.h5" for n in NAMES]
    mixed = resolve_profiles(["shipped:finfet14-8192x128-s0", str(tmp_path / "y.h5")])
    assert mixed == [SHIPPED_DIR / f"{NAMES[0]}.h5", tmp_path / "y.h5"]


@pytest.mark.parametrize("name", ["nope", "", "../profiles/finfet14-8192x128-s0"])
def test_unknown_shipped_name_lists_the_known_ones(name):
    with pytest.raises(InputError, match="no shipped profile named .* finfet14-8192x128-s0"):
        shipped_path(name)


def test_every_reader_takes_the_shipped_form():
    chip = Chip.load("shipped:finfet14-8192x128-s1")
    assert chip.name == NAMES[1] and chip.same_faults(Chip.load(SHIPPED_DIR / f"{NAMES[1]}.h5"))
    assert profile_file.validate("shipped:finfet14-8192x128-s1") == []
    with pytest.raises(ProfileError, match=r"^shipped:zz: no shipped profile named 'zz'"):
        Chip.load("shipped:zz")


def test_profile_list_prints_name_geometry_technology_size(capsys):
    assert main(["profile", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["profiles"]
    assert [r["spec"] for r in rows] == [f"shipped:{n}" for n in NAMES]
    assert rows[0]["geometry"]["rows"] == 8192 and rows[0]["geometry"]["capacity_bits"] == 2 ** 20
    assert rows[0]["technology"] == "sram" and rows[0]["file_bytes"] > 100_000
    assert main(["profile", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "geometry", "technology", "capacity", "file"]
    assert table[1].startswith("shipped:finfet14-8192x128-s0 ") and "128 KiB" in table[1]


def test_validate_shipped_checks_them_all(capsys):
    assert main(["profile", "validate", "shipped"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"shipped:{n}: ok" for n in NAMES]
    assert main(["profile", "info", "shipped:nope"]) == 2
    assert "no shipped profile named 'nope'" in capsys.readouterr().err
