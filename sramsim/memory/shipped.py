"""The chip profiles that ship inside the package, and the one resolver of a profile argument.

Wherever a profile path is taken, `shipped:NAME` names a shipped profile instead (e.g.
`shipped:finfet14-8192x128-s0`), and where a list of profiles is taken the single word `shipped`
means all of them. The files live in `sramsim/data/profiles/` (package data, carried by the
wheel), so the names work the same from a source checkout and from a pip install.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sramsim.errors import InputError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "profiles"
PREFIX = "shipped:"
ALL = "shipped"


def shipped_names() -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.h5"))


def shipped_profiles() -> list[Path]:
    """Paths of every shipped profile, sorted by name; an InputError if the package has none
    (a broken install: the wheel carries them)."""
    paths = [SHIPPED_DIR / f"{name}.h5" for name in shipped_names()]
    if not paths:
        raise InputError(f"no shipped profiles found in {SHIPPED_DIR} (reinstall sramsim)")
    return paths


def shipped_path(name: str) -> Path:
    """The file of the shipped profile `name`; an unknown name is an InputError listing them."""
    path = SHIPPED_DIR / f"{name}.h5"
    if not name or Path(name).name != name or not path.is_file():
        known = ", ".join(shipped_names()) or "none"
        raise InputError(f"no shipped profile named {name!r} (shipped: {known})")
    return path


def resolve_profile(spec: str | os.PathLike) -> Path:
    """A profile argument as a file path: `shipped:NAME` -> the shipped file, anything else is
    taken as a path (returned unchanged; the reader reports a missing file)."""
    text = os.fspath(spec)
    if isinstance(text, str) and text.startswith(PREFIX):
        return shipped_path(text[len(PREFIX):])
    return Path(text)


def resolve_profiles(specs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """A list of profile arguments as file paths: `shipped` expands to every shipped profile,
    `shipped:NAME` and paths resolve as in `resolve_profile`."""
    out: list[Path] = []
    for spec in specs:
        if os.fspath(spec) == ALL:
            out += shipped_profiles()
        else:
            out.append(resolve_profile(spec))
    return out
