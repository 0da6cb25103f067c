"""Experiment files: `--config FILE.toml` for long-running commands, and the effective settings
of a run written into its output folder, so any run can be repeated from its own output.

The file's keys are the command's flags without the dashes (`voltages`, `out`, `batch-size` or
`batch_size`); a value given on the command line wins over the file's. A flag that takes several
values takes a TOML list, a switch (`--no-progress`) takes true/false, every other value a string
or number. An unknown key is a one-line error naming it. Each command that supports it calls
`add_config(parser)` when it builds its parser and runs its work inside `with recorded(args,
folder)`, which writes `folder/run.toml`; `sramsim.commands.main.run_main` merges the file
(`apply`) before the command runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sramsim.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # python_requires >= 3.10: tomli is declared for 3.10
    import tomli as tomllib

RUN_FILE = "run.toml"
PARSER = "_config_parser"              # the leaf parser, kept in the namespace by set_defaults
REQUIRED = "_config_required"          # its required flags / groups, checked after merging
SKIP = {"help", "config", "version"}   # dests that are not settings
PRESENTATION = {"json", "no_progress"}  # settings that do not change results: not written


def add_config(parser: argparse.ArgumentParser) -> None:
    """Give `parser` (a leaf command) `--config FILE.toml`. Its required flags and required
    groups may then come from the file: they are checked after the file is merged."""
    parser.add_argument("--config", metavar="FILE.toml",
                        help="read settings from a TOML file whose keys are this command's "
                             "flags (flags given here win); the output folder gets the run's own "
                             f"{RUN_FILE}, so `--config OUT/{RUN_FILE}` repeats a run")
    required: list[tuple[str, ...]] = []
    for action in parser._actions:
        if action.required and action.option_strings:
            action.required = False
            required.append((action.option_strings[-1],))
    for group in parser._mutually_exclusive_groups:
        if group.required:
            group.required = False
            required.append(tuple(a.option_strings[-1] for a in group._group_actions))
    parser.set_defaults(**{PARSER: parser, REQUIRED: required})


def apply(top: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> None:
    """Merge `args.config` into `args` (command-line values win), then check that the required
    flags are set; a no-op for commands without `--config`."""
    leaf = getattr(args, PARSER, None)
    if leaf is None:
        return
    if args.config is not None:
        given = given_on_command_line(top, leaf, argv)
        values = read_config(args.config, leaf)
        for dest, value in values.items():
            if dest not in given:
                setattr(args, dest, value)
        _resolve_exclusive(leaf, args, given, values, args.config)
    for flags in getattr(args, REQUIRED):
        if all(getattr(args, _action(leaf, f).dest) in (None, False) for f in flags):
            what = flags[0] if len(flags) == 1 else "one of " + " ".join(flags)
            raise InputError(f"{what} is required (on the command line or in --config)")


def read_config(path: str | os.PathLike[str], leaf: argparse.ArgumentParser) -> dict:
    """{dest: value} of a TOML file for `leaf`, each value checked and in the form the flag
    gives (strings, a list of strings for multi-value flags, booleans for switches)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--config {path}: not valid TOML ({exc})") from None
    actions = {_key(flag): a for a in leaf._actions if a.dest not in SKIP
               for flag in a.option_strings}
    out: dict[str, Any] = {}
    for key, value in data.items():
        action = actions.get(_key(key))
        if action is None:
            raise InputError(f"--config {path}: unknown key {key!r} (not a flag of "
                             f"`{leaf.prog}`)")
        out[action.dest] = _value(action, value, f"--config {path}: {key}")
    return out


def _key(flag: str) -> str:
    """A flag or file key in one form: `--batch-size`, `batch-size`, `batch_size` -> batch_size."""
    return flag.lstrip("-").replace("-", "_")


def _value(action: argparse.Action, value: object, where: str) -> bool | str | list[str]:
    """A TOML value as the command line would give it to `action`."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    many = action.nargs in ("+", "*")
    items = value if isinstance(value, list) else [value] if many else None
    if items is None:
        items = [value]
    if not many and len(items) != 1:
        raise InputError(f"{where} takes one value, got a list")
    if many and not items and action.nargs == "+":
        raise InputError(f"{where} needs at least one value")
    texts = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise InputError(f"{where} must be a string or number, got {item!r}")
        text = str(item)
        if action.choices is not None and text not in action.choices:
            raise InputError(f"{where} must be one of {', '.join(map(str, action.choices))}, "
                             f"got {item!r}")
        texts.append(text)
    return texts if many else texts[0]


def given_on_command_line(top: argparse.ArgumentParser, leaf: argparse.ArgumentParser,
                          argv: list[str]) -> set[str]:
    """The dests of `leaf` that `argv` sets: parsed again with every default suppressed."""
    saved = [(a, a.default) for a in leaf._actions]
    defaults = dict(leaf._defaults)
    try:
        for a in leaf._actions:
            a.default = argparse.SUPPRESS
        leaf._defaults.clear()
        ns, _ = top.parse_known_args(argv)
    finally:
        for a, default in saved:
            a.default = default
        leaf._defaults.update(defaults)
    return {a.dest for a in leaf._actions if hasattr(ns, a.dest)}


def _resolve_exclusive(leaf: argparse.ArgumentParser, args: argparse.Namespace, given: set[str],
                       values: dict, path: str | os.PathLike[str]) -> None:
    """In a group of mutually exclusive flags, one given on the command line replaces the
    file's; two from the file are an error."""
    for group in leaf._mutually_exclusive_groups:
        dests = [a.dest for a in group._group_actions]
        on_line = [d for d in dests if d in given]
        from_file = [d for d in dests if d in values and d not in given]
        if on_line:
            for d in from_file:
                setattr(args, d, _action_by_dest(leaf, d).default)
        elif len(from_file) > 1:
            raise InputError(f"--config {path}: {' and '.join(from_file)} exclude each other")


def _action(leaf: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in leaf._actions if flag in a.option_strings)


def _action_by_dest(leaf: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in leaf._actions if a.dest == dest)


def settings(args: argparse.Namespace) -> dict:
    """{flag name: value} of every setting of the run (presentation flags and unset ones left
    out), in the parser's order."""
    from sramsim.commands.helptext import DeprecatedAlias
    leaf = getattr(args, PARSER)
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for a in leaf._actions:
        if (not a.option_strings or a.dest in SKIP | PRESENTATION | seen
                or isinstance(a, DeprecatedAlias)):
            continue
        seen.add(a.dest)
        value = getattr(args, a.dest, None)
        if value is None or (value is False and isinstance(a, argparse._StoreTrueAction)):
            continue
        out[a.option_strings[0].lstrip("-")] = value       # the flag's own (first) name
    return out


@contextmanager
def recorded(args: argparse.Namespace, folder: str | os.PathLike[str]) -> Iterator[None]:
    """Around a run's work: write `folder/run.toml` when it finishes, and also when it stops
    (interrupted, failed at run time) after creating the folder; bad input (InputError) writes
    nothing, so a refused command leaves no folder and never replaces a good run's file."""
    try:
        yield
    except InputError:
        raise
    except BaseException:
        if Path(folder).is_dir():
            write_run_file(args, folder)
        raise
    write_run_file(args, folder)


def write_run_file(args: argparse.Namespace, folder: str | os.PathLike[str]) -> Path:
    """Write the run's settings as `folder/run.toml` (the folder is created): `--config` with it
    repeats the run. Paths in it are as given, relative to the folder the run started in."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    leaf = getattr(args, PARSER)
    lines = [f"# `{leaf.prog}` settings of the run that wrote this folder; repeat it with",
             f"#   {leaf.prog} --config {folder / RUN_FILE}",
             f"# from {os.getcwd()} (relative paths below start there)"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings(args).items()]
    path = folder / RUN_FILE
    tmp = path.with_name(f".{RUN_FILE}.tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def _toml(value: object) -> str:
    """A TOML value: strings (basic strings with escapes), booleans, lists of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value)
    escaped = []
    for ch in text:
        if ch in ('"', "\\"):
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'
