"""Help that teaches: every leaf command of `sramsim` and `fusion` has a full description and ends
its --help with example commands, and every example parses with the real parser."""
from __future__ import annotations

import argparse
import shlex

import pytest

from fusion.cli import parser as fusion_parser
from sramsim.commands.helptext import EXAMPLES, leaf, paragraph
from sramsim.commands.main import build_parser


def leaves(parser: argparse.ArgumentParser, path=()):
    """(command path, parser) of every parser without subcommands under `parser`."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, path + (name,))


PARSERS = {"sramsim": build_parser(), "fusion": fusion_parser()}
LEAVES = [(prog, path, p) for prog, top in PARSERS.items() for path, p in leaves(top)]


def test_every_command_is_walked():
    names = {f"{prog} {' '.join(path)}" for prog, path, _ in LEAVES}
    assert {"sramsim profile list", "sramsim sweep", "sramsim dram tolerance", "sramsim sparkxd",
            "sramsim plan", "fusion train", "fusion eval", "fusion demo"} <= names
    assert len(names) == 19


@pytest.mark.parametrize("prog, path, parser", LEAVES, ids=[" ".join((p, *c)) for p, c, _ in LEAVES])
def test_leaf_help_ends_with_examples_that_parse(prog, path, parser):
    text = parser.format_help()
    assert EXAMPLES in text, f"{prog} {' '.join(path)}: no examples in --help"
    examples = [line.strip() for line in parser.epilog.splitlines()[1:]]
    assert examples and text.rstrip().endswith(examples[-1])
    for example in examples:
        argv = shlex.split(example)
        assert argv[0] == prog and tuple(argv[1:1 + len(path)]) == path, example
        args = PARSERS[prog].parse_args(argv[1:])          # SystemExit(2) on a wrong flag
        assert callable(args.func)
    description = " ".join(parser.description.split())
    assert description.endswith((".", ")")), f"cut description: {description[-60:]!r}"


def test_helpers():
    assert paragraph("First line\ncontinues.\n\nSecond.") == "First line continues."
    kw = leaf("Does a thing.", "sramsim x --y")
    assert kw["epilog"] == f"{EXAMPLES}\n  sramsim x --y"
    with pytest.raises(ValueError):
        leaf("No examples.")


def test_the_package_description_commands_parse():
    """PACKAGE.md (the long description pip users read) shows only commands that exist."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "PACKAGE.md").read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip().startswith(("sramsim ", "fusion "))]
    assert len(lines) >= 8
    for line in lines:
        argv = shlex.split(line.split("#")[0])
        args = PARSERS[argv[0]].parse_args(argv[1:])
        assert callable(args.func), line
